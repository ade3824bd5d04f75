"""Stripe: Checkout session creation against a local fake API, and webhooks signed locally."""
from __future__ import annotations

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from django.urls import reverse

from accounts import billing
from accounts.models import Plan, StripeEvent, User
from tests.conftest import make_user

WEBHOOK_SECRET = "whsec_test_secret"


@pytest.fixture
def stripe_api(settings):
    """A local stand-in for api.stripe.com that records requests."""
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers["Content-Length"])).decode()
            received.append({"path": self.path, "auth": self.headers["Authorization"], "form": dict(urllib.parse.parse_qsl(body))})
            if "price_broken" in body:
                self.send_response(400)
                payload = {"error": {"message": "No such price"}}
            else:
                self.send_response(200)
                payload = {"id": "cs_test_1", "url": "https://checkout.stripe.com/c/pay/cs_test_1"}
                if self.path == "/v1/billing_portal/sessions":
                    payload = {"id": "bps_1", "url": "https://billing.stripe.com/p/session/bps_1"}
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps(payload).encode())

        def do_DELETE(self):
            received.append({"path": self.path, "method": "DELETE", "auth": self.headers["Authorization"]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(json.dumps({"id": self.path.rsplit("/", 1)[-1], "status": "canceled"}).encode())

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    settings.STRIPE_SECRET_KEY = "sk_test_123"
    settings.STRIPE_WEBHOOK_SECRET = WEBHOOK_SECRET
    settings.STRIPE_API_BASE = f"http://127.0.0.1:{server.server_port}"
    yield received
    server.shutdown()


def post_event(client, event: dict, *, secret=WEBHOOK_SECRET, timestamp=None):
    payload = json.dumps(event).encode()
    return client.post(
        reverse("accounts-stripe-webhook"),
        data=payload,
        content_type="application/json",
        HTTP_STRIPE_SIGNATURE=billing.sign_payload(payload, secret, timestamp),
    )


@pytest.mark.django_db
def test_upgrade_without_stripe_keys_explains_billing_is_not_configured(owner_client, settings):
    settings.STRIPE_SECRET_KEY = None
    page = owner_client.get(reverse("accounts-usage"))
    assert b"Billing is not configured on this server" in page.content
    assert b"disabled" in page.content
    response = owner_client.post(reverse("accounts-upgrade", args=["pro"]), follow=True)
    assert b"Billing is not configured on this server" in response.content
    assert User.objects.get(email="owner@example.com").plan_id is None


@pytest.mark.django_db
def test_upgrade_creates_a_checkout_session_and_redirects(owner_client, owner, stripe_api):
    Plan.objects.filter(slug="pro").update(stripe_price_id="price_pro_monthly")
    response = owner_client.post(reverse("accounts-upgrade", args=["pro"]))
    assert response.status_code == 302
    assert response["Location"] == "https://checkout.stripe.com/c/pay/cs_test_1"
    (request,) = stripe_api
    assert request["path"] == "/v1/checkout/sessions"
    assert request["auth"] == "Bearer sk_test_123"
    form = request["form"]
    assert form["mode"] == "subscription"
    assert form["line_items[0][price]"] == "price_pro_monthly"
    assert form["client_reference_id"] == str(owner.pk)
    assert form["metadata[plan]"] == "pro"
    assert form["customer_email"] == "owner@example.com"


@pytest.mark.django_db
def test_upgrade_shows_stripe_refusal_in_the_page(owner_client, stripe_api):
    Plan.objects.filter(slug="pro").update(stripe_price_id="price_broken")
    response = owner_client.post(reverse("accounts-upgrade", args=["pro"]), follow=True)
    assert b"Our payment provider refused the request" in response.content


@pytest.mark.django_db
def test_upgrade_with_htmx_answers_a_client_redirect(owner_client, stripe_api):
    Plan.objects.filter(slug="pro").update(stripe_price_id="price_pro_monthly")
    response = owner_client.post(reverse("accounts-upgrade", args=["pro"]), HTTP_HX_REQUEST="true")
    assert response.status_code == 200
    assert response["HX-Redirect"] == "https://checkout.stripe.com/c/pay/cs_test_1"


def test_upgrade_requires_login(client):
    response = client.post(reverse("accounts-upgrade", args=["pro"]))
    assert response.status_code == 302 and "/accounts/login/" in response["Location"]


def checkout_completed(user, *, event_id="evt_1", plan="pro"):
    return {
        "id": event_id,
        "type": "checkout.session.completed",
        "data": {"object": {"client_reference_id": str(user.pk), "customer": "cus_9", "subscription": "sub_9", "metadata": {"plan": plan, "user_id": str(user.pk)}}},
    }


@pytest.mark.django_db
def test_signed_checkout_event_sets_the_plan_once(client, owner, stripe_api):
    response = post_event(client, checkout_completed(owner))
    assert response.status_code == 200, response.content
    owner.refresh_from_db()
    assert owner.plan.slug == "pro"
    assert (owner.stripe_customer_id, owner.stripe_subscription_id) == ("cus_9", "sub_9")
    again = post_event(client, checkout_completed(owner))
    assert again.content == b"duplicate"
    assert StripeEvent.objects.count() == 1


@pytest.mark.django_db
def test_subscription_deleted_returns_the_user_to_the_default_plan(client, stripe_api):
    user = make_user("sub@example.com", plan="pro")
    User.objects.filter(pk=user.pk).update(stripe_customer_id="cus_1", stripe_subscription_id="sub_1")
    event = {"id": "evt_2", "type": "customer.subscription.deleted", "data": {"object": {"id": "sub_1", "customer": "cus_1", "status": "canceled"}}}
    assert post_event(client, event).status_code == 200
    user.refresh_from_db()
    assert user.plan is None and user.stripe_subscription_id == ""


@pytest.mark.django_db
def test_subscription_update_maps_price_to_plan(client, stripe_api):
    user = make_user("upd@example.com")
    User.objects.filter(pk=user.pk).update(stripe_customer_id="cus_2")
    Plan.objects.filter(slug="pro").update(stripe_price_id="price_pro_monthly")
    event = {"id": "evt_3", "type": "customer.subscription.updated", "data": {"object": {"id": "sub_2", "customer": "cus_2", "status": "active", "items": {"data": [{"price": {"id": "price_pro_monthly"}}]}}}}
    assert post_event(client, event).status_code == 200
    user.refresh_from_db()
    assert user.plan.slug == "pro" and user.stripe_subscription_id == "sub_2"


@pytest.mark.django_db
@pytest.mark.parametrize("tamper", ["wrong-secret", "old-timestamp", "modified-body", "no-header"])
def test_webhook_rejects_bad_signatures(client, owner, stripe_api, tamper):
    event = checkout_completed(owner)
    url = reverse("accounts-stripe-webhook")
    payload = json.dumps(event).encode()
    if tamper == "wrong-secret":
        response = post_event(client, event, secret="whsec_other")
    elif tamper == "old-timestamp":
        response = post_event(client, event, timestamp=int(time.time()) - 3600)
    elif tamper == "modified-body":
        header = billing.sign_payload(payload, WEBHOOK_SECRET)
        forged = payload.replace(b'"pro"', b'"free"')
        response = client.post(url, data=forged, content_type="application/json", HTTP_STRIPE_SIGNATURE=header)
    else:
        response = client.post(url, data=payload, content_type="application/json")
    assert response.status_code == 400
    owner.refresh_from_db()
    assert owner.plan is None and not StripeEvent.objects.exists()


def test_signature_verification_accepts_any_matching_v1():
    payload = b'{"id": "evt", "type": "ping"}'
    good = billing.sign_payload(payload, "whsec_a", 1_700_000_000)
    header = "t=1700000000,v1=deadbeef," + good.split(",")[1]
    assert billing.webhook_event_verify(payload, header, "whsec_a", now=1_700_000_010)["id"] == "evt"


@pytest.mark.django_db
def test_subscriber_can_open_the_billing_portal(client, stripe_api, settings):
    settings.SITE_URL = "https://safeface.test"
    user = make_user("sub@example.com", plan="pro")
    User.objects.filter(pk=user.pk).update(stripe_customer_id="cus_7")
    client.force_login(user)
    assert b"Manage or cancel subscription" in client.get(reverse("accounts-usage")).content
    response = client.post(reverse("accounts-billing-portal"))
    assert response["Location"] == "https://billing.stripe.com/p/session/bps_1"
    assert stripe_api[-1]["form"] == {"customer": "cus_7", "return_url": "https://safeface.test/accounts/usage/"}


@pytest.mark.django_db
def test_billing_portal_without_a_subscription_says_so(owner_client, stripe_api):
    assert b"Manage or cancel subscription" not in owner_client.get(reverse("accounts-usage")).content
    page = owner_client.post(reverse("accounts-billing-portal"), follow=True)
    assert b"There is no subscription to manage on this account." in page.content
    assert stripe_api == []


def test_billing_portal_requires_login(client):
    assert client.post(reverse("accounts-billing-portal")).status_code == 302


@pytest.mark.django_db
def test_return_from_checkout_thanks_the_user(owner_client):
    page = owner_client.get(reverse("accounts-usage") + "?upgraded=1")
    assert b"Payment received. Your plan changes as soon as Stripe confirms it" in page.content


@pytest.mark.django_db
def test_deleting_an_account_cancels_its_subscription(client, stripe_api):
    from tests.conftest import PASSWORD

    user = make_user("leaving@example.com", plan="pro")
    User.objects.filter(pk=user.pk).update(stripe_customer_id="cus_3", stripe_subscription_id="sub_3")
    client.force_login(user)
    client.post(reverse("accounts-delete"), {"password": PASSWORD, "confirm": "DELETE"})
    assert not User.objects.filter(pk=user.pk).exists()
    assert stripe_api[-1] == {"path": "/v1/subscriptions/sub_3", "method": "DELETE", "auth": "Bearer sk_test_123"}
