"""HTTP APIs: the REST API for CI and operators, node registration, and spider reports."""
