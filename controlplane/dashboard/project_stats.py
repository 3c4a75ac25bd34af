"""What the projects pages show: projects with their fleet consistency, and the node-by-version
matrix of a project, each in a fixed number of queries. Eggs are never loaded for a page."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

from django.db.models import Count, Max, Q, QuerySet

from controlplane.dashboard.node_stats import nodes_for_pages
from controlplane.deploys.models import NodeDeployment, Project, Version
from controlplane.jobs.models import Job
from controlplane.nodes.models import Node
from controlplane.scheduling.models import Task

# Versions shown as matrix columns (newest first); the current one is always among them.
MATRIX_VERSIONS = 8


def projects_for_pages() -> QuerySet[Project]:
    live = Q(versions__deleted_at__isnull=True)
    return (
        Project.objects.select_related("current_version")
        .defer("current_version__egg")
        .annotate(
            live_versions=Count("versions", filter=live),
            latest_number=Max("versions__number", filter=live),
            last_upload=Max("versions__created_at"),
        )
        .order_by("name")
    )


@dataclass
class ProjectRow:
    project: Project
    holding_current: int = 0  # enabled nodes whose records say they hold the current version
    nodes: int = 0  # enabled nodes

    @property
    def consistent(self) -> bool:
        return self.project.current_version_id is None or self.holding_current == self.nodes


def project_rows(projects: list[Project]) -> list[ProjectRow]:
    enabled = Node.objects.filter(enabled=True)
    count = enabled.count()
    current = [p.current_version_id for p in projects if p.current_version_id]
    holding = dict(
        NodeDeployment.objects.filter(
            version__in=current, node__in=enabled, state=NodeDeployment.State.DEPLOYED
        )
        .order_by()
        .values_list("version")
        .annotate(nodes=Count("node"))
    )
    return [ProjectRow(p, holding.get(p.current_version_id, 0), count) for p in projects]


@dataclass
class VersionRow:
    version: Version
    current: bool
    deployed: int = 0  # nodes holding it
    failed: int = 0
    pinned_by: int = 0  # tasks pinning it
    active_jobs: int = 0

    @property
    def in_use(self) -> bool:
        return self.current or self.pinned_by > 0 or self.active_jobs > 0


@dataclass
class Cell:
    state: str  # deployed, failed, removed, pending; missing (the current), absent (another)
    message: str = ""


@dataclass
class MatrixRow:
    node: Node
    cells: list[Cell]
    missing_current: bool = False

    @property
    def expected_current(self) -> bool:
        """A node that should hold the current version now: it is enabled and answers."""
        return self.node.enabled and self.node.state in (Node.State.UP, Node.State.DEGRADED)


@dataclass
class ProjectPage:
    versions: list[VersionRow]
    columns: list[VersionRow]
    hidden_versions: int
    matrix: list[MatrixRow]
    deleted_versions: int = 0
    missing_current: list[str] = field(default_factory=list)  # nodes that should have it


def _counts(queryset: QuerySet, key: str) -> dict[int, int]:
    return dict(queryset.order_by().values_list(key).annotate(n=Count("id")))


def project_page(project: Project) -> ProjectPage:
    live = list(project.versions.filter(deleted_at__isnull=True).defer("egg").order_by("-number"))
    deleted = project.versions.filter(deleted_at__isnull=False).count()
    pinned = _counts(Task.objects.filter(version__project=project), "version")
    # Active jobs are few: counting them all by state (indexed) is cheaper than reading every job
    # of the project, which is what filtering by project first would do.
    active = _counts(Job.objects.filter(state__in=Job.ACTIVE), "version")
    nodes = list(nodes_for_pages())
    by_node: dict[int, dict[int, Cell]] = defaultdict(dict)
    for node_id, version_id, state, message in NodeDeployment.objects.filter(
        version__project=project, version__deleted_at__isnull=True
    ).values_list("node", "version", "state", "message"):
        by_node[node_id][version_id] = Cell(state, message[:300])

    versions = [
        VersionRow(
            v,
            current=v.pk == project.current_version_id,
            pinned_by=pinned.get(v.pk, 0),
            active_jobs=active.get(v.pk, 0),
        )
        for v in live
    ]
    for row in versions:
        cells = [by_node[n.pk].get(row.version.pk) for n in nodes]
        row.deployed = sum(1 for c in cells if c and c.state == NodeDeployment.State.DEPLOYED)
        row.failed = sum(1 for c in cells if c and c.state == NodeDeployment.State.FAILED)

    columns = versions[:MATRIX_VERSIONS]
    current = next((v for v in versions if v.current), None)
    if current is not None and current not in columns:
        columns = [*columns[: MATRIX_VERSIONS - 1], current]
    matrix = []
    for node in nodes:
        # Lacking the current version is a problem; lacking an older one is not.
        cells = [
            by_node[node.pk].get(v.version.pk) or Cell("missing" if v.current else "absent")
            for v in columns
        ]
        held = by_node[node.pk].get(current.version.pk) if current else None
        lacks = current is not None and (held is None or held.state != "deployed")
        matrix.append(MatrixRow(node, cells, missing_current=lacks))
    return ProjectPage(
        versions=versions,
        columns=columns,
        hidden_versions=len(versions) - len(columns),
        matrix=matrix,
        deleted_versions=deleted,
        missing_current=[r.node.name for r in matrix if r.missing_current and r.expected_current],
    )
