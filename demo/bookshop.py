"""A small bookshop served on loopback: the target of local runs, tests and benchmarks.

List pages paginate over detail pages; a few list entries point at pages that do not exist; and
requests that arrive through a banned forward proxy (recognised by its ``Via`` header) get 429.
Everything is generated deterministically from the book number, so tests can predict the items.

Knobs that make a crawl break the control plane's monitors (``SiteConfig``, CLI flags):

- ``forbidden_share`` (``--forbidden-share``): book ``n``'s detail page answers 403 when
  ``(n * 37) % 100 < forbidden_share * 100``; 37 is prime to 100, so every run of 100 consecutive
  book numbers holds exactly ``ceil(forbidden_share * 100)`` forbidden pages
  (``SiteConfig.forbidden_books()`` lists them).
- ``blank_fields`` (``--blank-field``, repeatable): detail pages render these of ``title``,
  ``price``, ``rating``, ``stock``, ``upc`` empty. ``rating`` and ``stock`` are optional in
  ``BookItem``, so their items arrive with the field ``None``; a blank required field (``title``,
  ``price``, ``upc``) makes the validation pipeline drop every item (``crawlfleet/items_invalid``).
- ``stall_after`` (``--stall-after``, 0 = never): once this many detail pages have been answered
  200, every further request hangs for ``stall_seconds`` (``--stall-seconds``) and then gets 503,
  so a crawl stops growing but stays alive. ``DemoServer.reset_counters()`` starts counting anew
  and releases hanging requests; shutting the server down releases them too.

A running server reads ``server.config`` per request, so a test may swap it:
``server.config = dataclasses.replace(server.config, forbidden_share=0.2)``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from demo.catalogue import (
    BLANKABLE_FIELDS,
    BROKEN_EVERY_PAGE,
    FORBIDDEN_STRIDE,
    Book,
    detail_html,
    list_html,
    page_count,
    page_html,
)

__all__ = ["BLANKABLE_FIELDS", "Book", "DemoServer", "SiteConfig", "start_in_thread"]


@dataclass
class SiteConfig:
    books: int = 200
    banned_via: set[str] = field(default_factory=set)
    delay: float = 0.0
    forbidden_share: float = 0.0
    blank_fields: frozenset[str] = frozenset()
    stall_after: int = 0
    stall_seconds: float = 600.0

    def __post_init__(self) -> None:
        self.blank_fields = frozenset(self.blank_fields)
        unknown = self.blank_fields - BLANKABLE_FIELDS
        if unknown:
            raise ValueError(
                f"cannot blank {', '.join(sorted(unknown))}: "
                f"choose from {', '.join(sorted(BLANKABLE_FIELDS))}"
            )
        if not 0.0 <= self.forbidden_share <= 1.0:
            raise ValueError(f"forbidden_share must be within 0..1, not {self.forbidden_share}")
        if self.stall_after < 0 or self.stall_seconds < 0:
            raise ValueError("stall_after and stall_seconds must not be negative")

    def is_forbidden(self, number: int) -> bool:
        """Whether book ``number``'s detail page answers 403."""
        threshold = math.ceil(round(self.forbidden_share * 100, 6))
        return (number * FORBIDDEN_STRIDE) % 100 < threshold

    def forbidden_books(self) -> list[int]:
        return [n for n in range(1, self.books + 1) if self.is_forbidden(n)]

    @property
    def pages(self) -> int:
        return page_count(self.books)

    def broken_links(self) -> list[str]:
        return [
            f"/catalogue/book-missing-{p}.html"
            for p in range(1, self.pages + 1)
            if p % BROKEN_EVERY_PAGE == 0
        ]


class DemoHandler(BaseHTTPRequestHandler):
    server: DemoServer
    protocol_version = "HTTP/1.1"
    # Headers and body leave in one write (the handler flushes after each request), with Nagle
    # off: as two small writes, each response waited ~40 ms for the client's delayed ACK, which
    # capped a crawl of this site near 200 pages/s whatever the crawler did.
    wbufsize = 64 * 1024
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:
        pass  # quiet: benchmarks and tests hammer this server

    def do_GET(self) -> None:
        config = self.server.config
        self.server.hits.record(self.path)
        if self.server.stalled(config):
            self._hang(config)
            return
        if config.delay:
            time.sleep(config.delay)
        via = self.headers.get("Via", "")
        if any(name in via for name in config.banned_via):
            self._send(
                HTTPStatus.TOO_MANY_REQUESTS, page_html("Too many requests", "<h1>slow down</h1>")
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
            self._send(HTTPStatus.OK, page_html("slow", "<p>done</p>"))
        else:
            self._not_found()

    def _list_page(self, raw_number: str) -> None:
        config = self.server.config
        if not raw_number.isdigit() or not 1 <= int(raw_number) <= config.pages:
            self._not_found()
            return
        self._send(HTTPStatus.OK, list_html(int(raw_number), config.books))

    def _detail_page(self, raw_number: str) -> None:
        config = self.server.config
        if not raw_number.isdigit() or not 1 <= int(raw_number) <= config.books:
            self._not_found()
            return
        book = Book(int(raw_number))
        if config.is_forbidden(book.number):
            self._send(HTTPStatus.FORBIDDEN, page_html("Forbidden", "<h1>403</h1>"))
            return
        if not self.server.claim_detail(config):
            self._hang(config)
            return
        self._send(HTTPStatus.OK, detail_html(book, config.blank_fields))

    def _hang(self, config: SiteConfig) -> None:
        """A stalled site: hold the request, then answer 503; if released early, hang up."""
        if self.server.wait_while_stalled(config.stall_seconds):
            self.close_connection = True
            return
        self._send(HTTPStatus.SERVICE_UNAVAILABLE, page_html("Stalled", "<h1>503</h1>"))

    def _not_found(self) -> None:
        self._send(HTTPStatus.NOT_FOUND, page_html("Not found", "<h1>404</h1>"))

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
        self._stall_lock = threading.Lock()
        self.details_served = 0  # detail pages answered 200, towards ``stall_after``
        self._release = threading.Event()  # set to let hanging requests go

    def stalled(self, config: SiteConfig) -> bool:
        with self._stall_lock:
            return bool(config.stall_after) and self.details_served >= config.stall_after

    def claim_detail(self, config: SiteConfig) -> bool:
        """Count one detail page towards ``stall_after``; False once the site has stalled."""
        with self._stall_lock:
            if config.stall_after and self.details_served >= config.stall_after:
                return False
            self.details_served += 1
            return True

    def wait_while_stalled(self, seconds: float) -> bool:
        """Hold a request for up to ``seconds``; True if released early (reset or shutdown)."""
        with self._stall_lock:
            release = self._release
        return release.wait(seconds)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return  # the client went away (a crawl closing, a stalled request given up)
        super().handle_error(request, client_address)

    def reset_counters(self) -> None:
        """Forget hits and served detail pages, and let requests that hang go."""
        self.hits.reset()
        with self._stall_lock:
            self.details_served = 0
            self._release.set()
            self._release = threading.Event()

    def shutdown(self) -> None:
        self._release.set()
        super().shutdown()

    def server_close(self) -> None:
        self._release.set()
        super().server_close()

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
    parser.add_argument(
        "--forbidden-share", type=float, default=0.0, help="share of detail pages answering 403"
    )
    parser.add_argument(
        "--blank-field",
        action="append",
        default=[],
        choices=sorted(BLANKABLE_FIELDS),
        help="render this field empty on detail pages (repeatable)",
    )
    parser.add_argument(
        "--stall-after",
        type=int,
        default=0,
        help="after this many detail pages, hang every request (0: never)",
    )
    parser.add_argument("--stall-seconds", type=float, default=600.0, help="how long to hang")
    args = parser.parse_args(argv)
    try:
        config = SiteConfig(
            books=args.books,
            banned_via=set(args.ban_via),
            forbidden_share=args.forbidden_share,
            blank_fields=frozenset(args.blank_field),
            stall_after=args.stall_after,
            stall_seconds=args.stall_seconds,
        )
    except ValueError as exc:
        parser.error(str(exc))
    server = DemoServer((args.host, args.port), config)
    print(f"demo site on {server.base_url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
