#!/usr/bin/env bash
# Jenkins "build egg" stage: one egg of the crawler in dist/, versioned by a UTC timestamp
# (or $EGG_VERSION, digits only), and its path in dist/egg-path for the deploy stage.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${VENV:-.venv}"
make bootstrap VENV="$venv" >/dev/null
rm -rf dist
mkdir -p dist
version_args=()
if [ -n "${EGG_VERSION:-}" ]; then
    version_args=(--version "$EGG_VERSION")
fi
egg="$("$venv/bin/crawlfleet" egg build --output dist "${version_args[@]}")"
echo "$egg" > dist/egg-path
echo "built $egg"
