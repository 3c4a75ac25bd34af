#!/bin/sh
# Entrypoint of the node image: one Scrapyd node via `crawlfleet node`, configured from the
# environment so one image serves every node of a compose file or cluster. Extra arguments are
# passed on to `crawlfleet node`. The registration token stays in CRAWLFLEET_NODE_TOKEN, which
# `crawlfleet node` reads itself, so it never shows up in a process listing.
#   CRAWLFLEET_NODE_PORT      Scrapyd's HTTP port (6800)
#   CRAWLFLEET_NODE_DIR       eggs, logs and queues (/var/lib/crawlfleet-node)
#   CRAWLFLEET_NODE_BIND      listen address (0.0.0.0)
#   CRAWLFLEET_NODE_NAME      name in the registry (default: <hostname>-<port>)
#   CRAWLFLEET_NODE_URL       URL the control plane reaches this node at, e.g. http://node-1:6800
#   CRAWLFLEET_NODE_MAX_PROC  parallel crawls (default: CPU count)
#   CRAWLFLEET_NODE_TAGS      comma-separated tags
#   CRAWLFLEET_REGISTER_URL   control plane to register with (unset: no registration)
set -eu

set -- \
    --port "${CRAWLFLEET_NODE_PORT:-6800}" \
    --dir "${CRAWLFLEET_NODE_DIR:-/var/lib/crawlfleet-node}" \
    --bind "${CRAWLFLEET_NODE_BIND:-0.0.0.0}" \
    ${CRAWLFLEET_NODE_NAME:+--name "$CRAWLFLEET_NODE_NAME"} \
    ${CRAWLFLEET_NODE_URL:+--url "$CRAWLFLEET_NODE_URL"} \
    ${CRAWLFLEET_NODE_MAX_PROC:+--max-proc "$CRAWLFLEET_NODE_MAX_PROC"} \
    ${CRAWLFLEET_NODE_TAGS:+--tags "$CRAWLFLEET_NODE_TAGS"} \
    ${CRAWLFLEET_REGISTER_URL:+--register "$CRAWLFLEET_REGISTER_URL"} \
    "$@"

exec crawlfleet node "$@"
