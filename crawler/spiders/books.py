"""List-and-detail crawl of a bookshop: follow pagination, parse every detail page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from scrapy.http import Response

from crawler.items import BookItem
from crawler.spiders.base import Arg, BaseSpider, positive_int, url_argument

DEFAULT_START = "http://127.0.0.1:8800/catalogue/page-1.html"
# The next list page goes before the detail pages already queued: it is the only request that
# finds more work, so fetching it first keeps the queue full. Without it a shared crawl's Redis
# queue (a sorted set, equal priorities in no useful order) drained at every list page, and the
# workers that ran dry sat idle until their next look at Redis. For the same reason parse()
# yields it before its detail pages: in a shared crawl each yielded request is a Redis round
# trip, and an idle worker can take the next list page only once it is there.
LIST_PRIORITY = 1


def parse_book(response: Response) -> BookItem:
    """Build a BookItem from a detail page (shared with the Redis-fed variant)."""
    product = response.css("article.product")
    price = product.css("p.price::text").get(default="").lstrip("£").strip()
    stars = product.css("p.rating::attr(data-stars)").get()
    availability = product.css("p.availability::text").re_first(r"\((\d+) available\)")
    return BookItem(
        upc=product.css("td.upc::text").get(default="").strip(),
        title=product.css("h1::text").get(default="").strip(),
        price=price,  # cleaned to a float by the validation pipeline
        url=response.url,
        rating=stars,
        stock=availability,
    )


BOOK_ARGUMENTS = {
    "start_url": Arg(url_argument, DEFAULT_START, "first list page"),
    "max_pages": Arg(positive_int, 0, "stop after this many list pages (0: all)"),
}


class BookCatalogue:
    """List-and-detail parsing, shared by the local spider and its Redis-fed variant.

    The page number travels in ``meta``, which scrapy-redis stores with a queued request, so
    ``max_pages`` holds across the workers of a shared crawl too.
    """

    start_url: str
    max_pages: int

    def start_urls_from_arguments(self) -> list[str]:
        return [self.start_url]

    def parse(self, response: Response, **kwargs: Any) -> Iterator[Any]:
        page = response.meta.get("page", 1)
        next_page = response.css("a.next::attr(href)").get()
        if next_page and (not self.max_pages or page < self.max_pages):
            yield response.follow(
                next_page, callback=self.parse, meta={"page": page + 1}, priority=LIST_PRIORITY
            )
        yield from response.follow_all(css="ul.books li.book a", callback=self.parse_book)

    def parse_book(self, response: Response) -> BookItem:
        return parse_book(response)


class BooksSpider(BookCatalogue, BaseSpider):
    name = "books"
    arguments = BOOK_ARGUMENTS
