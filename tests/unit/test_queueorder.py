"""Who runs next on plain data: aging, ranks, and fair share between projects."""

from __future__ import annotations

from collections import Counter

from controlplane.lib.queueorder import Verdict, effective_priority, fill, queue_rank

NOW = 1_800_000_000.0
AGING = 60.0


def test_aging_adds_a_point_per_aging_seconds():
    assert effective_priority(0, NOW, NOW, AGING) == 0
    assert effective_priority(0, NOW - 600, NOW, AGING) == 10
    assert effective_priority(5, NOW - 30, NOW, AGING) == 5.5
    assert effective_priority(0, NOW - 600, NOW, 0) < 1e-5  # 0: no aging


def test_rank_orders_as_effective_priority_at_any_instant():
    jobs = [(0, NOW - 700), (10, NOW), (3, NOW - 100), (-5, NOW - 3000)]
    by_rank = sorted(jobs, key=lambda j: queue_rank(j[0], j[1], AGING))
    for now in (NOW, NOW + 5000):
        by_effective = sorted(jobs, key=lambda j: -effective_priority(j[0], j[1], now, AGING))
        assert by_rank == by_effective
    # A low priority waited long enough overtakes a fresh high one: never starved.
    assert by_rank[0] == (-5, NOW - 3000)


def test_a_fresh_priority_10_goes_before_an_hour_old_0_only_with_slow_aging():
    old, fresh = queue_rank(0, NOW - 3600, 600), queue_rank(10, NOW, 600)
    assert fresh < old
    assert queue_rank(10, NOW, 60) > queue_rank(0, NOW - 3600, 60)


def _fill(queues, weights, running, slots, blocked=()):
    def offer(project, job):
        return Verdict.SKIP if job in blocked else Verdict.PLACED

    return fill(queues, weights, running, slots, offer, rank=lambda job: job[1])


def test_slots_follow_the_weights():
    queues = {
        "a": [("a", i) for i in range(100)],
        "b": [("b", i) for i in range(100)],
    }
    placed = _fill(queues, {"a": 2.0, "b": 1.0}, {}, 30)
    assert Counter(p for p, _ in placed) == {"a": 20, "b": 10}


def test_a_flood_does_not_block_a_single_run():
    queues = {"flood": iter([("flood", i) for i in range(1000)]), "one": [("one", 5000)]}
    placed = _fill(queues, {}, {"flood": 3}, 2)
    assert ("one", 5000) in placed


def test_running_jobs_count_against_the_share():
    queues = {"a": [("a", i) for i in range(10)], "b": [("b", i) for i in range(10)]}
    placed = _fill(queues, {"a": 1.0, "b": 1.0}, {"a": 4, "b": 0}, 4)
    assert Counter(p for p, _ in placed) == {"b": 4}


def test_within_a_project_the_best_rank_first_and_skipped_jobs_let_the_next_go():
    queues = {"a": [("a", 1), ("a", 2), ("a", 3)]}
    assert _fill(queues, {}, {}, 2, blocked={("a", 1)}) == [("a", 2), ("a", 3)]


def test_stop_drops_a_project_and_full_ends_the_pass():
    queues = {"a": [("a", i) for i in range(5)], "b": [("b", i) for i in range(5)]}

    def offer(project, job):
        return Verdict.STOP if project == "a" else Verdict.PLACED

    assert [p for p, _ in fill(queues, {}, {}, 10, offer, rank=lambda j: j[1])] == ["b"] * 5
    calls = []

    def full(project, job):
        calls.append(job)
        return Verdict.FULL

    assert fill(queues, {}, {}, 10, full, rank=lambda j: j[1]) == []
    assert len(calls) == 1


def test_ties_between_projects_go_to_the_better_head():
    queues = {"a": [("a", 50)], "b": [("b", 10)]}
    assert _fill(queues, {}, {}, 1) == [("b", 10)]


def test_reading_stops_where_the_slots_end():
    read = []

    def jobs():
        for i in range(1000):
            read.append(i)
            yield ("a", i)

    _fill({"a": jobs()}, {}, {}, 3)
    assert len(read) <= 4
