"""Validated settings of a node and the scrapyd.conf rendered from them."""

from __future__ import annotations

import ipaddress
import os
import re
import socket
import string
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from urllib.parse import urlsplit

TEMPLATE = "templates/scrapyd.conf"
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")
TAG_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:=-]{0,63}$")
HOST_RE = re.compile(
    r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9][A-Za-z0-9-]{0,62})*$"
)
WILDCARD_BINDS = {"0.0.0.0", "::", ""}


class NodeConfigError(ValueError):
    """A node option is invalid; the message says which and why."""


@dataclass
class NodeConfig:
    port: int
    dir: Path
    bind: str = "127.0.0.1"
    max_proc: int = field(default_factory=lambda: os.cpu_count() or 1)
    name: str = ""
    tags: list[str] = field(default_factory=list)
    register: str | None = None
    token: str | None = None
    poll_interval: float = 1.0
    heartbeat: float = 15.0
    url: str = ""
    jobs_to_keep: int = 20
    finished_to_keep: int = 200
    exits_to_keep: int = 1000

    def validate(self) -> NodeConfig:
        """Check every option, fill in derived defaults, and return self."""
        if not 1 <= self.port <= 65535:
            raise NodeConfigError(f"--port {self.port} is out of range (1-65535)")
        self.bind = self.bind.strip()
        _check_host(self.bind, "--bind")
        if self.max_proc < 1:
            raise NodeConfigError(f"--max-proc must be at least 1, got {self.max_proc}")
        if not 0.05 <= self.poll_interval <= 3600:
            raise NodeConfigError(f"--poll-interval must be 0.05-3600 s, got {self.poll_interval}")
        if not 0.1 <= self.heartbeat <= 3600:
            raise NodeConfigError(f"--heartbeat must be 0.1-3600 s, got {self.heartbeat}")
        for option, value in (
            ("--jobs-to-keep", self.jobs_to_keep),
            ("--finished-to-keep", self.finished_to_keep),
        ):
            if value < 1:
                raise NodeConfigError(f"{option} must be at least 1, got {value}")
        self.name = self.name or f"{socket.gethostname()}-{self.port}"
        if not NAME_RE.match(self.name):
            raise NodeConfigError(
                f"--name {self.name!r} is invalid: letters, digits and _.:- only, at most 100"
            )
        for tag in self.tags:
            if not TAG_RE.match(tag):
                raise NodeConfigError(
                    f"tag {tag!r} is invalid: letters, digits and _.:=- only, at most 64"
                )
        self.url = (self.url or self.default_url()).rstrip("/")
        _check_http_url(self.url, "--url")
        if (self.register is None) != (self.token is None):
            raise NodeConfigError(
                "--register and --token go together (the token may also come from "
                "CRAWLFLEET_NODE_TOKEN)"
            )
        if self.register is not None:
            self.register = self.register.rstrip("/")
            _check_http_url(self.register, "--register")
            if not self.token or any(c.isspace() for c in self.token):
                raise NodeConfigError("--token must be a non-empty string without whitespace")
        self.dir = _check_dir(self.dir)
        return self

    def default_url(self) -> str:
        """The base URL others reach this node at; a wildcard bind advertises the host name."""
        host = socket.getfqdn() if self.bind in WILDCARD_BINDS else self.bind
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}"

    @property
    def register_endpoint(self) -> str:
        assert self.register is not None
        return f"{self.register}/api/v1/nodes/register"

    @property
    def eggs_dir(self) -> Path:
        return self.dir / "eggs"

    @property
    def logs_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def dbs_dir(self) -> Path:
        return self.dir / "dbs"

    @property
    def conf_path(self) -> Path:
        return self.dir / "scrapyd.conf"

    def render(self) -> str:
        """scrapyd.conf text for this node."""
        template = string.Template(resources.files(__package__).joinpath(TEMPLATE).read_text())
        values = {
            "bind_address": self.bind,
            "http_port": self.port,
            "node_name": self.name,
            "max_proc": self.max_proc,
            "poll_interval": self.poll_interval,
            "eggs_dir": self.eggs_dir,
            "logs_dir": self.logs_dir,
            "dbs_dir": self.dbs_dir,
            "jobs_to_keep": self.jobs_to_keep,
            "finished_to_keep": self.finished_to_keep,
            "exits_to_keep": self.exits_to_keep,
        }
        return template.substitute({key: _conf_value(value) for key, value in values.items()})

    def write(self) -> Path:
        """Create the node's directories and write its scrapyd.conf (and a guard scrapy.cfg)."""
        for directory in (self.eggs_dir, self.logs_dir, self.dbs_dir):
            directory.mkdir(parents=True, exist_ok=True)
        self.conf_path.write_text(self.render(), encoding="utf-8")
        # Scrapyd and Scrapy both read the closest scrapy.cfg above the working directory. An
        # empty one here stops a node that lives inside a checkout from picking up the
        # checkout's [settings] as an extra project.
        (self.dir / "scrapy.cfg").write_text(
            "# Intentionally empty: keeps Scrapyd from reading a scrapy.cfg further up.\n",
            encoding="utf-8",
        )
        return self.conf_path


def parse_tags(raw: str | None) -> list[str]:
    return [tag.strip() for tag in (raw or "").split(",") if tag.strip()]


def _conf_value(value: object) -> str:
    text = str(value)
    if "\n" in text or "\r" in text:
        raise NodeConfigError(f"config value {text!r} contains a line break")
    return text.replace("%", "%%")


def _check_host(host: str, option: str) -> None:
    if host in WILDCARD_BINDS - {""}:
        return
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if not HOST_RE.match(host):
        raise NodeConfigError(f"{option} {host!r} is neither an IP address nor a host name")


def _check_http_url(url: str, option: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise NodeConfigError(f"{option} {url!r} must be an http(s) URL such as http://host:8000")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise NodeConfigError(f"{option} {url!r} must not contain credentials, a query or fragment")
    try:
        _ = parts.port
    except ValueError as exc:
        raise NodeConfigError(f"{option} {url!r}: {exc}") from exc


def _check_dir(path: Path) -> Path:
    path = Path(path).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise NodeConfigError(f"--dir {path} exists and is not a directory")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_text("")
        probe.unlink()
    except OSError as exc:
        raise NodeConfigError(f"--dir {path} is not writable: {exc.strerror or exc}") from exc
    return path
