"""Image swap pipeline: analyse, select, swap, verify protection, handle bystanders.

Protection is measured, not assumed: after each face is swapped the output face is re-fitted
and embedded, and its identity distance to the original face and to the persona is reported.
When the output is still within the same-person threshold of the original, the swap is
strengthened (``ImageSwapOptions.escalation``: stronger shape transfer, then the persona's own
eyes and full texture detail) and the face swapped again; if that is still not enough the face
is reported as unprotected (``protected=False``) rather than claimed as a success.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable

import cv2
import numpy as np

from engine.errors import Cancelled, NoFaceFound
from engine.faces import Face, FaceAnalyzer, embedding_distance, select_faces
from engine.swap.classical import PreparedSource, SwapOptions, prepare_source, swap_face, topology

SAME_PERSON = 0.6
BYSTANDER_ACTIONS = ("keep", "blur", "replace")


@dataclass
class Persona:
    """A generated face ready to be swapped in."""

    image: np.ndarray
    face: Face
    embedding: np.ndarray
    prepared: PreparedSource = field(repr=False)


def prepare_persona(rgb: np.ndarray, analyzer: FaceAnalyzer) -> Persona:
    faces = analyzer.analyze(rgb)
    if not faces:
        raise NoFaceFound("No face was found in the persona image.")
    face = max(faces, key=lambda f: f.area)
    embedding = analyzer.embed(rgb, face)
    return Persona(image=rgb, face=face, embedding=embedding, prepared=prepare_source(rgb, face.landmarks))


@dataclass(frozen=True)
class ImageSwapOptions:
    faces: str = "all"  # all | largest | index:N | reference | except-reference
    reference_embedding: np.ndarray | None = None
    bystanders: str = "keep"  # keep | blur | replace
    swap: SwapOptions = SwapOptions()
    threshold: float = SAME_PERSON
    # Tried in turn until the face is protected: stronger shape transfer, then also the persona's
    # own eyes and full texture detail (no softening to the photo's focus).
    escalation: tuple[dict, ...] = (
        {"shape_strength": 0.6},
        {"shape_strength": 0.85},
        {"shape_strength": 1.0},
        {"shape_strength": 1.0, "keep_eyes": False, "grain": False},
    )


@dataclass
class FaceReport:
    index: int
    box: tuple[float, float, float, float]
    action: str  # swapped | blurred | replaced | kept
    protected: bool | None = None
    distance_to_original: float | None = None
    distance_to_persona: float | None = None
    shape_strength: float | None = None
    escalation_step: int | None = None  # index into ImageSwapOptions.escalation that was kept
    occluded: float | None = None
    mouth_open: tuple[float, float] | None = None  # (input, output)
    eye_open: tuple[float, float] | None = None  # mean of both eyes (input, output)

    def as_dict(self) -> dict:
        return asdict(self)


def rank_personas(target_embedding: np.ndarray, personas: list[Persona]) -> list[tuple[float, Persona]]:
    """Personas from the best protector (farthest from the target's identity) to the worst."""
    scored = [(embedding_distance(target_embedding, p.embedding), p) for p in personas]
    return sorted(scored, key=lambda pair: -pair[0])


def _refit(analyzer: FaceAnalyzer, rgb: np.ndarray, face: Face) -> Face | None:
    tracked = analyzer.track(rgb, [face])
    return tracked[0] if tracked else None


def _swap_verified(
    frame: np.ndarray, face: Face, original: np.ndarray, persona: Persona, options: ImageSwapOptions,
    analyzer: FaceAnalyzer,
) -> FaceReport:
    original_embedding = analyzer.embed(original, face)
    best: tuple[np.ndarray, FaceReport] | None = None
    for number, step in enumerate(options.escalation):
        candidate = frame.copy()
        swap_options = replace(options.swap, **step)
        strength = swap_options.shape_strength
        result = swap_face(candidate, face.landmarks, persona.prepared, swap_options)
        refit = _refit(analyzer, candidate, face)
        report = FaceReport(
            index=face.index, box=face.box, action="swapped", shape_strength=strength, escalation_step=number,
            occluded=result.occluded,
        )
        if refit is None:
            report.protected = None  # the output face can no longer be found: nothing to compare
            distance = float("inf")
        else:
            output_embedding = analyzer.embed(candidate, refit)
            distance = embedding_distance(output_embedding, original_embedding)
            report.distance_to_original = distance
            report.distance_to_persona = embedding_distance(output_embedding, persona.embedding)
            report.protected = distance >= options.threshold
            report.mouth_open = (face.mouth_open, refit.mouth_open)
            report.eye_open = (float(np.mean(face.eye_open)), float(np.mean(refit.eye_open)))
        if best is None or distance > (best[1].distance_to_original or 0.0):
            best = (candidate, report)
        if report.protected:
            break
    candidate, report = best
    frame[:] = candidate
    return report


def blur_face(frame: np.ndarray, face: Face) -> None:
    """Anonymises a face with a strong, feathered blur over the face oval."""
    points = face.landmarks[topology().oval, :2] if face.landmarks is not None else None
    mask = np.zeros(frame.shape[:2], np.uint8)
    if points is not None:
        centre = points.mean(0)
        cv2.fillConvexPoly(mask, np.round(centre + 1.15 * (points - centre)).astype(np.int32), 255)
    else:
        x0, y0, x1, y1 = (int(round(v)) for v in face.box)
        cv2.ellipse(mask, ((x0 + x1) // 2, (y0 + y1) // 2), ((x1 - x0) // 2, (y1 - y0) // 2), 0, 0, 360, 255, -1)
    size = max(3.0, face.size / 6)
    blurred = cv2.GaussianBlur(cv2.resize(frame, None, fx=0.25, fy=0.25, interpolation=cv2.INTER_AREA), (0, 0), size / 4)
    blurred = cv2.resize(blurred, (frame.shape[1], frame.shape[0]), interpolation=cv2.INTER_LINEAR)
    alpha = cv2.GaussianBlur(mask.astype(np.float32) / 255, (0, 0), max(1.0, size / 4))[..., None]
    frame[:] = np.clip(frame * (1 - alpha) + blurred * alpha + 0.5, 0, 255).astype(np.uint8)


def swap_image(
    rgb: np.ndarray,
    persona: Persona,
    options: ImageSwapOptions = ImageSwapOptions(),
    *,
    analyzer: FaceAnalyzer,
    bystander_persona: Persona | None = None,
    progress: Callable[[float], object] | None = None,
) -> tuple[np.ndarray, list[FaceReport]]:
    """Returns the protected image and one report per face found."""
    if options.bystanders not in BYSTANDER_ACTIONS:
        raise ValueError(f"bystanders must be one of {BYSTANDER_ACTIONS}")
    faces = analyzer.analyze(rgb)
    if not faces:
        raise NoFaceFound("No face was found in this photo.")
    selected, others = select_faces(
        faces, options.faces, reference_embedding=options.reference_embedding, threshold=options.threshold,
        rgb=rgb, embedder=analyzer.embed,
    )
    out = rgb.copy()
    reports: list[FaceReport] = []
    total = len(selected) + len(others)
    for done, face in enumerate(selected):
        reports.append(_swap_verified(out, face, rgb, persona, options, analyzer))
        if progress is not None and progress((done + 1) / total) is False:
            raise Cancelled("The swap was cancelled.")
    for face in others:
        if options.bystanders == "blur":
            blur_face(out, face)
            reports.append(FaceReport(index=face.index, box=face.box, action="blurred"))
        elif options.bystanders == "replace" and bystander_persona is not None:
            report = _swap_verified(out, face, rgb, bystander_persona, options, analyzer)
            report.action = "replaced"
            reports.append(report)
        else:
            reports.append(FaceReport(index=face.index, box=face.box, action="kept"))
    reports.sort(key=lambda r: r.index)
    return out, reports
