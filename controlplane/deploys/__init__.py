"""Projects, egg versions, and which version is on which node."""
