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
    from django.core.exceptions import ValidationError

    from controlplane.api.models import ApiToken
    from controlplane.validators import validate_name

    if args.token_command == "create":
        try:
            validate_name(args.name)
        except ValidationError as exc:
            print(f"crawlfleet token: error: {' '.join(exc.messages)}", file=sys.stderr)
            return 2
        if ApiToken.objects.filter(name=args.name).exists():
            print(f"crawlfleet token: error: a token named {args.name!r} exists", file=sys.stderr)
            return 1
        token, secret = ApiToken.create(args.name, args.role)
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
    updated = ApiToken.objects.filter(name=args.name, revoked=False).update(revoked=True)
    if not updated:
        known = ApiToken.objects.filter(name=args.name).exists()
        print(
            f"crawlfleet token: error: {'already revoked' if known else 'no token named'} {args.name!r}",
            file=sys.stderr,
        )
        return 1
    print(f"revoked {args.name!r}", file=sys.stderr)
    return 0
