"""Helpers that never import Django: the Scrapyd client, egg inspection, process helpers."""
