"""Spiders that succeed, fail, hang or sleep on purpose, to test how nodes report job outcomes."""
