"""The whole fleet behind one Scrapyd: Scrapyd 1.6's HTTP API, served by the control plane.

Existing tools (scrapyd-deploy, scrapyd-client, python-scrapyd-api, ScrapydWeb) talk to the
control plane as if it were one big Scrapyd. Every call goes through the same domain services as
the REST API and the dashboard, so a job scheduled here is balanced, tracked, retried and audited
like any other. Served under ``/scrapyd/`` and, for tools that only take ``host:port``, at the
root of a port of its own (:mod:`controlplane.scrapydapi.port`).
"""
