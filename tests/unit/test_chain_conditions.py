"""Which ends of an upstream run start a chained task, per condition (no database needed)."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError

from controlplane.scheduling.models import UPSTREAM_ARGS, Task, TaskRun
from controlplane.validators import validate_spider_args

S = TaskRun.State
CASES = {
    Task.AfterCondition.SUCCESS: {S.SUCCEEDED, S.DEGRADED},
    Task.AfterCondition.CLEAN: {S.SUCCEEDED},
    Task.AfterCondition.ALWAYS: {S.SUCCEEDED, S.DEGRADED, S.FAILED, S.CANCELLED},
}


@pytest.mark.parametrize("condition", list(CASES))
def test_each_condition_starts_on_exactly_its_ends(condition):
    task = Task(after_condition=condition)
    started = {state for state in S.values if task.chain_matches(state)}
    assert started == CASES[condition]
    # Runs that never ran start nothing, whatever the condition; nor does a run still going.
    assert not started & {S.MISSED, S.SKIPPED, S.ACTIVE}


def test_the_upstream_arguments_are_valid_spider_arguments():
    validate_spider_args({name: "1" for name in UPSTREAM_ARGS})


def test_a_task_needs_a_cron_or_an_upstream_and_keeps_the_upstream_names_free():
    with pytest.raises(ValidationError) as refused:
        Task(
            name="b", spider="books", cron="", pass_upstream=True, args={"upstream_state": "x"}
        ).clean()
    errors = refused.value.message_dict
    assert "unless the task runs after another task" in errors["cron"][0]
    assert "upstream_state are set by the upstream run" in errors["args"][0]


def test_every_crawler_spider_accepts_the_upstream_arguments_typed():
    from crawler.spiders.base import UPSTREAM_ARGUMENTS, SpiderArgumentError
    from crawler.spiders.books import BooksSpider

    assert set(UPSTREAM_ARGUMENTS) == set(UPSTREAM_ARGS)
    given = {
        "upstream_run": "12",
        "upstream_task": "catalogue",
        "upstream_state": "degraded",
        "upstream_items": "312",
        "upstream_pages": "400",
        "upstream_errors": "0",
    }
    spider = BooksSpider(max_pages="2", **given)
    assert spider.upstream["upstream_items"] == 312
    assert spider.upstream["upstream_state"] == "degraded"
    assert spider.max_pages == 2
    with pytest.raises(SpiderArgumentError, match="upstream_items"):
        BooksSpider(upstream_items="many")
