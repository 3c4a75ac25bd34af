#!/usr/bin/env bash
# Jenkins "test" stage: lint and the whole suite against real services, exactly as developers
# run it, with a JUnit report for Jenkins to show.
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p reports
make test PYTEST_ARGS="--junitxml=reports/junit.xml ${PYTEST_ARGS:-}"
