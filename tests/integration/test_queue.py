"""Who runs next, against real idle Scrapyd nodes: priority, fair share, caps, why-pending texts.

The nodes queue the jobs they get and never launch them, so what was sent where is read back
from the database and the nodes; the test ends jobs itself (as the poller would) to free slots.
"""

from __future__ import annotations

import functools
import itertools
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.deploys.models import NodeDeployment, Project, Version
from controlplane.jobs import dispatch as dispatcher
from controlplane.jobs import taskactions
from controlplane.jobs.models import Job
from controlplane.jobs.queueorder import waiting_text
from controlplane.jobs.retry import create_retry
from controlplane.jobs.runs import create_adhoc_run
from controlplane.lib.scrapyd import ScrapydClient
from controlplane.nodes.models import Node, TagCap
from controlplane.scheduling.models import Task, TaskRun
from controlplane.scrapydapi import listing
from tests.fixtures import fleet as fleet_kit
from tests.fixtures.common import wait_until
from tests.fixtures.fleet import Fleet, start_idle_nodes, start_run
from tests.fixtures.scrapyd import EggFile, NodeFactory, ScrapydNode

pytestmark = [pytest.mark.scrapyd]

SPIDER = "books"
OTHER = "crawlerb"  # a second project: the same egg under another name
register_fleet = functools.partial(fleet_kit.register_fleet, spiders=[SPIDER])
make_task = functools.partial(fleet_kit.make_task, spider=SPIDER)


@pytest.fixture(scope="module")
def idle_nodes(session_scrapyd_nodes: NodeFactory, crawler_egg: EggFile) -> list[ScrapydNode]:
    nodes = start_idle_nodes(session_scrapyd_nodes, crawler_egg)
    for node in nodes:
        client = ScrapydClient(node.url, timeout=60)
        client.addversion(OTHER, crawler_egg.version, crawler_egg.data)
        assert SPIDER in client.listspiders(OTHER, crawler_egg.version)
    return nodes


def second_project(fleet: Fleet, **fields) -> Project:
    project = Project.objects.create(name=OTHER, **fields)
    version = Version.objects.create(
        project=project,
        version=fleet.version.version,
        egg=b"",
        sha256=fleet.version.sha256,
        size=0,
        spiders=[SPIDER],
    )
    project.current_version = version
    project.save()
    for row in fleet.rows:
        NodeDeployment.objects.create(node=row, version=version, state="deployed")
    return project


def finish(jobs) -> None:
    ids = [j.pk for j in jobs]
    Job.objects.filter(pk__in=ids).update(state=Job.State.SUCCEEDED, finished_at=timezone.now())
    TaskRun.objects.filter(jobs__pk__in=ids).update(state=TaskRun.State.SUCCEEDED)


def on_node(**filters) -> list[Job]:
    return list(Job.objects.filter(state__in=Job.ON_NODE, **filters).order_by("dispatched_at"))


def reason(job: Job, **kwargs) -> str:
    return waiting_text(Job.objects.get(pk=job.pk), **kwargs)


def test_a_priority_10_run_queued_last_starts_first(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes[:2], crawler_egg, capacities=1)
    task = make_task(fleet)
    plain = [start_run(task).jobs.get() for _ in range(9)]
    urgent = taskactions.run_now(task, priority=10).jobs.get()
    assert urgent.priority == 10
    assert dispatcher.dispatch() == 2
    started = {j.pk for j in on_node()}
    assert started == {urgent.pk, plain[0].pk}  # the urgent one, then the oldest


def test_a_retry_keeps_its_place_ahead_of_runs_queued_after_it(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes[:1], crawler_egg, capacities=1)
    task = make_task(fleet)
    first = start_run(task).jobs.get()
    assert dispatcher.dispatch() == 1
    later = [start_run(task).jobs.get() for _ in range(3)]
    Job.objects.filter(pk=first.pk).update(state=Job.State.FAILED, finished_at=timezone.now())
    retry = create_retry(Job.objects.get(pk=first.pk), not_before=None, reason="test")
    assert retry is not None
    assert retry.queue_rank == first.queue_rank
    assert dispatcher.dispatch() == 1
    assert [j.pk for j in on_node()] == [retry.pk]  # not later[0], queued after the first attempt
    assert all(Job.objects.get(pk=j.pk).state == Job.State.QUEUED for j in later)


def test_weights_2_to_1_get_2_to_1_of_the_slots_over_time(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg, capacities=2)
    Project.objects.filter(pk=fleet.project.pk).update(share_weight=2)
    other = second_project(fleet, share_weight=1)
    for _ in range(80):
        create_adhoc_run(fleet.project, SPIDER)
        create_adhoc_run(other, SPIDER)
    for _ in range(20):
        dispatcher.dispatch()
        running = on_node()
        assert len(running) == 6
        finish(running[:3])  # the oldest half ends: slots turn over
    done = Job.objects.filter(state=Job.State.SUCCEEDED)
    started = Counter(done.values_list("project__name", flat=True))
    ratio = started[fleet.project.name] / started[OTHER]
    # 60 slots: within 10% of 2:1.
    assert 1.8 <= ratio <= 2.2, started


def test_a_flood_does_not_block_another_projects_single_run(db, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes[:1], crawler_egg, capacities=2)
    other = second_project(fleet)
    for _ in range(200):
        create_adhoc_run(fleet.project, SPIDER)
    single = create_adhoc_run(other, SPIDER)
    dispatcher.dispatch()
    assert Job.objects.get(pk=single.pk).state == Job.State.PENDING


@pytest.mark.slow
def test_a_task_cap_of_1_holds_across_two_scheduler_replicas(cp_process, idle_nodes, crawler_egg):
    fleet = register_fleet(idle_nodes, crawler_egg, capacities=10)
    capped = make_task(fleet, max_concurrent=1)
    free = make_task(fleet)
    capped_jobs = [start_run(capped).jobs.get() for _ in range(6)]
    for _ in range(6):
        start_run(free)
    replicas = [cp_process("scheduler", name=f"scheduler-{i}") for i in range(2)]
    ended = 0
    while ended < len(capped_jobs):
        running = wait_until(lambda: on_node(task=capped), 30, "the capped task's next job")
        assert len(running) == 1, running
        time.sleep(0.6)  # a tick of both replicas: neither may start a second one meanwhile
        assert len(on_node(task=capped)) == 1
        finish(running)
        ended += 1
    for proc in replicas:
        proc.stop()
    jobs = sorted(Job.objects.filter(task=capped), key=lambda j: j.dispatched_at)
    assert all(j.state == Job.State.SUCCEEDED for j in jobs)
    for before, after in itertools.pairwise(jobs):
        assert after.dispatched_at >= before.finished_at, (before, after)
    assert Job.objects.filter(task=free, state=Job.State.PENDING).count() == 6


def test_every_queued_job_says_why(db, idle_nodes, crawler_egg, settings):
    fleet = register_fleet(idle_nodes[:2], crawler_egg, capacities=3, tags=(["eu"], ["us"]))
    version = fleet.version.version
    project = fleet.project
    # Task at its cap.
    capped = make_task(fleet, name="capped", max_concurrent=1)
    capped_jobs = [start_run(capped).jobs.get() for _ in range(2)]
    # No up node with the tag.
    mars = make_task(fleet, name="mars", selector=Task.Selector.TAGS, selector_tags=["mars"])
    mars_job = start_run(mars).jobs.get()
    # Nodes tagged eu at their cap.
    TagCap.objects.create(tag="eu", max_concurrent=1)
    eu = make_task(fleet, name="eu", selector=Task.Selector.TAGS, selector_tags=["eu"])
    eu_jobs = [start_run(eu).jobs.get() for _ in range(2)]
    # A spider at its cap (in the second project), and backoff.
    other = second_project(fleet, spider_caps={SPIDER: 1})
    spider_jobs = [create_adhoc_run(other, SPIDER) for _ in range(2)]
    later = create_adhoc_run(project, SPIDER)
    Job.objects.filter(pk=later.pk).update(not_before=timezone.now() + timedelta(hours=1))

    dispatcher.dispatch()
    assert reason(capped_jobs[1]) == "waiting: task capped at its cap of 1 running"
    assert reason(mars_job) == f"waiting: no up node with tag mars has version {version}"
    assert reason(eu_jobs[1]) == "waiting: nodes tagged eu at their cap of 1 running"
    assert reason(spider_jobs[1]) == f"waiting: spider {SPIDER} of {OTHER} at its cap of 1 running"
    assert reason(later).startswith("backoff until ")
    assert reason(capped_jobs[0]) == ""  # on its node

    # A project at its cap.
    Project.objects.filter(pk=project.pk).update(max_concurrent=len(on_node(project=project)))
    flood = [create_adhoc_run(project, SPIDER) for _ in range(3)]
    dispatcher.dispatch()
    cap = len(on_node(project=project))
    assert reason(flood[0]) == f"waiting: project {project.name} at its cap of {cap} running"

    # The fleet full: the slots are busy, and so many runs are ahead.
    Project.objects.filter(pk=project.pk).update(max_concurrent=None)
    TagCap.objects.all().delete()
    more = [create_adhoc_run(project, SPIDER) for _ in range(12)]
    dispatcher.dispatch()
    assert len(on_node()) == 6
    waiting = [j for j in flood + more if Job.objects.get(pk=j.pk).state == Job.State.QUEUED]
    assert len(waiting) >= 3
    first, last = waiting[0], waiting[-1]
    assert reason(first) == "waiting: all 6 slots of the fleet are busy"
    ahead = reason(last, position=True)
    assert ahead.startswith("waiting: all 6 slots of the fleet are busy; ")
    last = Job.objects.get(pk=last.pk)
    # Every due queued job of its project ranked before it, the blocked ones included.
    before = Job.objects.filter(
        state=Job.State.QUEUED, project=project, queue_rank__lt=last.queue_rank
    ).exclude(pk=later.pk)
    assert before.count() >= len(waiting) - 1
    assert ahead.endswith(f"; {before.count()} runs of higher priority ahead")
    # The faces show it: Scrapyd's listjobs (pending entries) and the REST API.
    pending = {e["id"]: e for e in listing.listing(None, "")["pending"]}
    assert pending[last.scrapyd_job_id]["waiting_reason"] == reason(last)
    assert pending[capped_jobs[1].scrapyd_job_id]["waiting_reason"].startswith("waiting: task")
    assert Node.objects.count() == 2


def test_bad_priorities_and_caps_are_refused_and_nothing_is_saved(db, operator, admin, project):
    task_body = {"name": "t1", "project": project.name, "spider": "books", "cron": "0 0 * * *"}
    assert operator.post("/tasks", {**task_body, "priority": 500}).status_code == 422
    assert operator.post("/tasks", {**task_body, "max_concurrent": -1}).status_code == 422
    assert not Task.objects.exists()
    created = operator.post("/tasks", {**task_body, "priority": 7, "max_concurrent": 1})
    assert created.status_code == 201, created.content
    assert created.json()["priority"] == 7
    task_id = created.json()["id"]
    response = operator.patch(f"/tasks/{task_id}", {"max_concurrent": 0})
    assert response.status_code == 422
    assert "max_concurrent" in response.json()["error"]["fields"]
    assert Task.objects.get().max_concurrent == 1
    assert operator.post(f"/tasks/{task_id}/run", {"priority": 101}).status_code == 422
    assert not TaskRun.objects.exists()

    response = operator.patch(
        f"/projects/{project.name}", {"max_concurrent": -2, "share_weight": 3}
    )
    assert response.status_code == 422
    assert set(response.json()["error"]["fields"]) == {"max_concurrent"}
    response = operator.patch(f"/projects/{project.name}", {"spider_caps": {"books": 0}})
    assert response.status_code == 422
    stored = Project.objects.get(pk=project.pk)
    assert (stored.share_weight, stored.max_concurrent, stored.spider_caps) == (1.0, None, {})
    ok = operator.patch(
        f"/projects/{project.name}", {"share_weight": 2, "spider_caps": {"books": 2}}
    )
    assert ok.status_code == 200
    assert ok.json()["share_weight"] == 2

    assert admin.put("/tag-caps/eu", {"max_concurrent": -1}).status_code == 422
    assert not TagCap.objects.exists()
    assert admin.put("/tag-caps/eu", {"max_concurrent": 2}).json() == {
        "tag": "eu",
        "max_concurrent": 2,
    }


def test_the_dashboard_forms_refuse_bad_caps(dashboard_users, client, project):
    from tests.fixtures.dashboard import logged_in_client

    logged_in_client(client, dashboard_users["operator"])
    url = f"/projects/{project.pk}/queue/"
    response = client.post(url, {"share_weight": "1", "max_concurrent": "-3", "spider_caps": ""})
    assert response.status_code == 422
    assert "greater than or equal to 1" in response.content.decode()
    response = client.post(url, {"share_weight": "1", "spider_caps": "books=0"})
    assert response.status_code == 422
    assert Project.objects.get(pk=project.pk).spider_caps == {}
    response = client.post(url, {"share_weight": "2.5", "spider_caps": "books=1"})
    assert response.status_code == 302
    stored = Project.objects.get(pk=project.pk)
    assert (stored.share_weight, stored.spider_caps) == (2.5, {"books": 1})
