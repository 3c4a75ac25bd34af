"""One Scrapyd node of the fleet: config rendering, exit recording, registration, egg runner.

Runs on Scrapyd hosts, so nothing here imports Django.
"""
