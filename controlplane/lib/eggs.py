"""Building and checking Scrapy project eggs: the unit that is deployed to Scrapyd nodes.

Building happens in a scratch directory from a generated ``setup.py`` so the repository never
gets ``build/`` or ``*.egg-info`` litter, and so only the project package ships (not the control
plane, not the tests). Versions are numeric and sortable because Scrapyd runs the last of
``sorted(versions)`` when a job does not pin ``_version``.

``inspect_egg`` checks an uploaded egg without importing or running any of it: uploads are
untrusted input, and a zip-slip in an egg upload is a known remote-code-execution path.

This module must not import Django: nodes and CI use it too.
"""

from __future__ import annotations

import configparser
import datetime as dt
import hashlib
import io
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

# Limits for uploaded eggs; generous for a Scrapy project, small enough to stop zip bombs.
MAX_EGG_BYTES = 50 * 1024 * 1024
MAX_UNCOMPRESSED_BYTES = 200 * 1024 * 1024
MAX_MEMBERS = 10_000
MAX_COMPRESSION_RATIO = 200
MAX_METADATA_BYTES = 64 * 1024
_CHUNK = 64 * 1024
# What reading a hostile archive can raise besides BadZipFile: truncated or corrupt streams,
# unsupported methods, bogus header fields.
_ZIP_ERRORS = (
    zipfile.BadZipFile,
    zlib.error,
    EOFError,
    OSError,
    ValueError,
    NotImplementedError,
    RuntimeError,
    OverflowError,
)

VERSION_RE = re.compile(r"^[0-9]{1,32}\Z")
MODULE_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_SKIP_DIRS = {"__pycache__", ".mypy_cache", ".pytest_cache"}
_SKIP_SUFFIXES = {".pyc", ".pyo"}


class EggError(Exception):
    """Base class of egg problems."""


class EggBuildError(EggError):
    """The egg could not be built; the message says why."""


class InvalidEgg(EggError):
    """An egg is malformed, unsafe or not a Scrapy project egg."""


@dataclass(frozen=True)
class BuiltEgg:
    path: Path
    version: str
    package: str
    settings_module: str

    @property
    def data(self) -> bytes:
        return self.path.read_bytes()


@dataclass(frozen=True)
class EggInfo:
    """What an egg declares, read from its metadata without executing it."""

    settings_module: str
    packages: tuple[str, ...]
    name: str | None
    version: str | None
    size: int
    uncompressed_size: int
    members: int
    sha256: str
    entry_points: dict[str, dict[str, str]] = field(default_factory=dict)


def default_version(now: dt.datetime | None = None) -> str:
    """A UTC timestamp ``YYYYMMDDHHMMSS``: numeric, fixed width, so string and number order agree."""
    now = now or dt.datetime.now(dt.UTC)
    return now.astimezone(dt.UTC).strftime("%Y%m%d%H%M%S")


def validate_version(version: str) -> str:
    """Accept only digits, so every version sorts the same way everywhere."""
    if not VERSION_RE.match(version or ""):
        raise EggBuildError(
            f"invalid egg version {version!r}: use digits only (for example a UTC timestamp "
            "YYYYMMDDHHMMSS), so versions sort correctly on every node"
        )
    return version


def settings_module_of(project_dir: Path) -> str:
    """The ``[settings] default`` module from the project's ``scrapy.cfg``."""
    cfg_path = project_dir / "scrapy.cfg"
    parser = configparser.ConfigParser(interpolation=None)
    try:
        with cfg_path.open(encoding="utf-8") as handle:
            parser.read_file(handle)
    except OSError as exc:
        raise EggBuildError(f"{cfg_path}: cannot read the Scrapy project config ({exc})") from exc
    except configparser.Error as exc:
        raise EggBuildError(f"{cfg_path}: malformed ({exc})") from exc
    module = parser.get("settings", "default", fallback="").strip()
    if not module:
        raise EggBuildError(f"{cfg_path}: no 'default' entry in the [settings] section")
    return module


def _package_files(package_dir: Path) -> dict[str, list[str]]:
    """Each package under ``package_dir`` mapped to its non-Python data files (relative)."""
    packages: dict[str, list[str]] = {}
    root_name = package_dir.name
    for directory, dirnames, filenames in os.walk(package_dir):
        dirnames[:] = sorted(d for d in dirnames if d not in _SKIP_DIRS and not d.startswith("."))
        if "__init__.py" not in filenames:
            dirnames[:] = []  # not a package: nothing below it is importable either
            continue
        rel = Path(directory).relative_to(package_dir.parent)
        name = ".".join(rel.parts)
        data = [
            f
            for f in sorted(filenames)
            if not f.endswith(".py") and Path(f).suffix not in _SKIP_SUFFIXES
        ]
        packages[name] = data
    if root_name not in packages:
        raise EggBuildError(f"{package_dir} is not a Python package (no __init__.py)")
    return packages


def _copy_package(source: Path, target: Path) -> None:
    def ignore(directory: str, names: list[str]) -> set[str]:
        return {
            n
            for n in names
            if n in _SKIP_DIRS or n.endswith(".egg-info") or Path(n).suffix in _SKIP_SUFFIXES
        }

    shutil.copytree(source, target, ignore=ignore)


def build_egg(
    project_dir: Path | str = ".",
    *,
    version: str | None = None,
    output_dir: Path | str | None = None,
    settings_module: str | None = None,
) -> BuiltEgg:
    """Build the egg of the Scrapy project in ``project_dir`` and return where it was written.

    The package shipped is the top-level package of the settings module (``crawler`` for
    ``crawler.settings``), read from ``scrapy.cfg`` unless ``settings_module`` is given. The egg
    lands in ``output_dir`` (default ``<project_dir>/dist``); nothing else is written there.
    """
    project_dir = Path(project_dir).resolve()
    settings_module = settings_module or settings_module_of(project_dir)
    if not MODULE_RE.match(settings_module):
        raise EggBuildError(f"invalid settings module {settings_module!r}")
    package = settings_module.split(".")[0]
    version = validate_version(version) if version is not None else default_version()
    package_dir = project_dir / package
    if not package_dir.is_dir():
        raise EggBuildError(f"package directory {package_dir} does not exist")
    output = Path(output_dir).resolve() if output_dir else project_dir / "dist"

    with tempfile.TemporaryDirectory(prefix="crawlfleet-egg-") as scratch:
        work = Path(scratch)
        _copy_package(package_dir, work / package)
        packages = _package_files(work / package)
        package_data = {name: files for name, files in packages.items() if files}
        setup_py = textwrap.dedent(
            f"""\
            from setuptools import setup

            setup(
                name={package!r},
                version={version!r},
                packages={sorted(packages)!r},
                package_data={package_data!r},
                entry_points={{"scrapy": ["settings = {settings_module}"]}},
                zip_safe=True,
            )
            """
        )
        (work / "setup.py").write_text(setup_py, encoding="utf-8")
        dist = work / "dist"
        proc = subprocess.run(
            [sys.executable, "setup.py", "-q", "bdist_egg", "--dist-dir", str(dist)],
            cwd=work,
            capture_output=True,
            text=True,
            check=False,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        )
        eggs = sorted(dist.glob("*.egg")) if dist.is_dir() else []
        if proc.returncode != 0 or len(eggs) != 1:
            raise EggBuildError(
                f"bdist_egg failed (exit {proc.returncode}):\n{proc.stdout}{proc.stderr}".strip()
            )
        output.mkdir(parents=True, exist_ok=True)
        target = output / eggs[0].name
        shutil.copyfile(eggs[0], target)

    info = inspect_egg(target.read_bytes())  # never hand out an egg the control plane would reject
    if info.settings_module != settings_module:
        raise EggBuildError(f"built egg declares {info.settings_module!r}, not {settings_module!r}")
    return BuiltEgg(target, version, package, settings_module)


def _check_member_name(name: str) -> None:
    if not name or "\x00" in name:
        raise InvalidEgg(f"egg member has an empty or NUL-containing name: {name!r}")
    if "\\" in name:
        raise InvalidEgg(
            f"egg member {name!r} uses backslashes; refusing a possible path traversal"
        )
    path = PurePosixPath(name)
    if path.is_absolute() or re.match(r"^[A-Za-z]:", name):
        raise InvalidEgg(f"egg member {name!r} has an absolute path")
    if ".." in path.parts:
        raise InvalidEgg(f"egg member {name!r} escapes the egg with '..' (zip-slip)")


def inspect_egg(
    data: bytes,
    *,
    max_size: int = MAX_EGG_BYTES,
    max_uncompressed: int = MAX_UNCOMPRESSED_BYTES,
    max_members: int = MAX_MEMBERS,
) -> EggInfo:
    """Validate an egg's bytes and read its metadata; raise ``InvalidEgg`` naming the problem.

    Checks: size limits, a readable zip, no absolute / ``..`` / symlink members, no encrypted
    members, and an ``EGG-INFO/entry_points.txt`` whose ``[scrapy]`` section has ``settings``
    pointing at a module inside the egg. Nothing in the egg is imported or executed.
    """
    if not isinstance(data, bytes | bytearray | memoryview):
        raise InvalidEgg(f"expected the egg's bytes, got {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise InvalidEgg("the egg is empty")
    if len(data) > max_size:
        raise InvalidEgg(f"the egg is {len(data)} bytes, more than the limit of {max_size}")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except _ZIP_ERRORS as exc:
        raise InvalidEgg(f"the egg is not a zip file ({exc})") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > max_members:
            raise InvalidEgg(f"the egg has {len(infos)} members, more than {max_members}")
        names: set[str] = set()
        total = 0
        for info in infos:
            _check_member_name(info.filename)
            if info.filename in names:
                raise InvalidEgg(f"egg member {info.filename!r} appears twice")
            names.add(info.filename)
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                raise InvalidEgg(f"egg member {info.filename!r} is a symbolic link")
            if info.flag_bits & 0x1:
                raise InvalidEgg(f"egg member {info.filename!r} is encrypted")
            total += info.file_size
            if total > max_uncompressed:
                raise InvalidEgg(f"the egg unpacks to more than {max_uncompressed} bytes")
            if info.file_size > 1024 * 1024 and (
                info.compress_size == 0
                or info.file_size / info.compress_size > MAX_COMPRESSION_RATIO
            ):
                raise InvalidEgg(
                    f"egg member {info.filename!r} is compressed suspiciously well (zip bomb?)"
                )
        _verify_members(archive, infos, max_uncompressed)

        entry_points = _read_entry_points(archive, names)
        settings_module = entry_points.get("scrapy", {}).get("settings", "")
        if not settings_module:
            raise InvalidEgg(
                "the egg has no Scrapy settings entry point: EGG-INFO/entry_points.txt needs "
                "'[scrapy]' with 'settings = <package>.settings'"
            )
        if not MODULE_RE.match(settings_module):
            raise InvalidEgg(f"the egg's settings entry point {settings_module!r} is not a module")
        module_path = settings_module.replace(".", "/")
        candidates = {f"{module_path}.py", f"{module_path}.pyc", f"{module_path}/__init__.py"}
        if not candidates & names:
            raise InvalidEgg(
                f"the egg's settings entry point {settings_module!r} names a module that is "
                "not in the egg"
            )
        pkg_info = _read_small(archive, names, "EGG-INFO/PKG-INFO")
        meta = _parse_pkg_info(pkg_info or "")
        packages = tuple(
            sorted(
                {n.split("/", 1)[0] for n in names if "/" in n and not n.startswith("EGG-INFO/")}
            )
        )
    return EggInfo(
        settings_module=settings_module,
        packages=packages,
        name=meta.get("name"),
        version=meta.get("version"),
        size=len(data),
        uncompressed_size=total,
        members=len(infos),
        sha256=hashlib.sha256(data).hexdigest(),
        entry_points=entry_points,
    )


def _verify_members(
    archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo], max_uncompressed: int
) -> None:
    """Decompress every member in chunks, counting: the sizes in the headers are the uploader's
    word, so a member that unpacks past its declared size, or past the egg's limit, is refused
    before the next chunk, and a corrupt stream (bad CRC) is caught here rather than on a node.
    """
    total = 0
    for info in infos:
        if info.is_dir():
            continue
        produced = 0
        try:
            with archive.open(info) as handle:
                while chunk := handle.read(_CHUNK):
                    produced += len(chunk)
                    total += len(chunk)
                    if produced > info.file_size or total > max_uncompressed:
                        raise InvalidEgg(
                            f"egg member {info.filename!r} unpacks to more than it declares "
                            f"or than the limit of {max_uncompressed} bytes (zip bomb?)"
                        )
        except _ZIP_ERRORS as exc:
            raise InvalidEgg(f"egg member {info.filename!r} cannot be read ({exc})") from exc


def _read_small(archive: zipfile.ZipFile, names: set[str], name: str) -> str | None:
    if name not in names:
        return None
    info = archive.getinfo(name)
    if info.file_size > MAX_METADATA_BYTES:
        raise InvalidEgg(f"{name} is too large ({info.file_size} bytes)")
    try:
        with archive.open(info) as handle:
            return handle.read(MAX_METADATA_BYTES + 1).decode("utf-8")
    except (*_ZIP_ERRORS, UnicodeDecodeError) as exc:
        raise InvalidEgg(f"cannot read {name} from the egg ({exc})") from exc


def _read_entry_points(archive: zipfile.ZipFile, names: set[str]) -> dict[str, dict[str, str]]:
    text = _read_small(archive, names, "EGG-INFO/entry_points.txt")
    if text is None:
        raise InvalidEgg(
            "the egg has no EGG-INFO/entry_points.txt, so Scrapyd cannot find its settings "
            "(build it with a [scrapy] settings entry point)"
        )
    parser = configparser.ConfigParser(interpolation=None, delimiters=("=",))
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        parser.read_string(text)
    except configparser.Error as exc:
        raise InvalidEgg(f"EGG-INFO/entry_points.txt is malformed ({exc})") from exc
    return {section: dict(parser.items(section)) for section in parser.sections()}


def _parse_pkg_info(text: str) -> dict[str, str]:
    meta: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            break  # headers end at the first blank line
        key, sep, value = line.partition(":")
        if sep and key.lower() in ("name", "version"):
            meta[key.lower()] = value.strip()
    return meta
