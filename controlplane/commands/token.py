"""``crawlfleet token create|list|revoke``: API tokens, managed on the control plane's host.

The secret is printed once, at creation; only its hash is stored.
"""

from __future__ import annotations

import argparse
import sys

ROLES = ("admin", "operator", "viewer", "node")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = sub.add_parser("create", help="create a token and print its secret (shown once)")
    create.add_argument("name", help="what the token is for, e.g. jenkins or node-eu-1")
    create.add_argument("--role", choices=ROLES, default="operator", help="default: operator")
    sub.add_parser("list", help="list tokens (never their secrets)")
    revoke = sub.add_parser("revoke", help="revoke a token by name")
    revoke.add_argument("name")


def run(args: argparse.Namespace) -> int:
    from controlplane.django_setup import setup

    setup()
    import getpass

    from controlplane.accounts import audit, tokens
    from controlplane.accounts.models import ApiToken
    from controlplane.refusals import Refused

    # Tokens made on the command line are audited as the shell user who made them.
    actor = audit.Actor("system", f"cli:{getpass.getuser()}", None)
    if args.token_command == "create":
        try:
            token, secret = tokens.create_token(args.name, args.role, actor=actor)
        except Refused as exc:
            print(f"crawlfleet token: error: {exc.message}", file=sys.stderr)
            return 1 if exc.status == 409 else 2
        print(
            f"created {args.role} token {token.name!r}; its secret (shown only now):",
            file=sys.stderr,
        )
        print(secret)
        return 0
    if args.token_command == "list":
        rows = list(ApiToken.objects.all())
        if not rows:
            print("no tokens", file=sys.stderr)
        for token in rows:
            used = token.last_used.isoformat(timespec="seconds") if token.last_used else "never"
            state = "revoked" if token.revoked else "active"
            print(f"{token.name}\t{token.role}\t{token.prefix}…\t{state}\tlast used {used}")
        return 0
    token = ApiToken.objects.filter(name=args.name).first()
    if token is None or token.revoked:
        print(
            f"crawlfleet token: error: {'already revoked' if token else 'no token named'} {args.name!r}",
            file=sys.stderr,
        )
        return 1
    tokens.revoke_token(token, actor=actor)
    print(f"revoked {args.name!r}", file=sys.stderr)
    return 0
