"""What a persona may look like: the attribute vocabulary shared by the generators, the
measurements that check them and the site's form.

Every attribute is optional; ``None`` means "any". A request is a frozen dataclass so it can be
stored (``as_dict``/``from_dict``), hashed and handed to any backend.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields

# Monk Skin Tone scale (Google, 2022): the ten reference swatches in sRGB.
MONK_SWATCHES = (
    (246, 237, 228),
    (243, 231, 219),
    (247, 234, 208),
    (234, 218, 186),
    (215, 189, 150),
    (160, 126, 86),
    (130, 92, 67),
    (96, 65, 52),
    (58, 49, 42),
    (41, 36, 32),
)

# The three Monk groups the form offers and the fairness table counts.
SKIN_TONES = {"light": (1, 2, 3), "medium": (4, 5, 6), "deep": (7, 8, 9, 10)}

CHOICES: dict[str, dict[str, str]] = {
    "age_band": {"young": "18-29", "adult": "30-44", "middle": "45-59", "senior": "60+"},
    "gender": {"feminine": "Feminine", "masculine": "Masculine"},
    "skin_tone": {"light": "Light (Monk 1-3)", "medium": "Medium (Monk 4-6)", "deep": "Deep (Monk 7-10)"},
    "hair_colour": {"black": "Black", "brown": "Brown", "blonde": "Blonde", "red": "Red", "grey": "Grey / white"},
    "hair_length": {"short": "Short", "long": "Long (past the jaw)"},
    "expression": {"neutral": "Neutral", "smile": "Smiling"},
    "glasses": {"no": "No glasses", "yes": "Glasses"},
    "facial_hair": {"no": "Clean-shaven", "yes": "Beard or moustache"},
    "background": {"light": "Light", "dark": "Dark"},
}

LABELS = {
    "age_band": "Age",
    "gender": "Gender presentation",
    "skin_tone": "Skin tone",
    "hair_colour": "Hair colour",
    "hair_length": "Hair length",
    "expression": "Expression",
    "glasses": "Glasses",
    "facial_hair": "Facial hair",
    "background": "Background",
}


@dataclass(frozen=True)
class AttributeRequest:
    """The look a user asked for; each field is a key of ``CHOICES[field]`` or None (any)."""

    age_band: str | None = None
    gender: str | None = None
    skin_tone: str | None = None
    hair_colour: str | None = None
    hair_length: str | None = None
    expression: str | None = None
    glasses: str | None = None
    facial_hair: str | None = None
    background: str | None = None

    def __post_init__(self) -> None:
        for name, value in self.as_dict(include_any=True).items():
            if value is not None and value not in CHOICES[name]:
                raise ValueError(f"{LABELS[name]}: {value!r} is not one of {', '.join(CHOICES[name])}.")

    def as_dict(self, *, include_any: bool = False) -> dict[str, str | None]:
        values = asdict(self)
        return values if include_any else {k: v for k, v in values.items() if v is not None}

    @classmethod
    def from_dict(cls, values: dict) -> AttributeRequest:
        names = {f.name for f in fields(cls)}
        return cls(**{k: (v or None) for k, v in values.items() if k in names})

    def describe(self) -> list[tuple[str, str]]:
        """(label, value label) pairs of the chosen attributes, in form order."""
        return [(LABELS[k], CHOICES[k][v]) for k, v in self.as_dict().items()]


ATTRIBUTE_NAMES = tuple(f.name for f in fields(AttributeRequest))


def monk_group(monk: int) -> str:
    for group, tones in SKIN_TONES.items():
        if monk in tones:
            return group
    raise ValueError(f"Monk tone {monk} is outside 1-10")
