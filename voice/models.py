"""Voice: each kept persona has a voice, and users mask the voice in their own recordings with it.

- ``PersonaVoice`` is a persona's voice as plain data (``engine.voice.VoiceProfile.to_dict()``),
  drawn from the persona's seed and presentation the first time it is needed and tuned by its
  owner, with the latest preview: the persona speaking a sample sentence, or a short clip of the
  owner's own recording, masked.
- ``PreviewJob`` (gpu cluster, free, not counted against the concurrent jobs) makes that preview.
- ``MaskJob`` (gpu cluster) masks a whole recording (an audio file, or a video's sound track)
  with a persona's voice. It keeps a snapshot of the voice settings chosen at submission, so the
  result is what the user asked for even if the persona's voice is tuned meanwhile; its quota is
  the recording's length in seconds.
"""
from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models, transaction

from safeface.jobs import Job, JobStatus, Progress
from safeface.private_media import user_prefix

# The recording's container as FFmpeg names it -> the suffix its stored copy gets.
CONTAINER_SUFFIX = {
    "wav": "wav", "flac": "flac", "mp3": "mp3", "ogg": "ogg", "aac": "aac", "aiff": "aiff",
    "asf": "wma", "amr": "amr", "caf": "caf", "w64": "w64", "matroska,webm": "webm",
    "mov,mp4,m4a,3gp,3g2,mj2": "mp4",
}
# What Chromium, Firefox and Safari all play in an <audio> element as uploaded; anything else gets
# an MP3 copy for the page's player (the download is always the masked file).
PLAYABLE_CONTAINERS = {"wav", "flac", "mp3", "ogg", "aac", "mov,mp4,m4a,3gp,3g2,mj2", "matroska,webm"}
PLAYABLE_CODECS = {
    "pcm_s16le", "pcm_u8", "pcm_f32le", "pcm_s24le", "flac", "mp3", "mp3float", "aac", "opus", "vorbis",
}


def _voice_file_path(instance, filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
    return f"{user_prefix(instance.user_id)}voice/previews/{uuid.uuid4().hex}.{suffix}"


def _clip_path(instance, filename: str) -> str:
    return f"{user_prefix(instance.user_id)}voice/clips/{uuid.uuid4().hex}.flac"


def _source_path(instance: MaskJob, filename: str) -> str:
    return f"{user_prefix(instance.user_id)}voice/sources/{uuid.uuid4().hex}.{instance.source_suffix}"


def _result_path(instance: MaskJob, filename: str) -> str:
    suffix = filename.rsplit(".", 1)[-1] if "." in filename else "bin"
    return f"{user_prefix(instance.user_id)}voice/masked/{uuid.uuid4().hex}.{suffix}"


class PersonaVoice(models.Model):
    """The voice of one kept persona, and its latest preview."""

    class Source(models.TextChoices):
        SAMPLE = "sample", "The sample sentence"
        UPLOAD = "upload", "Your own clip"

    avatar = models.OneToOneField("avatars.Avatar", on_delete=models.CASCADE, related_name="voice")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="persona_voices")
    settings = models.JSONField(help_text="engine.voice.VoiceProfile.to_dict()")
    preview = models.FileField(upload_to=_voice_file_path, max_length=255, blank=True)
    preview_source = models.CharField(max_length=8, choices=Source.choices, blank=True)
    preview_settings = models.JSONField(default=dict, blank=True, help_text="The settings the preview was made with.")
    preview_made_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    def __str__(self) -> str:
        return f"voice of {self.avatar}"

    def profile(self):
        from engine.voice import VoiceProfile

        return VoiceProfile.from_dict(self.settings)

    def describe(self) -> str:
        return self.profile().describe()

    @property
    def preview_is_current(self) -> bool:
        return bool(self.preview) and self.preview_settings == self.settings

    def active_preview(self) -> PreviewJob | None:
        return self.previews.filter(status__in=(JobStatus.QUEUED, JobStatus.RUNNING)).order_by("-pk").first()

    def last_preview_job(self) -> PreviewJob | None:
        return self.previews.order_by("-pk").first()

    def file_names(self) -> list[tuple]:
        """(storage, name) of every file of this voice and its previews (for deletion)."""
        files = [self.preview] + [job.clip for job in self.previews.all()]
        return [(f.storage, f.name) for f in files if f]


class PreviewJob(Job):
    """The persona's voice speaking the sample sentence, or a clip of the owner's recording (at most
    ``PREVIEW_SECONDS``): the result becomes ``PersonaVoice.preview``. The owner's clip is deleted
    once the preview is made."""

    CLUSTER = "gpu"
    KIND_NAME = "voice preview"
    COUNTS_TOWARD_CONCURRENCY = False  # a few seconds of audio, and free
    INPUT_FILE_FIELDS = ("clip",)

    voice = models.ForeignKey(PersonaVoice, on_delete=models.CASCADE, related_name="previews")
    settings = models.JSONField(help_text="The voice settings to preview (a snapshot).")
    source = models.CharField(max_length=8, choices=PersonaVoice.Source.choices, default=PersonaVoice.Source.SAMPLE)
    clip = models.FileField(upload_to=_clip_path, max_length=255, blank=True)
    clip_name = models.CharField(max_length=200, blank=True)

    def __str__(self) -> str:
        return f"voice preview #{self.pk}"

    def run(self, progress: Progress) -> None:
        from voice import processing

        processing.run_preview(self, progress)


class MaskJob(Job):
    """A recording of the user's, its speech turned into a persona's voice (same length, same
    timing), as an audio file."""

    CLUSTER = "gpu"
    KIND_NAME = "voice mask"
    INPUT_FILE_FIELDS = ("source",)

    class Format(models.TextChoices):
        MP3 = "mp3", "MP3 (small, plays everywhere)"
        AAC = "aac", "AAC / M4A (small, best for video editors and phones)"
        FLAC = "flac", "FLAC (lossless)"
        WAV = "wav", "WAV (lossless, large)"

    avatar = models.ForeignKey(
        "avatars.Avatar", null=True, on_delete=models.SET_NULL, related_name="voice_masks",
        help_text="Always one of the job owner's own kept personas.",
    )
    avatar_name = models.CharField(max_length=80, blank=True, help_text="The persona's name when the job was made.")
    settings = models.JSONField(help_text="The persona's voice settings at submission (a snapshot).")
    source = models.FileField(upload_to=_source_path, max_length=255, blank=True)
    original_name = models.CharField(max_length=200, blank=True)
    size_bytes = models.PositiveBigIntegerField(default=0)
    container = models.CharField(max_length=40, blank=True, help_text="As FFmpeg names it.")
    codec = models.CharField(max_length=40, blank=True)
    has_video = models.BooleanField(default=False, help_text="The upload is a video (its sound track is masked).")
    duration = models.FloatField(default=0.0, help_text="Seconds.")
    sample_rate = models.PositiveIntegerField(default=0)
    channels = models.PositiveSmallIntegerField(default=0)
    output_format = models.CharField(max_length=4, choices=Format.choices, default=Format.MP3)
    result = models.FileField(upload_to=_result_path, max_length=255, blank=True)
    original_preview = models.FileField(
        upload_to=_result_path, max_length=255, blank=True,
        help_text="An MP3 copy of the original for the page's player, when browsers cannot play the upload.",
    )
    report = models.JSONField(default=dict, blank=True)
    submission = models.UUIDField(null=True, blank=True, editable=False)

    class Meta(Job.Meta):
        constraints = [models.UniqueConstraint(fields=["user", "submission"], name="one_mask_per_submission")]

    def __str__(self) -> str:
        return self.original_name or f"voice mask #{self.pk}"

    @property
    def source_suffix(self) -> str:
        suffix = CONTAINER_SUFFIX.get(self.container, "bin")
        if suffix == "mp4" and not self.has_video:
            return "m4a"
        return suffix

    @property
    def source_playable(self) -> bool:
        return self.container in PLAYABLE_CONTAINERS and self.codec in PLAYABLE_CODECS

    @property
    def format_name(self) -> str:
        return {"aac": "AAC (M4A)"}.get(self.output_format, self.output_format.upper())

    @property
    def result_suffix(self) -> str:
        return self.result.name.rsplit(".", 1)[-1] if self.result else ""

    @property
    def is_ready(self) -> bool:
        return self.status == JobStatus.SUCCEEDED and bool(self.result)

    def voice_check(self) -> dict:
        """What the speaker check says, in words, for the result page."""
        from voice.processing import describe_voice_check

        return describe_voice_check(self.report)

    def run(self, progress: Progress) -> None:
        from voice import processing

        self.delete_outputs()  # a retried run starts clean
        processing.run_mask(self, progress)


def mask_delete_with_files(job: MaskJob) -> None:
    """Deletes a mask job and, once that is committed, its upload and results."""
    names = [(f.storage, f.name) for f in (job.source, job.result, job.original_preview) if f]
    job.delete()
    transaction.on_commit(lambda: [storage.delete(name) for storage, name in names])


def voice_delete_with_files(voice: PersonaVoice) -> None:
    """Deletes a persona's voice, its previews and, once committed, their files."""
    names = voice.file_names()
    voice.delete()
    transaction.on_commit(lambda: [storage.delete(name) for storage, name in names])
