"""Typed engine exceptions. Each carries a message fit to show a user as is; the site maps
them to job errors. The engine never exits the process."""
from __future__ import annotations


class EngineError(Exception):
    """Base class; ``str(error)`` is the user-facing message."""


class ModelMissing(EngineError):
    """A model file needed for this step is not in the models folder (run the fetch command)."""


class ModelCorrupt(EngineError):
    """A model file exists but its hash or format is wrong."""


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
