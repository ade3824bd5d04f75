"""Voice conversion backends.

The embedded default converts with signal processing (:mod:`engine.voice.convert`). A production
worker can instead run a neural any-to-any converter exported to ONNX, from the models folder:

* ``SAFEFACE_VOICE_MODEL``: the model's file name in ``SAFEFACE_MODELS_DIR`` (unset: signal
  processing). Every voice with the ``persona`` method is then converted by the model.
* The model's contract: input ``audio`` float32 ``[1, samples]`` (16 kHz mono, any length) and
  input ``target`` float32 ``[1, D]`` (the pseudo-speaker's embedding); output ``audio`` float32
  ``[1, samples]``. The persona's target embedding is drawn from its seed (unit length, same ``D``
  as the model's input), so a persona keeps its voice across files; pitch is moved by the
  persona's settings before the model, so the model only has to replace the timbre.
* An ASR -> TTS resynthesis system plugs in the same way, as any object with
  ``convert(x, sr, profile, stats) -> y`` (it must return ``len(x)`` samples).

Execution providers follow the rest of the engine: CUDA when onnxruntime has it, else CPU.
"""
from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Protocol

import numpy as np

from engine.errors import ModelCorrupt
from engine.voice.profile import VoiceProfile

MODEL_RATE = 16000


class Converter(Protocol):
    name: str

    def convert(self, x: np.ndarray, sr: int, profile: VoiceProfile, stats) -> np.ndarray: ...


class OnnxVoiceConverter:
    """A neural voice converter in ONNX (see the module's contract)."""

    def __init__(self, path: str | os.PathLike, providers: list[str] | None = None) -> None:
        import onnxruntime as ort

        self.path = Path(path)
        self.name = f"onnx:{self.path.name}"
        from engine.swap.onnx_runtime import default_providers

        providers = providers or list(default_providers())
        try:
            self.session = ort.InferenceSession(str(self.path), providers=providers)
        except Exception as exc:
            raise ModelCorrupt(f"The voice model {self.path.name} cannot be loaded: {exc}") from exc
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = [o.name for o in self.session.get_outputs()]
        if set(inputs) != {"audio", "target"} or "converted" not in outputs:
            raise ModelCorrupt(
                f"The voice model {self.path.name} must take inputs 'audio' and 'target' and give "
                f"'converted' (it takes {', '.join(inputs)} and gives {', '.join(outputs)})"
            )
        dim = inputs["target"].shape[-1]
        if not isinstance(dim, int) or dim <= 0:
            raise ModelCorrupt(f"The voice model {self.path.name} must fix the size of 'target'")
        self.target_dim = dim
        self._lock = threading.Lock()

    def target(self, profile: VoiceProfile) -> np.ndarray:
        rng = np.random.default_rng([profile.seed & 0xFFFFFFFFFFFF, 0x7A26E7])
        vector = rng.standard_normal(self.target_dim).astype(np.float32)
        return (vector / np.linalg.norm(vector))[None, :]

    def convert(self, x: np.ndarray, sr: int, profile: VoiceProfile, stats) -> np.ndarray:
        from engine.voice.convert import pitch_only, resample

        n = len(x)
        shifted = pitch_only(x, sr, profile, stats)
        audio = resample(shifted, sr, MODEL_RATE).astype(np.float32)[None, :]
        with self._lock:
            (y,) = self.session.run(["converted"], {"audio": audio, "target": self.target(profile)})
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if not np.all(np.isfinite(y)):
            raise ModelCorrupt(f"The voice model {self.path.name} produced invalid audio")
        y = resample(y, MODEL_RATE, sr)
        return y[:n] if len(y) >= n else np.pad(y, (0, n - len(y)))


_cache: dict[str, OnnxVoiceConverter] = {}
_cache_lock = threading.Lock()


def active_converter() -> OnnxVoiceConverter | None:
    """The configured neural converter (``SAFEFACE_VOICE_MODEL``), loaded once; None when unset."""
    name = os.environ.get("SAFEFACE_VOICE_MODEL", "").strip()
    if not name:
        return None
    from engine.models import models_dir

    path = models_dir() / name
    if not path.is_file():
        from engine.errors import ModelMissing

        raise ModelMissing(f"The voice model {name} (SAFEFACE_VOICE_MODEL) is not in {models_dir()}")
    with _cache_lock:
        key = str(path)
        if key not in _cache:
            _cache[key] = OnnxVoiceConverter(path)
        return _cache[key]
