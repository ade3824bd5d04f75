"""Typed engine exceptions. Each carries a message fit to show a user as is; the site maps
them to job errors. The engine never exits the process."""
from __future__ import annotations


class EngineError(Exception):
    """Base class; ``str(error)`` is the user-facing message."""


class ModelMissing(EngineError):
    """A model file needed for this step is not in the models folder (run the fetch command)."""


class ModelCorrupt(EngineError):
    """A model file exists but its hash or format is wrong."""


class LicenseRefused(ModelMissing):
    """The deployment is commercial (``SAFEFACE_COMMERCIAL=1``) and this model's licence forbids
    commercial use: it is refused as if it were absent, with the licence in the message."""


class UnsupportedMedia(EngineError):
    """The file is not an image/video type SafeFace handles (or is disguised as one)."""


class CorruptMedia(EngineError):
    """The file is of a supported type but cannot be decoded (truncated, damaged)."""


class MediaTooLarge(EngineError):
    """The image or video exceeds the engine's hard size limits."""


class NoFaceFound(EngineError):
    """No usable face where one is required (source or target)."""


class Cancelled(EngineError):
    """The caller cancelled the operation through its progress callback."""


class GenerationFailed(EngineError):
    """No generated candidate passed the checks (or none was unique enough) within the attempts."""


class AudioError(EngineError):
    """Base class of the voice engine's input errors."""


class NoAudioStream(AudioError, UnsupportedMedia):
    """The file has no audio track (a silent video, an image, a document)."""


class UnreadableAudio(AudioError, CorruptMedia):
    """The file is not audio SafeFace can decode, or it is damaged."""


class EmptyAudio(AudioError, CorruptMedia):
    """The audio track holds no samples (zero length)."""


class AudioTooLong(AudioError, MediaTooLarge):
    """The recording is longer than the engine (or the caller) accepts."""
