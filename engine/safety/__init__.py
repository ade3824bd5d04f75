"""Safety gates of the engine (Django-free).

:mod:`engine.safety.content`: the explicit-content gate for swap targets (NudeNet's detector).
"""
from __future__ import annotations

from engine.safety.content import (
    EXPLICIT_LABELS,
    LABELS,
    MAX_FLAGGED_SHARE,
    ContentChecker,
    ContentOptions,
    ContentVerdict,
    Finding,
    flagged_share,
)

__all__ = [
    "EXPLICIT_LABELS",
    "LABELS",
    "MAX_FLAGGED_SHARE",
    "ContentChecker",
    "ContentOptions",
    "ContentVerdict",
    "Finding",
    "flagged_share",
]
