"""Placeholder until the Kafka pipeline lands."""

from scrapy.exceptions import NotConfigured


class KafkaPipeline:
    @classmethod
    def from_crawler(cls, crawler):
        raise NotConfigured
