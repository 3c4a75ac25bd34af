"""The demo bookshop, pre-rendered and served by a bare asyncio HTTP/1.1 loop: a target that costs
a crawl almost nothing, so a benchmark measures the crawler rather than the site.

    python bench/static_site.py --port 8801 --books 9412 [--per-page 20]

Every page of ``demo.bookshop`` for that many books (list pages, detail pages, the broken links'
404s, ``robots.txt``) is rendered once at start-up into complete responses; a request costs a
dictionary lookup and a write. The server counts hits per path, which is the benchmark's proof of
"fetched exactly once": ``GET /__hits`` answers them as JSON with the wall-clock times of the first
and last counted hit, ``GET /__reset`` forgets them. Neither is counted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import contextlib

from demo.catalogue import (
    BROKEN_EVERY_PAGE,
    PER_PAGE,
    Book,
    detail_html,
    list_html,
    page_count,
    page_html,
)


def response(status: str, body: bytes, ctype: str = "text/html; charset=utf-8") -> bytes:
    head = f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def site_paths(books: int, per_page: int) -> dict[str, bytes]:
    """Every page a full crawl of the shop fetches, path -> the whole response."""
    pages = page_count(books, per_page)
    found = {
        f"/catalogue/page-{n}.html": response("200 OK", list_html(n, books, per_page))
        for n in range(1, pages + 1)
    }
    found.update(
        {
            Book(n).path: response("200 OK", detail_html(Book(n), frozenset()))
            for n in range(1, books + 1)
        }
    )
    missing = response("404 Not Found", page_html("Not found", "<h1>404</h1>"))
    found.update(
        {
            f"/catalogue/book-missing-{n}.html": missing
            for n in range(1, pages + 1)
            if n % BROKEN_EVERY_PAGE == 0
        }
    )
    return found


class StaticSite:
    def __init__(self, books: int, per_page: int) -> None:
        self.pages = site_paths(books, per_page)
        self.robots = response("200 OK", b"User-agent: *\nDisallow: /private/\n", "text/plain")
        self.not_found = response("404 Not Found", page_html("Not found", "<h1>404</h1>"))
        self.hits: dict[str, int] = {}
        self.first = self.last = 0.0

    def answer(self, path: str) -> bytes:
        if path == "/__hits":
            body = json.dumps({"hits": self.hits, "first": self.first, "last": self.last})
            return response("200 OK", body.encode(), "application/json")
        if path == "/__reset":
            self.hits, self.first, self.last = {}, 0.0, 0.0
            return response("200 OK", b"{}", "application/json")
        now = time.time()
        self.first = self.first or now
        self.last = now
        self.hits[path] = self.hits.get(path, 0) + 1
        if path == "/robots.txt":
            return self.robots
        return self.pages.get(path, self.not_found)

    async def serve_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                target = head.split(b" ", 2)[1].decode("latin-1")
                writer.write(self.answer(target.split("?", 1)[0]))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()


async def serve(host: str, port: int, books: int, per_page: int) -> None:
    site = StaticSite(books, per_page)
    server = await asyncio.start_server(site.serve_connection, host, port, backlog=256)
    print(f"static bookshop of {len(site.pages)} pages on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8801)
    parser.add_argument("--books", type=int, default=200)
    parser.add_argument("--per-page", type=int, default=PER_PAGE, help="books per list page")
    args = parser.parse_args()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.books, args.per_page))


if __name__ == "__main__":
    main()
