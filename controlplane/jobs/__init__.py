"""Jobs: one row per attempt of a run on a node, its state machine, dispatch and tracking."""
