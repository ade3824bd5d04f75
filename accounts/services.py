from __future__ import annotations

import logging

from django.core.files.storage import default_storage
from django.db import IntegrityError, transaction

from accounts import billing
from accounts.models import DataExport, Plan, StripeEvent, User, user_owned_models
from accounts.quotas import LimitReached
from safeface.jobs import ACTIVE_STATUSES, job_models, job_submit
from safeface.private_media import storage_delete_tree, user_prefix

logger = logging.getLogger(__name__)


def user_create(*, email: str, password: str, display_name: str = "") -> User:
    user = User(email=email.strip().lower(), display_name=display_name.strip())
    user.set_password(password)
    user.full_clean(exclude=["password"])
    user.save()
    return user


def user_delete(*, user: User) -> dict[str, int]:
    """Deletes the account with every row and file it owns. Returns what was removed."""
    if user.stripe_subscription_id:
        try:
            billing.subscription_cancel(user.stripe_subscription_id)
        except billing.BillingError:
            logger.exception("could not cancel subscription %s of user %s", user.stripe_subscription_id, user.pk)
    user_id = user.pk
    names: list[str] = []
    rows = 0
    for model in user_owned_models():
        for row in model.objects.filter(user_id=user_id).iterator():
            rows += 1
            for field in row._meta.get_fields():
                if hasattr(field, "upload_to") and getattr(row, field.name):
                    names.append(getattr(row, field.name).name)
    # Rows first (running jobs lose their row; their workers notice at the next progress step
    # and discard what they were writing), then every file, under the user's prefix or not.
    with transaction.atomic():
        user.delete()
    files = 0
    for name in sorted(set(names)):
        if default_storage.exists(name):
            default_storage.delete(name)
            files += 1
    files += storage_delete_tree(user_prefix(user_id))
    return {"rows": rows, "files": files}


def data_export_create(*, user: User) -> DataExport:
    if DataExport.objects.filter(user=user, status__in=ACTIVE_STATUSES).exists():
        raise LimitReached("An export is already being prepared; it will appear below when ready.")
    return job_submit(DataExport(user=user))


def user_has_active_jobs(user: User) -> bool:
    return any(m.objects.filter(user=user, status__in=ACTIVE_STATUSES).exists() for m in job_models())


# --- billing --------------------------------------------------------------------------------
def _plan_from(metadata: dict | None, price_id: str | None) -> Plan | None:
    slug = (metadata or {}).get("plan")
    if slug:
        plan = Plan.objects.filter(slug=slug).first()
        if plan:
            return plan
    if price_id:
        return Plan.objects.filter(stripe_price_id=price_id).first()
    return None


def _user_from(obj: dict) -> User | None:
    metadata = obj.get("metadata") or {}
    candidates = [obj.get("client_reference_id"), metadata.get("user_id")]
    for candidate in candidates:
        if candidate and str(candidate).isdigit():
            user = User.objects.filter(pk=int(candidate)).first()
            if user:
                return user
    customer = obj.get("customer")
    if customer:
        return User.objects.filter(stripe_customer_id=customer).first()
    return None


def stripe_event_apply(*, event: dict) -> str:
    """Applies a verified Stripe event once. Returns what happened (for logs and tests)."""
    try:
        with transaction.atomic():
            StripeEvent.objects.create(event_id=event["id"], type=event["type"])
            return _apply(event)
    except IntegrityError:
        return "duplicate"


def _apply(event: dict) -> str:
    obj = (event.get("data") or {}).get("object") or {}
    kind = event["type"]
    if kind == "checkout.session.completed":
        user = _user_from(obj)
        plan = _plan_from(obj.get("metadata"), None)
        if not user or not plan:
            return "ignored: unknown user or plan"
        user.plan = plan
        user.stripe_customer_id = obj.get("customer") or user.stripe_customer_id
        user.stripe_subscription_id = obj.get("subscription") or user.stripe_subscription_id
        user.save(update_fields=["plan", "stripe_customer_id", "stripe_subscription_id"])
        return f"plan set to {plan.slug}"
    if kind in ("customer.subscription.updated", "customer.subscription.created", "customer.subscription.deleted"):
        user = _user_from(obj)
        if not user:
            return "ignored: unknown user"
        status = obj.get("status")
        if kind == "customer.subscription.deleted" or status in ("canceled", "unpaid", "incomplete_expired"):
            if user.stripe_subscription_id and obj.get("id") not in (None, user.stripe_subscription_id):
                return "ignored: not the current subscription"
            user.plan = None
            user.stripe_subscription_id = ""
            user.save(update_fields=["plan", "stripe_subscription_id"])
            return "plan set to default"
        if status in ("active", "trialing"):
            items = ((obj.get("items") or {}).get("data") or [{}])
            price_id = ((items[0] or {}).get("price") or {}).get("id")
            plan = _plan_from(obj.get("metadata"), price_id)
            if not plan:
                return "ignored: unknown plan"
            user.plan = plan
            user.stripe_subscription_id = obj.get("id") or user.stripe_subscription_id
            user.save(update_fields=["plan", "stripe_subscription_id"])
            return f"plan set to {plan.slug}"
        return f"ignored: subscription status {status}"
    return "ignored"
