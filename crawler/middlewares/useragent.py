"""Placeholder until the User-Agent middleware lands."""

from scrapy.exceptions import NotConfigured


class RotatingUserAgentMiddleware:
    @classmethod
    def from_crawler(cls, crawler):
        raise NotConfigured
