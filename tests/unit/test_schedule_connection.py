"""The dispatcher's own schedule.json connection against a stub node, for answers and
disconnects a real Scrapyd rarely gives on demand. Against real nodes: tests/integration/
test_dispatch.py."""

from __future__ import annotations

import base64
import re
import threading
import time
from typing import Any

import pytest

from controlplane.lib.procutil import free_port
from controlplane.lib.scheduleconnection import ScheduleConnection


class _StubNode:
    """A tiny HTTP server answering schedule.json with canned replies, recording requests."""

    def __init__(self, replies: list[tuple[int, bytes]], close_after_each: bool = False) -> None:
        import http.server

        self.replies = list(replies)
        self.requests: list[dict[str, Any]] = []
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                from urllib.parse import parse_qs

                body = self.rfile.read(int(self.headers["Content-Length"]))
                stub.requests.append(
                    {
                        "path": self.path,
                        "auth": self.headers.get("Authorization"),
                        "form": parse_qs(body.decode()),
                    }
                )
                status, payload = (
                    stub.replies.pop(0) if stub.replies else (200, b'{"status": "ok"}')
                )
                self.send_response(status)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
                if close_after_each:
                    self.close_connection = True  # without saying so, as an idle timeout would

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/prefix"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_node_connection_reads_answers_like_the_scrapyd_client():
    from controlplane.lib.scrapyd import ScrapydError

    stub = _StubNode(
        [
            (200, b'{"status": "ok", "jobid": "abc"}'),
            (200, b'{"status": "error", "message": "spider \'x\' not found"}'),
            (401, b"no"),
            (500, b"boom"),
            (200, b"<html>not json</html>"),
        ]
    )
    try:
        conn = ScheduleConnection(stub.url, "ci", "s3cret", timeout=5)
        assert conn.schedule([("project", "p"), ("spider", "s"), ("setting", "A=1=2")]) == "abc"
        expected = ["spider 'x' not found", "credentials (401)", "HTTP 500", "not JSON"]
        for message in expected:
            with pytest.raises(ScrapydError, match=re.escape(message)) as refused:
                conn.schedule([("project", "p")])
            assert not refused.value.unreachable
        first = stub.requests[0]
        assert first["path"] == "/prefix/schedule.json"
        assert first["auth"] == "Basic " + base64.b64encode(b"ci:s3cret").decode()
        assert first["form"]["setting"] == ["A=1=2"]
    finally:
        stub.close()
    nobody = ScheduleConnection(f"http://127.0.0.1:{free_port()}", "", "", timeout=5)
    with pytest.raises(ScrapydError) as unreachable:
        nobody.schedule([("project", "p")])
    assert unreachable.value.unreachable


def test_node_connection_reconnects_before_sending_never_after():
    stub = _StubNode([], close_after_each=True)
    try:
        conn = ScheduleConnection(stub.url, "", "", timeout=5)
        for _ in range(3):
            conn.schedule([("project", "p")])
            time.sleep(0.05)  # the node has closed the connection by now
        assert len(stub.requests) == 3  # each sent once, none repeated
    finally:
        stub.close()
