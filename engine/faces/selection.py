"""Deterministic face order and face selection (all / largest / index / reference / bystanders)."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy as np

from engine.errors import EngineError, NoFaceFound

from .types import Face

COLUMN_TOLERANCE = 0.35  # faces whose centres are closer than this x face width share a column
MODES = ("all", "largest", "index", "reference", "except-reference")


class InvalidFaceSelection(EngineError, ValueError):
    """The selection request itself is malformed (unknown mode, missing argument)."""


class FaceIndexOutOfRange(NoFaceFound):
    """``index:N`` names a face the image does not have."""


class NoMatchingFace(NoFaceFound):
    """No face in the image is within the threshold of the reference face."""


class Selection(NamedTuple):
    selected: list[Face]
    others: list[Face]


def sort_faces(faces: Sequence[Face], *, tolerance: float = COLUMN_TOLERANCE) -> list[Face]:
    """Order faces left to right by box centre; faces whose centres are within ``tolerance`` x
    face width horizontally (one above the other) go top to bottom. Assigns ``index`` 0..n-1 in
    place and returns the new list. The result depends only on the boxes (ties: score, box)."""
    def key(face: Face):
        cx, cy = face.center
        return (cx, cy, -face.score, tuple(face.box))

    ordered = sorted(faces, key=key)
    result: list[Face] = []
    column: list[Face] = []
    for face in ordered:
        if column:
            anchor = column[0]
            width = max(min(anchor.width, face.width), 1.0)
            if face.center[0] - anchor.center[0] > tolerance * width:
                result.extend(sorted(column, key=lambda f: (f.center[1],) + key(f)))
                column = []
        column.append(face)
    result.extend(sorted(column, key=lambda f: (f.center[1],) + key(f)))
    for i, face in enumerate(result):
        face.index = i
    return result


def parse_mode(mode: str, index: int | None = None) -> tuple[str, int | None]:
    text = str(mode).strip().lower().replace("_", "-")
    if text.startswith("index:"):
        number = text.split(":", 1)[1].strip()
        try:
            index = int(number)
        except ValueError:
            raise InvalidFaceSelection(f"Face index must be a whole number, got {number!r}.") from None
        text = "index"
    if text not in MODES:
        raise InvalidFaceSelection(f"Unknown face selection {mode!r}; use one of: all, largest, index:N, reference, except-reference.")
    if text == "index" and index is None:
        raise InvalidFaceSelection("Face selection 'index' needs a face number (index:N).")
    return text, index


def faces_word(n: int) -> str:
    """'no faces', '1 face', 'N faces' (for messages)."""
    return "no faces" if n == 0 else ("1 face" if n == 1 else f"{n} faces")


def select_faces(
    faces: Sequence[Face],
    mode: str,
    *,
    index: int | None = None,
    reference_embedding: np.ndarray | None = None,
    threshold: float = 0.6,
    rgb: np.ndarray | None = None,
    embedder: Callable[[np.ndarray, Face], np.ndarray] | None = None,
) -> Selection:
    """Split ``faces`` into (selected, others), both in index order.

    Modes: ``all``; ``largest`` (biggest box); ``index:N`` (or ``index`` with ``index=N``);
    ``reference`` (every face whose embedding is within ``threshold`` of ``reference_embedding``);
    ``except-reference`` (the complement: bystanders). Reference modes compute missing embeddings
    from ``rgb`` (with ``embedder``, default :func:`engine.faces.embed`).

    Raises :class:`FaceIndexOutOfRange`, :class:`NoMatchingFace` (both :class:`NoFaceFound`),
    :class:`NoFaceFound` when a mode needs a face and there is none, and
    :class:`InvalidFaceSelection` for a malformed request.
    """
    kind, index = parse_mode(mode, index)
    faces = sorted(faces, key=lambda f: f.index)
    if kind == "all":
        return Selection(list(faces), [])
    if not faces:
        raise NoFaceFound("No face was found in the image.")
    if kind == "largest":
        best = max(faces, key=lambda f: (f.area, -f.index))
        return Selection([best], [f for f in faces if f is not best])
    if kind == "index":
        if not 0 <= index < len(faces):
            raise FaceIndexOutOfRange(
                f"Face index {index} is out of range: the image has {faces_word(len(faces))}"
                + (f" (indexes 0-{len(faces) - 1})." if faces else ".")
            )
        chosen = faces[index]
        return Selection([chosen], [f for f in faces if f is not chosen])
    # reference / except-reference
    if reference_embedding is None:
        raise InvalidFaceSelection(f"Face selection {kind!r} needs a reference face embedding.")
    reference = np.asarray(reference_embedding, dtype=np.float64).reshape(-1)
    distances = []
    for face in faces:
        if face.embedding is None:
            if rgb is None:
                raise InvalidFaceSelection(
                    f"Face selection {kind!r} needs face embeddings: pass the image (rgb=...)."
                )
            if embedder is None:
                from .analyzer import embed as embedder  # noqa: PLC0415 - avoids a cycle
            embedder(rgb, face)
        distances.append(float(np.linalg.norm(np.asarray(face.embedding, np.float64) - reference)))
    matches = [f for f, d in zip(faces, distances) if d < threshold]
    if not matches:
        closest = min(distances)
        raise NoMatchingFace(
            f"No face matches the reference face: the closest of {faces_word(len(faces))} is "
            f"{closest:.2f} away (threshold {threshold:.2f})."
        )
    others = [f for f in faces if all(f is not m for m in matches)]
    for face, distance in zip(faces, distances):
        face.extras["reference_distance"] = distance
    if kind == "reference":
        return Selection(matches, others)
    return Selection(others, matches)
