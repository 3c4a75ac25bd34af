"""A small bookshop served on loopback: the target of local runs, tests and benchmarks.

List pages paginate over detail pages; a few list entries point at pages that do not exist; and
requests that arrive through a banned forward proxy (recognised by its ``Via`` header) get 429.
Everything is generated deterministically from the book number, so tests can predict the items.
"""

from __future__ import annotations

import argparse
import hashlib
import html
import json
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

PER_PAGE = 20
BROKEN_EVERY_PAGE = 4  # every 4th list page links one book that does not exist
ADJECTIVES = ["Silent", "Crimson", "Hidden", "Last", "Golden", "Broken", "Northern", "Quiet"]
NOUNS = ["Harbour", "Orchard", "Archive", "Lantern", "Meridian", "Garden", "Compass", "Tide"]


@dataclass(frozen=True)
class Book:
    number: int

    @property
    def upc(self) -> str:
        return hashlib.sha1(f"book-{self.number}".encode()).hexdigest()[:16]

    @property
    def title(self) -> str:
        n = self.number
        return f"The {ADJECTIVES[n % 8]} {NOUNS[(n // 8) % 8]} {n}"

    @property
    def price(self) -> str:
        return f"{5 + (self.number * 37) % 60}.{(self.number * 13) % 100:02d}"

    @property
    def rating(self) -> int:
        return 1 + self.number % 5

    @property
    def stock(self) -> int:
        return (self.number * 7) % 23

    @property
    def path(self) -> str:
        return f"/catalogue/book-{self.number}.html"


@dataclass
class SiteConfig:
    books: int = 200
    banned_via: set[str] = field(default_factory=set)
    delay: float = 0.0

    @property
    def pages(self) -> int:
        return max(1, -(-self.books // PER_PAGE))

    def broken_links(self) -> list[str]:
        return [
            f"/catalogue/book-missing-{p}.html"
            for p in range(1, self.pages + 1)
            if p % BROKEN_EVERY_PAGE == 0
        ]


def _page(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>{body}</body></html>"
    ).encode()


class DemoHandler(BaseHTTPRequestHandler):
    server: DemoServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: benchmarks and tests hammer this server

    def do_GET(self) -> None:
        config = self.server.config
        self.server.hits.record(self.path)
        if config.delay:
            time.sleep(config.delay)
        via = self.headers.get("Via", "")
        if any(name in via for name in config.banned_via):
            self._send(
                HTTPStatus.TOO_MANY_REQUESTS, _page("Too many requests", "<h1>slow down</h1>")
            )
            return
        url = urlsplit(self.path)
        route = url.path
        if route in ("/", "/index.html"):
            self._redirect("/catalogue/page-1.html")
        elif route == "/robots.txt":
            self._send(HTTPStatus.OK, b"User-agent: *\nDisallow: /private/\n", "text/plain")
        elif route == "/echo":
            self._send_json({"path": self.path, "headers": dict(self.headers.items())})
        elif route.startswith("/catalogue/page-") and route.endswith(".html"):
            self._list_page(route.removeprefix("/catalogue/page-").removesuffix(".html"))
        elif route.startswith("/catalogue/book-") and route.endswith(".html"):
            self._detail_page(route.removeprefix("/catalogue/book-").removesuffix(".html"))
        elif route == "/slow":
            seconds = float(parse_qs(url.query).get("seconds", ["1"])[0])
            time.sleep(min(seconds, 60.0))
            self._send(HTTPStatus.OK, _page("slow", "<p>done</p>"))
        else:
            self._not_found()

    def _list_page(self, raw_number: str) -> None:
        config = self.server.config
        if not raw_number.isdigit() or not 1 <= int(raw_number) <= config.pages:
            self._not_found()
            return
        number = int(raw_number)
        first = (number - 1) * PER_PAGE + 1
        books = [Book(n) for n in range(first, min(first + PER_PAGE, config.books + 1))]
        rows = [
            f"<li class='book'><a href='{b.path}'>{html.escape(b.title)}</a>"
            f" <span class='price'>£{b.price}</span></li>"
            for b in books
        ]
        if number % BROKEN_EVERY_PAGE == 0:
            rows.append(
                f"<li class='book'><a href='/catalogue/book-missing-{number}.html'>Lost</a></li>"
            )
        pager = ""
        if number > 1:
            pager += f"<a class='prev' href='/catalogue/page-{number - 1}.html'>previous</a>"
        if number < config.pages:
            pager += f"<a class='next' href='/catalogue/page-{number + 1}.html'>next</a>"
        body = f"<h1>Catalogue, page {number}</h1><ul class='books'>{''.join(rows)}</ul><nav>{pager}</nav>"
        self._send(HTTPStatus.OK, _page(f"Page {number}", body))

    def _detail_page(self, raw_number: str) -> None:
        if not raw_number.isdigit() or not 1 <= int(raw_number) <= self.server.config.books:
            self._not_found()
            return
        book = Book(int(raw_number))
        body = (
            f"<article class='product' data-upc='{book.upc}'>"
            f"<h1>{html.escape(book.title)}</h1>"
            f"<p class='price'>£{book.price}</p>"
            f"<p class='rating' data-stars='{book.rating}'>{'★' * book.rating}</p>"
            f"<p class='availability'>In stock ({book.stock} available)</p>"
            f"<table><tr><th>UPC</th><td class='upc'>{book.upc}</td></tr></table>"
            f"<p class='description'>A generated book, number {book.number}.</p>"
            "</article>"
        )
        self._send(HTTPStatus.OK, _page(book.title, body))

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, _page("Not found", "<h1>404</h1>"))

    def _redirect(self, location: str) -> None:
        self.send_response(HTTPStatus.FOUND)
        self.send_header("Location", location)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def _send_json(self, payload: object) -> None:
        self._send(HTTPStatus.OK, json.dumps(payload).encode(), "application/json")

    def _send(
        self, status: HTTPStatus, body: bytes, ctype: str = "text/html; charset=utf-8"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class HitCounter:
    """Counts requests per path, so tests can assert 'fetched exactly once'."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.counts: dict[str, int] = {}

    def record(self, path: str) -> None:
        with self._lock:
            self.counts[path] = self.counts.get(path, 0) + 1

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.counts)

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], config: SiteConfig) -> None:
        super().__init__(address, DemoHandler)
        self.config = config
        self.hits = HitCounter()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


def start_in_thread(config: SiteConfig | None = None, port: int = 0) -> DemoServer:
    """Serve the site from a daemon thread; call ``shutdown()`` and ``server_close()`` to stop."""
    server = DemoServer(("127.0.0.1", port), config or SiteConfig())
    threading.Thread(target=server.serve_forever, name="demosite", daemon=True).start()
    return server


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the crawlfleet demo bookshop.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--books", type=int, default=200)
    parser.add_argument("--ban-via", action="append", default=[], help="answer 429 via this proxy")
    args = parser.parse_args(argv)
    server = DemoServer(
        (args.host, args.port), SiteConfig(books=args.books, banned_via=set(args.ban_via))
    )
    print(f"demo site on {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
