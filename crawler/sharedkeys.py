"""Where a shared crawl keeps its Redis keys: the one rule the crawler and the control plane share.

It imports nothing, so the control plane can clean up a fan-out run's keys without importing
Scrapy or scrapy-redis.
"""

DEFAULT_KEY_PREFIX = "crawlfleet:shared"


def crawl_key_base(prefix: str, spider: str, crawl_id: str) -> str:
    """``<prefix>:{<spider>:<crawl_id>}``; the braces are a Redis Cluster hash tag, so every key
    of one crawl lands in one slot and a script may touch them together."""
    return f"{prefix}:{{{spider}:{crawl_id}}}"
