"""Rendezvous hashing: the split of nodes between poller replicas (controlplane.lib.rendezvous)."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from controlplane.lib import rendezvous

KEYS = [str(pk) for pk in range(1, 2001)]
MEMBERS = ["host-a:11:aa01", "host-a:12:bb02", "host-b:7:cc03", "host-c:99:dd04"]


def test_every_key_has_one_owner_and_the_shares_are_close_to_even() -> None:
    shares = {member: rendezvous.share(KEYS, MEMBERS, member) for member in MEMBERS}
    owned = [key for share in shares.values() for key in share]
    assert sorted(owned, key=int) == KEYS  # each key once, none left out
    even = len(KEYS) / len(MEMBERS)
    for member, share in shares.items():
        assert 0.85 * even < len(share) < 1.15 * even, (member, len(share))


def test_the_owner_does_not_depend_on_the_order_of_the_members() -> None:
    backwards = list(reversed(MEMBERS))
    assert all(rendezvous.owner(k, MEMBERS) == rendezvous.owner(k, backwards) for k in KEYS)


def test_the_owner_is_the_same_in_another_process() -> None:
    """Replicas on other hosts must agree: the weight is no salted hash()."""
    code = (
        "from controlplane.lib import rendezvous;"
        f"print(','.join(rendezvous.owner(str(k), {MEMBERS!r}) for k in range(1, 201)))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out.split(",") == [rendezvous.owner(k, MEMBERS) for k in KEYS[:200]]


def test_a_member_joining_takes_keys_only_for_itself() -> None:
    before = {key: rendezvous.owner(key, MEMBERS[:3]) for key in KEYS}
    after = {key: rendezvous.owner(key, MEMBERS) for key in KEYS}
    moved = [key for key in KEYS if before[key] != after[key]]
    assert {after[key] for key in moved} == {MEMBERS[3]}
    assert len(moved) == len(rendezvous.share(KEYS, MEMBERS, MEMBERS[3]))


def test_a_member_leaving_hands_over_only_its_own_keys() -> None:
    before = {key: rendezvous.owner(key, MEMBERS) for key in KEYS}
    after = {key: rendezvous.owner(key, MEMBERS[1:]) for key in KEYS}
    moved = Counter(before[key] for key in KEYS if before[key] != after[key])
    assert set(moved) == {MEMBERS[0]}
    assert moved[MEMBERS[0]] == Counter(before.values())[MEMBERS[0]]


def test_a_lone_member_owns_everything_and_no_member_is_an_error() -> None:
    assert rendezvous.share(KEYS, ["only"], "only") == KEYS
    assert rendezvous.share(KEYS, ["only"], "other") == []
    with pytest.raises(ValueError, match="no members"):
        rendezvous.owner("1", [])
