from django.apps import AppConfig


class SafefaceConfig(AppConfig):
    name = "safeface"
    verbose_name = "SafeFace core"
