"""The REST job list's paging: the keyset cursor and ``next`` link, ``offset`` for older clients,
and the count that stays cheap (capped) unless asked to be exact."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from controlplane.api.routers import jobs as jobs_router
from controlplane.api.schemas import MAX_JOB_OFFSET
from controlplane.jobs.models import Job
from tests.fixtures.api import assert_error
from tests.fixtures.jobs import create_adhoc_run


@pytest.fixture
def seven_jobs(project) -> list[int]:
    """Seven jobs, newest first; two share a creation time (the id breaks the tie)."""
    ids = [create_adhoc_run(project, "books").pk for _ in range(7)]
    base = timezone.now() - timedelta(hours=1)
    for n, pk in enumerate(ids):
        Job.objects.filter(pk=pk).update(created_at=base + timedelta(minutes=min(n, 5)))
    Job.objects.filter(pk__in=ids[::2]).update(state=Job.State.FAILED)
    return sorted(ids, key=lambda pk: (min(ids.index(pk), 5), pk), reverse=True)


def follow(viewer, first: str) -> list[list[int]]:
    pages, url = [], first
    while url is not None:
        body = viewer.client.get(url, **viewer.headers).json()
        pages.append([item["id"] for item in body["items"]])
        assert (body["next"] is None) == (body["next_cursor"] is None)
        url = body["next"]
    return pages


@pytest.mark.django_db
def test_cursor_pages_cover_every_job_once_newest_first(viewer, seven_jobs):
    first = viewer.get("/jobs?limit=3").json()
    assert first["count"] == 7
    assert first["count_exact"] is True
    assert first["next"].startswith("/api/v1/jobs?")
    assert "limit=3" in first["next"]
    pages = follow(viewer, "/api/v1/jobs?limit=3")
    assert pages == [seven_jobs[0:3], seven_jobs[3:6], seven_jobs[6:]]

    by_cursor = viewer.get(f"/jobs?limit=3&cursor={first['next_cursor']}").json()
    assert [item["id"] for item in by_cursor["items"]] == seven_jobs[3:6]


@pytest.mark.django_db
def test_the_next_link_keeps_the_filters(viewer, seven_jobs):
    failed = [pk for pk in seven_jobs if Job.objects.get(pk=pk).state == Job.State.FAILED]
    pages = follow(viewer, "/api/v1/jobs?state=failed&limit=2")
    assert [pk for page in pages for pk in page] == failed
    both = follow(viewer, "/api/v1/jobs?state=failed,queued&limit=2")  # one scan per state
    assert [pk for page in both for pk in page] == seven_jobs


@pytest.mark.django_db
def test_offset_still_pages_and_hands_over_to_the_cursor(viewer, seven_jobs):
    body = viewer.get("/jobs?offset=2&limit=3").json()
    assert [item["id"] for item in body["items"]] == seven_jobs[2:5]
    assert "offset" not in body["next"]
    rest = viewer.client.get(body["next"], **viewer.headers).json()
    assert [item["id"] for item in rest["items"]] == seven_jobs[5:]
    assert viewer.get("/jobs?offset=7").json()["items"] == []
    assert viewer.get("/jobs?offset=-4&limit=1").json()["items"][0]["id"] == seven_jobs[0]


@pytest.mark.django_db
def test_paging_refusals(viewer, seven_jobs):
    assert "cursor" in assert_error(viewer.get("/jobs?cursor=not-a-cursor"), 400)["fields"]
    cursor = viewer.get("/jobs?limit=1").json()["next_cursor"]
    assert "offset" in assert_error(viewer.get(f"/jobs?cursor={cursor}&offset=5"), 422)["fields"]
    assert_error(viewer.get(f"/jobs?offset={MAX_JOB_OFFSET + 1}"), 422)
    assert viewer.get(f"/jobs?offset={MAX_JOB_OFFSET}").status_code == 200


@pytest.mark.django_db
def test_count_is_capped_unless_asked_exact(viewer, seven_jobs, monkeypatch):
    monkeypatch.setattr(jobs_router, "JOB_COUNT_CAP", 5)
    capped = viewer.get("/jobs?limit=2").json()
    assert (capped["count"], capped["count_exact"]) == (5, False)
    assert len(capped["items"]) == 2
    exact = viewer.get("/jobs?limit=2&count=exact").json()
    assert (exact["count"], exact["count_exact"]) == (7, True)
    failed = viewer.get("/jobs?state=failed").json()
    assert (failed["count"], failed["count_exact"]) == (4, True)
    assert_error(viewer.get("/jobs?count=everything"), 422)
