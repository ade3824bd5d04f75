"""Voice actions: a persona's voice (made on first use, tuned, randomised, previewed) and masking a
recording with it.

The rule of swaps holds here too: a mask's voice is looked up among the requesting user's own
kept personas by id, and anything else (another user's persona, a candidate, a deleted or
invented id) raises ``PersonaNotFound``, which the views turn into a 404. It is logged on
``safeface.security`` and nothing is stored, queued or metered.

Recordings are checked in the web process, by decoding, before anything is stored: size, that
there is a sound track with samples in it, and its length (``VOICE_MAX_SECONDS``, then the
plan's monthly minutes when the job is submitted).
"""
from __future__ import annotations

import math
import secrets
import tempfile
import uuid
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.uploadedfile import UploadedFile
from django.db import IntegrityError, transaction
from django.template.defaultfilters import filesizeformat

from accounts.models import UsageCounter, User
from accounts.quotas import LimitReached, format_seconds
from avatars.models import Avatar
from avatars.services import PersonaNotFound, kept_personas
from safeface.files import display_name, upload_local_path
from safeface.jobs import ACTIVE_STATUSES, job_cancel, job_submit
from voice.models import MaskJob, PersonaVoice, PreviewJob, mask_delete_with_files


PREVIEW_SECONDS = 15.0  # the longest part of the owner's own clip a preview uses
MAX_ACTIVE_PREVIEWS = 3  # previews queued or running per user (they are free)
ACCEPTED = "an audio recording (WAV, FLAC, MP3, AAC/M4A, OGG, Opus, WebM) or a video with sound"


class AudioRejected(Exception):
    """The recording cannot be used; ``message`` says why, for the user."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --- a persona's voice ------------------------------------------------------------------------
def _presentation(avatar: Avatar) -> tuple[str | None, str | None]:
    """The persona's gender presentation and age band: as requested, else as measured."""
    requested, measured = avatar.attributes or {}, avatar.measured or {}
    gender = requested.get("gender") or measured.get("gender")
    age_band = requested.get("age_band") or measured.get("age_band")
    return gender if isinstance(gender, str) else None, age_band if isinstance(age_band, str) else None


def _default_profile(avatar: Avatar):
    """The voice a persona starts with: drawn from its seed, typical of its presentation."""
    from engine.voice import VoiceProfile

    gender, age_band = _presentation(avatar)
    return VoiceProfile.from_seed(avatar.seed, gender=gender, age_band=age_band)


def voice_for(avatar: Avatar) -> PersonaVoice:
    """The persona's voice, made from its seed and presentation the first time it is asked for."""
    existing = PersonaVoice.objects.filter(avatar=avatar).first()
    if existing is not None:
        return existing
    profile = _default_profile(avatar)
    try:
        with transaction.atomic():
            return PersonaVoice.objects.create(avatar=avatar, user_id=avatar.user_id, settings=profile.to_dict())
    except IntegrityError:  # made by a concurrent request
        return PersonaVoice.objects.get(avatar=avatar)


def voice_description(avatar: Avatar) -> str:
    """The persona's voice in words, without making its row (for pages that only show it)."""
    existing = PersonaVoice.objects.filter(avatar=avatar).first()
    return (existing.profile() if existing is not None else _default_profile(avatar)).describe()


def voice_update(*, voice: PersonaVoice, values: dict) -> PersonaVoice:
    """Saves new settings (method and sliders); raises ``ValueError`` with a form-fit message."""
    from engine.voice import VoiceProfile

    profile = VoiceProfile.from_dict({**voice.settings, **values})
    voice.settings = profile.to_dict()
    voice.full_clean()
    voice.save(update_fields=["settings", "updated_at"])
    return voice


def voice_randomise(*, voice: PersonaVoice) -> PersonaVoice:
    """A new voice for the persona (same method), drawn from a fresh seed."""
    gender, age_band = _presentation(voice.avatar)
    profile = voice.profile().randomised(secrets.randbits(48), gender, age_band)
    voice.settings = profile.to_dict()
    voice.save(update_fields=["settings", "updated_at"])
    return voice


# --- checking a recording ---------------------------------------------------------------------
def _refusal(error) -> AudioRejected:
    from engine import errors

    if isinstance(error, errors.NoAudioStream):
        return AudioRejected(
            f"This file has no sound track, so there is no voice to mask. Upload {ACCEPTED}."
        )
    if isinstance(error, errors.EmptyAudio):
        return AudioRejected("This recording is empty: it holds no sound at all. Choose another file.")
    if isinstance(error, errors.AudioTooLong):
        return AudioRejected(
            f"This recording is longer than {format_seconds(settings.VOICE_MAX_SECONDS)}, the most SafeFace masks "
            "at once. Cut it into shorter parts and upload them one by one."
        )
    return AudioRejected(f"SafeFace cannot read this file as sound (it is damaged, or not a recording). Upload {ACCEPTED}.")


def _decoded_seconds(path: Path, limit: float, rate: int) -> float:
    """The length of the sound track found by decoding it (for files that do not state it)."""
    from engine.voice.audio import read_chunks

    samples = sum(len(chunk) for chunk in read_chunks(path, mono=True, chunk_seconds=60.0, max_seconds=limit))
    return samples / rate if rate else 0.0


def inspect_recording(*, path: Path, size: int, max_seconds: float | None = None) -> dict:
    """Decodes enough of the file to know its sound track. Returns the MaskJob fields; raises
    ``AudioRejected`` with the reason."""
    from engine import errors
    from engine.voice import probe_audio

    limit = float(max_seconds or settings.VOICE_MAX_SECONDS)
    if size <= 0:
        raise AudioRejected("This file is empty (0 bytes). Choose a recording or a video with sound.")
    if size > settings.MAX_UPLOAD_BYTES:
        raise AudioRejected(
            f"This file is {filesizeformat(size)}; the largest file accepted is {filesizeformat(settings.MAX_UPLOAD_BYTES)}."
        )
    try:
        info = probe_audio(path, max_seconds=limit)
        duration = info.duration if info.duration > 0 else _decoded_seconds(path, limit, info.sample_rate)
    except errors.AudioError as exc:
        raise _refusal(exc) from exc
    if duration <= 0:
        raise _refusal(errors.EmptyAudio("empty"))
    return {
        "container": info.container[:40], "codec": info.codec[:40], "has_video": info.has_video,
        "duration": round(float(duration), 3), "sample_rate": int(info.sample_rate), "channels": int(info.channels),
    }


def quota_seconds(duration: float) -> int:
    """What a recording costs from the monthly minutes: its length in whole seconds, rounded up."""
    return max(1, math.ceil(round(duration, 3)))


# --- masking a recording ----------------------------------------------------------------------
def mask_start(
    *,
    user: User,
    persona: int | str | None,
    file: UploadedFile,
    output_format: str = MaskJob.Format.MP3,
    submission: uuid.UUID | None = None,
) -> MaskJob:
    """Checks the recording and queues its masking with ``persona``'s voice.

    Raises ``PersonaNotFound`` (logged) for a persona that is not the user's, ``AudioRejected``
    for a file that cannot be used and ``LimitReached`` when the plan says no. Nothing is stored
    or queued in any of these cases. A second submission of the same form returns the first job."""
    if submission is not None:
        existing = MaskJob.objects.filter(user=user, submission=submission).first()
        if existing is not None:
            return existing
    (avatar,) = kept_personas(user=user, ids=[persona], action="mask a recording").values()
    if output_format not in MaskJob.Format.values:
        raise AudioRejected("Choose one of the offered output formats.")
    size = int(file.size or 0)
    with upload_local_path(file) as path:
        fields = inspect_recording(path=path, size=size)
    voice = voice_for(avatar)
    job = MaskJob(
        user=user, avatar=avatar, avatar_name=avatar.name, settings=voice.settings,
        original_name=display_name(file.name, "recording"), size_bytes=size, output_format=output_format,
        submission=submission, **fields,
    )
    file.seek(0)
    job.source.save("original", file, save=False)
    try:
        job_submit(job, quota_metric=UsageCounter.Metric.VOICE_SECONDS, quota_amount=quota_seconds(job.duration))
    except IntegrityError:
        job.source.storage.delete(job.source.name)
        existing = MaskJob.objects.filter(user=user, submission=submission).first()
        if submission is None or existing is None:
            raise
        return existing
    except BaseException:
        job.source.storage.delete(job.source.name)
        raise
    return job


def mask_delete(*, job: MaskJob) -> None:
    """Deletes a mask job with its upload and result; running work is stopped first."""
    if job.is_active:
        job_cancel(job)
    with transaction.atomic():
        mask_delete_with_files(job)


# --- previews ---------------------------------------------------------------------------------
def sample_available() -> bool:
    """Whether the sample sentence is on this server (fetched with the models)."""
    from voice.processing import sample_path

    try:
        sample_path()
    except Exception:  # not fetched (ModelMissing), or an engine without it
        return False
    return True


def _cut_clip(path: Path, folder: Path, rate: int) -> Path:
    """The first ``PREVIEW_SECONDS`` of the recording (at its own ``rate``) as a mono FLAC: all a
    preview needs. A long recording is not decoded to its end."""
    from engine.voice.audio import read_head, write_audio

    samples = read_head(path, PREVIEW_SECONDS, mono=True, max_seconds=settings.VOICE_MAX_SECONDS)
    out = folder / "clip.flac"
    write_audio(out, samples, rate, "flac")
    return out


def preview_start(*, user: User, voice: PersonaVoice, clip: UploadedFile | None = None) -> PreviewJob:
    """Queues a preview of the voice's current settings: the sample sentence, or the first
    ``PREVIEW_SECONDS`` of ``clip``. An earlier preview of the same voice still under way is
    cancelled (the latest settings win). Raises ``AudioRejected`` and ``LimitReached``."""
    from engine import errors

    if voice.user_id != user.pk:
        raise PersonaNotFound()  # views load voices through the owner check; never reached from them
    job = PreviewJob(user=user, voice=voice, settings=voice.settings)
    if clip is None:
        if not sample_available():
            raise AudioRejected("The sample sentence is not available on this server. Preview with a clip of your own.")
        job.source = PersonaVoice.Source.SAMPLE
    else:
        size = int(clip.size or 0)
        with upload_local_path(clip) as path:
            fields = inspect_recording(path=path, size=size)
            with tempfile.TemporaryDirectory(dir=settings.JOB_TEMP_DIR) as folder:
                try:
                    cut = _cut_clip(path, Path(folder), fields["sample_rate"])
                except errors.AudioError as exc:
                    raise _refusal(exc) from exc
                job.source = PersonaVoice.Source.UPLOAD
                job.clip_name = display_name(clip.name, "clip")
                with open(cut, "rb") as handle:
                    job.clip.save("clip.flac", File(handle), save=False)
    try:
        for earlier in PreviewJob.objects.filter(voice=voice, status__in=ACTIVE_STATUSES):
            job_cancel(earlier)
        waiting = PreviewJob.objects.filter(user=user, status__in=ACTIVE_STATUSES, cancel_requested=False).count()
        if waiting >= MAX_ACTIVE_PREVIEWS:
            raise LimitReached(
                f"You have {waiting} previews waiting for a worker. Wait for one of them to finish, then try again."
            )
        return job_submit(job)
    except BaseException:
        if job.clip:
            job.clip.storage.delete(job.clip.name)
        raise
