"""``crawlfleet manage ...``: Django's management commands with crawlfleet's settings."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("argv", nargs=argparse.REMAINDER, help="e.g. migrate, createsuperuser")


def run(args: argparse.Namespace) -> int:
    from controlplane.django_setup import setup

    setup()
    from django.core.management import execute_from_command_line

    execute_from_command_line(["crawlfleet manage", *args.argv])
    return 0
