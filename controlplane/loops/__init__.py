"""The long-running loops: scheduler and poller, each a management command, each replicable."""
