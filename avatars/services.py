"""Persona actions: start a generation, keep a candidate, rename, favourite, delete, and verify
an avatar's provenance before anything uses its file."""
from __future__ import annotations

import logging
import secrets
import uuid

import numpy as np
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone

from accounts.models import UsageCounter, User
from avatars.models import Avatar, GenerationJob, provenance_keys
from safeface.jobs import job_submit

security_logger = logging.getLogger("safeface.security")

NAME_MAX = Avatar._meta.get_field("name").max_length


class AvatarTampered(Exception):
    """The stored file (or its provenance fields) no longer matches its signature."""

    def __init__(self, avatar: Avatar, reason: str) -> None:
        super().__init__(f"Avatar {avatar.pk} failed its provenance check: {reason}")
        self.avatar = avatar
        self.reason = reason


class AvatarActionRefused(Exception):
    """An action the user asked for cannot be done; ``message`` is shown as is."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def new_seed() -> int:
    return secrets.randbelow(2**31 - 1)


def generation_start(*, user: User, attributes: dict, submission: uuid.UUID | None = None) -> GenerationJob:
    """Queues a generation of candidates for ``attributes`` (a cleaned attribute dict; empty
    values mean any) and reserves one persona from the plan's monthly quota.

    ``submission`` is the token of the form that asked: submitting the same form twice (a double
    click) returns the first job instead of creating a second. Raises ``LimitReached``."""
    from engine.generate.attributes import AttributeRequest

    request = AttributeRequest.from_dict(attributes)  # ValueError for a value outside the vocabulary
    if submission is not None:
        existing = GenerationJob.objects.filter(user=user, submission=submission).first()
        if existing:
            return existing
    job = GenerationJob(user=user, attributes=request.as_dict(), seed=new_seed(), submission=submission)
    try:
        return job_submit(job, quota_metric=UsageCounter.Metric.AVATARS, quota_amount=1)
    except (IntegrityError, ValidationError):
        # The same form won a race with itself; the transaction that lost reserved nothing.
        existing = submission and GenerationJob.objects.filter(user=user, submission=submission).first()
        if existing:
            return existing
        raise


def generation_regenerate(*, user: User, job: GenerationJob, submission: uuid.UUID | None = None) -> GenerationJob:
    """A new job with the same attributes and a fresh seed (one more quota unit)."""
    if job.user_id != user.pk:
        raise AvatarActionRefused("This generation is not yours.")
    return generation_start(user=user, attributes=job.attributes, submission=submission)


def _clean_name(name: str) -> str:
    name = " ".join((name or "").split())
    if not name:
        raise AvatarActionRefused("Give your persona a name.")
    if len(name) > NAME_MAX:
        raise AvatarActionRefused(f"A name is at most {NAME_MAX} characters; this one has {len(name)}.")
    return name


def _closest_ready(avatar: Avatar) -> float | None:
    others = Avatar.embeddings_matrix(Avatar.objects.filter(status=Avatar.Status.READY).exclude(pk=avatar.pk))
    if others is None:
        return None
    return float(np.min(np.linalg.norm(others - avatar.embedding_array, axis=1)))


def avatar_pick(*, user: User, avatar: Avatar, name: str) -> Avatar:
    """Keeps one candidate of a finished generation as a named persona and deletes the others.

    Idempotent: keeping the same candidate again (a double click) returns it unchanged; keeping a
    second candidate of the same generation is refused."""
    from engine.generate.pipeline import GenerationOptions

    name = _clean_name(name)
    if avatar.user_id != user.pk:
        raise AvatarActionRefused("This persona is not yours.")
    with transaction.atomic():
        job = GenerationJob.objects.select_for_update().filter(pk=avatar.generation_job_id, user=user).first()
        current = Avatar.objects.filter(pk=avatar.pk, user=user).first()
        if current is None:
            raise AvatarActionRefused("This candidate is no longer available. Generate new ones.")
        if current.is_ready:
            return current
        if job is None:
            raise AvatarActionRefused("This candidate is no longer available. Generate new ones.")
        kept = job.avatars.filter(status=Avatar.Status.READY).first()
        if kept is not None:
            raise AvatarActionRefused(f"You already kept “{kept.name}” from this generation.")
        # Jobs run side by side never see each other's candidates: check the margin again
        # against the whole library of the platform, now under the job's lock.
        margin = GenerationOptions().uniqueness_margin
        closest = _closest_ready(current)
        if closest is not None and closest < margin:
            raise AvatarActionRefused(
                "A persona made meanwhile looks too much like this candidate. Keep another one or generate again."
            )
        current.status = Avatar.Status.READY
        current.name = name
        current.kept_at = timezone.now()
        current.full_clean()
        current.save(update_fields=["status", "name", "kept_at"])
        for other in job.avatars.filter(status=Avatar.Status.CANDIDATE):
            other.delete_with_files()
    return current


def avatar_rename(*, avatar: Avatar, name: str) -> Avatar:
    avatar.name = _clean_name(name)
    avatar.full_clean()
    avatar.save(update_fields=["name"])
    return avatar


def avatar_toggle_favourite(*, avatar: Avatar) -> Avatar:
    avatar.favourite = not avatar.favourite
    avatar.save(update_fields=["favourite"])
    return avatar


def avatar_delete(*, avatar: Avatar) -> None:
    """Deletes the persona and, once that is committed, its files."""
    with transaction.atomic():
        avatar.delete_with_files()


def avatar_verify(avatar: Avatar) -> bytes:
    """Reads the avatar's image and checks its signature; returns the verified bytes.

    Use these bytes (not a second read of the file) for whatever comes next. Raises
    ``AvatarTampered`` when the file is missing or differs from what was signed."""
    from engine.media.provenance import verify

    if not avatar.image or not avatar.image.storage.exists(avatar.image.name):
        raise AvatarTampered(avatar, "the image file is missing")
    with avatar.image.storage.open(avatar.image.name, "rb") as handle:
        data = handle.read()
    fields = avatar.provenance_fields()
    if not any(verify(key, data, fields, avatar.signature) for key in provenance_keys()):
        raise AvatarTampered(avatar, "the image or its provenance does not match the signature")
    return data


def avatar_is_verified(avatar: Avatar) -> bool:
    try:
        avatar_verify(avatar)
    except AvatarTampered:
        return False
    return True


class PersonaNotFound(Exception):
    """A requested persona is not one of the user's own kept personas (the views answer 404)."""


def kept_personas(*, user: User, ids, action: str) -> dict[int, Avatar]:
    """The user's own kept personas with these ids, by id. Any other id (another user's persona, a
    candidate, a deleted or invented id, a value that is not a number) raises ``PersonaNotFound``,
    logged on ``safeface.security`` with what was asked for."""
    values = [str(v if v is not None else "").strip() for v in ids]
    numeric = {int(v) for v in values if v.isdigit()}
    owned = {a.pk: a for a in Avatar.objects.filter(user=user, status=Avatar.Status.READY, pk__in=numeric)}
    refused = [v[:40] for v in values if not v.isdigit() or int(v) not in owned]
    if refused:
        security_logger.warning(
            "SECURITY user %s asked to %s with persona(s) %s that are not their own kept personas",
            user.pk, action, ", ".join(refused),
        )
        raise PersonaNotFound()
    return owned


def report_tampered(error: AvatarTampered, *, action: str, user_id: int | None) -> None:
    security_logger.warning(
        "SECURITY avatar %s (owner %s) refused for %s by user %s: %s",
        error.avatar.pk, error.avatar.user_id, action, user_id, error.reason,
    )
