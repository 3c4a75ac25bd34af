"""Subcommands of the crawlfleet console script."""
