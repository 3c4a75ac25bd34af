#!/usr/bin/env bash
# Jenkins "smoke run" stage: run a task (CRAWLFLEET_SMOKE_TASK, default books-demo) through the
# REST API and wait until it succeeds. Needs CRAWLFLEET_URL and CRAWLFLEET_TOKEN.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec python3 deploy/ci/smoke_run.py "$@"
