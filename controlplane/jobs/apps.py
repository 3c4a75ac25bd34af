from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "controlplane.jobs"
    label = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        from controlplane.deploys import usage
        from controlplane.jobs import nodework, versions
        from controlplane.nodes import usage as node_usage

        usage.register(versions.USED_BY_JOBS)
        node_usage.register(nodework.JOBS_ON_NODE)
