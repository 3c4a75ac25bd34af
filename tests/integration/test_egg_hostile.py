"""Hostile eggs through the upload service: refused with a 4xx, nothing stored, memory bounded.

Each egg goes through ``deploys.services.upload_version``, the call every face makes. The
checks decompress members only in chunks and against a counter, so a bomb costs a few chunks of
memory, never its unpacked size: measured with tracemalloc around the call.
"""

from __future__ import annotations

import io
import stat
import struct
import tracemalloc
import zipfile
from collections.abc import Callable

import pytest

from controlplane.deploys import services
from controlplane.deploys.models import Project, Version
from controlplane.lib.eggs import MAX_EGG_BYTES
from controlplane.refusals import Refused

MEMORY_LIMIT = 64 * 1024 * 1024
ENTRY_POINTS = ("EGG-INFO/entry_points.txt", "[scrapy]\nsettings = crawler.settings\n")
SETTINGS = ("crawler/settings.py", "BOT_NAME = 'crawler'\n")


def egg(*members: tuple[zipfile.ZipInfo | str, bytes | str], level: int = 6) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=level) as archive:
        for name, data in (*members, ENTRY_POINTS, SETTINGS):
            archive.writestr(name, data)
    return buffer.getvalue()


def gigabyte_bomb() -> bytes:
    """About 5 MB that unpack to 1 GiB of zeros, written in chunks (never 1 GiB in memory)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        with archive.open("crawler/bomb.txt", "w", force_zip64=True) as member:
            chunk = bytes(1024 * 1024)
            for _ in range(1024):
                member.write(chunk)
        for name, data in (ENTRY_POINTS, SETTINGS):
            archive.writestr(name, data)
    return buffer.getvalue()


def lying_bomb() -> bytes:
    """A member that declares 1000 bytes and holds 32 MiB: the headers' sizes are patched."""
    data = bytearray(egg(("crawler/data.bin", bytes(32 * 1024 * 1024))))
    local = data.find(b"PK\x03\x04")  # the first member's local header
    central = data.find(b"PK\x01\x02")  # and its central directory entry
    struct.pack_into("<I", data, local + 22, 1000)
    struct.pack_into("<I", data, central + 24, 1000)
    return bytes(data)


def symlink_egg() -> bytes:
    link = zipfile.ZipInfo("crawler/passwd")
    link.external_attr = (stat.S_IFLNK | 0o777) << 16
    return egg((link, "/etc/passwd"))


HOSTILE: dict[str, tuple[Callable[[], bytes], str]] = {
    "zip bomb (1 GiB)": (gigabyte_bomb, "unpacks to more than"),
    "member bigger than it declares": (lying_bomb, "cannot be read"),
    "zip-slip with ..": (lambda: egg(("../../x.py", "x")), "zip-slip"),
    "zip-slip inside a package": (lambda: egg(("crawler/../../x.py", "x")), "zip-slip"),
    "absolute path": (lambda: egg(("/etc/cron.d/x", "x")), "absolute"),
    "drive letter": (lambda: egg(("C:/x.py", "x")), "absolute"),
    "symbolic link": (symlink_egg, "symbolic link"),
    "over the size limit": (lambda: b"PK" + bytes(MAX_EGG_BYTES), "more than the limit"),
    "not a zip": (lambda: b"#!/bin/sh\nrm -rf /\n", "not a zip"),
    "empty": (lambda: b"", "empty"),
    "truncated zip": (lambda: egg(("crawler/a.py", "x" * 5000))[:-40], "not a zip"),
}


@pytest.mark.parametrize("case", HOSTILE, ids=str)
def test_hostile_egg_is_refused_stores_nothing_and_stays_in_bounded_memory(case, db, tmp_path):
    build, message = HOSTILE[case]
    data = build()
    tracemalloc.start()
    try:
        with pytest.raises(Refused) as refused:
            services.upload_version("crawler", "100", data)
        _size, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert 400 <= refused.value.status < 500
    assert message in refused.value.message
    assert peak < MEMORY_LIMIT, f"checking the egg took {peak} bytes"
    assert not Project.objects.exists()
    assert not Version.objects.exists()


def test_a_plain_egg_still_passes_the_streaming_checks(db):
    outcome = services.upload_version("crawler", "100", egg(("crawler/__init__.py", "")))
    assert outcome.version.version == "100"
    assert Version.objects.filter(project__name="crawler").count() == 1
