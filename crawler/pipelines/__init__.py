"""Item pipelines: validation first, then the sinks (CSV, Kafka)."""
