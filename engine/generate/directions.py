"""Attribute directions in StyleGAN's style space, and editing a style along them.

``directions.npz`` (next to this file) is made by ``scripts/learn_directions.py`` from samples
that the project labelled itself with ``engine.generate.measure``. It holds unit vectors in the
(truncated) style space and, for every attribute value, the range of projections that samples
with that value had along the attribute's direction. ``constraints`` are ranges applied to every
avatar (a frontal head, a plain background beside the face, an even light), which make most
candidates fit to be swap sources.

Editing (``edit_style``) moves a style the least distance that brings each active projection into
its range while the ``holds`` of the edited attributes keep their projection (InterFaceGAN-style conditional editing: one minimal-norm step in the span of the active
directions, so fixing one attribute does not drag the others along).
"""
from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import ModelMissing

DIRECTIONS_FILE = Path(__file__).with_name("directions.npz")
MARGIN = 0.15  # a projection outside its range lands at a random point at least this share inside it


@dataclass(frozen=True)
class Directions:
    vectors: np.ndarray  # (k, 512) unit vectors
    names: tuple[str, ...]  # what each vector measures ("ita", "glasses", "hair_colour=red", ...)
    targets: dict  # attribute -> value -> [[direction index, lo, hi], ...]
    constraints: dict  # name -> [direction index, lo, hi], applied to every avatar
    sha256: str
    holds: dict = field(default_factory=dict)  # attribute -> direction names kept where they are when it is edited

    def held(self, wanted: dict[str, str]) -> list[int]:
        """Directions kept at their current projection: what an edit would otherwise drag along
        (a darker skin tone must not come from a darker exposure)."""
        names = {n for attribute in wanted for n in self.holds.get(attribute, [])}
        return [self.names.index(n) for n in sorted(names) if n in self.names]

    def ranges(self, wanted: dict[str, str]) -> list[tuple[int, float, float]]:
        active = list(self.constraints.values())
        for attribute, value in wanted.items():
            active.extend(self.targets.get(attribute, {}).get(value, []))
        return [(int(i), float(lo), float(hi)) for i, lo, hi in active]


@functools.lru_cache(maxsize=4)
def load_directions(path: Path = DIRECTIONS_FILE) -> Directions:
    if not path.exists():
        raise ModelMissing(f"The attribute directions file {path.name} is missing; run scripts/learn_directions.py.")
    raw = path.read_bytes()
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        vectors = data["vectors"].astype(np.float32)
    return Directions(vectors, tuple(meta["names"]), meta["targets"], meta["constraints"],
                      hashlib.sha256(raw).hexdigest(), meta.get("holds", {}))


def edit_style(style: np.ndarray, wanted: dict[str, str], directions: Directions, seed: int = 0) -> np.ndarray:
    """``style`` (1, 512) moved the least distance that puts every active projection in range.

    A projection already in range stays; one outside lands at a point drawn (from ``seed``) in
    the inner part of the range, so edited faces keep their variety instead of all converging on
    one value per attribute."""
    ranges = directions.ranges(wanted)
    if not ranges:
        return style
    flat = np.asarray(style, np.float64).reshape(-1)
    active = {index for index, _, _ in ranges}
    rows = [directions.vectors[i].astype(np.float64) for i in directions.held(wanted) if i not in active]
    deltas = [0.0] * len(rows)
    rng = np.random.default_rng([seed, 11])
    for index, lo, hi in ranges:
        vector = directions.vectors[index].astype(np.float64)
        p = float(vector @ flat)
        inner = (lo + MARGIN * (hi - lo), hi - MARGIN * (hi - lo))
        draw = float(rng.uniform(*inner))  # drawn for every range, so draws do not depend on p
        target = p if lo <= p <= hi else draw
        rows.append(vector)
        deltas.append(target - p)
    matrix = np.stack(rows)
    step, *_ = np.linalg.lstsq(matrix, np.asarray(deltas), rcond=1e-6)
    return (flat + step).astype(np.float32).reshape(np.shape(style))
