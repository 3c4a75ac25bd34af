#!/bin/sh
# Entrypoint of the control-plane image: the first argument picks the process, the rest are its
# options. The processes are the same `crawlfleet` subcommands that run outside containers.
#   migrate                 apply migrations and the env-driven bootstrap once, then exit
#   web [--no-migrate ...]  REST API and admin (gunicorn)
#   scheduler | poller      the background replicas (pollers also send alerts)
#   alerts                  the alert sender alone (optional; see docs/ALERTS.md)
#   manage | token | deploy | egg ...   one-off crawlfleet commands
# Anything else runs as given (a shell for debugging, for example).
set -eu

command="${1:-web}"
[ "$#" -gt 0 ] && shift

case "$command" in
    migrate)
        exec crawlfleet web --migrate-only "$@"
        ;;
    web | scheduler | poller | alerts | manage | token | deploy | egg)
        exec crawlfleet "$command" "$@"
        ;;
    *)
        exec "$command" "$@"
        ;;
esac
