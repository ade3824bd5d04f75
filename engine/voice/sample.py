"""The sample sentence persona voices are previewed with (CMU ARCTIC, fetched with the models)."""
from __future__ import annotations

from pathlib import Path

from engine.models import model_path

SAMPLE_FILE = "voice_sample_arctic_a0007.wav"
SAMPLE_TEXT = "Author of the danger trail, Philip Steels, et cetera."


def sample_speech_path() -> Path:
    """Path of the sample recording; raises ``ModelMissing`` (with the fetch command) if absent."""
    return model_path(SAMPLE_FILE)
