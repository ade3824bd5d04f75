"""Stripe billing without the Stripe SDK: Checkout session creation over Stripe's HTTP API and
webhook signature verification (HMAC-SHA256 over "<timestamp>.<payload>", as Stripe documents).
STRIPE_API_BASE lets tests point the client at a local server."""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import urllib.error
import urllib.parse
import urllib.request

from django.conf import settings

logger = logging.getLogger(__name__)

SIGNATURE_TOLERANCE_SECONDS = 300


class BillingNotConfigured(Exception):
    pass


class BillingError(Exception):
    """Stripe refused or could not be reached; the message is safe to show."""


class SignatureError(Exception):
    pass


def billing_configured() -> bool:
    return bool(settings.STRIPE_SECRET_KEY)


def _stripe_request(method: str, path: str, fields: dict[str, str] | None = None) -> dict:
    if not billing_configured():
        raise BillingNotConfigured()
    request = urllib.request.Request(
        settings.STRIPE_API_BASE.rstrip("/") + path,
        data=urllib.parse.urlencode(fields).encode() if fields is not None else None,
        headers={
            "Authorization": f"Bearer {settings.STRIPE_SECRET_KEY}",
            "Content-Type": "application/x-www-form-urlencoded",
            "Stripe-Version": "2024-06-20",
        },
        method=method,
    )
    try:
        with urllib.request.urlopen(request, timeout=15) as response:
            return json.load(response)
    except urllib.error.HTTPError as exc:
        try:
            detail = json.load(exc).get("error", {}).get("message", "")
        except Exception:
            detail = ""
        logger.error("Stripe %s answered %s: %s", path, exc.code, detail)
        raise BillingError("Our payment provider refused the request. Please try again later.") from exc
    except (urllib.error.URLError, TimeoutError, ValueError) as exc:
        logger.error("Stripe %s unreachable: %s", path, exc)
        raise BillingError("Our payment provider could not be reached. Please try again later.") from exc


def checkout_session_create(*, user, plan, success_url: str, cancel_url: str) -> str:
    """Creates a subscription Checkout session for ``plan`` and returns the URL to send the user to."""
    if not plan.stripe_price_id:
        raise BillingError(f"The {plan.name} plan cannot be bought online yet.")
    fields = {
        "mode": "subscription",
        "line_items[0][price]": plan.stripe_price_id,
        "line_items[0][quantity]": "1",
        "success_url": success_url,
        "cancel_url": cancel_url,
        "client_reference_id": str(user.pk),
        "metadata[user_id]": str(user.pk),
        "metadata[plan]": plan.slug,
        "subscription_data[metadata][user_id]": str(user.pk),
        "subscription_data[metadata][plan]": plan.slug,
    }
    if user.stripe_customer_id:
        fields["customer"] = user.stripe_customer_id
    else:
        fields["customer_email"] = user.email
    session = _stripe_request("POST", "/v1/checkout/sessions", fields)
    url = session.get("url")
    if not url or not url.startswith("https://"):
        raise BillingError("Our payment provider returned no checkout page. Please try again later.")
    return url


def billing_portal_create(*, customer_id: str, return_url: str) -> str:
    """A Stripe Billing Portal session where the customer changes or cancels the subscription."""
    if not customer_id:
        raise BillingError("There is no subscription to manage on this account.")
    session = _stripe_request(
        "POST", "/v1/billing_portal/sessions", {"customer": customer_id, "return_url": return_url}
    )
    url = session.get("url")
    if not url or not url.startswith("https://"):
        raise BillingError("Our payment provider returned no billing page. Please try again later.")
    return url


def subscription_cancel(subscription_id: str) -> None:
    """Cancels a subscription at once (used when an account is deleted)."""
    if not subscription_id or not billing_configured():
        return
    try:
        _stripe_request("DELETE", f"/v1/subscriptions/{urllib.parse.quote(subscription_id)}")
    except BillingError as exc:
        raise BillingError("The subscription could not be cancelled with our payment provider.") from exc


def sign_payload(payload: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header value for ``payload`` (used by tests and tooling)."""
    timestamp = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def webhook_event_verify(payload: bytes, header: str, secret: str, *, now: float | None = None) -> dict:
    if not secret:
        raise SignatureError("Webhook secret is not configured.")
    timestamp = None
    signatures = []
    for part in (header or "").split(","):
        key, _, value = part.strip().partition("=")
        if key == "t":
            timestamp = value
        elif key == "v1":
            signatures.append(value)
    if not timestamp or not timestamp.isdigit() or not signatures:
        raise SignatureError("Malformed Stripe-Signature header.")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + payload, hashlib.sha256).hexdigest()
    if not any(hmac.compare_digest(expected, candidate) for candidate in signatures):
        raise SignatureError("Signature does not match.")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > SIGNATURE_TOLERANCE_SECONDS:
        raise SignatureError("Signature timestamp is outside the tolerance window.")
    try:
        event = json.loads(payload)
    except ValueError:
        raise SignatureError("Payload is not JSON.") from None
    if not isinstance(event, dict) or "id" not in event or "type" not in event:
        raise SignatureError("Payload is not a Stripe event.")
    return event
