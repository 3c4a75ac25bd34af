"""A job's log, read from its node in bounded pieces, for faces that show it (the dashboard).

The browser never talks to a node: the control plane reads the log for it. What is read is
always the job's own log (``Job.log_path``, built from the job's project, spider and Scrapyd id),
on the job's own node; callers pass only a byte offset. Each read asks the node for at most
:data:`LOG_CHUNK_BYTES` with an HTTP range, never the whole file, and returns whole lines (so a
line, and a secret on it, is never cut in two), with secrets masked: Scrapy logs its overridden
settings, and those include the job's report token.

A node that is down, a log not written yet or already deleted give a :class:`LogChunk` with a
message for the reader instead of an exception.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

from controlplane.jobs.models import Job
from controlplane.lib.scrapyd import ScrapydError
from controlplane.validators import NAME_RE

LOG_CHUNK_BYTES = 64 * 1024  # the most one read asks of a node
LOG_READ_TIMEOUT = 3.0  # seconds; a reader polls again soon, a dead node must not hold it up
HIDDEN = "(hidden)"
KEPT_LOGS = (
    "Scrapyd keeps only the most recent logs of each spider (its jobs_to_keep: 5 by default, "
    "20 on crawlfleet nodes) and deletes older ones"
)

_SECRET_NAME = (
    r"[A-Za-z0-9_.\-]*(?:pass|secret|token|credential|authorization|api_?key|private_?key)"
    r"[A-Za-z0-9_.\-]*"
)
_SECRET_PATTERNS = [
    # 'CRAWLFLEET_JOB_TOKEN': 'value' (Scrapy's "Overridden settings" dict, JSON, reprs)
    (
        re.compile(
            rf"""(?P<q>['"])(?P<name>{_SECRET_NAME})(?P=q)(?P<sep>\s*:\s*)(?P<v>['"])(?:\\.|(?!(?P=v)).)*(?P=v)""",
            re.I,
        ),
        rf"\g<q>\g<name>\g<q>\g<sep>\g<v>{HIDDEN}\g<v>",
    ),
    # CRAWLFLEET_JOB_TOKEN=value (command lines, environment dumps)
    (re.compile(rf"\b(?P<name>{_SECRET_NAME})=[^\s'\",]+", re.I), rf"\g<name>={HIDDEN}"),
    # scheme://user:password@host
    (
        re.compile(r"(?P<head>\b[a-z][a-z0-9+.\-]*://[^\s/:@'\"]*):[^\s/@'\"]+@", re.I),
        rf"\g<head>:{HIDDEN}@",
    ),
    # Authorization: Bearer value
    (re.compile(r"\b(?P<s>bearer|basic)\s+[A-Za-z0-9._~+/=\-]{16,}", re.I), rf"\g<s> {HIDDEN}"),
]


def mask_secrets(text: str) -> str:
    """``text`` with anything that looks like a credential replaced by ``(hidden)``."""
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


@dataclass
class LogChunk:
    """One read of a job's log: the text, where the next read starts, and what to tell the reader.

    ``state`` is ``ok`` (read), ``waiting`` (no node or no log yet), ``gone`` (the node deleted
    it), ``none`` (the job never ran on a node), ``unreachable`` or ``error``. ``complete``: the
    job has ended and every byte has been read, so there is nothing more to ask for. ``more``:
    the log already holds more than this read returned.
    """

    state: str
    text: str = ""
    next_offset: int | None = None
    size: int | None = None
    skipped: int = 0
    complete: bool = False
    more: bool = False
    message: str = ""


def has_plain_names(job: Job) -> bool:
    """Project, spider and Scrapyd id are plain names, so the log's path stays in the job's own
    folder of the node's ``logs/`` (names are validated on the way in; this is the last guard)."""
    parts = (job.project.name, job.spider, job.scrapyd_job_id)
    return all(NAME_RE.match(part) and ".." not in part for part in parts)


def read_log(job: Job, offset: int | None = None, max_bytes: int = LOG_CHUNK_BYTES) -> LogChunk:
    """The job's log from byte ``offset`` (None: its last ``max_bytes``, from a line start)."""
    if offset is not None and offset < 0:
        raise ValueError("a log offset is a byte position, 0 or more")
    if not has_plain_names(job):
        return LogChunk("error", complete=True, message="This job's names do not make a log path.")
    node = job.node
    if node is None:
        if job.is_final:
            return LogChunk("none", complete=True, message="This job never ran on a node.")
        return LogChunk(
            "waiting", next_offset=offset, message="Waiting for a node; the log follows."
        )
    try:
        got = node.client(timeout=LOG_READ_TIMEOUT).read_range(job.log_path, offset, max_bytes)
    except ScrapydError as exc:
        if exc.unreachable:
            return LogChunk(
                "unreachable",
                next_offset=offset,
                message=f"Node {node.name} does not answer, so the log cannot be read now. "
                "Trying again.",
            )
        return LogChunk(
            "error", next_offset=offset, message=f"Node {node.name} did not serve the log: {exc}"
        )
    if got is None:
        if job.is_final:
            return LogChunk(
                "gone",
                complete=True,
                message=f"Node {node.name} no longer has this job's log: {KEPT_LOGS}.",
            )
        waiting = "has not started the job yet" if job.state != Job.State.RUNNING else "has no log"
        return LogChunk("waiting", next_offset=offset, message=f"Node {node.name} {waiting} yet.")
    data, start = got.data, got.start
    if offset is None and start > 0:  # a tail: begin at the first whole line
        newline = data.find(b"\n")
        if newline >= 0:
            data, start = data[newline + 1 :], start + newline + 1
    at_end = got.end >= got.size
    ended = job.is_final and at_end
    last_newline = data.rfind(b"\n")
    if last_newline >= 0 and not ended:
        data = data[: last_newline + 1]  # whole lines only; the rest comes with the next read
    elif last_newline < 0 and not ended and len(got.data) < max_bytes:
        data = b""  # a line still being written
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    text = decoder.decode(data, final=ended)
    end = start + len(data) - len(decoder.getstate()[0])
    return LogChunk(
        "ok",
        text=mask_secrets(text),
        next_offset=end,
        size=got.size,
        skipped=start if offset is None else 0,
        complete=job.is_final and end >= got.size,
        more=end < got.size and bool(data),
    )
