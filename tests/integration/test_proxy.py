"""The proxy pool: configuration checks in-process, and real crawls through real tinyproxies.

The crawl tests put one or two tinyproxy instances between Scrapy and the demo site, which names
the proxy a request came through in its ``Via`` header and can answer 429 to a chosen proxy.
"""

from __future__ import annotations

import ast
import csv
import re
from typing import Any

import pytest
from scrapy import Request
from scrapy.downloadermiddlewares.httpproxy import HttpProxyMiddleware
from scrapy.exceptions import DownloadConnectionRefusedError, IgnoreRequest, NotConfigured
from scrapy.http import HtmlResponse
from scrapy.utils.test import get_crawler

from crawler.middlewares.proxy import CLOSE_REASON, META_PROXY, ProxyPoolMiddleware
from crawler.proxypool import ProxyConfigError, ProxyPool, build_pool, parse_proxy_url, redact
from demo.bookshop import Book

BAN_SETTINGS = {"PROXY_BAN_CODES": [403, 429, 503], "PROXY_BAN_COOLDOWN": 600.0}


def crawl_stats(output: str) -> dict[str, Any]:
    """The stats dict Scrapy dumps at the end of ``scrapy crawl`` (datetimes dropped)."""
    match = re.search(r"Dumping Scrapy stats:\n(\{.*?\})\n", output, re.S)
    assert match, output[-3000:]
    text = re.sub(r"datetime\.datetime\([^)]*\)", "None", match.group(1))
    return ast.literal_eval(text)


def echo_requests(base_url: str, count: int, prefix: str = "r") -> list[dict[str, Any]]:
    return [{"tag": f"{prefix}{n}", "url": f"{base_url}/echo?n={prefix}{n}"} for n in range(count)]


# --- configuration, in-process -----------------------------------------------------------------


def test_proxy_urls_are_parsed_without_keeping_credentials_in_the_url():
    proxy = parse_proxy_url("http://alice:p%40ss@127.0.0.1:3128")
    assert proxy.url == "http://127.0.0.1:3128"
    assert proxy.label == "127.0.0.1:3128"
    assert proxy.auth == b"Basic YWxpY2U6cEBzcw=="  # alice:p@ss
    assert "p@ss" not in repr(proxy)
    assert parse_proxy_url("http://proxy.example:8080/").auth is None


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("127.0.0.1:3128", "scheme must be http"),
        ("socks5://127.0.0.1:1080", "scheme must be http, got 'socks5'"),
        ("http://127.0.0.1", "missing port"),
        ("http://:3128", "missing host"),
        ("http://127.0.0.1:99999", "Port out of range"),
        ("http://127.0.0.1:3128/path", "unexpected path"),
        ("http://alice@127.0.0.1:3128", "credentials must be user:pass"),
    ],
)
def test_malformed_proxy_urls_are_rejected_by_name(url, problem):
    with pytest.raises(ProxyConfigError, match=re.escape(problem)) as info:
        parse_proxy_url(url)
    assert repr(redact(url)) in str(info.value)


def test_errors_name_every_bad_entry_and_mask_passwords():
    with pytest.raises(ProxyConfigError) as info:
        build_pool(["http://ok:1", "http://bob:hunter2@host", "ftp://x:2"])
    message = str(info.value)
    assert "'http://bob:***@host': missing port" in message
    assert "'ftp://x:2': scheme must be http" in message
    assert "hunter2" not in message
    assert redact("http://u:secret@h:1/x") == "http://u:***@h:1/x"
    assert redact("u:secret@h") == "u:***@h"
    assert redact("http://u:se/cr@et@h:1") == "http://u:***@h:1"
    assert redact("http://token@h:1") == "http://***@h:1"
    assert redact("http://h:1") == "http://h:1"


def test_same_gateway_with_two_accounts_gets_two_labels():
    pool = build_pool(["http://a:1@gw:8000", "http://b:2@gw:8000", "http://a:1@gw:8000"])
    assert [p.label for p in pool] == ["gw:8000", "gw:8000#2"]


def test_pool_rotates_over_usable_proxies_and_benches_for_the_cooldown():
    now = [0.0]
    pool = ProxyPool(build_pool(["http://a:1", "http://b:2", "http://c:3"]), clock=lambda: now[0])
    assert [pool.pick().label for _ in range(4)] == ["a:1", "b:2", "c:3", "a:1"]
    assert pool.bench(pool.by_label["b:2"], 10) is True
    assert pool.bench(pool.by_label["b:2"], 10) is False  # already benched: not a new ban
    assert [pool.pick().label for _ in range(3)] == ["c:3", "a:1", "c:3"]
    now[0] = 10.5
    assert {pool.pick().label for _ in range(3)} == {"a:1", "b:2", "c:3"}
    pool.disable(pool.by_label["a:1"], "407")
    now[0] = 1e9
    assert {pool.pick().label for _ in range(4)} == {"b:2", "c:3"}


def test_empty_pool_disables_the_middleware():
    crawler = get_crawler(settings_dict={"PROXY_LIST": [], "PROXY_FILE": ""})
    with pytest.raises(NotConfigured):
        ProxyPoolMiddleware.from_crawler(crawler)


def test_missing_proxy_file_is_a_startup_error(tmp_path):
    crawler = get_crawler(settings_dict={"PROXY_FILE": str(tmp_path / "nope.txt")})
    with pytest.raises(ProxyConfigError, match=r"PROXY_FILE .*nope\.txt.* cannot be read"):
        ProxyPoolMiddleware.from_crawler(crawler)


def make_middleware(proxies: list[str], **settings: Any) -> ProxyPoolMiddleware:
    crawler = get_crawler(
        settings_dict={"PROXY_LIST": proxies, "PROXY_MAX_RETRIES": 2, **BAN_SETTINGS, **settings}
    )
    return ProxyPoolMiddleware.from_crawler(crawler)


def test_credentials_header_survives_httpproxy_middleware_across_proxy_changes():
    """One owner for Proxy-Authorization, whatever proxy the previous attempt used."""
    ours = make_middleware(["http://alice:s3cret@127.0.0.1:1", "http://127.0.0.1:2"])
    stock = HttpProxyMiddleware()
    request = Request("http://example.test/")

    def attempt(req: Request) -> Request:
        ours.process_request(req)
        stock.process_request(req)
        return req

    first = attempt(request)
    assert first.meta["proxy"] == "http://127.0.0.1:1"
    assert first.headers[b"Proxy-Authorization"] == b"Basic YWxpY2U6czNjcmV0"
    second = attempt(first.copy())  # e.g. a RetryMiddleware copy: goes to the other proxy
    assert second.meta["proxy"] == "http://127.0.0.1:2"
    assert b"Proxy-Authorization" not in second.headers
    third = attempt(second.copy())  # and back: the stale _auth_proxy marker must not drop it
    assert third.meta["proxy"] == "http://127.0.0.1:1"
    assert third.headers[b"Proxy-Authorization"] == b"Basic YWxpY2U6czNjcmV0"


def test_requests_with_their_own_proxy_choice_are_left_alone():
    mw = make_middleware(["http://127.0.0.1:1"])
    own = Request("http://example.test/a", meta={"proxy": "http://10.0.0.1:8080"})
    direct = Request("http://example.test/b", meta={"proxy": None})
    opted_out = Request("http://example.test/c", meta={"dont_proxy": True})
    for request in (own, direct, opted_out):
        mw.process_request(request)
        assert META_PROXY not in request.meta
    assert own.meta["proxy"] == "http://10.0.0.1:8080"
    assert direct.meta["proxy"] is None
    assert "proxy" not in opted_out.meta
    foreign = HtmlResponse(own.url, status=429, request=own)
    assert mw.process_response(own, foreign) is foreign


def test_ban_resends_through_another_proxy_until_the_retry_budget_is_spent():
    mw = make_middleware(["http://alice:pw@127.0.0.1:1", "http://127.0.0.1:2", "http://h:3"])
    request = Request("http://example.test/page", priority=5)
    mw.process_request(request)
    banned = HtmlResponse(request.url, status=429, request=request)
    retry = mw.process_response(request, banned)
    assert isinstance(retry, Request)
    assert retry.dont_filter
    assert retry.priority == 5
    assert "proxy" not in retry.meta
    assert b"Proxy-Authorization" not in retry.headers  # no secret travels through the queue
    mw.process_request(retry)
    assert retry.meta["proxy"] == "http://127.0.0.1:2"
    stats = mw.stats.get_stats()
    assert stats["proxy/127.0.0.1:1/bans"] == 1
    assert stats["proxy/retries"] == 1

    error = DownloadConnectionRefusedError("Connection was refused by other side")
    third = mw.process_exception(retry, error)
    assert isinstance(third, Request)
    mw.process_request(third)
    assert third.meta["proxy"] == "http://h:3"
    # Now every proxy is benched: the failure stands and the spider is asked to close.
    assert mw.process_exception(third, error) is None
    assert mw.stats.get_value("proxy/retries_exhausted") is None
    assert mw.stats.get_value("proxy/all_banned") is True


def test_exhausted_retries_let_the_last_answer_through():
    mw = make_middleware(["http://127.0.0.1:1", "http://127.0.0.1:2"], PROXY_BAN_COOLDOWN=0.0)
    request = Request("http://example.test/page")
    for _ in range(2):
        mw.process_request(request)
        request = mw.process_response(request, HtmlResponse(request.url, status=403))
        assert isinstance(request, Request)
    mw.process_request(request)
    last = HtmlResponse(request.url, status=403, request=request)
    assert mw.process_response(request, last) is last
    assert mw.stats.get_value("proxy/retries_exhausted") == 1


def test_no_usable_proxy_ignores_the_request():
    mw = make_middleware(["http://127.0.0.1:1"])
    mw.pool.bench(mw.pool.proxies[0], 600)
    with pytest.raises(IgnoreRequest, match="no usable proxy"):
        mw.process_request(Request("http://example.test/"))
    assert mw.stats.get_value("proxy/all_banned") is True


# --- real crawls through tinyproxy ---------------------------------------------------------------


@pytest.mark.proxy
def test_requests_go_through_both_proxies_in_turn(two_proxies, demo_site, run_echo_crawl):
    a, b = two_proxies
    result = run_echo_crawl(
        echo_requests(demo_site.base_url, 8), settings={"PROXY_LIST": [a.url, b.url]}
    )
    assert result.finish_reason == "finished", result.output[-3000:]
    assert [r.status for r in result.records] == [200] * 8
    vias = [r.via for r in result.records]
    assert sum(a.via_name in via for via in vias) == 4, vias
    assert sum(b.via_name in via for via in vias) == 4, vias
    for record in result.records:
        expected = a if a.via_name in record.via else b
        assert record.proxy == expected.url
    assert result.stats[f"proxy/{a.hostport}/requests"] == 4
    assert result.stats[f"proxy/{b.hostport}/requests"] == 4
    assert result.stats["proxy/pool_size"] == 2


@pytest.mark.proxy
def test_own_proxy_choices_bypass_the_pool_in_a_real_crawl(two_proxies, demo_site, run_echo_crawl):
    a, b = two_proxies
    requests = [
        *echo_requests(demo_site.base_url, 2, "pool"),
        {"tag": "own", "url": f"{demo_site.base_url}/echo?own", "meta": {"proxy": b.url}},
        {"tag": "direct", "url": f"{demo_site.base_url}/echo?direct", "meta": {"dont_proxy": 1}},
    ]
    result = run_echo_crawl(requests, settings={"PROXY_LIST": [a.url]})
    assert result.finish_reason == "finished", result.output[-3000:]
    assert a.via_name in result.by_tag("pool0").via
    assert a.via_name in result.by_tag("pool1").via
    assert b.via_name in result.by_tag("own").via
    assert result.by_tag("direct").via == ""
    assert result.stats[f"proxy/{a.hostport}/requests"] == 2


@pytest.mark.proxy
def test_proxy_banned_by_the_site_is_benched_and_the_crawl_completes(
    two_proxies, fresh_demo_site, run_crawl
):
    """A real ``scrapy crawl``; the pool comes from the PROXY_LIST environment variable."""
    a, b = two_proxies
    fresh_demo_site.config.banned_via.add(a.via_name)
    result = run_crawl(
        "books",
        args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
        settings={"PROXY_BAN_COOLDOWN": "600"},
        env={"PROXY_LIST": f"{a.url},{b.url}"},
    )
    assert result.returncode == 0, result.output[-3000:]
    stats = crawl_stats(result.output)
    assert stats["finish_reason"] == "finished"
    [path] = result.csv_files("books")
    with path.open(newline="") as handle:
        assert {row["upc"] for row in csv.DictReader(handle)} == {Book(n).upc for n in range(1, 61)}
    assert stats[f"proxy/{a.hostport}/bans"] >= 1
    assert f"proxy/{b.hostport}/bans" not in stats
    # Every page was fetched through b, and a was only tried until its first 429s came back.
    assert stats[f"proxy/{b.hostport}/requests"] >= 60 + 3
    assert stats[f"proxy/{a.hostport}/requests"] == stats[f"proxy/{a.hostport}/bans"]
    assert f"Proxy {a.hostport} banned (HTTP 429" in result.output


@pytest.mark.proxy
def test_every_proxy_banned_closes_the_spider_without_hammering(
    two_proxies, fresh_demo_site, run_crawl
):
    a, b = two_proxies
    fresh_demo_site.config.banned_via.update({a.via_name, b.via_name})
    result = run_crawl(
        "books",
        args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
        settings={"PROXY_LIST": f"{a.url},{b.url}"},
    )
    assert result.returncode == 0, result.output[-3000:]
    stats = crawl_stats(result.output)
    assert stats["finish_reason"] == CLOSE_REASON
    assert "Every proxy is banned or unusable" in result.output
    assert stats[f"proxy/{a.hostport}/bans"] == 1
    assert stats[f"proxy/{b.hostport}/bans"] == 1
    # One attempt per proxy (robots.txt), then nothing more reaches the site.
    assert sum(fresh_demo_site.hits.snapshot().values()) == 2


@pytest.mark.proxy
def test_refused_connections_bench_the_proxy_and_the_crawl_completes(
    tinyproxy_factory, refused_proxy_url, fresh_demo_site, run_crawl
):
    good = tinyproxy_factory()
    dead = refused_proxy_url.removeprefix("http://")
    result = run_crawl(
        "books",
        args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
        settings={"PROXY_LIST": f"{refused_proxy_url},{good.url}"},
    )
    assert result.returncode == 0, result.output[-3000:]
    stats = crawl_stats(result.output)
    assert stats["finish_reason"] == "finished"
    assert stats["item_scraped_count"] == 60
    assert stats[f"proxy/{dead}/errors"] >= 1
    assert f"Proxy {dead} failed (DownloadConnectionRefusedError" in result.output
    assert f"proxy/{good.hostport}/errors" not in stats


@pytest.mark.proxy
def test_credentials_from_a_proxy_file_reach_a_basic_auth_proxy(
    tinyproxy_factory, demo_site, run_echo_crawl, tmp_path
):
    secret = "s3cr3t-Pw"
    proxy = tinyproxy_factory(auth=("crawler", secret))
    proxy_file = tmp_path / "proxies.txt"
    proxy_file.write_text(f"# the paid pool\n\n{proxy.url_with('crawler', secret)}\n")
    result = run_echo_crawl(
        echo_requests(demo_site.base_url, 3), settings={"PROXY_FILE": str(proxy_file)}
    )
    assert result.finish_reason == "finished", result.output[-3000:]
    assert [r.status for r in result.records] == [200] * 3
    assert all(proxy.via_name in r.via for r in result.records)
    assert all("Proxy-Authorization" not in r.headers for r in result.records)
    assert result.stats[f"proxy/{proxy.hostport}/requests"] == 3
    assert secret not in result.output  # the crawl logs at DEBUG
    assert secret not in str(result.stats)


@pytest.mark.proxy
def test_wrong_credentials_remove_the_proxy_from_the_pool(
    tinyproxy_factory, demo_site, run_echo_crawl
):
    """Rejected credentials are not a ban that wears off: that proxy is out for the crawl.

    tinyproxy 1.11.1 answers wrong credentials with 401 (and missing ones with 407), hence
    PROXY_AUTH_CODES here; see the proxy middleware's docstring.
    """
    locked = tinyproxy_factory(auth=("crawler", "right-password"))
    open_proxy = tinyproxy_factory()
    result = run_echo_crawl(
        echo_requests(demo_site.base_url, 4),
        settings={
            "PROXY_LIST": [locked.url_with("crawler", "wrong-password"), open_proxy.url],
            "PROXY_AUTH_CODES": [401, 407],
        },
    )
    assert result.finish_reason == "finished", result.output[-3000:]
    assert [r.status for r in result.records] == [200] * 4
    assert all(open_proxy.via_name in r.via for r in result.records)
    assert result.stats[f"proxy/{locked.hostport}/auth_failures"] >= 1
    assert f"Proxy {locked.hostport} rejected the credentials (HTTP 401)" in result.output
    assert "wrong-password" not in result.output

    alone = run_echo_crawl(
        echo_requests(demo_site.base_url, 2),
        settings={"PROXY_LIST": [locked.url]},  # no credentials at all
    )
    assert alone.finish_reason == CLOSE_REASON, alone.output[-3000:]
    assert f"Proxy {locked.hostport} rejected the credentials (HTTP 407)" in alone.output
    assert alone.stats[f"proxy/{locked.hostport}/auth_failures"] >= 1


@pytest.mark.proxy
def test_malformed_proxy_url_stops_the_crawl_before_any_request(
    tinyproxy_factory, fresh_demo_site, run_crawl
):
    good = tinyproxy_factory()
    result = run_crawl(
        "books",
        args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
        settings={"PROXY_LIST": f"{good.url},http://alice:hunter2@127.0.0.1"},
    )
    assert result.returncode != 0
    assert "Proxy pool is misconfigured, not starting the crawl" in result.output
    assert "invalid proxy URL 'http://alice:***@127.0.0.1': missing port" in result.output
    assert "hunter2" not in result.output
    assert fresh_demo_site.hits.snapshot() == {}


def test_non_numeric_ban_codes_are_a_startup_error():
    crawler = get_crawler(settings_dict={"PROXY_LIST": ["http://h:1"], "PROXY_BAN_CODES": "429,x"})
    with pytest.raises(ProxyConfigError, match="PROXY_BAN_CODES must list HTTP status codes"):
        ProxyPoolMiddleware.from_crawler(crawler)
