"""A persona's voice: the parameters of the pseudo-speaker that masked speech is turned into.

A profile is plain data (``to_dict``/``from_dict`` round-trip through JSON) and is derived from the
persona's seed, so the same persona always speaks with the same voice. Everything a user can tune
is in :data:`PARAMETERS` (range, step and words for the form); the rest of the voice's colour (its
own frequency-warp curve and long-term spectrum) comes from ``seed``, and "randomise" draws a new
seed and new values.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np

#: Conversion methods: name -> label.
METHODS = {
    "persona": "Persona voice (recommended): the speaker's pitch, vocal-tract length and timbre "
               "are replaced by the persona's",
    "mcadams": "McAdams (light): formants moved by the VoicePrivacy McAdams coefficient; keeps "
               "more of the original voice",
}


@dataclass(frozen=True)
class Parameter:
    label: str
    minimum: float
    maximum: float
    step: float
    help: str


#: The tunable parameters of a profile.
PARAMETERS: dict[str, Parameter] = {
    "pitch_hz": Parameter("Pitch", 70.0, 300.0, 1.0, "The persona's typical speaking pitch, in Hz."),
    "intonation": Parameter(
        "Intonation", 0.5, 1.5, 0.05, "How much the pitch moves while speaking (1 is average)."
    ),
    "formant": Parameter(
        "Vocal tract", 0.85, 1.2, 0.01,
        "Below 1 sounds larger and darker, above 1 smaller and brighter.",
    ),
    "alpha": Parameter(
        "McAdams coefficient", 0.6, 1.0, 0.01, "Lower moves formants further (1 leaves them as they are)."
    ),
}

# Typical speaking pitch by gender presentation (Hz), and the spread drawn around it.
_PITCH = {"feminine": (205.0, 25.0), "masculine": (112.0, 15.0), None: (155.0, 30.0)}
_FORMANT = {"feminine": (1.08, 0.04), "masculine": (0.95, 0.03), None: (1.0, 0.05)}
_AGE_PITCH = {"senior": 0.94, "middle": 0.97}


@dataclass(frozen=True)
class VoiceProfile:
    method: str = "persona"
    seed: int = 0
    pitch_hz: float = 155.0
    intonation: float = 1.0
    formant: float = 1.0
    alpha: float = 0.8

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown voice method {self.method!r} (known: {', '.join(METHODS)})")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool) or self.seed < 0:
            raise ValueError("seed must be a non-negative integer")
        for name, spec in PARAMETERS.items():
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{spec.label} must be a number")
            if not spec.minimum <= value <= spec.maximum:
                raise ValueError(f"{spec.label} must be between {spec.minimum:g} and {spec.maximum:g}")

    # --- construction ------------------------------------------------------------------
    @classmethod
    def from_seed(cls, seed: int, gender: str | None = None, age_band: str | None = None,
                  method: str = "persona") -> VoiceProfile:
        """The persona's default voice: drawn from its seed, typical of its gender presentation."""
        gender = gender if gender in _PITCH else None
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFFFFFF, 0x701CE])
        pitch_mean, pitch_spread = _PITCH[gender]
        pitch = pitch_mean * _AGE_PITCH.get(age_band or "", 1.0) + rng.normal(0, pitch_spread * 0.6)
        formant_mean, formant_spread = _FORMANT[gender]
        return cls._clamped(
            method=method,
            seed=int(seed) & 0x7FFFFFFFFFFFFFFF,
            pitch_hz=round(pitch, 1),
            intonation=round(1.0 + rng.normal(0, 0.12), 2),
            formant=round(formant_mean + rng.normal(0, formant_spread * 0.6), 3),
            alpha=round(rng.uniform(0.72, 0.86), 3),
        )

    def randomised(self, seed: int, gender: str | None = None, age_band: str | None = None) -> VoiceProfile:
        """A new voice for the same persona (same method), drawn from ``seed``."""
        return VoiceProfile.from_seed(seed, gender, age_band, method=self.method)

    @classmethod
    def _clamped(cls, **values) -> VoiceProfile:
        for name, spec in PARAMETERS.items():
            values[name] = float(min(max(values[name], spec.minimum), spec.maximum))
        return cls(**values)

    @classmethod
    def from_dict(cls, data: dict) -> VoiceProfile:
        """Raises ``ValueError`` (with a message fit for a form) on unknown or invalid values."""
        if not isinstance(data, dict):
            raise ValueError("a voice profile must be a mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown voice setting {', '.join(unknown)}")
        values = dict(data)
        for name in PARAMETERS:
            if name in values:
                try:
                    values[name] = float(values[name])
                except (TypeError, ValueError):
                    raise ValueError(f"{PARAMETERS[name].label} must be a number") from None
        if "seed" in values:
            try:
                values["seed"] = int(values["seed"])
            except (TypeError, ValueError):
                raise ValueError("seed must be a non-negative integer") from None
        return cls(**values)

    def to_dict(self) -> dict:
        return asdict(self)

    # --- words ------------------------------------------------------------------------
    def describe(self) -> str:
        """One line for the persona page, e.g. "Persona voice, 118 Hz, darker, lively"."""
        pitch = "low" if self.pitch_hz < 130 else "high" if self.pitch_hz > 185 else "medium"
        parts = [f"{pitch} pitch ({self.pitch_hz:.0f} Hz)"]
        if self.formant < 0.97:
            parts.append("darker timbre")
        elif self.formant > 1.03:
            parts.append("brighter timbre")
        if self.intonation > 1.15:
            parts.append("lively intonation")
        elif self.intonation < 0.85:
            parts.append("flat intonation")
        name = "Persona voice" if self.method == "persona" else f"McAdams {self.alpha:.2f}"
        return f"{name}: " + ", ".join(parts)
