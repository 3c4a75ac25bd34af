#!/usr/bin/env bash
# Entrypoint of a Scrapyd node container: `crawlfleet node`, configured from the environment.
#
#   CRAWLFLEET_NODE_PORT           HTTP port (default 6800)
#   CRAWLFLEET_NODE_DIR            node directory, a volume: eggs, logs, databases (default /var/lib/crawlfleet-node)
#   CRAWLFLEET_NODE_BIND           bind address (default 0.0.0.0 inside a container)
#   CRAWLFLEET_NODE_URL            URL the control plane reaches this node at (e.g. http://scrapyd1:6800)
#   CRAWLFLEET_NODE_NAME           node name (default: <hostname>-<port>)
#   CRAWLFLEET_NODE_TAGS           comma-separated tags
#   CRAWLFLEET_NODE_MAX_PROC       parallel crawls (default: CPU count)
#   CRAWLFLEET_NODE_POLL_INTERVAL  seconds between queue polls
#   CRAWLFLEET_NODE_HEARTBEAT      seconds between registrations
#   CRAWLFLEET_NODE_JOBS_TO_KEEP   job logs kept per spider
#   CRAWLFLEET_REGISTER_URL        control plane to register with (registration is off without it)
#   CRAWLFLEET_NODE_TOKEN          API token for registration; read by crawlfleet itself, never
#                                  put on the command line where `ps` would show it
#   SCRAPYD_USERNAME / SCRAPYD_PASSWORD  optional basic auth, read by Scrapyd itself
#
# Run the container with an init process (`docker run --init`, compose `init: true`): crawls
# that outlive a crashed Scrapyd must be reaped by someone.
# Extra arguments are passed on to `crawlfleet node`.
set -euo pipefail

args=(
    --port "${CRAWLFLEET_NODE_PORT:-6800}"
    --dir "${CRAWLFLEET_NODE_DIR:-/var/lib/crawlfleet-node}"
    --bind "${CRAWLFLEET_NODE_BIND:-0.0.0.0}"
)
[ -n "${CRAWLFLEET_NODE_NAME:-}" ] && args+=(--name "$CRAWLFLEET_NODE_NAME")
[ -n "${CRAWLFLEET_NODE_URL:-}" ] && args+=(--url "$CRAWLFLEET_NODE_URL")
[ -n "${CRAWLFLEET_NODE_TAGS:-}" ] && args+=(--tags "$CRAWLFLEET_NODE_TAGS")
[ -n "${CRAWLFLEET_NODE_MAX_PROC:-}" ] && args+=(--max-proc "$CRAWLFLEET_NODE_MAX_PROC")
[ -n "${CRAWLFLEET_NODE_POLL_INTERVAL:-}" ] && args+=(--poll-interval "$CRAWLFLEET_NODE_POLL_INTERVAL")
[ -n "${CRAWLFLEET_NODE_HEARTBEAT:-}" ] && args+=(--heartbeat "$CRAWLFLEET_NODE_HEARTBEAT")
[ -n "${CRAWLFLEET_NODE_JOBS_TO_KEEP:-}" ] && args+=(--jobs-to-keep "$CRAWLFLEET_NODE_JOBS_TO_KEEP")
if [ -n "${CRAWLFLEET_REGISTER_URL:-}" ]; then
    if [ -z "${CRAWLFLEET_NODE_TOKEN:-}" ]; then
        echo "node-entrypoint: CRAWLFLEET_REGISTER_URL is set but CRAWLFLEET_NODE_TOKEN is not" >&2
        exit 2
    fi
    args+=(--register "$CRAWLFLEET_REGISTER_URL")
fi

exec crawlfleet node "${args[@]}" "$@"
