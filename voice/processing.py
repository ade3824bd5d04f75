"""What the gpu workers do for voice: make a persona's preview, mask a recording, and mask the
sound track of a swapped video.

The engine gets paths and a ``VoiceProfile``; every message a user can see is written here.
"""
from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable
from pathlib import Path

from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from safeface.files import stored_local_path
from safeface.jobs import JobCancelled, JobError, Progress, job_still_claimed
from voice.models import MaskJob, PersonaVoice, PreviewJob

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("safeface.security")

# Speaker similarity (cosine of speaker embeddings, 0..1) of the masked voice to the original:
# recordings of one speaker usually measure SAME_SPEAKER or more.
SAME_SPEAKER = 0.85
LIKENESS = 0.75
# A file may decode a little longer than its header says (VBR MP3 without a length header);
# more than this over the length metered at submission stops the job.
LENGTH_SLACK = 1.1
LENGTH_SLACK_SECONDS = 5.0


# --- engine entry points (one place to find them; the tests replace these) ---------------------
def sample_path() -> Path:
    """The sample sentence previews are made from (fetched with the models)."""
    from engine.voice.sample import sample_speech_path

    return Path(sample_speech_path())


def voice_similarity(original: Path, masked: Path) -> float:
    from engine.voice.embed import voice_similarity as measure

    return float(measure(original, masked))


def _similarity_or_none(original: Path, masked: Path, what: str) -> float | None:
    """The speaker check is a measurement, not a step the result depends on: when it cannot be
    made (its model is missing, the speech is too short) the job still succeeds without it."""
    try:
        return round(voice_similarity(original, masked), 4)
    except Exception as exc:  # noqa: BLE001 - any failure of the check leaves the number out
        logger.warning("%s: the speaker check failed: %s: %s", what, type(exc).__name__, exc)
        return None


def voice_check_of(original: Path, masked: Path, what: str) -> dict:
    """The report entry of the speaker check: ``{"voice_similarity": float or None}``."""
    return {"voice_similarity": _similarity_or_none(original, masked, what)}


def _stage(progress: Progress, start: float, span: float, stage: str | None = None) -> Callable[[float, str], None]:
    """The engine's 0-100 progress mapped onto ``start``..``start + span`` of the job's."""

    def report(percent: float, engine_stage: str) -> None:
        progress(start + span * min(100.0, max(0.0, percent)) / 100.0, stage or engine_stage)

    return report


def _profile(settings_dict: dict):
    from engine.voice import VoiceProfile

    try:
        return VoiceProfile.from_dict(settings_dict)
    except ValueError as exc:
        raise JobError(f"The voice settings of this job are not valid ({exc}). Save the persona's voice again.", refund=True) from exc


# --- previews ---------------------------------------------------------------------------------
def run_preview(job: PreviewJob, progress: Progress) -> None:
    from engine import errors
    from engine.voice import mask_file

    from voice.services import PREVIEW_SECONDS

    profile = _profile(job.settings)
    progress(2, "Preparing the preview", force=True)
    try:
        with tempfile.TemporaryDirectory(dir=settings.JOB_TEMP_DIR) as folder:
            out = Path(folder) / "preview.mp3"
            try:
                if job.source == PersonaVoice.Source.UPLOAD:
                    if not job.clip or not job.clip.storage.exists(job.clip.name):
                        raise JobError("The clip for this preview is no longer stored. Choose it again.")
                    with stored_local_path(job.clip) as src:
                        mask_file(src, out, profile, fmt="mp3", progress=_stage(progress, 5, 85), max_seconds=PREVIEW_SECONDS + 1)
                else:
                    try:
                        src = sample_path()
                    except (ImportError, errors.EngineError) as exc:
                        logger.error("voice preview %s: no sample sentence: %s", job.pk, exc)
                        raise JobError(
                            "The sample sentence is not available on this server right now. Preview with a clip of your own."
                        ) from exc
                    mask_file(src, out, profile, fmt="mp3", progress=_stage(progress, 5, 85), max_seconds=120)
            except errors.Cancelled as exc:
                raise JobCancelled() from exc
            except errors.AudioError as exc:
                raise JobError(f"{exc} No preview was made.") from exc
            except FileNotFoundError as exc:
                raise JobError("The clip for this preview is no longer stored. Choose it again.") from exc
            progress(95, "Saving the preview", force=True)
            _store_preview(job, out)
    except (JobError, JobCancelled):
        _forget_clip(job)  # the owner chooses it again; a crash keeps it for the retry
        raise


def _forget_clip(job: PreviewJob) -> None:
    if job.clip:
        name = job.clip.name
        PreviewJob.objects.filter(pk=job.pk).update(clip="")
        default_storage.delete(name)
        job.clip = None


def _store_preview(job: PreviewJob, out: Path) -> None:
    """The preview becomes the voice's (the one it replaces is deleted once that is committed);
    the owner's clip is deleted."""
    voice = PersonaVoice.objects.filter(pk=job.voice_id).first()
    if voice is None:  # the persona was deleted meanwhile
        raise JobCancelled()
    with open(out, "rb") as handle:
        voice.preview.save("preview.mp3", File(handle), save=False)
    written = voice.preview.name
    try:
        with transaction.atomic():
            if not job_still_claimed(job):
                raise JobCancelled()
            old = PersonaVoice.objects.filter(pk=job.voice_id).values_list("preview", flat=True).first()
            PersonaVoice.objects.filter(pk=job.voice_id).update(
                preview=written, preview_source=job.source, preview_settings=job.settings,
                preview_made_at=timezone.now(),
            )
            clip = job.clip.name if job.clip else ""
            PreviewJob.objects.filter(pk=job.pk).update(clip="")
            transaction.on_commit(lambda: [default_storage.delete(n) for n in (old, clip) if n])
    except BaseException:
        default_storage.delete(written)
        raise


# --- masking a recording ----------------------------------------------------------------------
def run_mask(job: MaskJob, progress: Progress) -> None:
    from avatars.models import Avatar
    from engine import errors
    from engine.voice import OUTPUT_FORMATS, mask_file

    if not job.source:
        raise JobError(
            "The recording of this job is no longer stored (it was deleted or passed its retention period). "
            "Upload it again.", refund=True,
        )
    if not job.source.storage.exists(job.source.name):
        raise JobError("The uploaded recording is no longer stored. Upload it again.", refund=True)
    avatar = job.avatar
    if avatar is None or avatar.user_id != job.user_id or avatar.status != Avatar.Status.READY:
        if avatar is not None:
            security_logger.warning(
                "SECURITY voice mask job %s (user %s): persona %s is not the owner's kept persona",
                job.pk, job.user_id, avatar.pk,
            )
        raise JobError(
            f"The persona “{job.avatar_name or 'chosen'}” is no longer in your library, so its voice was not used "
            "and nothing was masked. The minutes were refunded. Choose another persona and start again.",
            refund=True,
        )
    profile = _profile(job.settings)
    limit = min(float(settings.VOICE_MAX_SECONDS), job.duration * LENGTH_SLACK + LENGTH_SLACK_SECONDS)
    suffix = OUTPUT_FORMATS[job.output_format][2]
    progress(1, "Opening the recording", force=True)
    try:
        with tempfile.TemporaryDirectory(dir=settings.JOB_TEMP_DIR) as folder, stored_local_path(job.source) as src:
            out = Path(folder) / f"masked.{suffix}"
            result = mask_file(
                src, out, profile, fmt=job.output_format, progress=_stage(progress, 2, 83), max_seconds=limit
            )
            copy = None
            if not job.source_playable:
                progress(86, "Preparing the original for the player", force=True)
                copy = _playable_copy(src, Path(folder) / "original.mp3", limit)
            progress(90, "Checking the masked voice", force=True)
            report = {
                "duration": round(result.duration, 3), "sample_rate": result.sample_rate,
                "channels": result.channels, "format": result.format, "method": profile.method,
                "voice": profile.describe(), "seconds_taken": round(result.seconds_taken, 2),
                "rtf": round(result.rtf, 4),
                **voice_check_of(src, out, f"voice mask job {job.pk}"),
            }
            progress(97, "Saving the result", force=True)
            _store_result(job, out, copy, report)
    except FileNotFoundError as exc:
        raise JobError("The uploaded recording is no longer stored. Upload it again.", refund=True) from exc
    except errors.Cancelled as exc:
        raise JobCancelled() from exc
    except errors.AudioTooLong as exc:
        raise JobError(
            "This recording is longer than its file says, so it was not masked and the minutes were refunded. "
            "Export it again (for example as WAV or MP3) and upload the new file.", refund=True,
        ) from exc
    except errors.AudioError as exc:
        raise JobError(f"{exc} Nothing was masked; the minutes were refunded.", refund=True) from exc


def _playable_copy(src: Path, dst: Path, limit: float) -> Path:
    """An MP3 of the original for the page's player (the upload's own format is not one every
    browser plays)."""
    from engine.voice import probe_audio
    from engine.voice.audio import AudioWriter, read_chunks

    info = probe_audio(src, max_seconds=limit)
    with AudioWriter(dst, "mp3", info.sample_rate, 1 if info.channels == 1 else 2) as writer:
        for chunk in read_chunks(src, chunk_seconds=10.0, max_seconds=limit):
            writer.write(chunk)
    return dst


def _store_result(job: MaskJob, out: Path, copy: Path | None, report: dict) -> None:
    written = []
    try:
        with open(out, "rb") as handle:
            job.result.save(f"masked.{out.suffix.lstrip('.')}", File(handle), save=False)
        written.append(job.result.name)
        if copy is not None:
            with open(copy, "rb") as handle:
                job.original_preview.save("original.mp3", File(handle), save=False)
            written.append(job.original_preview.name)
        job.report = report
        with transaction.atomic():
            if not job_still_claimed(job):
                raise JobCancelled()
            job.save(update_fields=["result", "original_preview", "report"])
    except BaseException:
        for name in written:
            default_storage.delete(name)
        raise


# --- a swapped video's sound track ------------------------------------------------------------
def mask_sound_track(src: Path, avatar, folder: Path, progress: Callable[[float, str], None], *, max_seconds: float) -> Path:
    """``src``'s sound track in ``avatar``'s voice, as an AAC file in ``folder`` for the video
    encoder. ``progress(percent, stage)`` gets 0-100."""
    from engine.voice import mask_file

    from voice.services import voice_for

    profile = voice_for(avatar).profile()
    out = folder / "voice.m4a"
    mask_file(src, out, profile, fmt="aac", progress=lambda p, s: progress(p, "Masking the voice"), max_seconds=max_seconds)
    return out


# --- the speaker check, in words --------------------------------------------------------------
def describe_voice_check(report: dict) -> dict:
    """``level``: protected | partial | exposed | unchecked; a ``headline`` and ``lines``."""
    value = (report or {}).get("voice_similarity")
    if value is None:
        return {
            "level": "unchecked",
            "headline": "Voice masked; the speaker check could not measure it.",
            "lines": ["The speaker-recognition check needs a few seconds of clear speech in both recordings."],
        }
    measured = f"speaker similarity {value:.2f}; recordings of the same speaker usually measure {SAME_SPEAKER:.2f} or more"
    if value >= SAME_SPEAKER:
        return {
            "level": "exposed",
            "headline": "The masked voice may still be recognisable as yours.",
            "lines": [
                f"A speaker-recognition model still matches it to the original ({measured}).",
                "Try the persona voice method, or move the pitch and vocal tract further from your own voice.",
            ],
        }
    if value >= LIKENESS:
        return {
            "level": "partial",
            "headline": "Voice masked, with some likeness left.",
            "lines": [f"A speaker-recognition model finds some resemblance to the original ({measured})."],
        }
    return {
        "level": "protected",
        "headline": "Original voice no longer recognisable.",
        "lines": [f"A speaker-recognition model does not match the masked voice to the original ({measured})."],
    }
