"""The node client's kept-alive connections: a GET caught by a connection the node dropped is
tried once more on a new one; a POST, a read timeout or a refused connection is never retried.

The node here is a socket server on a loopback port that answers the first request of every
connection and closes the connection, unanswered, at the second: what a kept-alive connection
to a node that went away looks like from the client when the pool could not tell beforehand.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest
import requests

from controlplane.lib.procutil import free_port
from controlplane.lib.scrapyd import ScrapydClient, ScrapydError, node_session

OK = json.dumps({"status": "ok", "prevstate": "pending", "running": 0}).encode()


class DroppingNode:
    """Answers one request per connection, then drops the connection at the next one."""

    def __init__(self, answer: bool = True) -> None:
        self.answer = answer
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.requests: list[str] = []
        self.connections = 0
        self._open: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        answered = False
        while True:
            line = reader.readline()
            if not line:
                return
            length = 0
            while (header := reader.readline()) not in (b"\r\n", b""):
                if header.lower().startswith(b"content-length:"):
                    length = int(header.split(b":")[1])
            reader.read(length)
            self.requests.append(line.split()[0].decode())
            if answered or not self.answer:
                if answered:
                    conn.close()  # dropped under a request in flight
                    return
                continue  # never answers: the client's read times out
            answered = True
            head = f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(OK)}"
            conn.sendall(head.encode() + b"\r\nConnection: keep-alive\r\n\r\n" + OK)

    def close(self) -> None:
        self.sock.close()
        for conn in self._open:
            conn.close()


@pytest.fixture
def node() -> Iterator[DroppingNode]:
    server = DroppingNode()
    yield server
    server.close()


def test_a_get_on_a_dropped_kept_alive_connection_is_tried_once_more(node):
    client = ScrapydClient(node.url, timeout=5)
    assert client.daemonstatus()["status"] == "ok"
    assert client.daemonstatus()["status"] == "ok"  # dropped on the kept connection: new one
    assert node.requests == ["GET", "GET", "GET"]
    assert node.connections == 2
    client.close()


def test_a_post_on_a_dropped_connection_is_not_sent_again(node):
    client = ScrapydClient(node.url, timeout=5)
    client.daemonstatus()
    with pytest.raises(ScrapydError) as raised:
        client.cancel("p", "j")
    assert raised.value.unreachable
    assert node.requests == ["GET", "POST"]
    assert node.connections == 1
    client.close()


def test_a_read_timeout_is_not_retried():
    silent = DroppingNode(answer=False)
    try:
        client = ScrapydClient(silent.url, timeout=0.5)
        with pytest.raises(ScrapydError):
            client.daemonstatus()
        assert silent.requests == ["GET"]
        assert silent.connections == 1
    finally:
        silent.close()


def test_a_refused_connection_is_not_retried():
    client = ScrapydClient(f"http://127.0.0.1:{free_port()}", timeout=2)
    with pytest.raises(ScrapydError) as raised:
        client.daemonstatus()
    assert raised.value.unreachable


def clear_proxies(monkeypatch) -> None:
    for name in ("HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_the_environment_proxy_is_read_once_and_still_honoured(monkeypatch):
    clear_proxies(monkeypatch)
    monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "localhost")
    session = node_session("http://127.0.0.1:6800/")
    assert session.trust_env is False  # no lookup of the environment per call
    assert session.proxies.get("http") == "http://127.0.0.1:9"
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    assert node_session("http://127.0.0.1:6800/").proxies == {}


def test_a_proxied_node_goes_through_the_proxy(monkeypatch):
    proxy = DroppingNode()  # a "proxy" that answers: the client must have called it
    try:
        clear_proxies(monkeypatch)
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        client = ScrapydClient(f"http://127.0.0.1:{free_port()}", timeout=5)
        assert client.daemonstatus()["status"] == "ok"
        assert proxy.requests == ["GET"]
    finally:
        proxy.close()


def test_credentials_are_sent_on_a_kept_session():
    session = ScrapydClient("http://127.0.0.1:1/", "user", "secret").session
    assert isinstance(session, requests.Session)
    assert session.auth == ("user", "secret")
