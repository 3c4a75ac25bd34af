"""Placeholder until the proxy middleware lands."""

from scrapy.exceptions import NotConfigured


class ProxyPoolMiddleware:
    @classmethod
    def from_crawler(cls, crawler):
        raise NotConfigured
