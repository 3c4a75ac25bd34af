"""Cron tasks and their runs: when to crawl, and the exactly-once record of every fire."""
