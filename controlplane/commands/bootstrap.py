"""Idempotent set-up steps shared by ``crawlfleet web``, ``crawlfleet up`` and the containers.

Every step may run again on each start, and several replicas may start at once: migrations are
serialised by a lock (a PostgreSQL advisory lock, or a file lock next to the SQLite database), so
exactly one process applies them and the others find nothing left to do. Users and tokens are
ensured, never blindly created, so a restart changes nothing.

Django must be set up before anything here is called.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import time
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.management import call_command
from django.db import connections, transaction

# An arbitrary constant identifying crawlfleet's migration lock among advisory locks.
MIGRATION_LOCK_ID = 0x6372_6177_6C66  # "crawlf"
# How often a replica waiting for another's migrations tries the lock again (s).
MIGRATION_LOCK_POLL = 0.2


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def migration_lock(alias: str = "default") -> Iterator[None]:
    """Hold a database-wide lock so concurrent starts apply migrations one at a time."""
    connection = connections[alias]
    if connection.vendor == "postgresql":
        # Polled, not waited for in one blocking statement: a replica blocked in
        # pg_advisory_lock is an open transaction, and the holder's CREATE INDEX CONCURRENTLY
        # (controlplane/onlineindex.py) waits for every open transaction: a deadlock.
        while True:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK_ID])
                if cursor.fetchone()[0]:
                    break
            time.sleep(MIGRATION_LOCK_POLL)
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_ID])
    elif connection.vendor == "sqlite" and not connection.is_in_memory_db():
        with _file_lock(Path(f"{connection.settings_dict['NAME']}.migrate.lock")):
            yield
    else:
        yield


def migrate(verbosity: int = 1) -> None:
    """Apply pending migrations; safe when several processes call it at the same time."""
    with migration_lock():
        call_command("migrate", interactive=False, verbosity=verbosity)


def _static_fingerprint() -> str:
    """A digest of every file the static finders see, to know when a new collect is needed."""
    from django.contrib.staticfiles import finders

    digest = hashlib.sha256()
    for finder in finders.get_finders():
        for path, storage in finder.list([]):
            stat = os.stat(storage.path(path))
            digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def collect_static_if_needed() -> bool:
    """Collect the admin's static files into STATIC_ROOT unless they are already current.

    Whitenoise serves STATIC_ROOT; an image collects at build time, so its web containers skip
    this. Returns True when files were collected.
    """
    root = Path(settings.STATIC_ROOT)
    stamp = root / ".crawlfleet-fingerprint"
    fingerprint = _static_fingerprint()

    def current() -> bool:
        try:
            return stamp.read_text().strip() == fingerprint
        except OSError:
            return False

    # Checked before locking too: an image's static dir is read-only at run time.
    if current():
        return False
    with _file_lock(root.parent / f".{root.name}.lock"):
        if current():
            return False
        call_command("collectstatic", interactive=False, verbosity=0)
        stamp.write_text(fingerprint)
    return True


def ensure_admin(username: str, password: str, email: str = "") -> bool:
    """A superuser ``username`` that logs in with ``password``; True if it was created."""
    from django.contrib.auth import get_user_model

    user_model = get_user_model()
    with transaction.atomic():
        user, created = user_model.objects.get_or_create(
            username=username, defaults={"email": email}
        )
        changed = created or not (user.is_staff and user.is_superuser and user.is_active)
        user.is_staff = user.is_superuser = user.is_active = True
        if created or not user.check_password(password):
            user.set_password(password)
            changed = True
        if changed:
            user.save()
    return created


def ensure_token(name: str, role: str, secret: str) -> None:
    """An API token ``name`` whose secret is ``secret`` (for secrets handed in by deployment).

    A changed secret replaces the stored hash, so rotating the environment variable rotates the
    token; a revoked token stays revoked only until its secret is handed in again.
    """
    from controlplane.accounts.models import ApiToken, hash_token

    with transaction.atomic():
        ApiToken.objects.update_or_create(
            name=name,
            defaults={
                "role": role,
                "key_hash": hash_token(secret),
                "prefix": secret[:10],
                "revoked": False,
            },
        )


def bootstrap_from_env() -> list[str]:
    """Apply the deployment's env-driven bootstrap; returns what was ensured, for the log.

    ``CRAWLFLEET_ADMIN_USER``/``CRAWLFLEET_ADMIN_PASSWORD``: the first superuser.
    ``CRAWLFLEET_NODE_TOKEN``: the token nodes register with (role ``node``).
    ``CRAWLFLEET_DEPLOY_TOKEN``: the token CI deploys and schedules with (role ``operator``).
    """
    done = []
    user = os.environ.get("CRAWLFLEET_ADMIN_USER", "")
    password = os.environ.get("CRAWLFLEET_ADMIN_PASSWORD", "")
    if user and password:
        ensure_admin(user, password, os.environ.get("CRAWLFLEET_ADMIN_EMAIL", ""))
        done.append(f"admin user {user!r}")
    for variable, name, role in (
        ("CRAWLFLEET_NODE_TOKEN", "env-node-registration", "node"),
        ("CRAWLFLEET_DEPLOY_TOKEN", "env-deploy", "operator"),
    ):
        secret = os.environ.get(variable, "")
        if secret:
            ensure_token(name, role, secret)
            done.append(f"token {name!r} ({role})")
    return done


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (credentials kept in the data dir)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    tmp.replace(path)


def local_token(path: Path, name: str, role: str) -> str:
    """The secret of a token kept in ``path`` for local processes, created on first use.

    Only a hash lives in the database, so the embedded platform keeps the secret in its data
    dir (mode 0600) to hand the same token to its nodes on every start.
    """
    from controlplane.accounts.models import ApiToken, hash_token

    with contextlib.suppress(FileNotFoundError):
        secret = path.read_text().strip()
        if (
            secret
            and ApiToken.objects.filter(
                name=name, key_hash=hash_token(secret), revoked=False
            ).exists()
        ):
            return secret
    secret = "cf_" + secrets.token_urlsafe(32)
    ensure_token(name, role, secret)
    write_private(path, secret + "\n")
    return secret


def local_admin_login(path: Path) -> str:
    """The admin login the embedded platform prints, ensured in the database.

    ``CRAWLFLEET_ADMIN_USER``/``CRAWLFLEET_ADMIN_PASSWORD`` when both are set; otherwise one
    generated on the first start and kept in ``path`` (mode 0600), so later starts print the
    same login, or say where it came from if someone changed the password since.
    """
    from django.contrib.auth import get_user_model

    user = os.environ.get("CRAWLFLEET_ADMIN_USER", "")
    password = os.environ.get("CRAWLFLEET_ADMIN_PASSWORD", "")
    if user and password:
        ensure_admin(user, password)
        return f"{user} / (the password in CRAWLFLEET_ADMIN_PASSWORD)"
    try:
        saved = json.loads(path.read_text())
        user, password = saved["username"], saved["password"]
    except (OSError, ValueError, KeyError):
        user, password = user or "admin", secrets.token_urlsafe(12)
        write_private(path, json.dumps({"username": user, "password": password}) + "\n")
        ensure_admin(user, password)
        return f"{user} / {password}"
    existing = get_user_model().objects.filter(username=user).first()
    if existing is None:
        ensure_admin(user, password)
    elif not existing.check_password(password):
        return f"{user} / (changed since it was generated into {path})"
    return f"{user} / {password}"
