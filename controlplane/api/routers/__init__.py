"""REST API routers, one per resource; ``controlplane.api.rest`` mounts them."""
