#!/usr/bin/env bash
# Installs what development and the test suite need on a Debian-like machine:
# system services from apt (only the ones missing) and the Python packages in a virtualenv.
set -euo pipefail
venv="${1:-.venv}"

need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v tinyproxy >/dev/null || need+=(tinyproxy)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v chromium >/dev/null || need+=(chromium)
[ -x /usr/lib/postgresql/15/bin/postgres ] || ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || need+=(postgresql)
if [ "${#need[@]}" -gt 0 ]; then
    echo "installing system packages: ${need[*]}"
    sudo_cmd=""
    [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    # The packaged services are started by the test fixtures on free ports, never system-wide.
    for svc in redis-server tinyproxy postgresql; do
        $sudo_cmd service "$svc" stop >/dev/null 2>&1 || true
    done
fi

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -e '.[dev]'
