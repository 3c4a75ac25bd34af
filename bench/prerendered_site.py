"""The demo bookshop pre-rendered and served from memory, so that a crawl benchmark measures the crawl.

    .venv/bin/python bench/prerendered_site.py --port 8800 --books 5000

The demo site (``demo.bookshop``) renders every page in Python on a thread per connection: about
as much CPU per page as the crawl spends parsing it, on a 2-core machine that hides the cost of
whatever runs in the crawl. This script asks an in-process demo site once for every page a
``books`` crawl fetches (robots.txt, list pages, detail pages, the broken links), keeps the
complete HTTP responses as bytes, and answers from an asyncio server with HTTP/1.1 keep-alive: a
dictionary look-up and one write per request. The pages are byte for byte the demo site's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from demo.bookshop import DemoServer, SiteConfig
from demo.catalogue import Book

NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\nnot found"
)


def site_paths(config: SiteConfig) -> list[str]:
    """Every path a full crawl of the site asks for."""
    paths = ["/robots.txt"]
    paths += [f"/catalogue/page-{n}.html" for n in range(1, config.pages + 1)]
    paths += [Book(n).path for n in range(1, config.books + 1)]
    paths += config.broken_links()
    return paths


class _NoDelayDemoServer(DemoServer):
    """The demo site with Nagle off: it writes headers and body apart, and each request would
    otherwise wait out the client's delayed acknowledgement (40 ms)."""

    def get_request(self) -> tuple[socket.socket, object]:
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


def render(config: SiteConfig) -> dict[bytes, bytes]:
    """Path -> the demo site's complete response to it (status line, headers, body)."""
    server = _NoDelayDemoServer(("127.0.0.1", 0), config)
    threading.Thread(target=server.serve_forever, name="demosite", daemon=True).start()
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port)
    pages: dict[bytes, bytes] = {}
    try:
        for path in site_paths(config):
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            head = [f"HTTP/1.1 {response.status} {response.reason}"]
            head += [f"{name}: {value}" for name, value in response.getheaders()]
            pages[path.encode()] = ("\r\n".join(head) + "\r\n\r\n").encode() + body
    finally:
        connection.close()
        server.shutdown()
        server.server_close()
    return pages


class Responder(asyncio.Protocol):
    """HTTP/1.1 GET only, keep-alive, pipelining tolerated: enough for Scrapy's client."""

    def __init__(self, pages: dict[bytes, bytes]) -> None:
        self.pages = pages
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            request, self.buffer = self.buffer[:end], self.buffer[end + 4 :]
            parts = request.split(b" ", 2)
            path = parts[1] if len(parts) > 1 else b""
            assert self.transport is not None
            self.transport.write(self.pages.get(path, NOT_FOUND))


async def serve(host: str, port: int, pages: dict[bytes, bytes]) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Responder(pages), host, port, backlog=128)
    print(f"pre-rendered demo site on http://{host}:{port} ({len(pages)} pages)", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--books", type=int, default=200)
    args = parser.parse_args()
    pages = render(SiteConfig(books=args.books))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, pages))


if __name__ == "__main__":
    main()
