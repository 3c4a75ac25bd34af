"""Measurements only a loop process sees, kept in the database so every replica adds to them.

A poller's cycle time or the dispatcher's fire-to-dispatch latency exists only in the process
that measured it. Held in that process's memory, each replica (and each restart) would report
its own numbers, and a scrape of one web worker would see none of them. Written here as they
happen, they are one set of monotonic counters that the metrics face reads at scrape time.
"""
