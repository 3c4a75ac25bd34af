"""Scrapyd's launcher, plus a record of each crawl process's real exit (see ``exits``).

Selected with ``launcher = scrapydnode.launcher.ExitRecordingLauncher`` in scrapyd.conf.
Recording must never break launching, so every store call is guarded.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from scrapyd.interfaces import IEnvironment
from scrapyd.launcher import Launcher, ScrapyProcessProtocol, get_crawl_args
from twisted.internet import error, reactor
from twisted.logger import Logger

from scrapydnode.exits import ExitStore

log = Logger()

# Secrets of the node itself that crawl processes have no business seeing.
NODE_SECRETS = ("SCRAPYD_USERNAME", "SCRAPYD_PASSWORD", "CRAWLFLEET_NODE_TOKEN")


class RecordingProcessProtocol(ScrapyProcessProtocol):
    def __init__(self, *args: Any, store: ExitStore | None, version: str | None) -> None:
        super().__init__(*args)
        self.store = store
        self.version = version
        self.row_id: int | None = None
        self.exit_code: int | None = None
        self.signal: int | None = None

    def _identity(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "project": self.project,
            "spider": self.spider,
            "version": self.version,
            "pid": self.pid,
        }

    def connectionMade(self) -> None:
        super().connectionMade()
        if self.store is not None:
            try:
                self.row_id = self.store.started(**self._identity())
            except Exception:
                log.failure("could not record the start of job {job}", job=self.job)

    def processEnded(self, status: Any) -> None:
        value = status.value
        if isinstance(value, error.ProcessDone):
            self.exit_code, self.signal = 0, None
        else:
            self.exit_code = getattr(value, "exitCode", None)
            self.signal = getattr(value, "signal", None)
        if self.store is not None:
            try:
                self.store.ended(
                    self.row_id, exit_code=self.exit_code, signal=self.signal, **self._identity()
                )
            except Exception:
                log.failure("could not record the exit of job {job}", job=self.job)
        super().processEnded(status)


class ExitRecordingLauncher(Launcher):
    """Launches crawls like Scrapyd's launcher and records how each process ended."""

    def __init__(self, config: Any, app: Any) -> None:
        super().__init__(config, app)
        dbs_dir = config.get("dbs_dir", "dbs")
        os.makedirs(dbs_dir, exist_ok=True)
        self.exits = ExitStore(
            os.path.join(dbs_dir, "jobexits.db"),
            keep=config.getint("crawlfleet_exits_to_keep", 1000),
        )

    def _spawn_process(self, message: dict[str, Any], slot: int) -> None:
        # Same steps as Launcher._spawn_process, with the recording protocol.
        project = message["_project"]
        environment = self.app.getComponent(IEnvironment)
        message.setdefault("settings", {})
        message["settings"].update(environment.get_settings(message))

        env = environment.get_environment(message, slot)
        for name in NODE_SECRETS:
            env.pop(name, None)
        args = [sys.executable, "-m", self.runner, "crawl", *get_crawl_args(message)]

        process = RecordingProcessProtocol(
            project,
            message["_spider"],
            message["_job"],
            env,
            args,
            store=self.exits,
            version=message.get("_version"),
        )
        process.deferred.addBoth(self._process_finished, slot)

        reactor.spawnProcess(process, sys.executable, args=args, env=env)
        self.processes[slot] = process
        log.debug("Process slot {slot} occupied", slot=slot)
