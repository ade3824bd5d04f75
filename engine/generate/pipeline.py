"""Avatar generation: candidates made to a request, measured, checked and kept when they match.

``generate_avatars(request, seed=..., options=..., avoid=...)`` is what the site's generation job
calls. For each attempt it derives a candidate seed, renders that candidate with the configured
backend (StyleGAN on OpenVINO by default: a sampled style edited along learnt attribute
directions, see ``engine.generate.directions``), measures it (``engine.generate.measure``),
drops it when it fails the swap-source checks or sits within ``uniqueness_margin`` of an
existing avatar (``avoid``: their identity embeddings) or of a candidate already kept, and stops
once ``count`` candidates match every requested attribute. Candidates that match only partly
fill the remaining places, and say which attributes they missed.

Unrequested skin tone, gender presentation and age are drawn uniformly for each candidate (from
its seed), so that "any" does not inherit the training set's skew.

A candidate that misses a requested attribute, or fails only checks that an always-on constraint
stands for (turned head, shadow, hair on the forehead...), is refined when the backend can
(StyleGAN: ``engine.generate.directions.refine_style``, another edit of the same seed that moves
each failed measure by what the last render measured short of its range; ``REFINEMENTS`` at
most): that render usually passes, where a fresh seed would have the same odds as the first. A
refined face replaces the one before when it passes the checks and matches more requested
Each render counts towards ``max_attempts`` (the last face may go over by its refinements).

``render_avatar(seed, request)`` renders the very same image again from a candidate's seed (each
refinement is decided from the measurements of the render before, so it is repeated the same way).

A backend with ``render_batch`` (diffusers) renders ``count`` attempts per call; the attempt
seeds, fair draws and checks are the same as for a backend that renders one at a time.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from engine.errors import GenerationFailed
from engine.faces.analyzer import FaceAnalyzer
from engine.generate.attributes import CHOICES, AttributeRequest
from engine.generate.backends import AvatarBackend, get_backend
from engine.generate.measure import Measurement, measure_face, source_problems

ProgressFn = Callable[[float, str], None]

# Attributes drawn uniformly per candidate when the request leaves them open (fair sampling).
FAIR_ATTRIBUTES = ("skin_tone", "gender", "age_band")


@dataclass(frozen=True)
class GenerationOptions:
    count: int = 4  # candidates wanted
    max_attempts: int = 16  # faces rendered at most (a refinement is a render)
    # Least dlib identity distance to every other avatar. Not dlib's same-person 0.6: to dlib,
    # generated faces are crowded (distinct StyleGAN faces: median distance ~0.69, 7% of pairs
    # under 0.6), so 0.6 against a whole platform soon rejects nearly every candidate. 0.45 keeps
    # out near-duplicates of any existing persona (see bench/results/avatars.json).
    uniqueness_margin: float = 0.45
    backend: str = "stylegan"  # "stylegan" (embedded) or "diffusers" (production, issue 7)
    fair: bool = True  # draw open skin tone / gender / age uniformly


@dataclass
class Candidate:
    seed: int
    image: np.ndarray  # RGB uint8, square
    embedding: np.ndarray  # (128,) float32 dlib identity descriptor
    measured: dict  # attribute -> measured value key, plus "monk" (1-10), "ita", "age" (years)
    matched: dict[str, bool]  # requested attribute -> measured value equals the request
    checks: dict = field(default_factory=dict)  # swap-source check figures
    generator: str = ""
    model_hash: str = ""
    refined: bool = False  # the seed's face after the second, corrective edit (see finish_candidate)

    @property
    def match_count(self) -> int:
        return sum(self.matched.values())

    @property
    def matches_all(self) -> bool:
        return all(self.matched.values())


def candidate_seed(seed: int, attempt: int) -> int:
    """The seed of attempt ``attempt`` of a job seeded ``seed`` (stable, 31-bit)."""
    return int(np.random.SeedSequence([seed & 0xFFFFFFFF, attempt]).generate_state(1)[0] & 0x7FFFFFFF)


def render_targets(seed: int, request: AttributeRequest, *, fair: bool = True) -> dict[str, str]:
    """The attribute values a candidate is rendered towards: the request, plus (when ``fair``)
    a uniform draw for each open attribute of FAIR_ATTRIBUTES, from the candidate's seed."""
    targets = request.as_dict()
    if fair:
        rng = np.random.default_rng([seed, 7])
        for name in FAIR_ATTRIBUTES:
            values = sorted(CHOICES[name])
            drawn = values[int(rng.integers(len(values)))]
            targets.setdefault(name, drawn)
    return targets


def render_avatar(seed: int, request: AttributeRequest, backend: str = "stylegan", *, fair: bool = True,
                  analyzer: FaceAnalyzer | None = None) -> np.ndarray:
    """The image of the candidate with this seed, exactly as it was generated."""
    chosen = get_backend(backend)
    targets = render_targets(seed, request, fair=fair)
    image = chosen.render(seed, targets)
    if not hasattr(chosen, "refine"):
        return image
    return finish_candidate(chosen, seed, request, targets, image, analyzer or FaceAnalyzer.default()).image


@dataclass
class Rendered:
    """A candidate's final image with its measurements (after any refinement)."""

    image: np.ndarray
    measurement: Measurement
    problems: list[str]
    renders: int  # 1 + the refinements tried
    refined: bool = False


REFINEMENTS = 2  # corrective renders of one seed at most


def finish_candidate(backend: AvatarBackend, seed: int, request: AttributeRequest, targets: dict[str, str],
                     image: np.ndarray, analyzer: FaceAnalyzer) -> Rendered:
    """Measure and check ``image`` (``backend.render(seed, targets)``); refine it (up to
    ``REFINEMENTS`` times) while the backend can act on everything that is wrong with it: the
    requested attributes it missed (when it is fit), or the swap-source problems it has (a turned
    head, a shadow, hair on the forehead, with the attributes it missed). A refined face replaces
    the one before when it is fit and matches more requested attributes (or the one before was
    not fit); the refinement stops at the first that does not. Deterministic, so that
    ``render_avatar`` repeats it."""
    wanted = request.as_dict()
    m = measure_face(image, analyzer, embed=False)
    best = Rendered(image, m, source_problems(m), 1)
    if not hasattr(backend, "refine"):
        return best
    style = backend.style(seed, targets)
    renders = 1
    for _ in range(REFINEMENTS):
        matched = best.measurement.matches(wanted)
        missed = [a for a, ok in matched.items() if not ok and backend.can_refine(a, wanted[a])]
        problems = best.problems
        if best.measurement.faces != 1 or (problems and not all(backend.can_fix(p) for p in problems)):
            break  # a new seed has better odds than this face
        if not problems and not missed:
            break
        style = backend.refine(style, targets, missed, best.measurement.raw, problems, seed)
        image2 = backend.render_style(style)
        m2 = measure_face(image2, analyzer, embed=False)
        renders += 1
        second = Rendered(image2, m2, source_problems(m2), renders, refined=True)
        if second.problems or (not problems and sum(m2.matches(wanted).values()) <= sum(matched.values())):
            break
        best = second
    best.renders = renders
    return best


def _min_distance(embedding: np.ndarray, others: np.ndarray | None) -> float:
    if others is None or len(others) == 0:
        return float("inf")
    return float(np.min(np.linalg.norm(np.asarray(others, np.float32) - embedding[None, :], axis=1)))


def _candidate(seed: int, image: np.ndarray, m: Measurement, embedding: np.ndarray, request: AttributeRequest,
               backend: AvatarBackend, refined: bool = False) -> Candidate:
    measured = dict(m.labels)
    measured.update({"monk": int(m.raw["monk"]), "ita": round(float(m.raw["ita"]), 1), "age": round(float(m.raw["age"]), 1)})
    checks = {k: round(float(m.raw[k]), 4) for k in ("yaw", "pitch", "roll", "sharpness", "forehead_skin", "symmetry", "beside_face_texture")}
    return Candidate(
        seed=seed,
        image=image,
        embedding=embedding.astype(np.float32),
        measured=measured,
        matched=m.matches(request.as_dict()),
        checks=checks,
        generator=backend.name,
        model_hash=backend.model_hash,
        refined=refined,
    )


def generate_avatars(
    request: AttributeRequest,
    *,
    seed: int,
    options: GenerationOptions = GenerationOptions(),
    avoid: np.ndarray | None = None,
    progress: ProgressFn | None = None,
    analyzer: FaceAnalyzer | None = None,
) -> list[Candidate]:
    """Up to ``options.count`` checked, unique candidates for ``request``; best matches first.

    Raises GenerationFailed when no attempt produced a usable face."""
    backend = get_backend(options.backend)
    analyzer = analyzer or FaceAnalyzer.default()
    kept: list[Candidate] = []
    rejected: dict[str, int] = {}
    report = progress or (lambda percent, stage: None)
    started = time.perf_counter()
    # Candidates render in chunks: one at a time for a backend that renders singly (StyleGAN),
    # ``options.count`` per call for one with ``render_batch`` (diffusers, one pipeline call per
    # chunk). The next chunk renders on a second thread (OpenVINO and torch release the GIL)
    # while this one is measured and checked (and refined).
    chunk = max(1, options.count) if hasattr(backend, "render_batch") else 1

    def render(first: int) -> list[tuple[int, np.ndarray]]:
        attempts = range(first, min(first + chunk, options.max_attempts))
        seeds = [candidate_seed(seed, attempt) for attempt in attempts]
        targets = [render_targets(cseed, request, fair=options.fair) for cseed in seeds]
        if chunk == 1:
            images = [backend.render(seeds[0], targets[0])]
        else:
            images = backend.render_batch(seeds, targets)
        return list(zip(seeds, images))

    def matched() -> int:
        return sum(c.matches_all for c in kept)

    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="avatar-render") as pool:
        pending = pool.submit(render, 0)
        rendered: list[tuple[int, np.ndarray]] = []
        attempt = renders = 0
        while renders < options.max_attempts:
            if not rendered:
                rendered = pending.result() if pending is not None else render(attempt)
                attempt += len(rendered)
                # The next chunk renders ahead only when the job needs it whatever these faces
                # measure: a render still running when the job ends is waited for, and wasted.
                ahead = matched() + len(rendered) < options.count and renders + len(rendered) < options.max_attempts
                pending = pool.submit(render, attempt) if ahead else None
            cseed, image = rendered.pop(0)
            done = max(matched() / options.count, renders / options.max_attempts)
            report(min(99.0, 100.0 * done), f"Generating and checking faces ({min(len(kept), options.count)} of {options.count} ready)")
            targets = render_targets(cseed, request, fair=options.fair)
            # (the last face may take renders over the limit: a face is always finished the way
            # render_avatar repeats it)
            result = finish_candidate(backend, cseed, request, targets, image, analyzer)
            renders += result.renders
            if result.problems:
                for problem in result.problems:
                    rejected[problem] = rejected.get(problem, 0) + 1
                continue
            m = result.measurement
            embedding = analyzer.embed(m.analysed_image, m.face)
            others = np.array([c.embedding for c in kept]) if kept else None
            if min(_min_distance(embedding, avoid), _min_distance(embedding, others)) < options.uniqueness_margin:
                rejected["too close to an existing persona"] = rejected.get("too close to an existing persona", 0) + 1
                continue
            kept.append(_candidate(cseed, result.image, m, embedding, request, backend, result.refined))
            if matched() >= options.count:
                break
        if pending is not None:
            pending.cancel()
    if not kept:
        reasons = ", ".join(f"{k} ({v})" for k, v in sorted(rejected.items(), key=lambda kv: -kv[1]))
        raise GenerationFailed(
            f"None of the {options.max_attempts} faces generated for these attributes passed our checks"
            + (f" ({reasons})" if reasons else "")
            + ". Try again, or leave some attributes open."
        )
    kept.sort(key=lambda c: -c.match_count)  # stable: earlier attempts first among equals
    report(100.0, f"{len(kept[: options.count])} faces ready in {time.perf_counter() - started:.1f} s")
    return kept[: options.count]
