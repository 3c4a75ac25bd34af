"""Settings of the crawler project.

Safe defaults for production crawling. Every project-specific setting is namespaced
(``CRAWLFLEET_*``, ``KAFKA_*``, ``PROXY_*``, ``USER_AGENT_*``) and can be overridden, in order of
precedence, by ``scrapy crawl -s NAME=VALUE``, a spider's ``custom_settings``, or an environment
variable of the same name.
"""

from crawler.envsettings import env
from crawler.sharedkeys import DEFAULT_KEY_PREFIX

BOT_NAME = "crawler"
SPIDER_MODULES = ["crawler.spiders"]
NEWSPIDER_MODULE = "crawler.spiders"

# --- safety -------------------------------------------------------------------------------
# Both of these open a port that lets anyone on the host run code inside the crawl.
TELNETCONSOLE_ENABLED = False
REMOTE_CONTROL_ENABLED = False
EXTENSIONS = {
    "scrapy.extensions.telnet.TelnetConsole": None,
    "scrapy.extensions.remote_control.RemoteControl": None,
    "crawler.extensions.report.OutcomeReporter": 500,
}
ROBOTSTXT_OBEY = env("CRAWLFLEET_ROBOTSTXT_OBEY", True)

# --- politeness and robustness ---------------------------------------------------------------
CONCURRENT_REQUESTS = env("CRAWLFLEET_CONCURRENT_REQUESTS", 16)
CONCURRENT_REQUESTS_PER_DOMAIN = env("CRAWLFLEET_CONCURRENT_REQUESTS_PER_DOMAIN", 8)
DOWNLOAD_DELAY = env("CRAWLFLEET_DOWNLOAD_DELAY", 0.0)
DOWNLOAD_TIMEOUT = env("CRAWLFLEET_DOWNLOAD_TIMEOUT", 30)
RETRY_ENABLED = True
RETRY_TIMES = env("CRAWLFLEET_RETRY_TIMES", 2)
RETRY_HTTP_CODES = [500, 502, 503, 504, 522, 524, 408]
AUTOTHROTTLE_ENABLED = env("CRAWLFLEET_AUTOTHROTTLE", False)
COOKIES_ENABLED = False
DNS_TIMEOUT = 10
CLOSESPIDER_TIMEOUT = env("CRAWLFLEET_CLOSESPIDER_TIMEOUT", 0)
LOG_LEVEL = env("CRAWLFLEET_LOG_LEVEL", "INFO")
FEED_EXPORT_ENCODING = "utf-8"

# --- User-Agent rotation --------------------------------------------------------------------
DOWNLOADER_MIDDLEWARES = {
    "scrapy.downloadermiddlewares.useragent.UserAgentMiddleware": None,
    "crawler.middlewares.useragent.RotatingUserAgentMiddleware": 400,
    "crawler.middlewares.proxy.ProxyPoolMiddleware": 740,
}
USER_AGENT_ENABLED = env("USER_AGENT_ENABLED", True)
USER_AGENT_LIST = env(
    "USER_AGENT_LIST",
    [
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/130.0 Safari/537.36",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:132.0) Gecko/20100101 Firefox/132.0",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_6) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        "Version/18.0 Safari/605.1.15",
    ],
)
USER_AGENT_FILE = env("USER_AGENT_FILE", "")  # one per line, # comments; replaces the list
USER_AGENT_ROTATION = env("USER_AGENT_ROTATION", "round_robin")  # or "random"

# --- proxy pool (off unless proxies are configured) ---------------------------------------------
PROXY_LIST = env("PROXY_LIST", [])
PROXY_FILE = env("PROXY_FILE", "")
PROXY_BAN_CODES = env("PROXY_BAN_CODES", [403, 429, 503])
# Answers meaning "wrong proxy credentials": that proxy is dropped for the crawl. Add 401 for
# proxies that misreport it (tinyproxy < 1.11.2).
PROXY_AUTH_CODES = env("PROXY_AUTH_CODES", [407])
PROXY_BAN_COOLDOWN = env("PROXY_BAN_COOLDOWN", 60.0)
PROXY_MAX_RETRIES = env("PROXY_MAX_RETRIES", 5)

# --- item pipelines -----------------------------------------------------------------------
ITEM_PIPELINES = {
    "crawler.pipelines.validation.ValidationPipeline": 100,
    "crawler.pipelines.csv.CsvPipeline": 800,
    "crawler.pipelines.kafka.KafkaPipeline": 900,
}
# Counts the fields of the items every pipeline let through, for the field-coverage monitors:
# last, and in the base so that a spider replacing ITEM_PIPELINES keeps it (Scrapy merges the
# two; a spider opts out with {"crawler.pipelines.coverage.FieldCoveragePipeline": None}).
ITEM_PIPELINES_BASE = {"crawler.pipelines.coverage.FieldCoveragePipeline": 1000}
# CSV: one file per job under this directory ('' disables the pipeline).
CRAWLFLEET_CSV_DIR = env("CRAWLFLEET_CSV_DIR", "output")
# Kafka: off unless bootstrap servers are configured.
KAFKA_BOOTSTRAP_SERVERS = env("KAFKA_BOOTSTRAP_SERVERS", "")
KAFKA_TOPIC = env("KAFKA_TOPIC", "crawlfleet.items")
KAFKA_FAILURE_THRESHOLD = env("KAFKA_FAILURE_THRESHOLD", 0)
KAFKA_DELIVERY_TIMEOUT = env("KAFKA_DELIVERY_TIMEOUT", 60.0)
KAFKA_STARTUP_TIMEOUT = env("KAFKA_STARTUP_TIMEOUT", 10.0)
# Extra librdkafka properties as JSON (security.protocol, sasl.*, compression.type...).
KAFKA_PRODUCER_CONFIG = env("KAFKA_PRODUCER_CONFIG", {})
# librdkafka logs refused connections at ERROR; the pipeline reports failures itself.
KAFKA_CLIENT_LOG_LEVEL = env("KAFKA_CLIENT_LOG_LEVEL", "CRITICAL")
# How often (s) delivery reports are served on the crawl's thread (and the counts kept current).
KAFKA_POLL_INTERVAL = env("KAFKA_POLL_INTERVAL", 0.1)

# --- shared crawls over Redis (scrapy-redis) ---------------------------------------------------
REDIS_URL = env("REDIS_URL", "redis://127.0.0.1:6379/0")
# Only spiders built on crawler.spiders.shared.SharedSpider read these (and use the Redis scheduler).
# Keys are namespaced <prefix>:{<spider>:<crawl_id>}:*.
SHARED_KEY_PREFIX = env("SHARED_KEY_PREFIX", DEFAULT_KEY_PREFIX)
# How often an idle worker looks at the shared queue (Scrapy's own idle check is every 5 s).
SHARED_IDLE_TICK = env("SHARED_IDLE_TICK", 1.0)
# Workers heartbeat this often and count as gone after SHARED_WORKER_TIMEOUT without one; keep the
# timeout well above the longest a worker's event loop may block (start-up alone takes seconds).
SHARED_HEARTBEAT_INTERVAL = env("SHARED_HEARTBEAT_INTERVAL", 5.0)
SHARED_WORKER_TIMEOUT = env("SHARED_WORKER_TIMEOUT", 60.0)
# An idle worker leaves after this long even if the crawl isn't done (0: wait until done).
SHARED_MAX_IDLE_TIME = env("SHARED_MAX_IDLE_TIME", 600.0)
# A worker that cannot reach Redis waits this long for it (logging the outage once), then stops
# with finish reason shared_redis_error (0: wait for ever).
SHARED_REDIS_DOWN_TIMEOUT = env("SHARED_REDIS_DOWN_TIMEOUT", 60.0)
# Safety net: keys of a crawl nobody heartbeats for this long expire (0: never).
SHARED_KEY_TTL = env("SHARED_KEY_TTL", 7 * 24 * 3600)
# >0: the last worker leaves a "finished" marker for this long, so a worker that starts late with
# the same crawl_id exits instead of crawling everything again (0: no key survives the crawl).
SHARED_DONE_MARKER_TTL = env("SHARED_DONE_MARKER_TTL", 0)
# A worker takes from the shared queue only what its downloader can start now, leaving the rest
# to other workers (off: the engine takes up to CONCURRENT_REQUESTS, even for one site).
SHARED_TAKE_ONLY_STARTABLE = env("SHARED_TAKE_ONLY_STARTABLE", True)

# --- reporting to the control plane (set per job by the dispatcher) -----------------------------
CRAWLFLEET_REPORT_URL = env("CRAWLFLEET_REPORT_URL", "")
CRAWLFLEET_JOB_TOKEN = env("CRAWLFLEET_JOB_TOKEN", "")
CRAWLFLEET_HEARTBEAT_INTERVAL = env("CRAWLFLEET_HEARTBEAT_INTERVAL", 10.0)
# Per-item counters (field coverage, Kafka, CSV, User-Agent) are kept in memory and written into
# the stats before every report, at close, and this often (s) for other readers (0: not on a timer).
CRAWLFLEET_STATS_FLUSH_INTERVAL = env("CRAWLFLEET_STATS_FLUSH_INTERVAL", 5.0)
# Per item field, how many scraped items had it filled (crawlfleet/fields/<name> in the stats);
# at most this many distinct names are tracked, the rest count in crawlfleet/fields_untracked.
CRAWLFLEET_FIELD_COVERAGE_ENABLED = env("CRAWLFLEET_FIELD_COVERAGE_ENABLED", True)
CRAWLFLEET_FIELD_COVERAGE_MAX_FIELDS = env("CRAWLFLEET_FIELD_COVERAGE_MAX_FIELDS", 100)

TWISTED_REACTOR = "twisted.internet.asyncioreactor.AsyncioSelectorReactor"
