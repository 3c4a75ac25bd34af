from django.apps import AppConfig


class DeploysConfig(AppConfig):
    name = "controlplane.deploys"
    label = "deploys"
    verbose_name = "Deploys"
