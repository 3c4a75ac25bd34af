"""``/metrics``: the fleet in the Prometheus text format, built from the database."""
