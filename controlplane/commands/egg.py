"""``crawlfleet egg build``: the deployable egg of a Scrapy project (by default, ``crawler``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from controlplane.lib.eggs import EggError, build_egg


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="egg_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build an egg and print its path")
    build.add_argument(
        "--version", help="numeric, sortable version (default: UTC timestamp YYYYMMDDHHMMSS)"
    )
    build.add_argument(
        "--output", type=Path, help="directory for the egg (default: <project-dir>/dist)"
    )
    build.add_argument(
        "--project-dir",
        type=Path,
        default=Path("."),
        help="Scrapy project directory with scrapy.cfg (default: current directory)",
    )
    build.add_argument(
        "--settings", help="settings module (default: [settings] default in scrapy.cfg)"
    )


def run(args: argparse.Namespace) -> int:
    try:
        egg = build_egg(
            args.project_dir,
            version=args.version,
            output_dir=args.output,
            settings_module=args.settings,
        )
    except EggError as exc:
        print(f"crawlfleet egg: error: {exc}", file=sys.stderr)
        return 2
    print(egg.path)
    return 0
