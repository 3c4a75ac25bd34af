"""Reading an uploaded egg with a cap, so no face holds more than the egg limit in memory.

An upload's declared size is the client's word, and Django streams large file parts to disk
without a limit of its own: reading the whole part before checking would let one request fill
the web process's memory. Every face that accepts an egg reads it through here.
"""

from __future__ import annotations

from typing import IO

from controlplane.deploys.services import DeployError
from controlplane.lib.eggs import MAX_EGG_BYTES


def too_large(limit: int = MAX_EGG_BYTES) -> DeployError:
    message = f"the egg is larger than the limit of {limit} bytes"
    return DeployError(message, code="too_large", status=413, fields={"egg": [message]})


def read_egg_upload(
    upload: IO[bytes], size: int | None = None, limit: int = MAX_EGG_BYTES
) -> bytes:
    """The upload's bytes, or ``DeployError`` (413) past ``limit``; never reads more than that."""
    if size is not None and size > limit:
        raise too_large(limit)
    data = upload.read(limit + 1)
    if len(data) > limit:
        raise too_large(limit)
    return data
