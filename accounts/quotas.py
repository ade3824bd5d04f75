"""Plan limits and metered quotas.

Metered quotas (personas, swaps, upload bytes and seconds of voice masking per month) live in
one UsageCounter row per user, period and metric. Reserving is a single conditional UPDATE
(``used = used + n WHERE used <= limit - n``), so two concurrent requests can never both take
the last unit, on SQLite or PostgreSQL. A reservation is released when a job fails through no
fault of the user.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import IntegrityError, transaction
from django.db.models import F, Q
from django.db.models.functions import Greatest
from django.template.defaultfilters import filesizeformat
from django.utils import timezone

from accounts.models import Plan, UsageCounter, User

METRIC_LIMIT_FIELDS = {
    UsageCounter.Metric.AVATARS: "avatars_per_period",
    UsageCounter.Metric.SWAPS: "swaps_per_period",
    UsageCounter.Metric.UPLOAD_BYTES: "upload_bytes_per_period",
    UsageCounter.Metric.VOICE_SECONDS: "voice_minutes_per_period",
}
# Plans state some limits in a larger unit than the metric counts (minutes of voice, metered
# in seconds).
METRIC_LIMIT_SCALE = {UsageCounter.Metric.VOICE_SECONDS: 60}


class LimitReached(Exception):
    """A plan limit stops the action; ``message`` is shown to the user as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Reservation:
    metric: str
    period: str
    amount: int


@dataclass(frozen=True)
class Meter:
    metric: str
    label: str
    used: int
    limit: int
    human_used: str
    human_limit: str

    @property
    def percent(self) -> int:
        if self.limit <= 0:
            return 100
        return min(100, round(100 * self.used / self.limit))

    @property
    def remaining(self) -> int:
        return max(0, self.limit - self.used)

    @property
    def level(self) -> str:
        return "full" if self.percent >= 100 else "high" if self.percent >= 80 else "ok"


def current_period(now: datetime | None = None) -> str:
    now = now or timezone.now()
    return f"{now.year:04d}-{now.month:02d}"


def period_resets_at(now: datetime | None = None) -> datetime:
    now = now or timezone.now()
    first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    return (first + timedelta(days=32)).replace(day=1)


def default_plan() -> Plan:
    plan = Plan.objects.filter(is_default=True).first() or Plan.objects.order_by("sort_order", "pk").first()
    if plan is None:
        raise LimitReached("No plan is configured on this server; an administrator must create one.")
    return plan


def plan_for(user: User) -> Plan:
    return user.plan if user.plan_id else default_plan()


def metric_limit(plan: Plan, metric: str) -> int:
    """The plan's monthly limit of ``metric``, in the unit the metric counts."""
    return getattr(plan, METRIC_LIMIT_FIELDS[metric]) * METRIC_LIMIT_SCALE.get(metric, 1)


def format_seconds(seconds: int) -> str:
    """"45 s", "10 min", "2 min 5 s", "1 h 30 min"."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds} s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours:,} h {minutes} min" if minutes else f"{hours:,} h"
    return f"{minutes} min {secs} s" if secs else f"{minutes} min"


def _format(metric: str, amount: int) -> str:
    if metric == UsageCounter.Metric.UPLOAD_BYTES:
        return filesizeformat(amount)
    if metric == UsageCounter.Metric.VOICE_SECONDS:
        return format_seconds(amount)
    return f"{amount:,}"


def quota_reserve(*, user: User, metric: str, amount: int, now: datetime | None = None) -> Reservation:
    if amount <= 0:
        raise ValueError("A reservation must be for a positive amount.")
    plan = plan_for(user)
    limit = metric_limit(plan, metric)
    label = UsageCounter.Metric(metric).label.lower()
    period = current_period(now)
    if amount > limit:
        raise LimitReached(
            f"This needs {_format(metric, amount)} of {label}, more than your {plan.name} plan's "
            f"monthly {_format(metric, limit)}."
        )
    if not UsageCounter.objects.filter(user=user, period=period, metric=metric).exists():
        try:
            with transaction.atomic():
                UsageCounter.objects.create(user=user, period=period, metric=metric, used=0)
        except IntegrityError:
            pass  # created by a concurrent request
    taken = UsageCounter.objects.filter(
        user=user, period=period, metric=metric, used__lte=limit - amount
    ).update(used=F("used") + amount)
    if not taken:
        used = UsageCounter.objects.filter(user=user, period=period, metric=metric).values_list("used", flat=True).first() or 0
        raise LimitReached(
            f"You have used {_format(metric, used)} of your {_format(metric, limit)} monthly "
            f"{label} on the {plan.name} plan; this needs {_format(metric, amount)} more. "
            f"Your quota resets on {period_resets_at(now):%B} 1, or upgrade for more."
        )
    return Reservation(metric=metric, period=period, amount=amount)


def quota_release(*, user_id: int, metric: str, period: str, amount: int) -> None:
    UsageCounter.objects.filter(user_id=user_id, period=period, metric=metric).update(
        used=Greatest(F("used") - amount, 0)
    )


def check_concurrency(user: User, plan: Plan, active: int) -> None:
    if active >= plan.concurrent_jobs:
        jobs = "job" if plan.concurrent_jobs == 1 else "jobs"
        raise LimitReached(
            f"Your {plan.name} plan runs {plan.concurrent_jobs} {jobs} at a time and you have "
            f"{active} queued or running. Wait for one to finish, or cancel one."
        )


def check_media_limits(
    *, user: User, width: int, height: int, duration_seconds: float | None = None
) -> None:
    """Per-upload limits: resolution (images and videos) and video length."""
    plan = plan_for(user)
    side = max(width, height)
    if duration_seconds is None:
        if side > plan.max_image_side:
            raise LimitReached(
                f"This image is {width}×{height} px; your {plan.name} plan accepts images up to "
                f"{plan.max_image_side} px on the longest side."
            )
        return
    if side > plan.max_video_side:
        raise LimitReached(
            f"This video is {width}×{height} px; your {plan.name} plan accepts videos up to "
            f"{plan.max_video_side} px on the longest side."
        )
    if duration_seconds > plan.video_seconds_per_upload:
        raise LimitReached(
            f"This video lasts {duration_seconds:.0f} s; your {plan.name} plan accepts videos up "
            f"to {plan.video_seconds_per_upload} s."
        )


def usage_meters(user: User, now: datetime | None = None) -> list[Meter]:
    from safeface.jobs import jobs_active_count

    plan = plan_for(user)
    period = current_period(now)
    used = dict(
        UsageCounter.objects.filter(user=user, period=period).values_list("metric", "used")
    )
    meters = []
    for metric in METRIC_LIMIT_FIELDS:
        limit = metric_limit(plan, metric)
        amount = used.get(metric, 0)
        meters.append(
            Meter(metric, UsageCounter.Metric(metric).label, amount, limit, _format(metric, amount), _format(metric, limit))
        )
    active = jobs_active_count(user)
    meters.append(Meter("jobs", "Jobs running at once", active, plan.concurrent_jobs, str(active), str(plan.concurrent_jobs)))
    return meters


def jobs_past_retention(model, *, now: datetime | None = None):
    """Finished jobs of ``model`` whose owner's retention period has passed and that still hold files."""
    now = now or timezone.now()
    default = default_plan()
    condition = Q()
    for plan in Plan.objects.all():
        cutoff = now - timedelta(days=plan.retention_days)
        plan_q = Q(user__plan=plan)
        if plan.pk == default.pk:
            plan_q |= Q(user__plan__isnull=True)
        condition |= plan_q & Q(finished_at__lt=cutoff)
    return model.objects.filter(condition, purged_at__isnull=True, finished_at__isnull=False)
