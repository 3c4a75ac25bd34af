"""User-Agent rotation: the rules in-process, and what the demo site's ``/echo`` actually receives."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

import pytest
from scrapy import Request
from scrapy.utils.test import get_crawler

from crawler import settings as project_settings
from crawler.middlewares.useragent import (
    RotatingUserAgentMiddleware,
    UserAgentConfigError,
    read_user_agent_file,
)

AGENTS = ["agent-one/1.0", "agent-two/2.0", "agent-three/3.0"]


def middleware(**settings: Any) -> RotatingUserAgentMiddleware:
    crawler = get_crawler(settings_dict={"USER_AGENT_LIST": AGENTS, **settings})
    return RotatingUserAgentMiddleware.from_crawler(crawler)


def counted(mw: RotatingUserAgentMiddleware, key: str) -> Any:
    assert mw.counters is not None
    mw.counters.flush()
    return mw.counters.stats.get_value(key)


def sent_agent(mw: RotatingUserAgentMiddleware, request: Request | None = None) -> str:
    request = request or Request("http://example.test/")
    mw.process_request(request)
    return request.headers[b"User-Agent"].decode()


# --- in-process ----------------------------------------------------------------------------------


def test_round_robin_cycles_through_the_list():
    mw = middleware()
    assert [sent_agent(mw) for _ in range(5)] == [*AGENTS, *AGENTS[:2]]
    assert counted(mw, "useragent/rotated") == 5


def test_random_rotation_stays_within_the_pool():
    mw = middleware(USER_AGENT_ROTATION="random")
    mw._rng = random.Random(7)
    seen = Counter(sent_agent(mw) for _ in range(60))
    assert set(seen) == set(AGENTS)


def test_request_pins_win_over_rotation():
    mw = middleware()
    by_header = Request("http://example.test/", headers={"User-Agent": "mine/1"})
    by_meta = Request("http://example.test/", meta={"user_agent": "meta/1"})
    assert sent_agent(mw, by_header) == "mine/1"
    assert sent_agent(mw, by_meta) == "meta/1"
    assert sent_agent(mw) == AGENTS[0]  # pinned requests do not consume the rotation
    assert counted(mw, "useragent/pinned/header") == 1
    assert counted(mw, "useragent/pinned/request") == 1


def test_retried_copies_get_a_fresh_pick_rather_than_looking_pinned():
    mw = middleware()
    first = Request("http://example.test/")
    assert sent_agent(mw, first) == AGENTS[0]
    assert sent_agent(mw, first.copy()) == AGENTS[1]


def test_spider_pin_applies_to_every_unpinned_request():
    mw = RotatingUserAgentMiddleware(AGENTS, spider_user_agent="spider/1")
    assert {sent_agent(mw) for _ in range(4)} == {"spider/1"}
    assert sent_agent(mw, Request("http://x.test/", meta={"user_agent": "meta/1"})) == "meta/1"


def test_disabled_rotation_sends_the_plain_user_agent_setting():
    mw = middleware(USER_AGENT_ENABLED=False, USER_AGENT="crawlfleet-bot/1", USER_AGENT_LIST=[])
    assert {sent_agent(mw) for _ in range(3)} == {"crawlfleet-bot/1"}


def test_user_agent_file_skips_comments_and_blank_lines(tmp_path):
    path = tmp_path / "agents.txt"
    path.write_text("# desktop\nfile-agent/1 (X11, Linux)\n\n  # mobile\nfile-agent/2\n")
    assert read_user_agent_file(path) == ["file-agent/1 (X11, Linux)", "file-agent/2"]
    mw = middleware(USER_AGENT_FILE=str(path))
    assert [sent_agent(mw) for _ in range(3)] == [
        "file-agent/1 (X11, Linux)",
        "file-agent/2",
        "file-agent/1 (X11, Linux)",
    ]


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"USER_AGENT_FILE": "/nonexistent/agents.txt"}, "cannot be read"),
        ({"USER_AGENT_LIST": []}, "USER_AGENT_LIST is empty"),
        ({"USER_AGENT_ROTATION": "shuffle"}, "USER_AGENT_ROTATION must be one of"),
    ],
)
def test_unusable_configuration_is_an_error_at_startup(settings, message):
    with pytest.raises(UserAgentConfigError, match=message):
        middleware(**settings)


def test_empty_user_agent_file_is_an_error(tmp_path):
    path = tmp_path / "agents.txt"
    path.write_text("# nothing yet\n\n")
    with pytest.raises(UserAgentConfigError, match="contains no User-Agent"):
        middleware(USER_AGENT_FILE=str(path))


def test_project_defaults_rotate_over_real_browser_agents():
    assert project_settings.USER_AGENT_ENABLED is True
    assert project_settings.USER_AGENT_ROTATION == "round_robin"
    assert all(agent.startswith("Mozilla/5.0") for agent in project_settings.USER_AGENT_LIST)


# --- what the site receives --------------------------------------------------------------------


def test_rotation_and_request_pins_are_visible_at_the_site(demo_site, run_echo_crawl):
    base = demo_site.base_url
    requests: list[dict[str, Any]] = [
        {"tag": f"r{n}", "url": f"{base}/echo?r={n}"} for n in range(len(AGENTS) * 3)
    ]
    requests += [
        {"tag": "meta", "url": f"{base}/echo?meta", "meta": {"user_agent": "pinned-meta/1"}},
        {"tag": "header", "url": f"{base}/echo?h", "headers": {"User-Agent": "pinned-hdr/1"}},
    ]
    result = run_echo_crawl(requests, settings={"USER_AGENT_LIST": AGENTS})
    assert result.finish_reason == "finished", result.output[-3000:]
    rotated = Counter(r.user_agent for r in result.records if r.tag.startswith("r"))
    assert rotated == dict.fromkeys(AGENTS, 3)
    assert result.by_tag("meta").user_agent == "pinned-meta/1"
    assert result.by_tag("header").user_agent == "pinned-hdr/1"
    assert result.stats["useragent/rotated"] == 9


@pytest.mark.parametrize(
    "spider_attrs",
    [
        {"custom_settings": {"USER_AGENT": "spider-setting/1"}},
        {"user_agent": "spider-setting/1"},  # the attribute Scrapy deprecates, still honoured
    ],
    ids=["custom_settings", "attribute"],
)
def test_spider_pins_its_user_agent(demo_site, run_echo_crawl, spider_attrs):
    requests = [{"tag": f"r{n}", "url": f"{demo_site.base_url}/echo?s={n}"} for n in range(3)]
    requests.append(
        {"tag": "meta", "url": f"{demo_site.base_url}/echo?m", "meta": {"user_agent": "m/1"}}
    )
    result = run_echo_crawl(requests, spider_attrs=spider_attrs)
    assert result.finish_reason == "finished", result.output[-3000:]
    agents = {r.tag: r.user_agent for r in result.records}
    assert agents == {
        "r0": "spider-setting/1",
        "r1": "spider-setting/1",
        "r2": "spider-setting/1",
        "meta": "m/1",
    }


def test_missing_user_agent_file_stops_the_crawl_before_any_request(
    fresh_demo_site, run_crawl, tmp_path
):
    missing = tmp_path / "agents.txt"
    result = run_crawl(
        "books",
        args={"start_url": f"{fresh_demo_site.base_url}/catalogue/page-1.html"},
        env={"USER_AGENT_FILE": str(missing)},
    )
    assert result.returncode != 0
    assert "User-Agent rotation is misconfigured" in result.output
    assert f"USER_AGENT_FILE '{missing}' cannot be read" in result.output
    assert fresh_demo_site.hits.snapshot() == {}
