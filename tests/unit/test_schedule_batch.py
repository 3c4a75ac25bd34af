"""The pure parts of batch scheduling: reading a batch on the node, and remembering which
nodes have none (the endpoint itself is tested on real nodes, tests/integration)."""

from __future__ import annotations

import json

import pytest

from controlplane.lib.scheduleconnection import BatchSupport, batch_entry
from scrapydnode.batch import BatchError, parse_batch, queue_message


def test_batch_support_is_forgotten_after_a_while():
    clock = [100.0]
    support = BatchSupport(recheck_after=600, clock=lambda: clock[0])
    assert support.worth_trying("http://a:6800")
    support.mark_unsupported("http://a:6800")
    assert not support.worth_trying("http://a:6800")
    assert support.worth_trying("http://b:6800")
    clock[0] += 599
    assert not support.worth_trying("http://a:6800")
    clock[0] += 2  # a node may have been upgraded since: ask it again
    assert support.worth_trying("http://a:6800")
    assert support.worth_trying("http://a:6800")


def test_an_entry_becomes_the_message_schedule_json_would_queue():
    entry = batch_entry("p", "s", "12", "job-1", {"A": "1=2"}, {"start_url": "http://x/", "n": 3})
    assert entry["args"] == {"start_url": "http://x/", "n": "3"}
    [parsed] = parse_batch(json.dumps({"jobs": [entry]}).encode())
    project, spider, priority, message = queue_message(parsed)
    assert (project, spider, priority) == ("p", "s", 0.0)
    assert message == {
        "start_url": "http://x/",
        "n": "3",
        "_version": "12",
        "settings": {"A": "1=2"},
        "_job": "job-1",
        "name": "s",
    }


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"project": None}, "'project' must be a non-empty string"),
        ({"_version": 12}, "'_version' must be a non-empty string"),
        ({"priority": True}, "'priority' must be a number"),
        ({"args": {"name": "x"}}, "not spider arguments: name"),
        ({"args": ["a"]}, "'args' must be an object"),
        ({"settings": {"A": None}}, "'settings' must be an object"),
    ],
)
def test_an_entry_of_the_wrong_shape_says_what_is_wrong(fields, reason):
    entry = {**batch_entry("p", "s", "12", "job-1"), **fields}
    with pytest.raises(ValueError, match=reason):
        queue_message(entry)


def test_a_body_over_the_size_limit_is_not_read_as_json():
    with pytest.raises(BatchError, match="over"):
        parse_batch(b" " * (16 * 1024 * 1024 + 1))
