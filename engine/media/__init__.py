"""Decode/encode layer of the engine: still images (Pillow) and videos (PyAV + OpenCV).

Everything here is Django-free. Public functions raise only the typed errors of
:mod:`engine.errors` for bad media (``UnsupportedMedia``, ``CorruptMedia``, ``MediaTooLarge``,
``Cancelled``); a raw Pillow or PyAV exception never escapes. Programming mistakes (a bad
argument, a ``frame_fn`` returning the wrong shape) raise ``ValueError``/``TypeError``, and a
missing input file raises ``FileNotFoundError``.

Images
    :func:`load_image` -> :class:`Image` (RGB uint8 pixels, upright, no metadata, optional alpha)
    :func:`save_image` writes JPEG/PNG/WebP atomically with no metadata at all.

Videos
    :func:`probe_video` -> :class:`VideoInfo`
    :func:`iter_frames` yields upright RGB frames (decoded on a background thread)
    :func:`process_video` decode -> ``frame_fn`` -> H.264/AAC MP4, pipelined over threads
"""
from __future__ import annotations

from engine.media.image import IMAGE_FORMATS, Image, load_image, save_image
from engine.media.video import (
    DEFAULT_MAX_VIDEO_PIXELS,
    FAST_X264_PARAMS,
    ProcessResult,
    VideoFrame,
    VideoInfo,
    iter_frames,
    probe_video,
    process_video,
)

__all__ = [
    "DEFAULT_MAX_VIDEO_PIXELS",
    "FAST_X264_PARAMS",
    "IMAGE_FORMATS",
    "Image",
    "ProcessResult",
    "VideoFrame",
    "VideoInfo",
    "iter_frames",
    "load_image",
    "probe_video",
    "process_video",
    "save_image",
]
