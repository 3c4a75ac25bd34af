"""One task_missed event per task whose fires were recorded as missed, with the count.

Called in the transaction that records the fires, with the runs this scheduler created: a
fire another scheduler already recorded is not in them, so replicas never report it twice.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

from controlplane.events import TASK_MISSED, raise_event
from controlplane.scheduling.models import TaskRun


def report_missed(runs: Iterable[TaskRun]) -> int:
    """Raise task_missed for each task among ``runs`` with missed fires; returns how many."""
    by_task: dict[int, list[TaskRun]] = defaultdict(list)
    for run in runs:
        if run.state == TaskRun.State.MISSED and run.task_id is not None:
            by_task[run.task_id].append(run)
    for missed in by_task.values():
        missed.sort(key=lambda r: r.scheduled_for)
        task = missed[0].task
        first, last = missed[0].scheduled_for, missed[-1].scheduled_for
        count = len(missed)
        fires = "fire" if count == 1 else "fires"
        when = (
            f"at {first:%Y-%m-%d %H:%M} UTC"
            if count == 1
            else f"from {first:%Y-%m-%d %H:%M} to {last:%H:%M} UTC"
        )
        raise_event(
            TASK_MISSED,
            f"task {task.name} missed {count} {fires} {when}: {missed[-1].reason}"[:500],
            project_id=task.project_id,
            task_id=task.pk,
            run_id=missed[-1].pk,
            detail={
                "task": task.name,
                "missed": count,
                "first": first.isoformat(),
                "last": last.isoformat(),
                "reason": missed[-1].reason,
            },
        )
    return len(by_task)
