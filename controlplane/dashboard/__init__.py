"""The operators' dashboard: server-rendered pages over the domain services, refreshed by htmx."""
