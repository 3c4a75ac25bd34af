from django.apps import AppConfig


class DeploysConfig(AppConfig):
    name = "controlplane.deploys"
    label = "deploys"
    verbose_name = "Deploys"

    def ready(self) -> None:
        from controlplane.deploys import sync
        from controlplane.nodes import usage

        usage.register(sync.CATCHES_NODES_UP)
