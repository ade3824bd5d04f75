"""Security headers that Django 5.2 does not set itself: Content-Security-Policy and
Permissions-Policy. Everything the site loads comes from its own origin (htmx is bundled), so
the policy allows no inline script and no third-party origin except Stripe Checkout redirects."""
from __future__ import annotations

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse

from safeface.private_media import presigned_origin


def content_security_policy() -> str:
    form_action = "'self'"
    if settings.STRIPE_SECRET_KEY:
        # The upgrade form redirects to Stripe Checkout; form-action also governs redirects.
        form_action += " https://checkout.stripe.com https://billing.stripe.com"
    bucket = presigned_origin()  # PRIVATE_MEDIA_SERVER=s3: pictures and players follow redirects there
    media = f" {bucket}" if bucket else ""
    directives = {
        "default-src": "'self'",
        "script-src": "'self'",
        "style-src": "'self'",
        "img-src": f"'self' data: blob:{media}",
        "media-src": f"'self' blob:{media}",
        "font-src": "'self'",
        "connect-src": "'self'",
        "object-src": "'none'",
        "base-uri": "'self'",
        "frame-ancestors": "'none'",
        "form-action": form_action,
    }
    return "; ".join(f"{name} {value}" for name, value in directives.items())


PERMISSIONS_POLICY = "camera=(), microphone=(self), geolocation=(), payment=(), usb=(), interest-cohort=()"


class SecurityHeadersMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.csp = content_security_policy()

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        response.headers.setdefault("Content-Security-Policy", self.csp)
        response.headers.setdefault("Permissions-Policy", PERMISSIONS_POLICY)
        response.headers.setdefault("Cross-Origin-Resource-Policy", "same-origin")
        return response
