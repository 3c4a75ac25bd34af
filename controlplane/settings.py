"""Django settings of the control plane, configured from the environment.

The embedded default is SQLite in ``$CRAWLFLEET_DATA_DIR`` (``./var``); production sets
``CRAWLFLEET_DATABASE_URL=postgres://...``. Every process (web, scheduler, poller) reads the same
settings, so replicas only need the same environment.
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.core.management.utils import get_random_secret_key

BASE_DIR = Path(__file__).resolve().parent
DATA_DIR = Path(os.environ.get("CRAWLFLEET_DATA_DIR", Path.cwd() / "var")).resolve()


def _env_bool(name: str, default: bool) -> bool:
    return os.environ.get(name, str(default)).strip().lower() in ("1", "true", "yes", "on")


def _env_float(name: str, default: float) -> float:
    return float(os.environ.get(name, default))


def _secret_key() -> str:
    """The configured key; in the embedded setup, one generated once and kept in the data dir."""
    key = os.environ.get("CRAWLFLEET_SECRET_KEY")
    if key:
        return key
    key_file = DATA_DIR / "secret_key"
    try:
        return key_file.read_text().strip()
    except FileNotFoundError:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        key = get_random_secret_key()
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key)
        return key


SECRET_KEY = _secret_key()
DEBUG = _env_bool("CRAWLFLEET_DEBUG", False)
ALLOWED_HOSTS = os.environ.get("CRAWLFLEET_ALLOWED_HOSTS", "127.0.0.1,localhost,[::1]").split(",")
CSRF_TRUSTED_ORIGINS = [
    o for o in os.environ.get("CRAWLFLEET_CSRF_TRUSTED_ORIGINS", "").split(",") if o
]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "controlplane.staticfiles.CollectedStaticFiles",
    # Its templates and static files: the API docs are served from here, never from a CDN.
    "ninja",
    "controlplane.accounts",
    "controlplane.telemetry",
    "controlplane.nodes",
    "controlplane.deploys",
    "controlplane.scheduling",
    "controlplane.monitors",
    "controlplane.jobs",
    "controlplane.alerts",
    "controlplane.loops",
    "controlplane.api",
    "controlplane.dashboard",
    "controlplane.metrics",
    "controlplane.scrapydapi",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    # Pages may load nothing from outside the control plane, enforced by the browser.
    "controlplane.csp.ContentSecurityPolicyMiddleware",
    # Requests that arrived on a Scrapyd port get the Scrapyd API at the root.
    "controlplane.scrapydapi.port.ScrapydPortMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Writes to /api/ whose body cannot be read are refused before anything else looks at them.
    "controlplane.api.request_body.RequestBodyMiddleware",
    # A NUL in a path or parameter is a 400 here, not a 500 from PostgreSQL deep in a lookup.
    "controlplane.requestguard.NulCharacterMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "controlplane.urls"
WSGI_APPLICATION = "controlplane.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "controlplane.dashboard.access.access",
            ],
        },
    },
]


def _database() -> dict:
    url = os.environ.get("CRAWLFLEET_DATABASE_URL", "")
    if url:
        config = dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
    else:
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        config = {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(DATA_DIR / "crawlfleet.sqlite3"),
            # A file, not memory, so processes started by tests share the test database.
            # One per test run, so concurrent runs never share (or delete) each other's.
            "TEST": {"NAME": str(DATA_DIR / f"test_crawlfleet_{os.getpid()}.sqlite3")},
        }
    if config["ENGINE"] == "django.db.backends.sqlite3":
        # Several processes share the file: take the write lock when a transaction starts, so
        # read-then-write claims are serialised, and let readers proceed alongside (WAL).
        config.setdefault("OPTIONS", {}).update(
            {
                "transaction_mode": "IMMEDIATE",
                "timeout": 30,
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            }
        )
    return config


DATABASES = {"default": _database()}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
# Images collect static files at build time, outside the data volume.
STATIC_ROOT = Path(os.environ.get("CRAWLFLEET_STATIC_ROOT", DATA_DIR / "static"))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
LOGIN_URL = "dashboard:login"
LOGIN_REDIRECT_URL = "dashboard:overview"
DATA_UPLOAD_MAX_MEMORY_SIZE = 64 * 1024 * 1024  # eggs

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("CRAWLFLEET_LOG_LEVEL", "INFO")},
    "loggers": {"apscheduler": {"level": "WARNING"}},
}

# --- crawlfleet -------------------------------------------------------------------------------
# The URL nodes and spiders use to reach this control plane (reports, heartbeats, registration).
CRAWLFLEET_PUBLIC_URL = os.environ.get("CRAWLFLEET_PUBLIC_URL", "http://127.0.0.1:8000")
# How often the scheduler looks for due fires and queued jobs, in seconds.
CRAWLFLEET_SCHEDULER_TICK = _env_float("CRAWLFLEET_SCHEDULER_TICK", 1.0)
# Seconds ahead of a fire that the scheduler records it and plans its jobs, which are then held
# until the fire time: a burst's jobs reach their nodes at the fire, not after its recording.
# The least lead: a burst too big to record in it starts earlier (loops.firerecording.lead_for).
CRAWLFLEET_FIRE_LEAD = _env_float("CRAWLFLEET_FIRE_LEAD", 2.0)
if not 0.0 <= CRAWLFLEET_FIRE_LEAD <= 30.0:
    raise ImproperlyConfigured("CRAWLFLEET_FIRE_LEAD must be between 0 and 30 seconds")
# Seconds between reloads of the task table by each scheduler.
CRAWLFLEET_SCHEDULER_SYNC = _env_float("CRAWLFLEET_SCHEDULER_SYNC", 2.0)
# Sender threads for schedule.json calls; each keeps a keep-alive connection per node.
CRAWLFLEET_DISPATCH_WORKERS = int(os.environ.get("CRAWLFLEET_DISPATCH_WORKERS", 16))
# Most jobs sent to one crawlfleet node in one schedulebatch.json (1: one schedule.json each).
CRAWLFLEET_DISPATCH_BATCH = int(os.environ.get("CRAWLFLEET_DISPATCH_BATCH", 100))
# How often the poller reads every node's job lists and health, in seconds.
CRAWLFLEET_POLL_INTERVAL = _env_float("CRAWLFLEET_POLL_INTERVAL", 5.0)
# Timeout of one HTTP call to a Scrapyd node; a dead node never stalls more than this.
CRAWLFLEET_NODE_TIMEOUT = _env_float("CRAWLFLEET_NODE_TIMEOUT", 5.0)
# A health check slower than this marks the node degraded.
CRAWLFLEET_NODE_SLOW_AFTER = _env_float("CRAWLFLEET_NODE_SLOW_AFTER", 2.0)
# Consecutive failed health checks before a node is down.
CRAWLFLEET_NODE_DOWN_AFTER_FAILURES = int(os.environ.get("CRAWLFLEET_NODE_DOWN_AFTER_FAILURES", 3))
# Jobs on a node that has been down this long are lost, in seconds.
CRAWLFLEET_NODE_LOST_GRACE = _env_float("CRAWLFLEET_NODE_LOST_GRACE", 30.0)
# A running job without a heartbeat for this long is considered hung, in seconds.
CRAWLFLEET_HEARTBEAT_TIMEOUT = _env_float("CRAWLFLEET_HEARTBEAT_TIMEOUT", 120.0)
# A dispatched job its node has never heard of after this long is lost, in seconds.
CRAWLFLEET_DISPATCH_GRACE = _env_float("CRAWLFLEET_DISPATCH_GRACE", 30.0)
# A queued run gains one priority point per this many seconds (0: no aging). docs/QUEUE.md
CRAWLFLEET_QUEUE_AGING = _env_float("CRAWLFLEET_QUEUE_AGING", 60.0)
# A job asked to stop that is still running after this long is killed, in seconds.
CRAWLFLEET_CANCEL_KILL_AFTER = _env_float("CRAWLFLEET_CANCEL_KILL_AFTER", 60.0)
# Threads polling nodes at once; one slow node only ever holds its own thread.
CRAWLFLEET_POLL_WORKERS = int(os.environ.get("CRAWLFLEET_POLL_WORKERS", 32))
# A poller replica not heard from for this long no longer counts, and its share of the nodes goes
# to the others, in seconds. 0: three of its poll intervals.
CRAWLFLEET_POLL_REPLICA_TIMEOUT = _env_float("CRAWLFLEET_POLL_REPLICA_TIMEOUT", 0.0)
if CRAWLFLEET_POLL_REPLICA_TIMEOUT < 0:
    raise ImproperlyConfigured("CRAWLFLEET_POLL_REPLICA_TIMEOUT must be 0 or more seconds")
# Heartbeat interval asked of spiders, in seconds.
CRAWLFLEET_SPIDER_HEARTBEAT = _env_float("CRAWLFLEET_SPIDER_HEARTBEAT", 10.0)
# Redis shared by fan-out crawls (passed to the spiders; the control plane cleans keys).
CRAWLFLEET_REDIS_URL = os.environ.get("CRAWLFLEET_REDIS_URL", "")

# --- /metrics (docs/METRICS.md) ---------------------------------------------------------------------
# When set, scrapes must send ``Authorization: Bearer <token>`` (or an API token, viewer or more).
CRAWLFLEET_METRICS_TOKEN = os.environ.get("CRAWLFLEET_METRICS_TOKEN", "")
# Networks scrapes may come from, comma-separated CIDRs. Unset: loopback only without a token,
# any address with one.
CRAWLFLEET_METRICS_ALLOW = os.environ.get("CRAWLFLEET_METRICS_ALLOW") or None

# --- the Scrapyd-compatible API -------------------------------------------------------------------
# The name every answer carries as ``node_name``: the whole fleet is one Scrapyd to its clients.
CRAWLFLEET_SCRAPYD_NODE_NAME = os.environ.get("CRAWLFLEET_SCRAPYD_NODE_NAME", "crawlfleet")
# Ended jobs listjobs.json and /jobs show, newest first (Scrapyd's finished_to_keep).
CRAWLFLEET_SCRAPYD_FINISHED_TO_KEEP = int(
    os.environ.get("CRAWLFLEET_SCRAPYD_FINISHED_TO_KEEP", 100)
)
# Seconds one listjobs.json answer is shared by all clients polling one web process (0: off).
CRAWLFLEET_SCRAPYD_LISTING_CACHE = _env_float("CRAWLFLEET_SCRAPYD_LISTING_CACHE", 1.0)
# A log fetched without a Range is cut to its last this many bytes (0: whole).
CRAWLFLEET_SCRAPYD_LOG_LIMIT = int(os.environ.get("CRAWLFLEET_SCRAPYD_LOG_LIMIT", 16 * 1024 * 1024))
# Local ports whose requests get the Scrapyd API at the root (``crawlfleet web --scrapyd-bind``),
# for tools that take only host:port, such as ScrapydWeb and Gerapy.
CRAWLFLEET_SCRAPYD_PORTS = [
    int(port) for port in os.environ.get("CRAWLFLEET_SCRAPYD_PORTS", "").split(",") if port.strip()
]

# --- alerts (docs/ALERTS.md) ---------------------------------------------------------------------
# Email goes through Django's mail backend: SMTP by default; "django.core.mail.backends.
# filebased.EmailBackend" with EMAIL_FILE_PATH, or the console backend, for trials.
EMAIL_BACKEND = os.environ.get(
    "CRAWLFLEET_EMAIL_BACKEND", "django.core.mail.backends.smtp.EmailBackend"
)
EMAIL_HOST = os.environ.get("EMAIL_HOST", "localhost")
EMAIL_PORT = int(os.environ.get("EMAIL_PORT", 25))
EMAIL_HOST_USER = os.environ.get("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = os.environ.get("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = _env_bool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = _env_bool("EMAIL_USE_SSL", False)
EMAIL_TIMEOUT = _env_float("EMAIL_TIMEOUT", 10.0)
if os.environ.get("EMAIL_FILE_PATH"):
    EMAIL_FILE_PATH = os.environ["EMAIL_FILE_PATH"]
DEFAULT_FROM_EMAIL = os.environ.get("DEFAULT_FROM_EMAIL", "crawlfleet@localhost")
# Seconds between cycles of the alert sender (in the poller, or ``crawlfleet alerts``).
CRAWLFLEET_ALERT_INTERVAL = _env_float("CRAWLFLEET_ALERT_INTERVAL", 2.0)
# Timeout of one webhook or apprise call, in seconds.
CRAWLFLEET_ALERT_SEND_TIMEOUT = _env_float("CRAWLFLEET_ALERT_SEND_TIMEOUT", 10.0)
# A delivery claimed this long ago and still sending belongs to a dead sender: taken over.
CRAWLFLEET_ALERT_CLAIM_TIMEOUT = _env_float("CRAWLFLEET_ALERT_CLAIM_TIMEOUT", 120.0)
# Tries of a delivery before it is marked failed; the wait doubles from the base, to the cap.
CRAWLFLEET_ALERT_MAX_ATTEMPTS = int(os.environ.get("CRAWLFLEET_ALERT_MAX_ATTEMPTS", 6))
CRAWLFLEET_ALERT_RETRY_BASE = _env_float("CRAWLFLEET_ALERT_RETRY_BASE", 30.0)
CRAWLFLEET_ALERT_RETRY_CAP = _env_float("CRAWLFLEET_ALERT_RETRY_CAP", 3600.0)
# Sent and failed deliveries, and routed events, are kept this many days.
CRAWLFLEET_ALERT_KEEP_DAYS = _env_float("CRAWLFLEET_ALERT_KEEP_DAYS", 30.0)
