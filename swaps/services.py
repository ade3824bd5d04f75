"""Swap actions: accept an upload, start a swap, delete them; and the picker's identity ranking.

The rule lives here first: a swap's sources are looked up among the requesting user's own kept
personas by id, and anything else (another user's avatar, a candidate, a deleted or invented id)
raises ``PersonaNotFound``, which the views turn into a 404. Nothing is queued and no quota is
used. The worker checks again (``swaps.processing.verified_persona``).
"""
from __future__ import annotations

import uuid
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.template.defaultfilters import filesizeformat

from accounts import quotas
from accounts.models import UsageCounter, User
from avatars.models import Avatar
from avatars.services import PersonaNotFound, kept_personas
from safeface.files import display_name, upload_local_path
from safeface.jobs import job_cancel, job_submit
from swaps.models import SwapAssignment, SwapJob, Upload, swap_delete_with_files, upload_delete_with_files


# A persona closer than this to the face it replaces protects poorly: the picker warns.
RESEMBLES = 0.65
VIDEO_CONTAINERS = {"mp4": "mp4", "mov": "mov", "matroska": "webm", "gif": "gif"}
ACCEPTED = "a JPEG, PNG, WebP or HEIC photo, or an MP4, MOV, WebM or GIF video"


class UploadRejected(Exception):
    """The file cannot be used; ``message`` says why, for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class SwapRefused(UploadRejected):
    """The swap cannot start as asked; ``message`` says why."""


# --- uploads ----------------------------------------------------------------------------------
def inspect_upload(*, user: User, path: Path, size: int) -> dict:
    """Decodes enough of the file to know what it is and checks the plan's limits.

    Returns the Upload fields; raises ``UploadRejected`` / ``quotas.LimitReached``."""
    from engine import errors
    from engine.media import load_image, probe_video
    from engine.media.image import header_size, sniff_image_format

    if size <= 0:
        raise UploadRejected("This file is empty. Choose a photo or a video.")
    if size > settings.MAX_UPLOAD_BYTES:
        raise UploadRejected(
            f"This file is {filesizeformat(size)}; the largest file accepted is "
            f"{filesizeformat(settings.MAX_UPLOAD_BYTES)}."
        )
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    image_format = sniff_image_format(head)
    try:
        if image_format and image_format != "gif":  # an (animated) GIF is handled as a video
            # The plan's resolution limit from the header first: no decoding of what is refused.
            declared = header_size(head, image_format)
            if declared is not None:
                quotas.check_media_limits(user=user, width=declared[0], height=declared[1])
            image = load_image(path, max_pixels=settings.MAX_IMAGE_PIXELS)
            quotas.check_media_limits(user=user, width=image.width, height=image.height)
            return {"kind": "image", "format": image.format, "width": image.width, "height": image.height}
        info = probe_video(path)
    except errors.MediaTooLarge as exc:
        raise UploadRejected(f"{exc}.".replace("..", ".")) from exc
    except errors.CorruptMedia as exc:
        raise UploadRejected(f"{exc}. Export it again and re-upload it.".replace("..", ".")) from exc
    except errors.UnsupportedMedia as exc:
        detail = str(exc).rstrip(".")
        if "no video track" in detail:  # e.g. an audio file: the engine says so precisely
            raise UploadRejected(f"{detail}. Upload {ACCEPTED}.") from exc
        raise UploadRejected(f"SafeFace cannot read this file. Upload {ACCEPTED}.") from exc
    container = VIDEO_CONTAINERS.get(info.container)
    if container is None:
        raise UploadRejected(f"This is a {info.container} video; SafeFace accepts {ACCEPTED}.")
    if info.duration <= 0 or info.frame_count < 1:
        raise UploadRejected("This video has no frames to process.")
    quotas.check_media_limits(user=user, width=info.width, height=info.height, duration_seconds=info.duration)
    return {
        "kind": "video", "format": container, "width": info.width, "height": info.height,
        "duration": float(info.duration), "fps": float(info.fps), "frame_count": int(info.frame_count),
        "has_audio": bool(info.has_audio),
    }


def upload_create(*, user: User, file: UploadedFile, submission: uuid.UUID | None = None) -> Upload:
    """Validates the file by decoding it, reserves its size from the monthly upload volume and
    queues its check. A second submission of the same form returns the first upload."""
    if submission is not None:
        existing = Upload.objects.filter(user=user, submission=submission).first()
        if existing is not None:
            return existing
    size = int(file.size or 0)
    with upload_local_path(file) as path:
        fields = inspect_upload(user=user, path=path, size=size)
    upload = Upload(user=user, original_name=display_name(file.name), size_bytes=size, submission=submission, **fields)
    file.seek(0)
    upload.file.save("original", file, save=False)
    try:
        job_submit(upload, quota_metric=UsageCounter.Metric.UPLOAD_BYTES, quota_amount=size)
    except IntegrityError:
        upload.file.storage.delete(upload.file.name)
        existing = Upload.objects.filter(user=user, submission=submission).first()
        if existing is None:
            raise
        return existing
    except BaseException:
        upload.file.storage.delete(upload.file.name)
        raise
    return upload


def upload_delete(*, upload: Upload) -> None:
    """Deletes an upload with every swap made from it; running work is stopped first."""
    for job in [upload, *upload.swaps.all()]:
        if job.is_active:
            job_cancel(job)
    with transaction.atomic():
        upload_delete_with_files(upload)


# --- the picker -------------------------------------------------------------------------------
def persona_distances(upload: Upload, avatars: list[Avatar]) -> dict[int, dict[int, float]]:
    """Identity distance of every face of the upload to every persona: {face key: {avatar pk: d}}."""
    faces = list(upload.faces.all())
    if not faces or not avatars:
        return {face.key: {} for face in faces}
    face_matrix = np.stack([f.embedding_array for f in faces]).astype(np.float64)
    avatar_matrix = np.stack([a.embedding_array for a in avatars]).astype(np.float64)
    distances = np.linalg.norm(face_matrix[:, None, :] - avatar_matrix[None, :, :], axis=2)
    return {
        face.key: {avatar.pk: float(distances[i, j]) for j, avatar in enumerate(avatars)}
        for i, face in enumerate(faces)
    }


def best_persona(distances: Mapping[int, float]) -> int | None:
    """The persona that protects best: the farthest identity (the lowest id on a tie)."""
    if not distances:
        return None
    return max(distances, key=lambda pk: (distances[pk], -pk))


# --- swaps ------------------------------------------------------------------------------------
def swap_start(
    *,
    user: User,
    upload: Upload,
    assignments: Mapping[int, int],
    others: str = SwapJob.Others.KEEP,
    audio: str = SwapJob.Audio.KEEP,
    quality: str = SwapJob.Quality.STANDARD,
    voice: int | None = None,
    submission: uuid.UUID | None = None,
) -> SwapJob:
    """Queues a swap of ``assignments`` ({face key: avatar id}) on ``upload``. With ``audio``
    "mask", the sound is masked with the voice of ``voice`` (an avatar id among the assigned
    personas; by default the persona of the first face assigned).

    Raises ``PersonaNotFound`` when an id is not one of the user's kept personas (logged as a
    security event), ``SwapRefused`` for a request that cannot run, and
    ``quotas.LimitReached`` when the plan says no. Nothing is queued in any of these cases."""
    if submission is not None:
        existing = SwapJob.objects.filter(user=user, submission=submission).first()
        if existing is not None:
            return existing
    if upload.user_id != user.pk:
        raise PersonaNotFound()  # views load uploads through the owner check; never reached from them
    chosen = {int(key): int(pk) for key, pk in assignments.items() if pk}
    masking = audio == SwapJob.Audio.MASK
    wanted = set(chosen.values()) | ({int(voice)} if masking and voice else set())
    owned = kept_personas(user=user, ids=sorted(wanted), action=f"swap upload {upload.pk}")
    if not upload.is_ready:
        raise SwapRefused("This upload is not ready for a swap (still being checked, refused, or deleted).")
    if not chosen:
        raise SwapRefused("Choose a persona for at least one face.")
    keys = set(upload.faces.values_list("key", flat=True))
    if set(chosen) - keys:
        raise SwapRefused("One of the chosen faces is not part of this upload. Reload the page and choose again.")
    voice_avatar = None
    if masking:
        if not (upload.is_video and upload.has_audio):
            raise SwapRefused("Only the sound of a video can be masked, and this upload has none.")
        voice_pk = int(voice) if voice else chosen[min(chosen)]
        if voice_pk not in chosen.values():
            raise SwapRefused("The voice must be that of one of the personas you chose for a face.")
        voice_avatar = owned[voice_pk]
    distances = persona_distances(upload, [owned[pk] for pk in set(chosen.values())])
    job = SwapJob(
        user=user, upload=upload, others=others, audio=audio, quality=quality, voice_avatar=voice_avatar,
        submission=submission,
    )
    try:
        with transaction.atomic():
            job_submit(job, quota_metric=UsageCounter.Metric.SWAPS, quota_amount=1)
            SwapAssignment.objects.bulk_create([
                SwapAssignment(
                    job=job, face_key=key, avatar=owned[pk], avatar_name=owned[pk].name,
                    distance=distances.get(key, {}).get(pk),
                )
                for key, pk in sorted(chosen.items())
            ])
    except IntegrityError:
        existing = SwapJob.objects.filter(user=user, submission=submission).first()
        if submission is None or existing is None:
            raise
        return existing
    return job


def swap_delete(*, job: SwapJob) -> None:
    """Deletes a swap and its result; the upload goes too when no other swap uses it."""
    if job.is_active:
        job_cancel(job)
    with transaction.atomic():
        upload = job.upload
        swap_delete_with_files(job)
        if not upload.swaps.exists():
            upload_delete_with_files(upload)
