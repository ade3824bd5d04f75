"""Attribute directions in StyleGAN's style space, and editing a style along them.

``directions.npz`` (next to this file) is made by ``scripts/learn_directions.py`` from samples
that the project labelled itself with ``engine.generate.measure``. It holds unit vectors in the
style space the synthesis network sees and, for every attribute value, the range of projections
along the attribute's direction(s) where samples took that value. ``constraints`` are ranges
applied to every avatar (a frontal head, a plain background beside the face, an even light),
which make most candidates fit to be swap sources. ``calibration`` is the straight line from a
projection to its measure (``measure ~ slope * projection + intercept``) and ``target_measures``
the same ranges in measure units (years, ITA degrees...).

Editing (``edit_style``) moves a style the least distance that brings each active projection into
its range while the ``holds`` of the edited attributes keep their projection (InterFaceGAN-style
conditional editing: one minimal-norm step in the span of the active directions, so fixing one
attribute does not drag the others along).

Refining (``refine_style``) is the second, closed-loop step for a rendered candidate that missed
a requested attribute or failed a swap-source check that a constraint stands for (a turned head,
a shadow, hair on the forehead...): a direction explains only part of its measure (held-out R^2
0.2-0.95, see bench/results/avatar_directions.json), and what it leaves is mostly the seed's own
offset, which the first render has just measured. The step moves each failed measure by
(target - measured) / slope and keeps every other active projection where it is.
"""
from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import ModelMissing

DIRECTIONS_FILE = Path(__file__).with_name("directions.npz")
MARGIN = 0.15  # a projection outside its range lands at a random point at least this share inside it


def _logit(p: float) -> float:
    p = min(max(p, 0.02), 0.98)
    return math.log(p / (1 - p))


def _hair(raw: dict, index: int) -> float:
    lab = raw.get("hair_lab") or [float("nan")] * 3
    if raw.get("hair_coverage", 0) <= 0.25 or not np.isfinite(lab[0]):
        return float("nan")
    if index == 3:
        return math.hypot(lab[1], lab[2])
    return lab[index]


# measure name -> how to read it from a face's raw measurements (engine.generate.measure)
MEASURES: dict[str, Callable[[dict], float]] = {
    "ita": lambda r: r["ita"],
    "age": lambda r: r["age"],
    "gender_logit": lambda r: _logit(r["feminine"]),
    "smile": lambda r: r["smile"],
    "glasses": lambda r: r["glasses"],
    "facial_hair": lambda r: r["facial_hair"],
    "hair_long_share": lambda r: r["hair_long_share"],
    "background_l": lambda r: r["background_l"],
    "hair_l": lambda r: _hair(r, 0),
    "hair_a": lambda r: _hair(r, 1),
    "hair_chroma": lambda r: _hair(r, 3),
    "yaw": lambda r: r["yaw"],
    "pitch": lambda r: r["pitch"],
    "cheek_l_difference": lambda r: r["cheek_l_difference"],
    "beside_face_texture": lambda r: r["beside_face_texture"],
    "forehead_skin": lambda r: r["forehead_skin"],
}


# swap-source check (engine.generate.measure.source_problems) -> the constraints that stand for it
PROBLEM_CONSTRAINTS = {
    "head not frontal": ("frontal_yaw", "frontal_pitch"),
    "strong shadow on one side": ("even_light",),
    "busy background beside the face": ("plain_beside_face",),
    "forehead covered by hair": ("forehead_free",),
    "looks like a child": ("adult",),
}


def measure_value(name: str, raw: dict) -> float:
    """Measure ``name`` of a face (NaN where it cannot be read, e.g. hair colour under a hat)."""
    try:
        return float(MEASURES[name](raw))
    except (KeyError, TypeError, ValueError):
        return float("nan")


@dataclass(frozen=True)
class Directions:
    vectors: np.ndarray  # (k, 512) unit vectors
    names: tuple[str, ...]  # what each vector measures ("ita", "glasses", "hair_l", ...)
    targets: dict  # attribute -> value -> [[direction index, lo, hi], ...]
    constraints: dict  # name -> [direction index, lo, hi], applied to every avatar
    sha256: str
    holds: dict = field(default_factory=dict)  # attribute -> direction names kept where they are when it is edited
    calibration: dict = field(default_factory=dict)  # measure -> [slope, intercept] (measure per projection)
    target_measures: dict = field(default_factory=dict)  # attribute -> value -> [[measure, lo, hi], ...]
    constraint_measures: dict = field(default_factory=dict)  # constraint -> [measure, lo, hi]

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

    def refinable(self, attribute: str, value: str) -> bool:
        specs = self.target_measures.get(attribute, {}).get(value, [])
        return bool(specs) and all(measure in self.calibration for measure, _, _ in specs)

    def fixable(self, problem: str) -> bool:
        """True when a refinement can act on this swap-source problem (a constraint stands for it)."""
        names = PROBLEM_CONSTRAINTS.get(problem, ())
        return bool(names) and all(self.constraint_measures.get(n, [None])[0] in self.calibration for n in names)

    def fixes(self, wanted: dict[str, str], missed: list[str], problems: list[str]) -> list[tuple[str, float, float]]:
        """(measure, lo, hi) ranges a refinement brings the measures into: the missed attributes'
        values and the constraints behind the problems."""
        specs = [tuple(spec) for a in missed for spec in self.target_measures.get(a, {}).get(wanted[a], [])]
        for problem in problems:
            specs += [tuple(self.constraint_measures[n]) for n in PROBLEM_CONSTRAINTS.get(problem, ()) if n in self.constraint_measures]
        return [(str(m), float(lo), float(hi)) for m, lo, hi in specs]


@functools.lru_cache(maxsize=4)
def load_directions(path: Path = DIRECTIONS_FILE) -> Directions:
    if not path.exists():
        raise ModelMissing(f"The attribute directions file {path.name} is missing; run scripts/learn_directions.py.")
    raw = path.read_bytes()
    with np.load(path, allow_pickle=False) as data:
        meta = json.loads(str(data["meta"]))
        vectors = data["vectors"].astype(np.float32)
    return Directions(vectors, tuple(meta["names"]), meta["targets"], meta["constraints"],
                      hashlib.sha256(raw).hexdigest(), meta.get("holds", {}), meta.get("calibration", {}),
                      meta.get("target_measures", {}), meta.get("constraint_measures", {}))


def _step(flat: np.ndarray, rows: list[np.ndarray], deltas: list[float]) -> np.ndarray:
    """The least-norm change of ``flat`` that moves its projection on each row by its delta."""
    step, *_ = np.linalg.lstsq(np.stack(rows), np.asarray(deltas), rcond=1e-6)
    return flat + step


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
    return _step(flat, rows, deltas).astype(np.float32).reshape(np.shape(style))


def refine_style(style: np.ndarray, wanted: dict[str, str], fixes: list[tuple[str, float, float]], raw: dict,
                 directions: Directions, seed: int = 0) -> np.ndarray:
    """``style`` (already edited for ``wanted`` and rendered; ``raw`` its measurements) moved so
    that each measure of ``fixes`` (``Directions.fixes``: measure, lo, hi) lands inside its range.

    The move along a measure's direction is (target - measured) / slope, the target drawn from
    ``seed`` in the inner part of the range (a measure already inside stays). Every other active
    direction (the always-on constraints, the attributes that matched, the holds) keeps its
    projection."""
    flat = np.asarray(style, np.float64).reshape(-1)
    moves: dict[int, float] = {}
    rng = np.random.default_rng([seed, 13])
    for measure, lo, hi in fixes:
        inner = (lo + MARGIN * (hi - lo), hi - MARGIN * (hi - lo))
        draw = float(rng.uniform(*inner))
        value = measure_value(measure, raw)
        if measure not in directions.calibration or not np.isfinite(value) or lo <= value <= hi:
            continue
        slope = float(directions.calibration[measure][0])
        moves[directions.names.index(measure)] = (draw - value) / slope
    if not moves:
        return style
    kept = {index for index, _, _ in directions.ranges(wanted)} | set(directions.held(wanted))
    rows = [directions.vectors[i].astype(np.float64) for i in sorted(kept - set(moves))]
    deltas = [0.0] * len(rows)
    for index, delta in moves.items():
        rows.append(directions.vectors[index].astype(np.float64))
        deltas.append(delta)
    return _step(flat, rows, deltas).astype(np.float32).reshape(np.shape(style))
