"""The bookshop's books and the HTML of their pages, generated from the book number alone."""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass

PER_PAGE = 20
BROKEN_EVERY_PAGE = 4  # every 4th list page links one book that does not exist
ADJECTIVES = ["Silent", "Crimson", "Hidden", "Last", "Golden", "Broken", "Northern", "Quiet"]
NOUNS = ["Harbour", "Orchard", "Archive", "Lantern", "Meridian", "Garden", "Compass", "Tide"]
BLANKABLE_FIELDS = frozenset({"title", "price", "rating", "stock", "upc"})
FORBIDDEN_STRIDE = 37  # prime to 100: spreads forbidden books evenly over every 100 numbers


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


def page_html(title: str, body: str) -> bytes:
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title></head><body>{body}</body></html>"
    ).encode()


def detail_html(book: Book, blank: frozenset[str]) -> bytes:
    """A detail page, with the fields named in ``blank`` rendered empty."""
    title = "" if "title" in blank else book.title
    price = "" if "price" in blank else f"£{book.price}"
    stars = "" if "rating" in blank else str(book.rating)
    stock = "" if "stock" in blank else f"In stock ({book.stock} available)"
    upc = "" if "upc" in blank else book.upc
    body = (
        f"<article class='product' data-upc='{upc}'>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p class='price'>{price}</p>"
        f"<p class='rating' data-stars='{stars}'>{'★' * int(stars or 0)}</p>"
        f"<p class='availability'>{stock}</p>"
        f"<table><tr><th>UPC</th><td class='upc'>{upc}</td></tr></table>"
        f"<p class='description'>A generated book, number {book.number}.</p>"
        "</article>"
    )
    return page_html(title or f"Book {book.number}", body)


def page_count(books: int, per_page: int = PER_PAGE) -> int:
    """How many list pages ``books`` books take."""
    return max(1, -(-books // per_page))


def list_html(number: int, books: int, per_page: int = PER_PAGE) -> bytes:
    """List page ``number`` of a shop of ``books`` books, ``per_page`` to a page: its books, a
    broken link on every ``BROKEN_EVERY_PAGE``-th page, and previous/next links."""
    pages = page_count(books, per_page)
    first = (number - 1) * per_page + 1
    rows = [
        f"<li class='book'><a href='{b.path}'>{html.escape(b.title)}</a>"
        f" <span class='price'>£{b.price}</span></li>"
        for b in (Book(n) for n in range(first, min(first + per_page, books + 1)))
    ]
    if number % BROKEN_EVERY_PAGE == 0:
        rows.append(
            f"<li class='book'><a href='/catalogue/book-missing-{number}.html'>Lost</a></li>"
        )
    pager = ""
    if number > 1:
        pager += f"<a class='prev' href='/catalogue/page-{number - 1}.html'>previous</a>"
    if number < pages:
        pager += f"<a class='next' href='/catalogue/page-{number + 1}.html'>next</a>"
    body = (
        f"<h1>Catalogue, page {number}</h1><ul class='books'>{''.join(rows)}</ul><nav>{pager}</nav>"
    )
    return page_html(f"Page {number}", body)
