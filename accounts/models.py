from __future__ import annotations

import io
import json
import uuid
import zipfile
from typing import ClassVar

from django.apps import apps
from django.contrib.auth.models import AbstractBaseUser, BaseUserManager, PermissionsMixin
from django.core import serializers
from django.core.files.base import ContentFile
from django.db import models
from django.utils import timezone

from safeface.jobs import Job, Progress
from safeface.private_media import user_prefix


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create(self, email: str, password: str | None, **extra) -> User:
        if not email:
            raise ValueError("An e-mail address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email: str, password: str | None = None, **extra) -> User:
        extra.setdefault("is_staff", False)
        extra.setdefault("is_superuser", False)
        return self._create(email, password, **extra)

    def create_superuser(self, email: str, password: str | None = None, **extra) -> User:
        extra["is_staff"] = True
        extra["is_superuser"] = True
        return self._create(email, password, **extra)


class Plan(models.Model):
    """A paid tier and its limits. Edited in the admin; Free and Pro are created by migration."""

    slug = models.SlugField(unique=True)
    name = models.CharField(max_length=60)
    tagline = models.CharField(max_length=200, blank=True)
    price_label = models.CharField(max_length=40, blank=True, help_text="Shown to users, e.g. '$9 / month'.")
    stripe_price_id = models.CharField(max_length=100, blank=True, help_text="Stripe Price for Checkout.")
    is_default = models.BooleanField(default=False, help_text="The plan of every account without a subscription.")
    sort_order = models.PositiveSmallIntegerField(default=0)
    avatars_per_period = models.PositiveIntegerField(help_text="Personas generated per month.")
    swaps_per_period = models.PositiveIntegerField(default=20, help_text="Photos and videos protected per month.")
    upload_bytes_per_period = models.PositiveBigIntegerField(help_text="Bytes uploaded per month.")
    voice_minutes_per_period = models.PositiveIntegerField(default=10, help_text="Minutes of recordings voice-masked per month.")
    video_seconds_per_upload = models.PositiveIntegerField(help_text="Longest video accepted, in seconds.")
    max_image_side = models.PositiveIntegerField(help_text="Longest side of an uploaded image, in pixels.")
    max_video_side = models.PositiveIntegerField(help_text="Longest side of an uploaded video, in pixels.")
    concurrent_jobs = models.PositiveSmallIntegerField(help_text="Jobs queued or running at once.")
    retention_days = models.PositiveSmallIntegerField(help_text="Days results and uploads are kept.")
    queue_priority = models.SmallIntegerField(default=0, help_text="Higher runs first.")

    class Meta:
        ordering = ["sort_order", "pk"]
        constraints = [
            models.UniqueConstraint(fields=["is_default"], condition=models.Q(is_default=True), name="one_default_plan"),
        ]

    def __str__(self) -> str:
        return self.name


class User(AbstractBaseUser, PermissionsMixin):
    email = models.EmailField(unique=True)
    display_name = models.CharField(max_length=80, blank=True)
    is_staff = models.BooleanField(default=False)
    is_active = models.BooleanField(default=True)
    date_joined = models.DateTimeField(default=timezone.now)
    plan = models.ForeignKey(Plan, null=True, blank=True, on_delete=models.SET_NULL, related_name="users")
    stripe_customer_id = models.CharField(max_length=100, blank=True)
    stripe_subscription_id = models.CharField(max_length=100, blank=True)

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS: ClassVar[list[str]] = []

    def __str__(self) -> str:
        return self.email

    def get_full_name(self) -> str:
        return self.display_name or self.email

    def get_short_name(self) -> str:
        return self.display_name or self.email.split("@")[0]


class UsageCounter(models.Model):
    """How much of a metered quota a user consumed in one period (a calendar month, UTC)."""

    class Metric(models.TextChoices):
        AVATARS = "avatars", "Personas generated"
        SWAPS = "swaps", "Photos and videos protected"
        UPLOAD_BYTES = "upload_bytes", "Upload volume"
        VOICE_SECONDS = "voice_seconds", "Voice masking"

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="usage_counters")
    period = models.CharField(max_length=7, help_text="YYYY-MM")
    metric = models.CharField(max_length=32, choices=Metric.choices)
    used = models.BigIntegerField(default=0)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user", "period", "metric"], name="one_counter_per_period"),
            models.CheckConstraint(condition=models.Q(used__gte=0), name="usage_not_negative"),
        ]


class StripeEvent(models.Model):
    """Webhook events already applied, so Stripe's retries are processed once."""

    event_id = models.CharField(max_length=100, unique=True)
    type = models.CharField(max_length=100)
    received_at = models.DateTimeField(auto_now_add=True)


def _export_path(instance: DataExport, filename: str) -> str:
    return f"{user_prefix(instance.user_id)}exports/{uuid.uuid4().hex}.zip"


class DataExport(Job):
    """A zip of everything SafeFace stores about a user: records as JSON plus their files."""

    KIND_NAME = "data export"
    COUNTS_TOWARD_CONCURRENCY = False
    archive = models.FileField(upload_to=_export_path, null=True, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)

    def run(self, progress: Progress) -> None:
        user = User.objects.get(pk=self.user_id)
        owned = user_owned_models()
        buffer = io.BytesIO()
        file_count = 0
        with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            profile = {
                "email": user.email,
                "display_name": user.display_name,
                "date_joined": user.date_joined.isoformat(),
                "plan": user.plan.name if user.plan else None,
            }
            archive.writestr("account.json", json.dumps(profile, indent=2))
            for index, model in enumerate(owned):
                progress(100 * index / max(1, len(owned)), f"Collecting {model._meta.verbose_name_plural}")
                rows = model.objects.filter(user=user)
                if model is DataExport:
                    rows = rows.exclude(pk=self.pk)
                rows = list(rows)
                if not rows:
                    continue
                data = serializers.serialize("json", rows, indent=2)
                archive.writestr(f"records/{model._meta.label_lower}.json", data)
                for row in rows:
                    for field in row._meta.get_fields():
                        if not isinstance(field, models.FileField) or model is DataExport:
                            continue
                        file = getattr(row, field.name)
                        if file and file.storage.exists(file.name):
                            with file.storage.open(file.name, "rb") as handle:
                                archive.writestr(f"files/{file.name.split('/', 2)[-1]}", handle.read())
                            file_count += 1
            archive.writestr(
                "README.txt",
                "Your SafeFace data export.\n\naccount.json: your account\nrecords/: every record "
                f"stored about you, as JSON\nfiles/: your {file_count} stored files\n",
            )
        progress(95, "Saving the archive")
        self.size_bytes = buffer.tell()
        self.archive.save("export.zip", ContentFile(buffer.getvalue()), save=False)
        type(self).objects.filter(pk=self.pk, worker=self.worker).update(
            archive=self.archive.name, size_bytes=self.size_bytes
        )


def user_owned_models() -> list[type[models.Model]]:
    """Every model with a ``user`` foreign key to the account (the export and deletion scope)."""
    owned = []
    for model in apps.get_models():
        try:
            field = model._meta.get_field("user")
        except Exception:
            continue
        if getattr(field, "many_to_one", False) and field.concrete and field.related_model is User:
            owned.append(model)
    return sorted(owned, key=lambda m: m._meta.label)
