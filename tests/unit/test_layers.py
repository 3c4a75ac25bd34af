"""The code stacks one way: a module imports only from its own layer or below.

Every import is read from the source with ``ast``: module-level, inside functions (lazy imports)
and string literals passed to ``importlib.import_module`` or ``__import__``. A dynamic import of a
computed name is allowed only at the top, in the entrypoints, where nothing sits above it.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Lowest first. A module belongs to the longest prefix listed.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    ("lib", ("controlplane.lib",)),
    (
        "base",
        (
            "controlplane",
            "controlplane.settings",
            "controlplane.staticfiles",
            "controlplane.refusals",
            "controlplane.csp",
            "controlplane.validators",
            "controlplane.django_setup",
            "controlplane.events",
        ),
    ),
    ("accounts", ("controlplane.accounts",)),
    ("telemetry", ("controlplane.telemetry",)),
    ("nodes", ("controlplane.nodes",)),
    ("deploys", ("controlplane.deploys",)),
    ("scheduling", ("controlplane.scheduling",)),
    ("monitors", ("controlplane.monitors",)),
    ("jobs", ("controlplane.jobs",)),
    ("alerts", ("controlplane.alerts",)),
    ("loops", ("controlplane.loops",)),
    (
        "faces",
        (
            "controlplane.api",
            "controlplane.dashboard",
            "controlplane.metrics",
            "controlplane.scrapydapi",
            "controlplane.requestguard",
            "controlplane.urls",
            "controlplane.wsgi",
        ),
    ),
    ("entrypoints", ("controlplane.cli", "controlplane.commands")),
]
RANK = {name: rank for rank, (name, _) in enumerate(LAYERS)}
# Packages that run elsewhere and may only use these (and the standard library and their deps).
SEPARATE = {
    "crawler": ("crawler",),  # shipped alone as an egg: nothing of the control plane is there
    "scrapydnode": ("scrapydnode", "controlplane.lib"),  # runs on crawl hosts, never Django
}
NO_DJANGO = ("controlplane.lib", "scrapydnode", "crawler")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    best, best_len = None, -1
    for name, prefixes in LAYERS:
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_len:
                best, best_len = name, len(prefix)
    return best


def imports_of(path: Path, source: str) -> Iterator[tuple[int, str, bool]]:
    """(line, imported module, dynamic-with-a-computed-name) for every import in the file."""
    tree = ast.parse(source, filename=str(path))
    package = (
        module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else module_name(path)
    )
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, False
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target, False
            for alias in node.names:  # `from controlplane import bootstrap` imports a module
                yield node.lineno, f"{target}.{alias.name}", False
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name in ("import_module", "__import__"):
                arg = node.args[0] if node.args else None
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    yield node.lineno, arg.value, False
                else:
                    yield node.lineno, "<computed>", True


def source_files() -> list[Path]:
    files = []
    for top in ("controlplane", "scrapydnode", "crawler"):
        files += [p for p in (REPO / top).rglob("*.py") if "migrations" not in p.parts]
    return sorted(files)


def _is_module(name: str) -> bool:
    """``from pkg import name`` names a module only if such a file or package exists."""
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def violations(path: Path, source: str | None = None) -> list[str]:
    here = module_name(path)
    found = []
    for line, target, computed in imports_of(path, path.read_text() if source is None else source):
        where = f"{path.relative_to(REPO)}:{line}"
        top = target.split(".")[0]
        if computed:
            if layer_of(here) != "entrypoints":
                found.append(f"{where}: dynamic import of a computed name hides a dependency")
            continue
        if any(here == p or here.startswith(p + ".") for p in NO_DJANGO) and top == "django":
            found.append(f"{where}: {here} must not import Django")
        if top not in ("controlplane", "scrapydnode", "crawler", "demo", "tests"):
            continue
        if top in ("demo", "tests"):
            found.append(f"{where}: production code imports {target}")
            continue
        if not _is_module(target) and "." in target:
            target = target.rsplit(".", 1)[0]  # `from module import attribute`
        separate = next((s for s in SEPARATE if here == s or here.startswith(s + ".")), None)
        if separate is not None:
            allowed = SEPARATE[separate]
            if not any(target == a or target.startswith(a + ".") for a in allowed):
                found.append(f"{where}: {here} may only import {', '.join(allowed)}, not {target}")
            continue
        if top == "scrapydnode" and layer_of(here) == "entrypoints":
            continue  # `crawlfleet node` starts the node runtime
        if top == "crawler":
            if target == "crawler.sharedkeys" or layer_of(here) == "entrypoints":
                continue  # the key rule both sides share; the CLI builds the crawler's egg
            found.append(f"{where}: the control plane imports the crawler ({target})")
            continue
        mine, theirs = layer_of(here), layer_of(target)
        if mine is None or theirs is None:
            found.append(f"{where}: {here if mine is None else target} has no layer")
        elif RANK[theirs] > RANK[mine]:
            found.append(f"{where}: {mine} imports {theirs} ({target}), a layer above it")
    return found


def test_every_module_has_a_layer() -> None:
    orphans = [
        module_name(p)
        for p in source_files()
        if p.parts[len(REPO.parts)] == "controlplane" and layer_of(module_name(p)) is None
    ]
    assert orphans == []


def test_no_module_imports_a_layer_above_it() -> None:
    problems = [problem for path in source_files() for problem in violations(path)]
    assert problems == [], "\n".join(problems)


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from controlplane.jobs.models import Job\n", "deploys imports jobs"),
        (
            "def f():\n    from controlplane.scheduling.models import Task\n",
            "deploys imports scheduling",
        ),
        (
            "import importlib\nimportlib.import_module('controlplane.jobs.models')\n",
            "deploys imports jobs",
        ),
        ("import importlib\nname = 'x'\nimportlib.import_module(name)\n", "computed name"),
    ],
)
def test_the_check_sees_upward_imports_of_every_kind(source: str, expected: str) -> None:
    probe = REPO / "controlplane" / "deploys" / "probe.py"
    found = violations(probe, source)
    assert any(expected in problem for problem in found), found


def test_module_size_stays_readable() -> None:
    """Modules over 400 lines are split along a seam a reader can name."""
    long = {
        str(p.relative_to(REPO)): n
        for p in source_files()
        if (n := len(p.read_text().splitlines())) > 400
    }
    assert long == {}
