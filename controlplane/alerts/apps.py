from django.apps import AppConfig


class AlertsConfig(AppConfig):
    name = "controlplane.alerts"
    label = "alerts"
    verbose_name = "Alerts"

    def ready(self) -> None:
        from controlplane.alerts import queue
        from controlplane.events import event_raised

        # Every raised event becomes one queued row, in the emitter's own transaction.
        event_raised.connect(queue.enqueue, dispatch_uid="controlplane.alerts.enqueue")
