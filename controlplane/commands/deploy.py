"""``crawlfleet deploy [EGG]``: upload an egg to the control plane, which deploys it everywhere.

Without EGG, the project in ``--project-dir`` is built first. Prints one line per node. Exit
status: 0 deployed to every node, 1 refused (invalid egg, every node rejected it, version taken,
auth), 2 usage or build error, 3 stored but some nodes failed (they catch up when healthy).

Never imports Django: CI runs this without the control plane's settings.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

EXIT_OK, EXIT_REFUSED, EXIT_USAGE, EXIT_PARTIAL = 0, 1, 2, 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("egg", nargs="?", type=Path, help="egg file (default: build one)")
    parser.add_argument(
        "--url",
        default=os.environ.get("CRAWLFLEET_URL", ""),
        help="control plane base URL (env CRAWLFLEET_URL)",
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("CRAWLFLEET_TOKEN", ""),
        help="operator API token (env CRAWLFLEET_TOKEN, which keeps it out of ps)",
    )
    parser.add_argument("--project", help="project name (default: the egg's package)")
    parser.add_argument("--version", help="numeric version (default: the egg's own version)")
    parser.add_argument(
        "--project-dir", type=Path, default=Path("."), help="Scrapy project to build (default: .)"
    )
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")


def _fail(message: str, code: int) -> int:
    print(f"crawlfleet deploy: error: {message}", file=sys.stderr)
    return code


def _print_nodes(nodes: list[dict[str, Any]]) -> None:
    for result in nodes:
        mark = "ok    " if result.get("ok") else "FAILED"
        print(f"  {mark} {result.get('node')}: {result.get('message', '')}")


def run(args: argparse.Namespace) -> int:
    import requests

    from controlplane.lib.eggs import EggError, build_egg, inspect_egg

    if not args.url:
        return _fail("--url (or CRAWLFLEET_URL) is required", EXIT_USAGE)
    if not args.token:
        return _fail("--token (or CRAWLFLEET_TOKEN) is required", EXIT_USAGE)
    try:
        if args.egg is None:
            built = build_egg(args.project_dir, version=args.version)
            data, version, package = built.data, built.version, built.package
            print(f"built {built.path}", file=sys.stderr)
        else:
            data = args.egg.read_bytes()
            info = inspect_egg(data)
            version = args.version or info.version or ""
            package = info.settings_module.split(".")[0]
    except OSError as exc:
        return _fail(f"cannot read {args.egg}: {exc}", EXIT_USAGE)
    except EggError as exc:
        return _fail(str(exc), EXIT_USAGE if args.egg is None else EXIT_REFUSED)
    project = args.project or package
    endpoint = f"{args.url.rstrip('/')}/api/v1/projects/{project}/versions"
    try:
        response = requests.post(
            endpoint,
            headers={"Authorization": f"Bearer {args.token}"},
            data={"version": version},
            files={"egg": (f"{project}-{version}.egg", data, "application/octet-stream")},
            timeout=args.timeout,
        )
    except requests.RequestException as exc:
        return _fail(f"cannot reach {args.url}: {exc}", EXIT_REFUSED)
    try:
        body = response.json()
    except ValueError:
        return _fail(f"HTTP {response.status_code} from {endpoint}: {response.text[:300]}", 1)
    if response.status_code >= 400:
        error = body.get("error", {}) if isinstance(body, dict) else {}
        print(
            f"crawlfleet deploy: refused (HTTP {response.status_code}): "
            f"{error.get('message', response.text[:300])}",
            file=sys.stderr,
        )
        _print_nodes(error.get("nodes", []))
        return EXIT_REFUSED
    print(f"{body['project']} {body['version']}: {body['message']}")
    _print_nodes(body.get("nodes", []))
    if body.get("spiders"):
        print(f"  spiders: {', '.join(body['spiders'])}")
    return EXIT_OK if body.get("ok") else EXIT_PARTIAL
