from django.apps import AppConfig


class AvatarsConfig(AppConfig):
    name = "avatars"
    verbose_name = "Personas"

    def ready(self) -> None:
        from avatars.models import c2pa_signer

        c2pa_signer()  # a bad SAFEFACE_C2PA_CERT / SAFEFACE_C2PA_KEY stops start-up here
