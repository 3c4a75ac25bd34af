from django.apps import AppConfig


class JobsConfig(AppConfig):
    name = "controlplane.jobs"
    label = "jobs"
    verbose_name = "Jobs"

    def ready(self) -> None:
        from controlplane.deploys import usage
        from controlplane.jobs import versions

        usage.register(versions.USED_BY_JOBS)
