"""What the gpu workers do for swaps: check an upload, and run a swap.

Both call the engine with plain arrays and paths. Every message a user can see is written here;
security refusals are also logged on ``safeface.security``.
"""
from __future__ import annotations

import logging
import secrets
import tempfile
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.files.base import ContentFile
from django.db import transaction

from safeface.files import stored_local_path as local_path
from safeface.jobs import JobCancelled, JobError, Progress, job_still_claimed
from safeface.values import embedding_to_bytes, jsonable
from swaps.models import SwapJob, Upload, UploadFace

logger = logging.getLogger(__name__)
security_logger = logging.getLogger("safeface.security")

GENERATOR = "SafeFace face swap (classical mesh swap)"
THUMB_SIDE = 480
PREVIEW_SIDE = 1600
# A persona's file must still show the face whose identity was stored when it was generated
# (the same picture re-embedded measures ~0.02; different people measure 0.4 and more).
PERSONA_IDENTITY_TOLERANCE = 0.2
PLAYABLE_CODECS = {"h264", "vp8", "vp9", "av1"}
PLAYABLE_CONTAINERS = {"mp4", "mov", "webm"}


# --- helpers ----------------------------------------------------------------------------------
def _analyzer():
    from engine.faces import FaceAnalyzer

    return FaceAnalyzer.default()


def _jpeg(rgb: np.ndarray, side: int, quality: int = 85) -> bytes:
    """A downscaled JPEG (no metadata) whose longest side is at most ``side``."""
    import cv2

    from engine.media import save_image

    h, w = rgb.shape[:2]
    scale = min(1.0, side / max(h, w))
    if scale < 1.0:
        rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    return save_image(np.ascontiguousarray(rgb), "jpeg", quality=quality)


def _refuse_upload(upload: Upload, message: str, *, refund: bool) -> JobError:
    """The original of a refused upload is not kept."""
    upload.delete_files()
    Upload.objects.filter(pk=upload.pk).update(file="")  # an empty FileField (the column is NOT NULL)
    return JobError(message, refund=refund)


# --- checking an upload -----------------------------------------------------------------------
def check_upload(upload: Upload, progress: Progress) -> None:
    from engine import errors
    from engine.safety.content import flagged_share

    progress(2, "Opening the file", force=True)
    try:
        with local_path(upload.file) as path:
            if upload.is_video:
                survey, verdicts, poster, playable = _check_video(upload, path, progress)
            else:
                survey, verdicts, poster, playable = _check_image(path, progress)
            flagged = sum(v.flagged for v in verdicts)
            upload.samples = len(verdicts)
            upload.content_flagged = flagged
            upload.content_score = max((v.score for v in verdicts), default=0.0)
            Upload.objects.filter(pk=upload.pk).update(
                samples=upload.samples, content_flagged=flagged, content_score=upload.content_score
            )
            if flagged_share(verdicts) > settings.CONTENT_MAX_SHARE:
                logger.info("upload %s refused: %s of %s samples flagged explicit", upload.pk, flagged, len(verdicts))
                raise _refuse_upload(upload, _explicit_message(upload, flagged, len(verdicts)), refund=False)
            if not survey.faces:
                raise _refuse_upload(upload, _no_face_message(upload), refund=True)
            preview_video = None
            if upload.is_video and not playable:
                progress(92, "Preparing a preview")
                preview_video = _browser_preview(path)
    except FileNotFoundError as exc:
        raise JobError("The uploaded file is no longer stored. Upload it again.", refund=True) from exc
    except (errors.UnsupportedMedia, errors.CorruptMedia, errors.MediaTooLarge) as exc:
        raise _refuse_upload(upload, str(exc), refund=True) from exc
    except errors.Cancelled as exc:
        raise JobCancelled() from exc
    progress(96, "Saving the faces", force=True)
    _store_survey(upload, survey, poster, preview_video)


def _content_checker():
    from engine.safety.content import ContentChecker

    return ContentChecker.default(min_score=settings.CONTENT_MIN_SCORE)


def _check_image(path: Path, progress: Progress):
    from engine.media import load_image
    from engine.swap.survey import Survey, survey_image

    image = load_image(path, max_pixels=settings.MAX_IMAGE_PIXELS)
    progress(15, "Checking the content")
    verdicts = [_content_checker().check(image.pixels)]
    if verdicts[0].flagged and settings.CONTENT_MAX_SHARE < 1.0:  # refused: no need to look for faces
        return Survey(width=image.width, height=image.height, faces=[], samples=1), verdicts, None, True
    progress(40, "Finding faces")
    return survey_image(image.pixels, _analyzer()), verdicts, image.pixels, True


def _check_video(upload: Upload, path: Path, progress: Progress):
    """One sample per second: each is checked for explicit content, then surveyed for faces;
    the samples are streamed so a long video never sits in memory."""
    from engine.media import iter_frames, probe_video
    from engine.swap.survey import survey_frames

    info = probe_video(path)
    step = max(1, round(float(info.fps or 25)))
    expected = max(1, -(-max(info.frame_count, 1) // step))
    checker = _content_checker()
    verdicts = []
    state = {"poster": None, "flagged": 0}
    limit = settings.CONTENT_MAX_SHARE

    def samples():
        for frame in iter_frames(path, every=step):
            verdict = checker.check(frame.rgb)
            verdicts.append(verdict)
            state["flagged"] += verdict.flagged
            if state["poster"] is None:
                state["poster"] = frame.rgb
            done = len(verdicts)
            progress(5 + 85 * min(1.0, done / expected), f"Checking second {done} of {expected}")
            if state["flagged"] > limit * expected:
                return  # refused whatever the rest holds: stop early
            if not verdict.flagged:
                yield frame.time, frame.rgb

    survey = survey_frames(samples(), _analyzer())
    playable = info.container in PLAYABLE_CONTAINERS and info.video_codec in PLAYABLE_CODECS
    return survey, verdicts, state["poster"], playable


def _browser_preview(path: Path) -> bytes:
    """An H.264 copy of a video browsers cannot play as uploaded (GIF, HEVC, ...)."""
    from engine.media import process_video

    with tempfile.TemporaryDirectory(dir=settings.JOB_TEMP_DIR) as folder:
        out = Path(folder) / "preview.mp4"
        process_video(path, out, None, audio="keep", crf=26)
        return out.read_bytes()


def _explicit_message(upload: Upload, flagged: int, total: int) -> str:
    if upload.is_video:
        return (
            f"This video was not accepted: {flagged} of the {total} moments we checked look like explicit "
            "material, and SafeFace does not process explicit material. The file has been deleted. "
            "If you think this is a mistake, contact support."
        )
    return (
        "This photo was not accepted: it looks like explicit material, and SafeFace does not process "
        "explicit material. The file has been deleted. If you think this is a mistake, contact support."
    )


def _no_face_message(upload: Upload) -> str:
    what = "video (we looked at one frame per second)" if upload.is_video else "photo"
    return (
        f"We found no face in this {what}, so there is nothing to protect. Faces need to be at least "
        "about 30 pixels wide and not hidden. Your upload volume for it was refunded."
    )


def _store_survey(upload: Upload, survey, poster: np.ndarray | None, preview_video: bytes | None) -> None:
    """Writes the files first, then the rows in one short transaction; on any failure the
    files written go again."""
    from django.core.files.storage import default_storage

    faces: list[UploadFace] = []
    written: list[str] = []
    try:
        for found in survey.faces:
            face = UploadFace(
                upload=upload,
                key=found.key,
                box=[round(float(v), 1) for v in found.box],
                time=None if found.time is None else round(float(found.time), 3),
                quality=float(found.quality),
                appearances=int(found.appearances),
                embedding=embedding_to_bytes(found.embedding),
            )
            face.thumbnail.save("face.jpg", ContentFile(_jpeg(found.thumbnail, 256, 90)), save=False)
            written.append(face.thumbnail.name)
            faces.append(face)
        fields = ["browser_playable"]  # the content-check counts were saved by check_upload
        if poster is not None:
            upload.preview.save("preview.jpg", ContentFile(_jpeg(poster, PREVIEW_SIDE)), save=False)
            written.append(upload.preview.name)
            fields.append("preview")
        if preview_video is not None:
            upload.preview_video.save("preview.mp4", ContentFile(preview_video), save=False)
            written.append(upload.preview_video.name)
            fields.append("preview_video")
        upload.browser_playable = preview_video is None
        with transaction.atomic():
            if not job_still_claimed(upload):
                raise JobCancelled()
            UploadFace.objects.bulk_create(faces)
            upload.save(update_fields=fields)
    except BaseException:
        for name in written:
            default_storage.delete(name)
        raise


# --- running a swap ---------------------------------------------------------------------------
class PersonaRefused(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def verified_persona(job: SwapJob, assignment, analyzer):
    """The persona of one assignment, ready to swap, after every check: still the owner's kept
    avatar, provenance signature valid over the file on disk, and the face in that file is the
    stored identity. Raises ``PersonaRefused`` (and logs a security event) otherwise."""
    from avatars.models import Avatar
    from avatars.services import AvatarTampered, avatar_verify, report_tampered
    from engine.errors import EngineError
    from engine.faces import embedding_distance
    from engine.media import load_image
    from engine.swap.pipeline import prepare_persona

    avatar = assignment.avatar
    label = f"face {assignment.face_key + 1}"
    if avatar is None or avatar.user_id != job.user_id or avatar.status != Avatar.Status.READY:
        security_logger.warning(
            "SECURITY swap job %s (user %s): the persona for %s is missing or not the owner's (avatar %s)",
            job.pk, job.user_id, label, assignment.avatar_id,
        )
        raise PersonaRefused(
            f"The persona chosen for {label} ({assignment.avatar_name or 'deleted'}) is no longer in your "
            "library, so nothing was swapped. Choose another persona and start again."
        )
    try:
        data = avatar_verify(avatar)
    except AvatarTampered as error:
        report_tampered(error, action=f"swap job {job.pk}", user_id=job.user_id)
        raise PersonaRefused(
            f"The persona “{avatar.name}” failed its authenticity check (its picture is not the face "
            "SafeFace generated), so it was not used and nothing was swapped. Our team has been alerted."
        ) from error
    try:
        persona = prepare_persona(load_image(data).pixels, analyzer)
    except EngineError as error:
        security_logger.warning("SECURITY swap job %s: avatar %s has no usable face: %s", job.pk, avatar.pk, error)
        raise PersonaRefused(
            f"The persona “{avatar.name}” could not be read as a face, so nothing was swapped. "
            "Our team has been alerted."
        ) from error
    distance = embedding_distance(persona.embedding, avatar.embedding_array)
    if distance > PERSONA_IDENTITY_TOLERANCE:
        security_logger.warning(
            "SECURITY swap job %s (user %s): avatar %s shows another identity than the one stored "
            "at generation (distance %.3f)", job.pk, job.user_id, avatar.pk, distance,
        )
        raise PersonaRefused(
            f"The persona “{avatar.name}” failed its identity check (the face in its picture is not the "
            "one SafeFace generated), so it was not used and nothing was swapped. Our team has been alerted."
        )
    return persona


def _random_persona(analyzer):
    """A fresh generated face (not a library persona) for the people nobody chose."""
    from avatars.models import Avatar
    from engine.generate.attributes import AttributeRequest
    from engine.generate.pipeline import GenerationOptions, generate_avatars
    from engine.swap.pipeline import prepare_persona

    candidates = generate_avatars(
        AttributeRequest(),
        seed=secrets.randbits(31),
        options=GenerationOptions(count=1, backend=settings.AVATAR_GENERATOR),
        avoid=Avatar.embeddings_matrix(Avatar.objects.all()),
    )
    if not candidates:
        raise JobError("No replacement face could be generated for the other people. Try “Blur them”.", refund=True)
    return prepare_persona(candidates[0].image, analyzer)


def run_swap(job: SwapJob, progress: Progress) -> None:
    from engine import errors
    from engine.swap.pipeline import Target

    upload = job.upload
    if not upload.is_ready:
        raise JobError(
            "The photo or video of this swap is no longer stored (it was deleted or passed its retention "
            "period). Upload it again.", refund=True,
        )
    progress(2, "Verifying your personas", force=True)
    analyzer = _analyzer()
    faces = {face.key: face for face in upload.faces.all()}
    targets = []
    try:
        for assignment in job.assignments.select_related("avatar"):
            persona = verified_persona(job, assignment, analyzer)
            face = faces.get(assignment.face_key)
            if face is None:
                raise JobError("A chosen face is no longer part of this upload. Start the swap again.", refund=True)
            if upload.is_video:
                targets.append(Target(persona=persona, reference=face.embedding_array))
            else:
                targets.append(Target(persona=persona, index=face.key))
    except PersonaRefused as refusal:
        raise JobError(refusal.message, refund=True) from refusal
    if not targets:
        raise JobError("No face was assigned a persona.", refund=True)
    try:
        bystander = None
        if job.others == SwapJob.Others.REPLACE and len(faces) > len(targets):
            progress(5, "Generating faces for the other people", force=True)
            bystander = _random_persona(analyzer)
        with local_path(upload.file) as path:
            if upload.is_video:
                data, suffix, report, thumb = _swap_video(job, path, targets, bystander, analyzer, progress)
            else:
                data, suffix, report, thumb = _swap_image(job, path, targets, bystander, analyzer, progress)
    except errors.Cancelled as exc:
        raise JobCancelled() from exc
    except errors.NoFaceFound as exc:
        raise JobError(f"{exc} Nothing was swapped.", refund=True) from exc
    except (errors.UnsupportedMedia, errors.CorruptMedia, errors.MediaTooLarge) as exc:
        raise JobError(str(exc), refund=True) from exc
    except errors.ModelMissing as exc:
        logger.error("swap job %s: %s", job.pk, exc)
        raise JobError("The swap engine is not available on this server right now. Please try again later.", refund=True) from exc
    progress(98, "Saving the result", force=True)
    _store_result(job, data, suffix, report, thumb)


def _swap_image(job: SwapJob, path: Path, targets, bystander, analyzer, progress: Progress):
    from engine.media import load_image
    from engine.media.provenance import encode_synthetic
    from engine.swap.pipeline import ImageSwapOptions, swap_image

    from avatars.models import c2pa_signer

    image = load_image(path, max_pixels=settings.MAX_IMAGE_PIXELS)
    progress(8, "Swapping faces", force=True)
    out, reports = swap_image(
        image.pixels, options=ImageSwapOptions(bystanders=job.others, engine=settings.SWAPPER), analyzer=analyzer,
        targets=targets,
        bystander_persona=bystander,
        progress=lambda fraction: progress(8 + 88 * fraction, "Swapping faces"),
    )
    fmt = {"png": "PNG", "webp": "WEBP"}.get(image.format, "JPEG")
    pixels = out
    if image.alpha is not None and fmt != "JPEG":
        pixels = np.dstack([out, image.alpha])
    quality = 95 if job.quality == SwapJob.Quality.HIGH else 88
    data = encode_synthetic(
        pixels, format=fmt, quality=quality, generator=GENERATOR,
        extra={"SafeFaceJob": str(job.pk)}, c2pa=c2pa_signer(),
    )
    report = {"kind": "image", "swapper": settings.SWAPPER, "faces": [jsonable(r.as_dict(), digits=4) for r in reports]}
    return data, fmt.lower().replace("jpeg", "jpg"), report, _jpeg(out, THUMB_SIDE)


def _swap_video(job: SwapJob, path: Path, targets, bystander, analyzer, progress: Progress):
    from engine.media import iter_frames
    from engine.swap.pipeline import ImageSwapOptions
    from engine.swap.video import VideoSwapOptions, swap_video

    with tempfile.TemporaryDirectory(dir=settings.JOB_TEMP_DIR) as folder:
        out = Path(folder) / "result.mp4"
        audio, start, voice = job.audio, 8.0, None
        if job.audio == SwapJob.Audio.MASK:
            audio = "keep"  # a video without sound has nothing to mask
            if job.upload.has_audio:
                track, voice = _masked_voice(job, path, Path(folder), progress)
                audio, start = str(track), 18.0
        options = VideoSwapOptions(
            image=ImageSwapOptions(bystanders=job.others, engine=settings.SWAPPER),
            audio=audio,
            crf=18 if job.quality == SwapJob.Quality.HIGH else 23,
            watermark_every=5,
            metadata=video_metadata(job),
        )

        def frames_done(done: int, total: int) -> None:
            progress(start + (96 - start) * done / max(total, 1), f"Frame {done} of {total}")

        result = swap_video(
            path, out, options=options, analyzer=analyzer, targets=targets, bystander_persona=bystander,
            progress=frames_done,
        )
        first = next(iter_frames(out), None)
        thumb = _jpeg(first.rgb, THUMB_SIDE) if first is not None else None
        report = {
            "kind": "video", "swapper": settings.SWAPPER, "frames": result.frames, "fps": round(result.fps, 2),
            "seconds": round(result.seconds, 2), "faces": [jsonable(t, digits=4) for t in result.tracks],
        }
        if voice is not None:
            report["voice"] = voice
        return out.read_bytes(), "mp4", report, thumb


def _masked_voice(job: SwapJob, path: Path, folder: Path, progress: Progress) -> tuple[Path, dict]:
    """The video's sound track in the chosen persona's voice (an AAC file in ``folder``), and what
    the report says of it. Progress 8-18%."""
    from avatars.models import Avatar
    from voice.processing import mask_sound_track, voice_check_of

    avatar = job.voice_avatar
    assigned = set(job.assignments.values_list("avatar_id", flat=True))
    if avatar is None or avatar.user_id != job.user_id or avatar.status != Avatar.Status.READY or avatar.pk not in assigned:
        if avatar is not None and avatar.user_id != job.user_id:
            security_logger.warning(
                "SECURITY swap job %s (user %s): the voice persona %s is not the owner's", job.pk, job.user_id, avatar.pk
            )
        raise JobError(
            "The persona whose voice was chosen for the sound is no longer in your library, so nothing was swapped. "
            "Choose again and start the swap again.", refund=True,
        )
    progress(8, "Masking the voice", force=True)
    limit = min(float(settings.VOICE_MAX_SECONDS), float(job.upload.duration or 0) * 1.1 + 5)
    track = mask_sound_track(path, avatar, folder, lambda percent, stage: progress(8 + 0.1 * percent, stage), max_seconds=limit)
    return track, {"persona": avatar.name, **voice_check_of(path, track, f"swap job {job.pk}")}


def video_metadata(job: SwapJob) -> dict[str, str]:
    from engine.media.provenance import TRAINED_ALGORITHMIC_MEDIA

    return {
        "comment": f"Synthetic media: faces replaced by SafeFace. Digital source type: {TRAINED_ALGORITHMIC_MEDIA}",
        "description": "Faces in this video were replaced with generated personas by SafeFace.",
        "encoder": GENERATOR,
    }


def _store_result(job: SwapJob, data: bytes, suffix: str, report: dict, thumb: bytes | None) -> None:
    from django.core.files.storage import default_storage

    written = []
    try:
        job.result.save(f"result.{suffix}", ContentFile(data), save=False)
        written.append(job.result.name)
        if thumb is not None:
            job.result_thumbnail.save("thumb.jpg", ContentFile(thumb), save=False)
            written.append(job.result_thumbnail.name)
        job.report = report
        with transaction.atomic():
            if not job_still_claimed(job):
                raise JobCancelled()
            job.save(update_fields=["result", "result_thumbnail", "report"])
    except BaseException:
        for name in written:
            default_storage.delete(name)
        raise


# --- the identity check, in words -------------------------------------------------------------
def describe_protection(report: dict) -> dict:
    """``level``: protected | partial | unchecked | none; ``headline`` and per-face ``lines``."""
    from engine.swap.pipeline import SAME_PERSON

    # Image reports name each face's action; video tracks say whether they were selected.
    faces = [
        f for f in (report or {}).get("faces", [])
        if f.get("action") == "swapped" or ("action" not in f and f.get("selected"))
    ]
    lines = []
    protected = unchecked = exposed = 0
    for face in faces:
        number = int(face.get("index", 0)) + 1
        distance = face.get("distance_to_original", face.get("distance_to_original_min"))
        if face.get("protected") is True:
            protected += 1
            lines.append(f"Face {number}: original person no longer recognisable (identity distance {distance:.2f}; the same person measures under {SAME_PERSON:.2f}).")
        elif face.get("protected") is False:
            exposed += 1
            lines.append(f"Face {number}: may still be recognisable (identity distance {distance:.2f}, under {SAME_PERSON:.2f}). Try a persona that looks less like this person.")
        else:
            unchecked += 1
            lines.append(f"Face {number}: replaced, but the check could not measure it (the face is too small or turned away in the result).")
    if not faces:
        return {"level": "none", "headline": "No face was replaced.", "lines": lines}
    if exposed:
        headline = f"{exposed} of {len(faces)} replaced face{'s' if len(faces) > 1 else ''} may still be recognisable."
        level = "partial"
    elif unchecked and not protected:
        headline = "Faces replaced; the identity check could not measure them."
        level = "unchecked"
    else:
        headline = "Original person no longer recognisable." if len(faces) == 1 else "Original people no longer recognisable."
        level = "protected"
    return {"level": level, "headline": headline, "lines": lines}

