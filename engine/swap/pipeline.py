"""Image swap pipeline: analyse, select, swap, verify protection, handle bystanders.

Protection is measured, not assumed: after each face is swapped the output face is re-fitted
and embedded, and its identity distance to the original face and to the persona is reported.
When the output is still within the same-person threshold of the original, the swap is
strengthened (``ImageSwapOptions.escalation``: stronger shape transfer, then the persona's own
eyes and full texture detail, then proportions pushed past the persona's) and the face swapped
again; if that is still not enough the face
is reported as unprotected (``protected=False``) rather than claimed as a success.

One job can put several personas on one photo or video: each :class:`Target` names a face (by
index, photos only) or a person (by identity embedding) and the persona that replaces them; every
other face is a bystander. The single-persona form (``persona=`` with ``ImageSwapOptions.faces``)
goes through the same assignment (face -> target number or bystander) as the targets form.

Swap engine: ``ImageSwapOptions.engine`` is ``"classical"`` (the mesh warp of
:mod:`engine.swap.classical`, the default) or the name of an ONNX face swapper of
:mod:`engine.swap.neural` (``inswapper_128``, ``hyperswap_1a_256``, ...), optionally with a face
enhancer and occlusion / region masks. Everything else (selection, targets, bystanders,
verification, video tracking and smoothing) is the same. A neural model has no shape strength to
raise, so its escalation (``ImageSwapOptions.neural_escalation``) runs the model again on its own
output (a second and third pass transfer more of the persona's identity) and then ignores the
occlusion / region masks (the whole face box is replaced, hands and hair included).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import cv2
import numpy as np

from engine.errors import Cancelled, NoFaceFound
from engine.faces import Face, FaceAnalyzer, FaceIndexOutOfRange, NoMatchingFace, embedding_distance, select_faces
from engine.faces.selection import faces_word
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
    # Sources prepared by neural swappers (model name -> engine.swap.neural.NeuralSource)
    sources: dict = field(default_factory=dict, repr=False)


@dataclass(frozen=True, eq=False)
class Target:
    """One face (or person) to replace and the persona that replaces it.

    ``index``: the face's index in the analysed photo (photos only; see
    :func:`engine.faces.sort_faces`). ``reference``: the 128-d identity embedding of the person
    to replace; every face within the threshold of it (and nearer to it than to any other
    target's reference) gets this target's persona. An index match wins over a reference match.
    """

    persona: Persona
    index: int | None = None
    reference: np.ndarray | None = None


# An assignment for one analysed image: faces (index order) -> position in the targets, or None
# for a bystander. Raises NoFaceFound (or a subclass) when the request selects no face.
Assigner = Callable[[list[Face], np.ndarray], list["int | None"]]


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
    # own eyes and full texture detail (no softening to the photo's focus), and last the
    # proportions pushed a third past the persona's (away from the person's own; the per-point
    # limit in shaped_points keeps the mesh from tearing). On the corpus that last step turned
    # every face the earlier ones left within the same-person distance (small faces in group
    # photos, a persona of the same age and ethnicity) into a protected one.
    escalation: tuple[dict, ...] = (
        {"shape_strength": 0.6},
        {"shape_strength": 0.85},
        {"shape_strength": 1.0},
        {"shape_strength": 1.0, "keep_eyes": False, "grain": False},
        {"shape_strength": 1.35, "keep_eyes": False, "grain": False},
    )
    # "classical" or an ONNX face swapper name (engine.swap.neural.SWAPPERS), with an optional
    # face enhancer (engine.swap.enhance) and occlusion / region mask models (engine.swap.masks);
    # None: as the worker's environment configures them (SAFEFACE_FACE_ENHANCER, SAFEFACE_FACE_MASKS).
    engine: str = "classical"
    enhancer: str | None = None
    masks: tuple[str, ...] | None = None
    # The neural engine's escalation: keyword arguments of NeuralSwapper.swap_face, in turn.
    neural_escalation: tuple[dict, ...] = (
        {},
        {"passes": 2},
        {"passes": 2, "masks": False},
        {"passes": 3, "masks": False},
    )

    @property
    def neural(self) -> bool:
        return self.engine != "classical"


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
    target: int | None = None  # position in the swap's targets (0 with a single persona); None: bystander

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_swapper(options: ImageSwapOptions):
    """The :class:`engine.swap.neural.NeuralSwapper` of ``options`` (None for the classical
    engine); built once per process and configuration."""
    if not options.neural:
        return None
    from engine.swap.neural import get_swapper

    return get_swapper(options.engine, enhancer=options.enhancer, masks=options.masks)


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
    neural = resolve_swapper(options)
    steps = options.neural_escalation if neural is not None else options.escalation
    for number, step in enumerate(steps):
        candidate = frame.copy()
        if neural is not None:
            strength = None
            result = neural.swap_face(candidate, face.landmarks, neural.source_for(persona), **step)
        else:
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


def assign_targets(
    faces: Sequence[Face],
    targets: Sequence[Target],
    *,
    threshold: float,
    rgb: np.ndarray,
    embedder: Callable[[np.ndarray, Face], np.ndarray],
) -> list[int | None]:
    """For each face (in the order given): the position in ``targets`` of the target that
    replaces it, or None for a bystander.

    A face whose index a target names goes to that target; any other face goes to the target
    with the nearest ``reference`` when that is within ``threshold`` (faces are embedded with
    ``embedder`` only when some target has a reference). Raises :class:`FaceIndexOutOfRange`
    for an index the image does not have and :class:`NoMatchingFace` when no face matches any
    target."""
    by_index: dict[int, int] = {}
    for number, target in enumerate(targets):
        if target.index is None:
            continue
        if not 0 <= target.index < len(faces):
            raise FaceIndexOutOfRange(
                f"Target {number} names face {target.index}, but the photo has {faces_word(len(faces))}"
                + (f" (indexes 0-{len(faces) - 1})." if faces else ".")
            )
        by_index.setdefault(target.index, number)
    references = [
        (number, np.asarray(t.reference, np.float64).reshape(-1))
        for number, t in enumerate(targets) if t.reference is not None
    ]
    assignment: list[int | None] = []
    closest = float("inf")
    for face in faces:
        number = by_index.get(face.index)
        if number is None and references:
            embedding = np.asarray(embedder(rgb, face), np.float64)
            distances = [(float(np.linalg.norm(embedding - ref)), n) for n, ref in references]
            distance, nearest = min(distances)
            face.extras["target_distance"] = distance
            closest = min(closest, distance)
            if distance < threshold:
                number = nearest
        assignment.append(number)
    if faces and all(number is None for number in assignment):
        raise NoMatchingFace(
            f"No face matches any of the {len(targets)} target(s): the closest of {faces_word(len(faces))} is "
            f"{closest:.2f} away (threshold {threshold:.2f})."
        )
    return assignment


def check_targets(persona: Persona | None, targets: Sequence[Target], *, video: bool = False) -> tuple[Target, ...]:
    """The swap's targets: ``(Target(persona),)`` for the single-persona form. Exactly one of
    ``persona`` and ``targets`` must be given; each target needs an index or a reference (a
    video target needs a reference); two targets cannot name the same face index."""
    targets = tuple(targets)
    if (persona is None) == (not targets):
        raise ValueError("Give either one persona or a list of targets (exactly one of the two).")
    if persona is not None:
        return (Target(persona=persona),)
    seen: set[int] = set()
    for number, target in enumerate(targets):
        if not isinstance(target, Target):
            raise ValueError(f"Target {number} is not a Target.")
        if video and target.reference is None:
            raise ValueError(f"Target {number} has no reference embedding: video targets are matched by identity.")
        if target.index is None and target.reference is None:
            raise ValueError(f"Target {number} names neither a face index nor a reference face.")
        if target.reference is not None and np.asarray(target.reference).size != 128:
            raise ValueError(f"Target {number}: the reference must be a 128-d identity embedding.")
        if target.index is not None and not video:
            if target.index in seen:
                raise ValueError(f"Two targets name face {target.index}.")
            seen.add(target.index)
    return targets


def make_assigner(
    persona: Persona | None, targets: Sequence[Target], options: ImageSwapOptions, analyzer: FaceAnalyzer,
) -> Assigner:
    """The face -> target function for one swap: ``options.faces`` selection when a single
    persona is given (selected faces -> 0), :func:`assign_targets` otherwise."""
    if persona is not None:
        def assign(faces: list[Face], rgb: np.ndarray) -> list[int | None]:
            selected, _ = select_faces(
                faces, options.faces, reference_embedding=options.reference_embedding,
                threshold=options.threshold, rgb=rgb, embedder=analyzer.embed,
            )
            chosen = {id(f) for f in selected}
            return [0 if id(f) in chosen else None for f in faces]
        return assign

    def assign_many(faces: list[Face], rgb: np.ndarray) -> list[int | None]:
        return assign_targets(faces, targets, threshold=options.threshold, rgb=rgb, embedder=analyzer.embed)
    return assign_many


def swap_image(
    rgb: np.ndarray,
    persona: Persona | None = None,
    options: ImageSwapOptions = ImageSwapOptions(),
    *,
    targets: Sequence[Target] = (),
    analyzer: FaceAnalyzer,
    bystander_persona: Persona | None = None,
    progress: Callable[[float], object] | None = None,
) -> tuple[np.ndarray, list[FaceReport]]:
    """Returns the protected image and one report per face found (in index order).

    Either ``persona`` (on the faces ``options.faces`` selects) or ``targets`` (one persona per
    face or person, see :class:`Target`); every other face is handled by ``options.bystanders``."""
    targets = check_targets(persona, targets)
    if options.bystanders not in BYSTANDER_ACTIONS:
        raise ValueError(f"bystanders must be one of {BYSTANDER_ACTIONS}")
    resolve_swapper(options)  # a missing, refused or broken neural model fails before any work
    faces = analyzer.analyze(rgb)
    if not faces:
        raise NoFaceFound("No face was found in this photo.")
    faces = sorted(faces, key=lambda f: f.index)
    assignment = make_assigner(persona, targets, options, analyzer)(faces, rgb)
    chosen = [(face, number) for face, number in zip(faces, assignment) if number is not None]
    others = [face for face, number in zip(faces, assignment) if number is None]
    out = rgb.copy()
    reports: list[FaceReport] = []
    total = len(faces)
    for done, (face, number) in enumerate(chosen):
        report = _swap_verified(out, face, rgb, targets[number].persona, options, analyzer)
        report.target = number
        reports.append(report)
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
