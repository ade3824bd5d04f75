from django.conf import settings
from django.http import HttpRequest


def site(request: HttpRequest) -> dict:
    return {"billing_configured": bool(settings.STRIPE_SECRET_KEY), "site_debug": settings.DEBUG}
