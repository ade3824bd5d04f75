"""Avatar generators behind one interface, chosen by name (the site's SAFEFACE_GENERATOR).

* ``stylegan`` (embedded default): MobileStyleGAN FFHQ on OpenVINO, the sampled style edited
  along the learnt attribute directions.
* ``diffusers`` (production): a diffusion pipeline (Mobius, SDXL or SD1.5) from the models folder,
  prompted from the same attributes (:func:`diffusion_prompt`); loader and renderer in
  :mod:`engine.generate.diffusion`. It also renders a batch of candidates in one call
  (``render_batch``), which :func:`engine.generate.pipeline.generate_avatars` uses when present.
"""
from __future__ import annotations

import functools
import hashlib
from typing import Protocol

import numpy as np

from engine.errors import ModelMissing
from engine.generate import stylegan
from engine.generate.directions import edit_style, load_directions, refine_style
from engine.models import MANIFEST


class AvatarBackend(Protocol):
    name: str
    model_hash: str

    def render(self, seed: int, targets: dict[str, str]) -> np.ndarray:
        """The RGB uint8 face for ``seed`` rendered towards ``targets`` (attribute -> value)."""

    # Optional: ``render_batch(seeds, targets_list) -> list[np.ndarray]``, the same images as
    # ``render`` for each (seed, targets), made in one call.
    # Optional: ``can_refine(attribute, value) -> bool``, ``can_fix(problem) -> bool`` and
    # ``style(seed, targets)``, ``render_style(style)`` and ``refine(style, targets, missed, raw,
    # problems, seed) -> style``: a rendered style corrected for the requested attributes that its
    # face missed and the swap-source problems it had (``raw``: its measurements).


class StyleGANBackend:
    name = "stylegan2-ffhq-mobile"

    def __init__(self, device: str = "CPU", options: stylegan.GeneratorOptions = stylegan.GeneratorOptions()) -> None:
        self.device = device
        self.options = options
        self.directions = load_directions()
        weights = sorted(e.sha256 for e in MANIFEST if e.group == "generator")
        self.model_hash = hashlib.sha256(":".join([*weights, self.directions.sha256]).encode()).hexdigest()

    def style(self, seed: int, targets: dict[str, str]) -> np.ndarray:
        return edit_style(stylegan.style_for_seed(seed, self.options, self.device), targets, self.directions, seed)

    def render_style(self, style: np.ndarray) -> np.ndarray:
        return stylegan.normalize_image(stylegan.forward_synthesis(style, self.device))

    def render(self, seed: int, targets: dict[str, str]) -> np.ndarray:
        return self.render_style(self.style(seed, targets))

    def can_refine(self, attribute: str, value: str) -> bool:
        return self.directions.refinable(attribute, value)

    def can_fix(self, problem: str) -> bool:
        return self.directions.fixable(problem)

    def refine(self, style: np.ndarray, targets: dict[str, str], missed: list[str], raw: dict, problems: list[str] = (),
               seed: int = 0) -> np.ndarray:
        """``style`` (rendered, ``raw`` its measurements) moved so that the ``missed`` attributes'
        measures and those behind the swap-source ``problems`` land in their ranges."""
        fixes = self.directions.fixes(targets, missed, list(problems))
        return refine_style(style, targets, fixes, raw, self.directions, seed)


def diffusion_prompt(targets: dict[str, str]) -> tuple[str, str]:
    """(prompt, negative prompt) for a frontal passport-style portrait with these attributes."""
    words = {
        "age_band": {"young": "in their twenties", "adult": "in their late thirties", "middle": "in their fifties", "senior": "in their seventies"},
        "gender": {"feminine": "woman", "masculine": "man"},
        "skin_tone": {"light": "light skin", "medium": "medium brown skin", "deep": "deep dark skin"},
        "hair_colour": {"black": "black hair", "brown": "brown hair", "blonde": "blonde hair", "red": "red hair", "grey": "grey hair"},
        "hair_length": {"short": "short hair", "long": "long hair past the shoulders"},
        "expression": {"neutral": "neutral expression", "smile": "gentle smile"},
        "glasses": {"yes": "wearing glasses", "no": ""},
        "facial_hair": {"yes": "with a beard", "no": "clean-shaven"},
        "background": {"light": "plain light grey background", "dark": "plain dark background"},
    }
    subject = words["gender"].get(targets.get("gender", ""), "person")
    parts = [f"photo portrait of a {subject}"]
    parts += [words[k][v] for k, v in targets.items() if k != "gender" and words.get(k, {}).get(v)]
    parts += ["looking straight at the camera", "forehead visible", "soft even studio light", "sharp focus", "85mm"]
    negative = "profile, turned head, hands, hat, hair over forehead, heavy make-up, harsh shadows, text, watermark, cartoon, painting, blurry, deformed"
    return ", ".join(parts), negative


class DiffusersBackend:
    """Production generator: Mobius / SDXL / SD1.5 from SAFEFACE_MODELS_DIR
    (``SAFEFACE_DIFFUSERS_MODEL``, see :mod:`engine.generate.diffusion`). Renders a batch of
    candidates in one pipeline call, each from its own seeded generator."""

    def __init__(self, device: str | None = None, model: str | None = None, lcm_lora: str | None = None) -> None:
        from engine.generate.diffusion import DiffusionGenerator  # torch/diffusers only when chosen

        self.generator = DiffusionGenerator(model, device=device, lcm_lora=lcm_lora)
        self.name = self.generator.name  # "diffusers:<model>"
        self.model_hash = self.generator.model_hash

    def render_batch(self, seeds: list[int], targets_list: list[dict[str, str]]) -> list[np.ndarray]:
        return self.generator.render_batch(seeds, targets_list)

    def render(self, seed: int, targets: dict[str, str]) -> np.ndarray:
        return self.generator.render(seed, targets)


BACKENDS = {"stylegan": StyleGANBackend, "diffusers": DiffusersBackend}


@functools.lru_cache(maxsize=4)
def get_backend(name: str = "stylegan") -> AvatarBackend:
    try:
        factory = BACKENDS[name]
    except KeyError:
        raise ModelMissing(f"Unknown avatar generator {name!r}; choose one of {', '.join(BACKENDS)}.") from None
    return factory()
