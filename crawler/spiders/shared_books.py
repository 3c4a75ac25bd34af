"""The ``books`` list-and-detail crawl, fanned out over several workers through Redis.

Start K workers with the same ``crawl_id`` (and the same ``start_url``): the list page is fetched
once, its detail pages are spread over whichever workers are free, and each book lands in exactly
one worker's output.
"""

from __future__ import annotations

from crawler.spiders.books import BOOK_ARGUMENTS, BookCatalogue
from crawler.spiders.shared import SharedSpider


class SharedBooksSpider(BookCatalogue, SharedSpider):
    name = "shared_books"
    arguments = {**SharedSpider.arguments, **BOOK_ARGUMENTS}
