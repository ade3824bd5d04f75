"""Swaps: a user's own photo or video, with chosen faces replaced by their personas.

Two jobs, both on the gpu cluster:
- ``Upload`` checks a new file: it samples it (the image, or one frame per second of a video),
  refuses explicit material, finds the faces (for a video, the people seen across the samples)
  and stores a thumbnail and identity embedding per face for the face picker.
- ``SwapJob`` replaces the faces the user assigned to personas. Its sources are foreign keys to
  the user's own generated avatars and nothing else; the worker re-verifies each avatar (its
  provenance signature over the file on disk, and that the face in that file is the stored
  identity) before any pixel is swapped.
"""
from __future__ import annotations

import uuid

import numpy as np
from django.db import models, transaction

from safeface.jobs import Job, JobStatus, Progress
from safeface.private_media import user_prefix
from safeface.values import embedding_from_bytes


class MediaKind(models.TextChoices):
    IMAGE = "image", "Photo"
    VIDEO = "video", "Video"


def _upload_path(instance: Upload, filename: str) -> str:
    return f"{user_prefix(instance.user_id)}uploads/{uuid.uuid4().hex}.{instance.extension}"


def _preview_path(instance, filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
    return f"{user_prefix(instance.user_id)}uploads/previews/{uuid.uuid4().hex}.{suffix}"


def _face_thumb_path(instance: UploadFace, filename: str) -> str:
    return f"{user_prefix(instance.upload.user_id)}uploads/faces/{uuid.uuid4().hex}.jpg"


def _result_path(instance: SwapJob, filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
    return f"{user_prefix(instance.user_id)}swaps/{uuid.uuid4().hex}.{suffix}"


class Upload(Job):
    """A photo or video the user uploaded, and what the check found in it."""

    CLUSTER = "gpu"
    KIND_NAME = "upload check"
    COUNTS_TOWARD_CONCURRENCY = False  # metered by upload volume instead
    INPUT_FILE_FIELDS = ("file",)

    kind = models.CharField(max_length=8, choices=MediaKind.choices)
    format = models.CharField(max_length=16, help_text="Detected from the content: jpeg, png, webp, mp4, gif...")
    file = models.FileField(upload_to=_upload_path, max_length=255, blank=True)
    original_name = models.CharField(max_length=200, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    width = models.PositiveIntegerField(default=0)
    height = models.PositiveIntegerField(default=0)
    duration = models.FloatField(null=True, blank=True, help_text="Seconds (videos).")
    fps = models.FloatField(null=True, blank=True)
    frame_count = models.PositiveIntegerField(null=True, blank=True)
    has_audio = models.BooleanField(default=False)
    browser_playable = models.BooleanField(default=True, help_text="The original plays in a browser as is.")
    preview = models.FileField(upload_to=_preview_path, max_length=255, blank=True)
    preview_video = models.FileField(upload_to=_preview_path, max_length=255, blank=True)
    samples = models.PositiveIntegerField(default=0, help_text="Frames examined by the check.")
    content_flagged = models.PositiveIntegerField(default=0, help_text="Samples flagged as explicit.")
    content_score = models.FloatField(null=True, blank=True, help_text="Highest explicit-content score seen.")
    submission = models.UUIDField(null=True, blank=True, editable=False)

    class Meta(Job.Meta):
        constraints = [models.UniqueConstraint(fields=["user", "submission"], name="one_upload_per_submission")]

    def __str__(self) -> str:
        return self.original_name or f"upload #{self.pk}"

    @property
    def extension(self) -> str:
        return {"jpeg": "jpg", "matroska": "mkv"}.get(self.format, self.format or "bin")

    @property
    def is_video(self) -> bool:
        return self.kind == MediaKind.VIDEO

    @property
    def is_ready(self) -> bool:
        """Checked, faces found, original still stored: a swap can be made from it."""
        return self.status == JobStatus.SUCCEEDED and bool(self.file) and self.purged_at is None

    def delete_outputs(self) -> None:
        super().delete_outputs()
        for face in UploadFace.objects.filter(upload=self):
            if face.thumbnail:
                face.thumbnail.storage.delete(face.thumbnail.name)
        UploadFace.objects.filter(upload=self).delete()

    def run(self, progress: Progress) -> None:
        from swaps import processing

        self.delete_outputs()  # a retried run starts clean
        processing.check_upload(self, progress)


class UploadFace(models.Model):
    """One face of a photo, or one person seen across the sampled frames of a video."""

    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="faces")
    key = models.PositiveSmallIntegerField(help_text="Photo: the face's index; video: the person's number.")
    box = models.JSONField(help_text="[x0, y0, x1, y1] in the upload's pixels, where the face was seen best.")
    time = models.FloatField(null=True, blank=True, help_text="Seconds into the video of that frame.")
    quality = models.FloatField(default=0.0)
    appearances = models.PositiveSmallIntegerField(default=1)
    embedding = models.BinaryField(help_text="128 float32 values: the dlib identity descriptor.")
    thumbnail = models.FileField(upload_to=_face_thumb_path, max_length=255, blank=True)

    class Meta:
        ordering = ["upload", "key"]
        constraints = [models.UniqueConstraint(fields=["upload", "key"], name="one_face_per_key")]

    def __str__(self) -> str:
        return f"face {self.number} of {self.upload}"

    @property
    def number(self) -> int:
        return self.key + 1

    @property
    def embedding_array(self) -> np.ndarray:
        return embedding_from_bytes(self.embedding)

    def box_percent(self) -> dict[str, float]:
        """The box as percentages of the upload's size (to draw it over the preview)."""
        x0, y0, x1, y1 = self.box
        w, h = max(self.upload.width, 1), max(self.upload.height, 1)
        return {
            "left": round(100 * max(x0, 0) / w, 2),
            "top": round(100 * max(y0, 0) / h, 2),
            "width": round(100 * (min(x1, w) - max(x0, 0)) / w, 2),
            "height": round(100 * (min(y1, h) - max(y0, 0)) / h, 2),
        }


class SwapJob(Job):
    """Puts the user's personas on the chosen faces of an upload."""

    CLUSTER = "gpu"
    KIND_NAME = "swap"

    class Others(models.TextChoices):
        KEEP = "keep", "Keep as they are"
        BLUR = "blur", "Blur them"
        REPLACE = "replace", "Replace with random generated faces"

    class Audio(models.TextChoices):
        KEEP = "keep", "Keep the original sound"
        DROP = "drop", "Remove the sound"
        MASK = "mask", "Mask the voice with the persona's voice"

    class Quality(models.TextChoices):
        STANDARD = "standard", "Standard (smaller file)"
        HIGH = "high", "High (larger file)"

    upload = models.ForeignKey(Upload, on_delete=models.CASCADE, related_name="swaps")
    others = models.CharField(max_length=8, choices=Others.choices, default=Others.KEEP)
    audio = models.CharField(max_length=8, choices=Audio.choices, default=Audio.KEEP)
    quality = models.CharField(max_length=8, choices=Quality.choices, default=Quality.STANDARD)
    voice_avatar = models.ForeignKey(
        "avatars.Avatar", null=True, blank=True, on_delete=models.SET_NULL, related_name="voice_swaps",
        help_text="Whose voice masks the sound (audio “mask”): one of the personas of the job's faces.",
    )
    submission = models.UUIDField(null=True, blank=True, editable=False)
    result = models.FileField(upload_to=_result_path, max_length=255, blank=True)
    result_thumbnail = models.FileField(upload_to=_result_path, max_length=255, blank=True)
    report = models.JSONField(default=dict, blank=True)

    class Meta(Job.Meta):
        constraints = [models.UniqueConstraint(fields=["user", "submission"], name="one_swap_per_submission")]

    def __str__(self) -> str:
        return f"swap #{self.pk}"

    @property
    def result_suffix(self) -> str:
        return self.result.name.rsplit(".", 1)[-1] if self.result else ""

    def protection(self) -> dict:
        """What the identity check says, in words, for the result page."""
        from swaps.processing import describe_protection

        return describe_protection(self.report)

    def voice_check(self) -> dict | None:
        """What the speaker check says of the masked sound, in words (None: not masked)."""
        if not (self.report or {}).get("voice"):
            return None
        from voice.processing import describe_voice_check

        return describe_voice_check(self.report["voice"])

    def run(self, progress: Progress) -> None:
        from swaps import processing

        self.delete_outputs()
        processing.run_swap(self, progress)


class SwapAssignment(models.Model):
    """One face of the upload and the persona that replaces it."""

    job = models.ForeignKey(SwapJob, on_delete=models.CASCADE, related_name="assignments")
    face_key = models.PositiveSmallIntegerField()
    avatar = models.ForeignKey(
        "avatars.Avatar", null=True, on_delete=models.SET_NULL, related_name="swap_assignments",
        help_text="Always one of the job owner's own generated personas.",
    )
    avatar_name = models.CharField(max_length=80, blank=True, help_text="The persona's name when the job was made.")
    distance = models.FloatField(null=True, blank=True, help_text="Identity distance persona to face at submission.")

    class Meta:
        ordering = ["job", "face_key"]
        constraints = [models.UniqueConstraint(fields=["job", "face_key"], name="one_persona_per_face")]

    def __str__(self) -> str:
        return f"face {self.face_key + 1} -> {self.avatar_name}"


def upload_delete_with_files(upload: Upload) -> None:
    """Deletes an upload, its swaps and, once that is committed, every file of theirs."""
    names: list[tuple] = []
    for job in upload.swaps.all():
        names += [(f.storage, f.name) for f in (job.result, job.result_thumbnail) if f]
    for face in upload.faces.all():
        if face.thumbnail:
            names.append((face.thumbnail.storage, face.thumbnail.name))
    names += [(f.storage, f.name) for f in (upload.file, upload.preview, upload.preview_video) if f]
    upload.delete()
    transaction.on_commit(lambda: [storage.delete(name) for storage, name in names])


def swap_delete_with_files(job: SwapJob) -> None:
    names = [(f.storage, f.name) for f in (job.result, job.result_thumbnail) if f]
    job.delete()
    transaction.on_commit(lambda: [storage.delete(name) for storage, name in names])

