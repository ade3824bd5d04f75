"""Personas: faces of nobody, generated to the attributes a user asked for.

A ``GenerationJob`` (gpu cluster) asks the engine for four candidates that stay a margin away
from every other avatar on the platform, stores each as a signed, watermarked PNG in the
owner's private storage and saves it as an ``Avatar`` with status CANDIDATE. The user keeps one
(it becomes READY and joins the library); the other candidates are deleted.

Provenance: every avatar stores its generator, model hash, seed, requested attributes and
identity embedding, and an HMAC (keyed by the server secret) over the image bytes and those
fields. Whatever uses an avatar calls ``avatars.services.avatar_verify`` first, which refuses a
file that changed on disk.
"""
from __future__ import annotations

import functools
import hashlib
import logging
import os
import uuid

import numpy as np
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.base import ContentFile
from django.db import models, transaction

from safeface.jobs import Job, JobCancelled, JobError, Progress
from safeface.private_media import user_prefix
from safeface.values import EMBEDDING_DIM, embedding_from_bytes, embedding_to_bytes, jsonable

logger = logging.getLogger(__name__)

THUMBNAIL_SIDE = 384
CANDIDATE_COUNT = 4


def _image_path(instance: Avatar, filename: str) -> str:
    return f"{user_prefix(instance.user_id)}avatars/{uuid.uuid4().hex}.png"


def _thumbnail_path(instance: Avatar, filename: str) -> str:
    return f"{user_prefix(instance.user_id)}avatars/thumbs/{uuid.uuid4().hex}.png"


def provenance_keys() -> list[bytes]:
    """HMAC keys for avatar provenance, derived from the server secret: the current one first,
    then one per ``SECRET_KEY_FALLBACKS`` entry so rotating the secret keeps old avatars valid."""
    secrets = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    return [hashlib.sha256(b"safeface-avatar-provenance:" + s.encode()).digest() for s in secrets]


@functools.cache
def c2pa_signer():
    """The C2PA signer named by SAFEFACE_C2PA_CERT / SAFEFACE_C2PA_KEY, or None (read once;
    ``AvatarsConfig.ready`` calls it so a bad value stops start-up)."""
    from engine.media.provenance import c2pa_config_from_env

    try:
        return c2pa_config_from_env(os.environ)
    except ValueError as error:
        raise ImproperlyConfigured(str(error)) from error


class GenerationJob(Job):
    """Makes candidate personas for a set of requested attributes (one quota unit)."""

    CLUSTER = "gpu"
    KIND_NAME = "persona generation"

    attributes = models.JSONField(default=dict, blank=True, help_text="Requested attributes; absent means any.")
    seed = models.PositiveBigIntegerField(help_text="Base seed handed to the generator.")
    submission = models.UUIDField(
        null=True, blank=True, editable=False,
        help_text="Token of the form that created the job, so a double click creates it once.",
    )

    class Meta(Job.Meta):
        constraints = [
            models.UniqueConstraint(fields=["user", "submission"], name="one_generation_per_submission"),
        ]

    def __str__(self) -> str:
        return f"persona generation #{self.pk}"

    def attribute_request(self):
        from engine.generate.attributes import AttributeRequest

        return AttributeRequest.from_dict(self.attributes)

    @property
    def kept(self) -> Avatar | None:
        return self.avatars.filter(status=Avatar.Status.READY).first()

    def candidates(self) -> models.QuerySet[Avatar]:
        return self.avatars.filter(status=Avatar.Status.CANDIDATE).order_by("rank", "pk")

    def delete_outputs(self) -> None:
        """A run that failed, was cancelled or lost its claim, and a finished job past the
        owner's retention period, leave no unpicked candidates (a kept persona stays)."""
        super().delete_outputs()
        for avatar in Avatar.objects.filter(generation_job=self, status=Avatar.Status.CANDIDATE):
            avatar.delete_with_files()

    def run(self, progress: Progress) -> None:
        from engine import errors
        from engine.generate.pipeline import GenerationOptions, generate_avatars

        # A run after a crash starts clean: candidates of the earlier attempt go.
        self.delete_outputs()
        request = self.attribute_request()
        progress(2, "Preparing", force=True)
        avoid = Avatar.embeddings_matrix(Avatar.objects.exclude(generation_job=self))

        def engine_progress(percent: float, stage: str) -> None:
            # The engine reports 0-100 of its own work; the last 10% are for storing the files.
            progress(2 + 0.88 * min(100.0, max(0.0, percent)), stage)

        try:
            candidates = generate_avatars(
                request,
                seed=self.seed,
                options=GenerationOptions(count=CANDIDATE_COUNT, backend=settings.AVATAR_GENERATOR),
                avoid=avoid,
                progress=engine_progress,
            )
        except errors.Cancelled as exc:
            raise JobCancelled() from exc
        except errors.EngineError as exc:
            # Not the user's fault: valid attributes that the generator could not satisfy,
            # or a model that is missing on the worker.
            logger.warning("generation job %s: %s: %s", self.pk, type(exc).__name__, exc)
            raise JobError(str(exc), refund=True) from exc
        if not candidates:
            raise JobError("No acceptable face could be generated for these attributes. Try again or relax them.", refund=True)
        progress(92, "Saving the candidates", force=True)
        self._store(candidates)

    def _store(self, candidates) -> None:
        """Encodes, signs and writes every candidate first, then saves the rows in one short
        transaction (SQLite holds its write lock for the whole of it)."""
        from django.core.files.storage import default_storage

        from engine.media.provenance import encode_avatar_image, sign

        key = provenance_keys()[0]
        c2pa = c2pa_signer()
        avatars: list[Avatar] = []
        try:
            for rank, candidate in enumerate(candidates):
                avatar = Avatar(
                    user_id=self.user_id,
                    generation_job=self,
                    status=Avatar.Status.CANDIDATE,
                    rank=rank,
                    generator=candidate.generator,
                    model_hash=candidate.model_hash,
                    seed=candidate.seed,
                    attributes=self.attributes,
                    measured=jsonable(candidate.measured),
                    matched={k: bool(v) for k, v in candidate.matched.items()},
                    checks=jsonable(candidate.checks),
                    embedding=embedding_to_bytes(candidate.embedding),
                )
                png = encode_avatar_image(candidate.image, generator=candidate.generator, seed=candidate.seed, c2pa=c2pa)
                thumb = encode_avatar_image(
                    _thumbnail(candidate.image), generator=candidate.generator, seed=candidate.seed, c2pa=c2pa
                )
                avatar.signature = sign(key, png, avatar.provenance_fields())
                avatars.append(avatar)
                avatar.image.save("avatar.png", ContentFile(png), save=False)
                avatar.thumbnail.save("thumb.png", ContentFile(thumb), save=False)
                avatar.full_clean()
            with transaction.atomic():
                # Still ours? (Cancelled, the owner deleted, or the sweeper gave the job away.)
                if not type(self).objects.filter(
                    pk=self.pk, status="running", worker=self.worker, cancel_requested=False
                ).exists():
                    raise JobCancelled()
                Avatar.objects.bulk_create(avatars)
        except BaseException:
            for avatar in avatars:
                for file in (avatar.image, avatar.thumbnail):
                    if file:
                        default_storage.delete(file.name)
            raise


class Avatar(models.Model):
    class Status(models.TextChoices):
        CANDIDATE = "candidate", "Candidate"
        READY = "ready", "In the library"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="avatars")
    generation_job = models.ForeignKey(
        GenerationJob, null=True, blank=True, on_delete=models.SET_NULL, related_name="avatars"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.CANDIDATE)
    name = models.CharField(max_length=80, blank=True)
    favourite = models.BooleanField(default=False)
    rank = models.PositiveSmallIntegerField(default=0, help_text="Order among the job's candidates.")
    image = models.FileField(upload_to=_image_path, max_length=255)
    thumbnail = models.FileField(upload_to=_thumbnail_path, max_length=255, blank=True)
    # Provenance (signed)
    generator = models.CharField(max_length=120)
    model_hash = models.CharField(max_length=128)
    seed = models.BigIntegerField()
    attributes = models.JSONField(default=dict, blank=True, help_text="Requested attributes.")
    embedding = models.BinaryField(help_text="128 float32 values (little-endian): the dlib identity descriptor.")
    signature = models.CharField(max_length=256)
    # What the engine measured on the face (not signed: descriptive only)
    measured = models.JSONField(default=dict, blank=True)
    matched = models.JSONField(default=dict, blank=True)
    checks = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    kept_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-favourite", "-kept_at", "-pk"]
        indexes = [models.Index(fields=["user", "status", "-favourite"], name="avatars_user_status")]
        constraints = [
            models.UniqueConstraint(
                fields=["generation_job"],
                condition=models.Q(status="ready"),
                name="one_persona_per_generation",
            ),
        ]

    def __str__(self) -> str:
        return self.name or f"candidate #{self.pk}"

    @property
    def is_ready(self) -> bool:
        return self.status == self.Status.READY

    @property
    def embedding_array(self) -> np.ndarray:
        return embedding_from_bytes(self.embedding)

    @staticmethod
    def embeddings_matrix(queryset: models.QuerySet[Avatar]) -> np.ndarray | None:
        """(n, 128) float32 identity embeddings of ``queryset``; None when it is empty."""
        rows = [bytes(b) for b in queryset.values_list("embedding", flat=True)]
        rows = [b for b in rows if len(b) == EMBEDDING_DIM * 4]
        if not rows:
            return None
        return np.frombuffer(b"".join(rows), dtype="<f4").reshape(len(rows), EMBEDDING_DIM).astype(np.float32)

    def provenance_fields(self) -> dict:
        """The fields the signature covers, besides the image bytes."""
        return {
            "generator": self.generator,
            "model_hash": self.model_hash,
            "seed": int(self.seed),
            "attributes": {k: v for k, v in sorted((self.attributes or {}).items()) if v},
            "embedding_sha256": hashlib.sha256(bytes(self.embedding)).hexdigest(),
        }

    def requested(self) -> list[tuple[str, str, str, bool | None]]:
        """(attribute, requested label, measured label, matched) for the requested attributes."""
        from engine.generate.attributes import CHOICES, LABELS

        rows = []
        for name, value in (self.attributes or {}).items():
            if not value or name not in CHOICES:
                continue
            measured = self.measured.get(name)
            rows.append((
                LABELS[name],
                CHOICES[name].get(value, value),
                CHOICES[name].get(measured, measured or "not measured"),
                self.matched.get(name),
            ))
        return rows

    def described(self) -> list[tuple[str, str]]:
        """(attribute, measured label) for every attribute the engine measured."""
        from engine.generate.attributes import ATTRIBUTE_NAMES, CHOICES, LABELS

        return [
            (LABELS[name], CHOICES[name].get(self.measured[name], str(self.measured[name])))
            for name in ATTRIBUTE_NAMES
            if self.measured.get(name) is not None
        ]

    def delete_with_files(self) -> None:
        """Deletes the row, then its files once the deletion is committed (with those of its
        voice: the previews and any clip waiting for one)."""
        from voice.models import PersonaVoice

        files = [(f.storage, f.name) for f in (self.image, self.thumbnail) if f]
        for voice in PersonaVoice.objects.filter(avatar=self):
            files += voice.file_names()
        self.delete()
        transaction.on_commit(lambda: [storage.delete(name) for storage, name in files])


def _thumbnail(rgb: np.ndarray) -> np.ndarray:
    from PIL import Image

    image = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB")
    return np.asarray(image.resize((THUMBNAIL_SIDE, THUMBNAIL_SIDE), Image.Resampling.LANCZOS))

