"""Video swap: detect on key frames, track the mesh in between, smooth landmarks over time,
swap every chosen face in every frame, verify protection on key frames.

Decoding, analysis, swapping and encoding overlap (engine.media.process_video runs decode and
encode on their own threads, and the swap of frame N runs on a swap thread while frame N+1 is
tracked); the original audio is kept unless another track is given; an interrupted
run leaves no output file behind.

Several personas: with ``targets`` (each with a reference embedding) every face track is assigned
on each key frame to the target whose reference is nearest (within the threshold), or left a
bystander; a track keeps its target between key frames.

With a neural swap engine (``ImageSwapOptions.engine``, see :mod:`engine.swap.neural`) the faces
of up to ``VideoSwapOptions.batch_frames`` consecutive frames go through the model in one run
(frames are still finished and written in order: a frame whose result is needed before its batch
is full flushes the batch).
"""
from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np

from engine.errors import Cancelled, NoFaceFound
from engine.faces import Face, FaceAnalyzer, embedding_distance
from engine.media.video import probe_video, process_video
from engine.media.provenance import watermark_embed, watermark_fits
from engine.swap.classical import swap_face
from engine.swap.pipeline import (
    ImageSwapOptions, Persona, Target, blur_face, check_targets, make_assigner, resolve_swapper,
)


class OneEuro:
    """One-Euro filter on landmark arrays: strong smoothing when still, little lag when moving."""

    def __init__(self, fps: float, min_cutoff: float = 1.2, beta: float = 0.05, d_cutoff: float = 1.0) -> None:
        self.rate = max(fps, 1.0)
        self.min_cutoff, self.beta, self.d_cutoff = min_cutoff, beta, d_cutoff
        self.value: np.ndarray | None = None
        self.speed: np.ndarray | None = None

    @staticmethod
    def _alpha(cutoff, rate: float):
        """Smoothing factor for a cutoff frequency (scalar or per-coordinate array)."""
        tau = 1.0 / (2 * np.pi * cutoff)
        return 1.0 / (1.0 + tau * rate)

    def __call__(self, x: np.ndarray, scale: float) -> np.ndarray:
        if self.value is None:
            self.value, self.speed = x.copy(), np.zeros_like(x)
            return x
        raw_speed = (x - self.value) * self.rate / max(scale, 1.0)  # in face sizes per second
        a_d = self._alpha(self.d_cutoff, self.rate)
        self.speed = a_d * raw_speed + (1 - a_d) * self.speed
        a = self._alpha(self.min_cutoff + self.beta * np.abs(self.speed) * 100, self.rate)
        self.value = a * x + (1 - a) * self.value
        return self.value


class LandmarkSmoother:
    """Smooths a face's landmarks over time without smoothing away its expression.

    The whole mesh gets the One-Euro filter above (head motion and the mesh's frame-to-frame
    noise). A mouth opening or a blink, though, is fast motion of a few points relative to the
    face, and that filter lags it: on the corpus talking heads the mouth opening of the smoothed
    landmarks correlated only ~0.90 with the raw one. So each feature (lips, each eye) keeps the
    smoothed position of its centre, while its shape around that centre (the expression) follows
    the raw landmarks through a much lighter filter."""

    def __init__(self, fps: float, feature_cutoff: float = 10.0) -> None:
        from engine.swap.classical import topology

        topo = topology()
        self.groups = (np.concatenate([topo.lips_inner, topo.lips_outer]), topo.left_eye, topo.right_eye)
        self.head = OneEuro(fps)
        self.shapes = [OneEuro(fps, min_cutoff=feature_cutoff, beta=0.0) for _ in self.groups]

    def __call__(self, x: np.ndarray, scale: float) -> np.ndarray:
        out = self.head(x, scale).copy()
        for group, light in zip(self.groups, self.shapes):
            shape = light(x[group] - x[group].mean(0), scale)
            out[group] = out[group].mean(0) + shape
        return out


@dataclass
class Track:
    face: Face
    target: int | None  # position in the swap's targets; None: a bystander
    smoother: LandmarkSmoother
    distances: list[float] = field(default_factory=list)
    frames: int = 0
    cache: dict = field(default_factory=dict)  # swap_face's per-face cache (reset on key frames)

    @property
    def selected(self) -> bool:
        return self.target is not None


@dataclass(frozen=True)
class VideoSwapOptions:
    image: ImageSwapOptions = ImageSwapOptions()
    keyframe_interval: int = 25  # full detection every N frames, about a second (tracking in between)
    verify_every: int = 2  # measure protection on every Nth key frame
    audio: str = "keep"  # keep | drop | path to a replacement track
    # Video frames are seen in motion and re-compressed: the persona texture and the masks are
    # worked at smaller face sizes than for photos (see engine.swap.classical.SwapOptions).
    texture_face: float = 240.0
    mask_face: float = 128.0
    # In motion, blinks must follow the target: its eyes are kept with this margin of its own lids
    # and lashes (where the mesh and a viewer see a blink), at some cost in identity transfer
    # (photos keep none: there the transfer matters more and there is no blink to follow).
    eye_margin: float = 0.4
    crf: int = 20  # x264 quality of the output (lower is better and larger)
    # The invisible SafeFace watermark on every Nth output frame (0: none). It costs ~35 ms on
    # a 700 px frame, so marking every frame would halve the speed; any second of video still
    # holds several marked frames.
    watermark_every: int = 0
    metadata: Mapping[str, str] | None = None  # container tags of the output (never the input's)
    batch_frames: int = 4  # neural engine: faces of up to this many frames per model run


@dataclass
class VideoReport:
    frames: int
    fps: float
    tracks: list[dict]
    seconds: float
    stage_seconds: dict


class _BatchFuture(Future):
    """A frame's result that is computed with others: asking for it before its batch is full
    sends the batch off (so the in-order writer never waits on a batch that waits for it)."""

    def __init__(self, batcher: "_FrameBatcher") -> None:
        super().__init__()
        self._batcher = batcher

    def result(self, timeout=None):
        if not self.done():
            self._batcher.flush()
        return super().result(timeout)


class _FrameBatcher:
    """Collects frames and renders them ``size`` at a time on ``executor`` (one worker, so batches
    run in order); ``run(items) -> outputs`` gets the queued argument tuples in frame order."""

    def __init__(self, executor: ThreadPoolExecutor, run: Callable[[list], list], size: int) -> None:
        self.executor, self.run, self.size = executor, run, max(1, size)
        self._pending: list[tuple[_BatchFuture, tuple]] = []
        self._lock = threading.Lock()

    def add(self, *args) -> Future:
        future = _BatchFuture(self)
        with self._lock:
            self._pending.append((future, args))
            full = len(self._pending) >= self.size
        if full:
            self.flush()
        return future

    def flush(self) -> None:
        with self._lock:
            batch, self._pending = self._pending, []
        if batch:
            self.executor.submit(self._render, batch)

    def _render(self, batch: list) -> None:
        live = [(f, args) for f, args in batch if f.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            outputs = self.run([args for _, args in live])
        except BaseException as error:  # noqa: BLE001 - handed to whoever waits on the frames
            for future, _ in live:
                future.set_exception(error)
            return
        for (future, _), out in zip(live, outputs):
            future.set_result(out)


def _iou(a, b) -> float:
    x0, y0 = max(a[0], b[0]), max(a[1], b[1])
    x1, y1 = min(a[2], b[2]), min(a[3], b[3])
    inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def swap_video(
    src,
    dst,
    persona: Persona | None = None,
    options: VideoSwapOptions = VideoSwapOptions(),
    *,
    targets: Sequence[Target] = (),
    analyzer: FaceAnalyzer,
    bystander_persona: Persona | None = None,
    progress: Callable[[int, int], object] | None = None,
) -> VideoReport:
    """Swaps ``persona`` onto the faces ``options.image.faces`` selects, or each target's persona
    onto the people its ``reference`` matches (``targets``; exactly one of the two). Track
    summaries give each track's ``target`` (position in ``targets``, 0 with a single persona,
    None for bystanders)."""
    targets = check_targets(persona, targets, video=True)
    tracks: list[Track] = []
    state = {"keyframes": 0, "faces_seen": False}
    timing = {"analyse": 0.0, "swap": 0.0}
    frame_rate = float(probe_video(src).fps)  # the smoother works in real time, not in frames
    image_options = options.image
    swap_options = replace(
        image_options.swap, texture_face=options.texture_face, mask_face=options.mask_face, eye_margin=options.eye_margin)
    assign = make_assigner(persona, targets, image_options, analyzer)
    neural = resolve_swapper(image_options)  # None: the classical mesh swap

    def refresh(rgb: np.ndarray) -> None:
        faces = analyzer.analyze(rgb)
        if not faces:
            tracks.clear()
            return
        state["faces_seen"] = True
        try:
            assignment = assign(faces, rgb)
        except NoFaceFound:
            assignment = [None] * len(faces)
        new_tracks: list[Track] = []
        for face, target in zip(faces, assignment):
            free = [t for t in tracks if all(t is not n for n in new_tracks)]  # one face per track
            match = max(free, key=lambda t: _iou(t.face.box, face.box), default=None)
            if match is not None and _iou(match.face.box, face.box) > 0.3:
                match.face = face
                # A face the tracker followed keeps its persona when this key frame cannot
                # recognise it (turned away, blurred, half hidden): showing the real face for a
                # second would undo the protection. Only a match to another target moves it.
                if target is not None or match.target is None:
                    match.target = target
                new_tracks.append(match)
            else:
                new_tracks.append(Track(face=face, target=target, smoother=LandmarkSmoother(frame_rate)))
        tracks[:] = new_tracks

    def frame_fn(index: int, rgb: np.ndarray) -> Future:
        """Analysis on the caller's thread (tracking is sequential); the swap itself on the
        swap thread, so frame N is swapped while frame N+1 is tracked."""
        started = time.perf_counter()
        keyframe = index % options.keyframe_interval == 0 or not tracks
        if keyframe:
            refresh(rgb)
            state["keyframes"] += 1
        else:
            refitted = analyzer.track(rgb, [t.face for t in tracks], fast=True)
            by_index = {f.index: f for f in refitted}
            survivors = []
            for t in tracks:
                if t.face.index in by_index:
                    t.face = by_index[t.face.index]
                    survivors.append(t)
            tracks[:] = survivors
        verify = keyframe and state["keyframes"] % options.verify_every == 1
        jobs = []
        for t in tracks:
            if t.face.landmarks is None:
                continue
            if keyframe:  # colour, skin and grain follow the lighting from key frame to key frame
                t.cache = {k: v for k, v in t.cache.items() if k in ("noise", "rng")}
            jobs.append((t, t.face, t.target, t.smoother(t.face.landmarks[:, :2], t.face.size), t.cache))
        timing["analyse"] += time.perf_counter() - started
        if neural is not None:
            return batcher.add(index, rgb, jobs, verify)
        return swapper.submit(render, index, rgb, jobs, verify)

    def render_neural(items: list) -> list[np.ndarray]:
        """The neural engine's render of several frames: every face to swap in these frames in
        one model run, then bystander blurs, verification and the watermark, frame by frame."""
        started = time.perf_counter()
        outs = [rgb.copy() for _, rgb, _, _ in items]
        swaps = []
        for out, (_, _, jobs, _) in zip(outs, items):
            for t, face, target, smooth, _cache in jobs:
                if target is not None or (image_options.bystanders == "replace" and bystander_persona is not None):
                    who = targets[target].persona if target is not None else bystander_persona
                    swaps.append((out, smooth, neural.source_for(who)))
                    t.frames += 1
        neural.swap_faces(swaps)
        for position, (index, rgb, jobs, verify) in enumerate(items):
            out = outs[position]
            for t, face, target, _smooth, _cache in jobs:
                if target is not None and verify:
                    original = analyzer.embed(rgb, face)
                    refit = analyzer.track(out, [face])
                    if refit:
                        t.distances.append(embedding_distance(analyzer.embed(out, refit[0]), original))
                elif target is None and image_options.bystanders == "blur":
                    blur_face(out, face)
                    t.frames += 1
            if options.watermark_every and index % options.watermark_every == 0 and watermark_fits(*out.shape[:2]):
                outs[position] = watermark_embed(out)
        timing["swap"] += time.perf_counter() - started
        return outs

    def render(index: int, rgb: np.ndarray, jobs: list, verify: bool) -> np.ndarray:
        started = time.perf_counter()
        out = rgb.copy()
        for t, face, target, smooth, cache in jobs:  # target as of this frame (the next key frame may change it)
            if target is not None or (image_options.bystanders == "replace" and bystander_persona is not None):
                who = targets[target].persona if target is not None else bystander_persona
                swap_face(out, smooth, who.prepared, swap_options, cache)
                t.frames += 1
                if verify and target is not None:
                    original = analyzer.embed(rgb, face)
                    refit = analyzer.track(out, [face])
                    if refit:
                        t.distances.append(embedding_distance(analyzer.embed(out, refit[0]), original))
            elif image_options.bystanders == "blur":
                blur_face(out, face)
                t.frames += 1
        if options.watermark_every and index % options.watermark_every == 0 and watermark_fits(*out.shape[:2]):
            out = watermark_embed(out)
        timing["swap"] += time.perf_counter() - started
        return out

    def report_progress(done: int, total: int):
        if progress is not None and progress(done, total) is False:
            raise Cancelled("The swap was cancelled.")
        return True

    start = time.perf_counter()
    lookahead = max(2, options.batch_frames) if neural is not None else 2
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="swap") as swapper:
        batcher = _FrameBatcher(swapper, render_neural, options.batch_frames)
        result = process_video(
            src, dst, frame_fn, progress=report_progress, audio=options.audio, crf=options.crf,
            metadata=options.metadata, lookahead=lookahead,
        )
    elapsed = time.perf_counter() - start
    if not state["faces_seen"]:
        Path(result.path).unlink(missing_ok=True)  # nothing was protected: leave no output behind
        raise NoFaceFound("No face was found anywhere in this video.")
    frames = result.frames
    summaries = [
        {
            "index": t.face.index,
            "selected": t.selected,
            "target": t.target,
            "frames": t.frames,
            "distance_to_original_min": min(t.distances) if t.distances else None,
            "protected": (min(t.distances) >= image_options.threshold) if t.distances else None,
        }
        for t in tracks
    ]
    return VideoReport(
        frames=int(frames), fps=float(frames / elapsed) if elapsed > 0 else 0.0, tracks=summaries,
        seconds=elapsed, stage_seconds={k: round(v, 3) for k, v in timing.items()},
    )
