"""Scrapyd nodes: registry, credentials, capacity and health."""
