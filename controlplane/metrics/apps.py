from django.apps import AppConfig


class MetricsConfig(AppConfig):
    name = "controlplane.metrics"
    label = "metrics"
    verbose_name = "Metrics"

    def ready(self) -> None:
        from controlplane.metrics import checks  # noqa: F401  (registers the check)
