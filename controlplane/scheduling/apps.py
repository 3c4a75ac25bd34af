from django.apps import AppConfig


class SchedulingConfig(AppConfig):
    name = "controlplane.scheduling"
    label = "scheduling"
    verbose_name = "Scheduling"

    def ready(self) -> None:
        from controlplane.deploys import usage
        from controlplane.scheduling import versions

        usage.register(versions.PINNED_BY_TASKS)
