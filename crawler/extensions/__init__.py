"""Scrapy components of the crawler project."""
