from django.apps import AppConfig


class ScrapydApiConfig(AppConfig):
    name = "controlplane.scrapydapi"
    label = "scrapydapi"
    verbose_name = "Scrapyd-compatible API"
