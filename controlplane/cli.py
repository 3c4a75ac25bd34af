"""The ``crawlfleet`` console script: one way in to every process of the platform.

Each subcommand lives in ``controlplane.commands.<module>`` and exposes ``add_arguments(parser)``
and ``run(args) -> int``. Modules are imported only when their subcommand runs, so ``crawlfleet
node`` on a Scrapyd host never imports Django. The long-running loops are management commands
that own their options; ``crawlfleet scheduler``, ``poller`` and ``alerts`` hand them every
argument unparsed.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# subcommand -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("controlplane.commands.up", "the whole platform on this machine"),
    "node": ("controlplane.commands.node", "one Scrapyd node that joins the fleet"),
    "web": ("controlplane.commands.web", "the web server: dashboard, REST and Scrapyd APIs"),
    "egg": ("controlplane.commands.egg", "build the crawler egg"),
    "deploy": ("controlplane.commands.deploy", "upload an egg to the control plane"),
    "token": ("controlplane.commands.token", "manage API tokens"),
    "manage": ("controlplane.commands.manage", "run a Django management command"),
}

# subcommand -> (management command, one-line help): loops whose options are the command's own
LOOPS: dict[str, tuple[str, str]] = {
    "scheduler": ("runscheduler", "fire cron tasks and dispatch jobs"),
    "poller": ("runpoller", "watch nodes and jobs, detect failures, retry, send alerts"),
    "alerts": ("runalerts", "send alerts only (pollers send them too, unless --no-alerts)"),
}


def run_loop(command: str, argv: list[str]) -> int:
    """A loop's management command, parsing its own options (``--help`` included)."""
    from controlplane.django_setup import setup

    setup()
    from django.core.management import execute_from_command_line

    execute_from_command_line(["crawlfleet", command, *argv])
    return 0


def build_parser(requested: str | None = None) -> argparse.ArgumentParser:
    """The parser; only the requested subcommand's module is imported to add its options."""
    parser = argparse.ArgumentParser(prog="crawlfleet", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module_name, help_text) in COMMANDS.items():
        command_parser = sub.add_parser(name, help=help_text, description=help_text)
        command_parser.set_defaults(_module=module_name)
        if name == requested:
            importlib.import_module(module_name).add_arguments(command_parser)
    for name, (_command, help_text) in LOOPS.items():
        sub.add_parser(name, help=f"{help_text} (options: crawlfleet {name} --help)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in LOOPS:
        return run_loop(LOOPS[argv[0]][0], argv[1:])
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    module = importlib.import_module(args._module)
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
