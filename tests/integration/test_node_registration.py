"""A node registering itself with the control plane and heartbeating, through a stub control
plane that fails on demand and a real one that is unreachable. The node itself: test_node.py.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from controlplane.lib.procutil import free_port

# --- units -----------------------------------------------------------------------------------


class _StubControlPlane(ThreadingHTTPServer):
    """Records registration POSTs; answers 503 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _StubHandler)
        self.fail_first = fail_first
        self.posts: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _StubHandler(BaseHTTPRequestHandler):
    server: _StubControlPlane

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        with self.server.lock:
            self.server.posts.append(
                {
                    "path": self.path,
                    "authorization": self.headers.get("Authorization"),
                    "content_type": self.headers.get("Content-Type"),
                    "json": json.loads(body),
                }
            )
            failing = len(self.server.posts) <= self.server.fail_first
        self.send_response(503 if failing else 200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def stub_control_plane() -> Iterator[_StubControlPlane]:
    server = _StubControlPlane(fail_first=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.scrapyd
def test_node_registers_and_heartbeats_through_failures(scrapyd_nodes, stub_control_plane):
    [node] = scrapyd_nodes(
        1,
        register=stub_control_plane.url + "/",
        token="s3cret-token",
        heartbeat=0.3,
        tags=["eu", "fast"],
    )
    node.wait_for(lambda: len(stub_control_plane.posts) >= 4, timeout=20, what="heartbeats")
    assert node.alive()
    post = stub_control_plane.posts[-1]
    assert post["path"] == "/api/v1/nodes/register"
    assert post["authorization"] == "Bearer s3cret-token"
    assert post["content_type"] == "application/json"
    assert post["json"] == {
        "name": node.name,
        "url": node.url,
        "max_proc": 2,
        "tags": ["eu", "fast"],
        "scrapyd_version": "1.6.0",
    }
    log = node.log_tail()
    assert "registration with" in log
    assert "HTTP 503" in log


@pytest.mark.scrapyd
def test_unreachable_control_plane_never_stops_the_node(scrapyd_nodes):
    [node] = scrapyd_nodes(
        1, register=f"http://127.0.0.1:{free_port()}", token="hidden-token", heartbeat=0.2
    )
    node.wait_for(lambda: "unreachable" in node.log_tail(), timeout=10, what="failed attempt")
    assert node.get("daemonstatus.json")["status"] == "ok"
    log = node.log_tail()
    assert "hidden-token" not in log
    assert "Bearer" not in log
