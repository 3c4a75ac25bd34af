"""Classification rules and log parsing, on logs written by real Scrapy 2.19 crawls.

The failproject spiders are run with ``scrapy crawl`` (in parallel, once per module) and ended
each way a crawl can end; the rules of docs/FAILURES.md are then checked on their real logs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from controlplane.jobs.outcome import (
    CANCEL_HUNG,
    CANCEL_OPERATOR,
    CANCEL_TIMEOUT,
    Evidence,
    LogFacts,
    classify,
    parse_log,
    parse_stats_dict,
)
from tests.fixtures.common import REPO_ROOT, VENV_BIN

FAILPROJECT = REPO_ROOT / "tests" / "failproject"

# name -> (spider, spider args, settings, signal to send once the spider is open)
RUNS: dict[str, tuple[str, dict[str, str], dict[str, str], int | None]] = {
    "ok": ("ok", {"count": "3"}, {}, None),
    "itemcount": ("ok", {"count": "20"}, {"CLOSESPIDER_ITEMCOUNT": "2"}, None),
    "callback_error": ("callback_error", {}, {}, None),
    "init_error": ("init_error", {}, {}, None),
    "shutdown": ("hang", {}, {}, signal.SIGTERM),
    "sigkill": ("sleepy", {"seconds": "60"}, {}, signal.SIGKILL),
}


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[int, str]]:
    """name -> (return code, log text) of each real crawl."""
    directory = tmp_path_factory.mktemp("outcome-logs")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCRAPY")}
    procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}
    for name, (spider, args, settings, _sig) in RUNS.items():
        log = directory / f"{name}.log"
        argv = [str(VENV_BIN / "scrapy"), "crawl", spider, "-s", f"LOG_FILE={log}"]
        argv += [x for k, v in args.items() for x in ("-a", f"{k}={v}")]
        argv += [x for k, v in settings.items() for x in ("-s", f"{k}={v}")]
        procs[name] = (
            subprocess.Popen(argv, cwd=FAILPROJECT, env=env, stderr=subprocess.DEVNULL),
            log,
        )
    for name, (proc, log) in procs.items():
        sig = RUNS[name][3]
        if sig is not None:
            deadline = time.monotonic() + 60
            while "Spider opened" not in (log.read_text() if log.exists() else ""):
                assert time.monotonic() < deadline, f"{name} never opened"
                time.sleep(0.1)
            time.sleep(1)  # a signal during start-up ends the crawl before it can dump stats
            proc.send_signal(sig)
    return {name: (proc.wait(timeout=60), log.read_text()) for name, (proc, log) in procs.items()}


def evidence_from(logs: dict[str, tuple[int, str]], name: str, **extra: object) -> Evidence:
    returncode, text = logs[name]
    exit_code = returncode if returncode >= 0 else None
    sig = -returncode if returncode < 0 else None
    return Evidence(
        exit_code=exit_code,
        signal=sig,
        signal_name=signal.Signals(sig).name if sig else None,
        exit_known=True,
        log=parse_log(text),
        **extra,  # type: ignore[arg-type]
    )


def test_clean_run_succeeds(logs):
    facts = parse_log(logs["ok"][1])
    assert facts.close_reason == "finished"
    assert facts.stats is not None
    assert facts.stats["item_scraped_count"] == 3
    assert facts.stats["finish_reason"] == "finished"
    # datetimes become ISO text, so the stats can be stored as JSON
    assert facts.stats["start_time"].endswith("+00:00")
    json.dumps(facts.stats)
    verdict = classify(evidence_from(logs, "ok"))
    assert (verdict.state, verdict.exit_status) == ("succeeded", 0)
    assert verdict.stats["item_scraped_count"] == 3


def test_configured_limit_is_a_success(logs):
    evidence = evidence_from(logs, "itemcount")
    assert evidence.finish_reason == "closespider_itemcount"
    assert classify(evidence).state == "succeeded"


def test_callback_error_exits_zero_but_fails_past_the_threshold(logs):
    assert logs["callback_error"][0] == 0
    evidence = evidence_from(logs, "callback_error")
    assert evidence.finish_reason == "finished"
    assert evidence.stats["log_count/ERROR"] == 1
    verdict = classify(evidence, error_threshold=0)
    assert verdict.state == "failed"
    assert "1 ERROR log line" in verdict.reason
    assert classify(evidence, error_threshold=1).state == "succeeded"


def test_init_error_exits_one_without_stats(logs):
    returncode, text = logs["init_error"]
    assert returncode == 1
    facts = parse_log(text)
    assert facts.stats is None
    assert facts.close_reason is None
    assert facts.last_exception == "RuntimeError: init_error: deliberate failure in __init__"
    verdict = classify(evidence_from(logs, "init_error"))
    assert verdict.state == "failed"
    assert verdict.exit_status == 1
    assert verdict.reason.startswith("exited with status 1: RuntimeError: init_error")
    # Without an exit record (plain Scrapyd) the missing stats alone make it a failure.
    blind = classify(Evidence(log=facts))
    assert blind.state == "failed"
    assert blind.reason.startswith("process died without stats")


def test_shutdown_is_ours_or_a_failure(logs):
    evidence = evidence_from(logs, "shutdown")
    assert evidence.finish_reason == "shutdown"
    assert evidence.log.close_reason == "shutdown"
    assert classify(evidence).state == "failed"
    assert "did not send" in classify(evidence).reason
    assert classify(evidence, cancel_reason=CANCEL_OPERATOR).state == "cancelled"
    timed_out = classify(evidence, cancel_reason=f"{CANCEL_TIMEOUT} (60 s)")
    assert timed_out.state == "timed_out"
    assert timed_out.reason.startswith("ran longer than max_runtime (60 s); stopped")
    assert classify(evidence, cancel_reason=f"{CANCEL_HUNG} for 200 s").state == "failed"


def test_sigkill_leaves_no_stats_and_fails_by_signal(logs):
    returncode, text = logs["sigkill"]
    assert returncode == -signal.SIGKILL
    assert parse_log(text).stats is None
    verdict = classify(evidence_from(logs, "sigkill"))
    assert verdict.state == "failed"
    assert verdict.reason == "killed by SIGKILL"
    assert verdict.exit_status == -9
    # Killed after our own cancel escalated: the cancel's outcome, not a failure.
    assert classify(evidence_from(logs, "sigkill"), cancel_reason=CANCEL_OPERATOR).state == (
        "cancelled"
    )


def test_signal_wins_over_clean_looking_stats(logs):
    """A process killed after it dumped its stats (say, in a pipeline's close) still failed."""
    evidence = evidence_from(logs, "ok")
    evidence.signal, evidence.signal_name = 9, "SIGKILL"
    assert classify(evidence).state == "failed"


def test_reported_stats_win_over_the_log(logs):
    evidence = evidence_from(logs, "callback_error")
    evidence.reported_stats = {"finish_reason": "finished", "item_scraped_count": 7}
    verdict = classify(evidence)
    assert verdict.state == "succeeded"
    assert verdict.stats["item_scraped_count"] == 7


def test_pipeline_reported_failure_wins_over_finish_reason():
    stats = {
        "finish_reason": "finished",
        "crawlfleet/outcome": "failed",
        "crawlfleet/failure_reason": "3 item(s) not delivered to Kafka",
    }
    verdict = classify(Evidence(reported_stats=stats, exit_code=0, exit_known=True))
    assert verdict.state == "failed"
    assert "not delivered to Kafka" in verdict.reason
    # ... even when the operator asked it to stop and it finished anyway
    assert classify(Evidence(reported_stats=stats), cancel_reason=CANCEL_OPERATOR).state == (
        "cancelled"
    )


@pytest.mark.parametrize(
    ("reason", "state"),
    [
        ("finished", "succeeded"),
        ("closespider_timeout", "succeeded"),
        ("closespider_pagecount", "succeeded"),
        ("closespider_errorcount", "failed"),
        ("kafka_delivery_failed", "failed"),
        ("shutdown", "failed"),
        ("cancelled", "failed"),
    ],
)
def test_finish_reasons(reason, state):
    assert classify(Evidence(reported_stats={"finish_reason": reason})).state == state


@pytest.mark.parametrize("reason", ["shared_frontier_lost", "shared_redis_error"])
def test_a_shared_crawl_that_lost_redis_fails_under_its_own_cause(reason):
    verdict = classify(Evidence(reported_stats={"finish_reason": reason}))
    assert (verdict.state, verdict.cause) == ("failed", reason)
    assert verdict.reason.startswith(f"finish reason {reason!r}: ")


def test_cancel_that_came_too_late_keeps_the_real_outcome(logs):
    assert classify(evidence_from(logs, "ok"), cancel_reason=CANCEL_OPERATOR).state == "succeeded"


def test_stats_dump_cut_by_the_tail_window(logs):
    text = logs["callback_error"][1]
    marker = text.index("Dumping Scrapy stats:")
    cut = text[: marker + 200]  # the dict is incomplete
    facts = parse_log(cut)
    assert facts.stats is None
    assert facts.stats_truncated
    verdict = classify(Evidence(exit_code=0, exit_known=True, log=facts))
    assert verdict.state == "failed"
    assert "could not be read" in verdict.reason
    # A tail starting after the record's first line still has the whole dict.
    tail = text[marker - 10 :]
    assert parse_log(tail).stats == parse_log(text).stats


def test_last_of_several_dumps_and_unusual_values():
    text = (
        "2026-01-01 00:00:00 [scrapy.statscollectors] INFO: Dumping Scrapy stats:\n"
        "{'finish_reason': 'shutdown'}\n"
        "2026-01-01 00:00:01 [scrapy.statscollectors] INFO: Dumping Scrapy stats:\n"
        "{'finish_reason': 'finished',\n"
        " 'weird': set(),\n"
        " 'tuple': (1, 2),\n"
        " 'finish_time': datetime.datetime(2026, 1, 1, 0, 0, 1, tzinfo=datetime.timezone.utc)}\n"
        "2026-01-01 00:00:01 [scrapy.core.engine] INFO: Spider closed (finished)\n"
        "2026-01-01 00:00:01 [asyncio] DEBUG: a line after the close\n"
    )
    facts = parse_log(text)
    assert facts.close_reason == "finished"
    assert facts.stats == {
        "finish_reason": "finished",
        "weird": "set()",
        "tuple": "(1, 2)",
        "finish_time": "2026-01-01T00:00:01+00:00",
    }


def test_stats_parser_never_evaluates_code():
    assert parse_stats_dict("__import__('os').system('false')") is None
    assert parse_stats_dict("{'a': __import__('os').getcwd()}") == {
        "a": "__import__('os').getcwd()"
    }
    assert parse_stats_dict("not python at all {") is None
    assert parse_log("") == LogFacts()
