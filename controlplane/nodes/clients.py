"""One kept-alive Scrapyd client per node, for a loop that calls every node again and again.

A poll of a node is two or three small calls; with a new client per poll each one pays a new
session and a new TCP connection. Kept across polls, a client reuses its connection. A node
that restarted closed it: the pool sees that before sending and connects again, and a GET caught
in the race is tried once more (:class:`controlplane.lib.scrapyd.StaleConnectionRetry`), so a
restart never counts as a failed check.

A client is rebuilt when the node's address, credentials or the timeout change. Only one thread
uses a node's client at a time: the poller never polls a node that is still being polled.
"""

from __future__ import annotations

import threading

from django.conf import settings

from controlplane.lib.scrapyd import ScrapydClient
from controlplane.nodes.models import Node

ClientKey = tuple[str, str, str, float]


class NodeClients:
    """Node id -> its kept client, rebuilt when what it was built from changed."""

    def __init__(self) -> None:
        self._clients: dict[int, tuple[ClientKey, ScrapydClient]] = {}
        self._lock = threading.Lock()

    def get(self, node: Node) -> ScrapydClient:
        key = (node.url, node.username, node.password, settings.CRAWLFLEET_NODE_TIMEOUT)
        with self._lock:
            kept = self._clients.get(node.pk)
            if kept is not None and kept[0] == key:
                return kept[1]
        client = node.client()
        with self._lock:
            previous = self._clients.get(node.pk)
            self._clients[node.pk] = (key, client)
        if previous is not None:
            previous[1].close()
        return client

    def keep_only(self, node_ids: set[int]) -> None:
        """Close the clients of nodes no longer polled (removed, or disabled and idle)."""
        with self._lock:
            gone = [self._clients.pop(pk)[1] for pk in list(self._clients) if pk not in node_ids]
        for client in gone:
            client.close()

    def close(self) -> None:
        self.keep_only(set())

    def __len__(self) -> int:
        return len(self._clients)
