#!/usr/bin/env bash
# Jenkins "deploy" stage: upload the egg from the build stage to the control plane, which
# deploys it to every node. Needs CRAWLFLEET_URL and CRAWLFLEET_TOKEN (an operator token from
# Jenkins credentials; `crawlfleet deploy` reads it from the environment, never the command line).
# A deploy that reached only some nodes fails the stage unless ALLOW_PARTIAL_DEPLOY=1: the
# others catch up when healthy, but someone should look.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${VENV:-.venv}"
: "${CRAWLFLEET_URL:?set CRAWLFLEET_URL to the control plane}"
: "${CRAWLFLEET_TOKEN:?set CRAWLFLEET_TOKEN to an operator API token}"
egg="${1:-$(cat dist/egg-path)}"
status=0
"$venv/bin/crawlfleet" deploy "$egg" --url "$CRAWLFLEET_URL" || status=$?
if [ "$status" -eq 3 ] && [ "${ALLOW_PARTIAL_DEPLOY:-0}" = "1" ]; then
    echo "deployed to some nodes only; the others catch up when healthy"
    exit 0
fi
exit "$status"
