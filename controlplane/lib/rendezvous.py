"""Rendezvous (highest-random-weight) hashing: which member of a set owns a key.

Every member computes the same owner from the same member list, with no coordination beyond
agreeing on the list. When a member joins or leaves, only the keys it gains or held move; the
rest keep their owner, so work split this way is reshuffled as little as possible.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence


def weight(key: str, member: str) -> int:
    """A stable pseudo-random weight of the pair: the same on every host and every run (unlike
    ``hash()``, which is salted per process)."""
    digest = hashlib.blake2b(f"{member}\x00{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, members: Sequence[str]) -> str:
    """The member that owns ``key``; ``members`` must not be empty."""
    if not members:
        raise ValueError("no members to own the key")
    return max(members, key=lambda member: (weight(key, member), member))


def share(keys: Iterable[str], members: Sequence[str], member: str) -> list[str]:
    """The keys ``member`` owns, in their given order."""
    return [key for key in keys if owner(key, members) == member]
