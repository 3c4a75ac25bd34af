"""Monitors: rules every ended crawl is judged by on the control plane (docs/FAILURES.md)."""
