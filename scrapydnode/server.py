"""Running a node: render its config, then run Scrapyd (twistd) in this very process.

Scrapyd runs in the foreground in the calling process (no extra supervisor process), so a
SIGKILL of this process is exactly a Scrapyd crash: its crawl processes keep running.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import warnings
from pathlib import Path

from scrapydnode.config import WILDCARD_BINDS, NodeConfig, NodeConfigError
from scrapydnode.registration import Registrar

logger = logging.getLogger("crawlfleet.node")
TXAPP = Path(__file__).with_name("txapp.py")  # passed to twistd by path, never imported here

# Variables that would silently override the node's own config, in Scrapyd or in Scrapy.
OVERRIDING_ENV = (
    "SCRAPYD_BIND_ADDRESS",
    "SCRAPYD_HTTP_PORT",
    "SCRAPYD_UNIX_SOCKET_PATH",
    "SCRAPYD_EGG_VERSION",
    "SCRAPY_SETTINGS_MODULE",
    "SCRAPY_PROJECT",
)


def check_pkg_resources() -> None:
    """Scrapyd 1.6 imports pkg_resources, which setuptools 81 removed: fail now, not per job."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            import pkg_resources  # noqa: F401
        except ImportError as exc:
            raise NodeConfigError(
                f"this Python ({sys.executable}) has no pkg_resources, which Scrapyd 1.6 needs "
                "to run every job: install 'setuptools<81' into its environment"
            ) from exc


def check_port_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host or "0.0.0.0", port))
        except OSError as exc:
            raise NodeConfigError(
                f"cannot listen on {host}:{port}: {exc.strerror or exc} "
                "(another node or program is using it?)"
            ) from exc


def registration_payload(config: NodeConfig) -> dict[str, object]:
    """What the control plane's registry needs; the basic-auth pair only when Scrapyd uses it."""
    import scrapyd

    payload: dict[str, object] = {
        "name": config.name,
        "url": config.url,
        "max_proc": config.max_proc,
        "tags": list(config.tags),
        "scrapyd_version": scrapyd.__version__,
    }
    username = os.environ.get("SCRAPYD_USERNAME", "")
    password = os.environ.get("SCRAPYD_PASSWORD", "")
    if username and password:
        # Without them the control plane could not call this node's API at all.
        payload.update(username=username, password=password)
    return payload


def start_registrar(config: NodeConfig) -> Registrar | None:
    if config.register is None or config.token is None:
        return None
    probe_host = "127.0.0.1" if config.bind in WILDCARD_BINDS else config.bind
    payload = registration_payload(config)
    registrar = Registrar(
        config.register_endpoint,
        config.token,
        lambda: dict(payload),
        interval=config.heartbeat,
        ready=(probe_host, config.port),
    )
    registrar.start()
    return registrar


def prepare(config: NodeConfig) -> Path:
    """Validate, check the environment, and write the node's files; return scrapyd.conf."""
    config.validate()
    check_pkg_resources()
    check_port_free(config.bind, config.port)
    return config.write()


def run_node(config: NodeConfig) -> int:
    """Run the node until it is stopped; returns the exit status."""
    logging.basicConfig(
        level=logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s [%(name)s] %(levelname)s: %(message)s",
    )
    conf_path = prepare(config)
    for name in OVERRIDING_ENV:
        if os.environ.pop(name, None) is not None:
            logger.warning("ignoring %s from the environment: the node config decides", name)
    # The token stays out of crawl processes' environments (the launcher strips it too).
    os.environ.pop("CRAWLFLEET_NODE_TOKEN", None)
    os.chdir(config.dir)  # Scrapyd and its runner read ./scrapyd.conf
    logger.info(
        "node %s: %s, dir %s, max_proc %d", config.name, config.url, config.dir, config.max_proc
    )
    logger.info("wrote %s", conf_path)
    registrar = start_registrar(config)

    from twisted.scripts import twistd

    options = twistd.ServerOptions()
    options.parseOptions(["--nodaemon", "--pidfile=", "--logfile=-", "--python", str(TXAPP)])
    try:
        twistd.runApp(options)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 1
    finally:
        if registrar is not None:
            registrar.stop()
    return 0


def main_error(message: str) -> int:
    print(f"crawlfleet node: error: {message}", file=sys.stderr)
    return 2


__all__ = ["NodeConfig", "NodeConfigError", "main_error", "prepare", "run_node"]
