"""Local runs with the normal `scrapy crawl`, against the demo site."""

from __future__ import annotations

import csv

from demo.bookshop import Book


def test_books_spider_writes_every_book_to_csv(run_crawl, demo_site):
    result = run_crawl("books", args={"start_url": f"{demo_site.base_url}/catalogue/page-1.html"})
    assert result.returncode == 0, result.output
    [path] = result.csv_files("books")
    assert not list(path.parent.glob("*.part"))
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 200
    assert {r["upc"] for r in rows} == {Book(n).upc for n in range(1, 201)}
    book7 = next(r for r in rows if r["upc"] == Book(7).upc)
    assert book7["title"] == Book(7).title
    assert float(book7["price"]) == float(Book(7).price)
    assert int(book7["rating"]) == Book(7).rating
    assert "'finish_reason': 'finished'" in result.output


def test_max_pages_limits_the_crawl(run_crawl, demo_site):
    result = run_crawl(
        "books",
        args={"start_url": f"{demo_site.base_url}/catalogue/page-1.html", "max_pages": "2"},
    )
    assert result.returncode == 0, result.output
    [path] = result.csv_files("books")
    assert len(path.read_text().splitlines()) == 1 + 40


def test_unknown_argument_is_a_clear_error_before_any_request(run_crawl, demo_site):
    demo_site.hits.reset()
    result = run_crawl("books", args={"start_url": demo_site.base_url, "max_page": "2"})
    assert result.returncode != 0
    assert "invalid arguments for spider 'books'" in result.output
    assert "unknown argument(s) max_page (known: max_pages, start_url)" in result.output
    assert demo_site.hits.snapshot() == {}


def test_malformed_arguments_are_reported_together(run_crawl):
    result = run_crawl("books", args={"start_url": "ftp://nowhere", "max_pages": "many"})
    assert result.returncode != 0
    assert "argument 'start_url': expected an http(s) URL" in result.output
    assert "argument 'max_pages': invalid literal for int()" in result.output
