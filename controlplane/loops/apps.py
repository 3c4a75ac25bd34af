from django.apps import AppConfig


class LoopsConfig(AppConfig):
    name = "controlplane.loops"
    label = "loops"
    verbose_name = "Loops"
