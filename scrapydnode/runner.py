"""The process Scrapyd starts for each crawl (and for ``listspiders``): egg first, then Scrapy.

Scrapyd's own runner appends the egg to ``sys.path``, so a node that also has the project
installed (a container built from the repository, an editable checkout) would silently run the
installed copy instead of the deployed version. This runner puts the egg first and takes the
settings module from the egg's entry point, ignoring any stray ``SCRAPY_SETTINGS_MODULE``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import tempfile
import warnings
from collections.abc import Iterator
from typing import Any

from scrapyd.config import Config
from scrapyd.utils import initialize_component


def _pkg_resources() -> Any:
    """Import pkg_resources without its deprecation warning (which Scrapyd logs as an error)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pkg_resources
    return pkg_resources


def activate_egg(path: str) -> None:
    pkg_resources = _pkg_resources()
    distributions = list(pkg_resources.find_distributions(path, only=True))
    if not distributions:
        sys.exit(f"crawlfleet runner: {path} is not a valid egg")
    distribution = distributions[0]
    distribution.activate(replace=True)  # first on sys.path, ahead of installed packages
    entry = distribution.get_entry_info("scrapy", "settings")
    if entry is None:
        sys.exit(f"crawlfleet runner: {path} has no [scrapy] settings entry point")
    os.environ["SCRAPY_SETTINGS_MODULE"] = entry.module_name


@contextlib.contextmanager
def project_environment(project: str) -> Iterator[None]:
    config = Config(extra_sources=[os.path.abspath("scrapyd.conf")])
    eggstorage = initialize_component(
        config, "eggstorage", "scrapyd.eggstorage.FilesystemEggStorage"
    )
    version, egg = eggstorage.get(project, os.environ.get("SCRAPYD_EGG_VERSION"))
    tmp_path = None
    if egg is not None:
        try:
            if hasattr(egg, "name"):
                activate_egg(egg.name)
            else:
                with tempfile.NamedTemporaryFile(
                    suffix=".egg", prefix=f"{project}-{version}-", delete=False
                ) as tmp:
                    shutil.copyfileobj(egg, tmp)
                    tmp_path = tmp.name
                activate_egg(tmp_path)
        finally:
            egg.close()
    try:
        yield
    finally:
        if tmp_path:
            os.remove(tmp_path)


def main() -> None:
    with project_environment(os.environ["SCRAPY_PROJECT"]):
        from scrapy.cmdline import execute

        execute()


if __name__ == "__main__":
    main()
