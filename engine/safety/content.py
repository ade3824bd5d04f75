"""Explicit-content gate: refuse explicit material as a swap target.

The detector is NudeNet's ``320n`` model (a YOLOv8n body-part detector, ONNX, run by
onnxruntime). Its input ``images`` is (1, 3, 320, 320) float32 RGB in 0..1: the image scaled so
its long side is 320 and padded right and bottom with black to a square. Its output is
(1, 22, 2100): for each anchor the box centre x, y, width and height in 320-space, then one score
per class of :data:`LABELS`.

Pipeline: :func:`prepare_content` (letterbox; large images are reduced first so the work stays
small) -> :func:`forward_content` (the only place the model runs) -> :func:`normalize_content`
(candidates above a floor, every class of an anchor considered so a "covered" class cannot hide
an "exposed" one at the same place, per-class NMS, boxes mapped back to input pixels, the
verdict). :class:`ContentChecker` runs the three on one image.

An image is *flagged* when any class of :data:`EXPLICIT_LABELS` is found with at least
``min_score``; a video is refused when the share of flagged samples (:func:`flagged_share`) is
above :data:`MAX_FLAGGED_SHARE`. Django-free; bad model files raise the typed errors of
:mod:`engine.errors`, a bad argument raises ``ValueError``.
"""
from __future__ import annotations

import functools
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.faces.runtime import inference_threads

MODEL_NAME = "nudenet_320n.onnx"
INPUT_SIZE = 320

# Class order of the model's output (checked against the ONNX file's own "names" metadata).
LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)

# What makes an image explicit. MALE_BREAST_EXPOSED, BELLY_EXPOSED, FEET_EXPOSED... do not.
EXPLICIT_LABELS: frozenset[str] = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
)
EXPLICIT_CLASS_IDS: tuple[int, ...] = tuple(i for i, label in enumerate(LABELS) if label in EXPLICIT_LABELS)

DEFAULT_MIN_SCORE = 0.5
MAX_FLAGGED_SHARE = 0.1  # a video is refused when more than this share of its samples is flagged
CANDIDATE_FLOOR = 0.2  # (anchor, class) scores below this are never findings
NMS_IOU = 0.45
MAX_CANDIDATES = 300  # highest-scoring candidates kept for NMS (a real image has a few dozen)


# --------------------------------------------------------------------------------------------
# Types
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContentOptions:
    """How raw detections become a verdict."""

    min_score: float = DEFAULT_MIN_SCORE
    candidate_floor: float = CANDIDATE_FLOOR
    nms_iou: float = NMS_IOU
    max_candidates: int = MAX_CANDIDATES

    def __post_init__(self) -> None:
        if not 0.0 < self.min_score <= 1.0:
            raise ValueError(f"min_score must be in (0, 1], got {self.min_score}")
        if not 0.0 < self.candidate_floor <= 1.0:
            raise ValueError(f"candidate_floor must be in (0, 1], got {self.candidate_floor}")
        if not 0.0 < self.nms_iou <= 1.0:
            raise ValueError(f"nms_iou must be in (0, 1], got {self.nms_iou}")
        if self.max_candidates < 1:
            raise ValueError("max_candidates must be >= 1")


@dataclass(frozen=True)
class Finding:
    """One detection: its class, score and box (x0, y0, x1, y1) in input-image pixels."""

    label: str
    score: float
    box: tuple[float, float, float, float]

    @property
    def explicit(self) -> bool:
        return self.label in EXPLICIT_LABELS


@dataclass(frozen=True)
class ContentVerdict:
    """The gate's answer for one image.

    ``flagged``: some explicit finding scored at least ``min_score``. ``score``: the highest
    explicit score among the findings (0.0 when none). ``findings``: every detection kept after
    NMS, explicit or not, best first (for diagnostics).
    """

    flagged: bool
    score: float
    findings: tuple[Finding, ...]


@dataclass(frozen=True)
class Letterboxed:
    """A model input and how to map it back: input pixels = model pixels / scale (per axis)."""

    tensor: np.ndarray  # (1, 3, S, S) float32 RGB 0..1
    scale: tuple[float, float]  # (kx, ky): model pixels per input pixel
    size: tuple[int, int]  # input (width, height)


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def default_providers() -> tuple[str, ...]:
    """CUDA first when this onnxruntime build offers it, CPU always (the shared provider choice
    of :mod:`engine.swap.onnx_runtime`, which also honours ``SAFEFACE_ONNX_PROVIDERS``)."""
    from engine.swap.onnx_runtime import default_providers as shared_default

    return shared_default()


@functools.lru_cache(maxsize=None)
def load_session(path: str, providers: tuple[str, ...]):
    """An onnxruntime session for the model at ``path``, once per (path, providers).

    Raises :class:`~engine.errors.ModelCorrupt` when the file is not a model with the expected
    signature. ``InferenceSession.run`` is thread-safe, so one session serves every caller.
    """
    import onnxruntime

    from engine.errors import ModelCorrupt

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = inference_threads()
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: no provider-fallback chatter on stderr
    name = Path(path).name
    try:
        session = onnxruntime.InferenceSession(path, sess_options=options, providers=list(providers))
    except Exception as error:  # onnxruntime raises its own exception types for bad files
        raise ModelCorrupt(f"The model file {name} could not be loaded: {error}") from error
    inputs, outputs = session.get_inputs(), session.get_outputs()
    channels = inputs[0].shape[1] if inputs and len(inputs[0].shape) == 4 else None
    rows = outputs[0].shape[1] if outputs and len(outputs[0].shape) == 3 else None
    if len(inputs) != 1 or channels != 3 or rows != 4 + len(LABELS):
        raise ModelCorrupt(
            f"The model file {name} is not the expected detector (input {[i.shape for i in inputs]}, "
            f"output {[o.shape for o in outputs]})"
        )
    return session


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------


def as_rgb(image: np.ndarray) -> np.ndarray:
    """``image`` as (H, W, 3) uint8 RGB: alpha dropped, grey expanded. ``ValueError`` otherwise."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"expected an (H, W, 3) RGB or (H, W, 4) RGBA image, got shape {image.shape}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image {image.shape}")
    return image[:, :, :3]


def prepare_content(rgb: np.ndarray, input_size: int = INPUT_SIZE) -> Letterboxed:
    """The model input for ``rgb``: scaled so the long side is ``input_size`` (area averaging when
    reducing, so a 4K photo costs no more than a small one), padded right and bottom with black."""
    rgb = as_rgb(rgb)
    h, w = rgb.shape[:2]
    fit = input_size / max(w, h)
    nw, nh = min(input_size, max(1, round(w * fit))), min(input_size, max(1, round(h * fit)))
    interpolation = cv2.INTER_AREA if fit < 1.0 else cv2.INTER_LINEAR
    small = rgb if (nw, nh) == (w, h) else cv2.resize(np.ascontiguousarray(rgb), (nw, nh), interpolation=interpolation)
    tensor = np.zeros((1, 3, input_size, input_size), np.float32)
    tensor[0, :, :nh, :nw] = small.transpose(2, 0, 1)
    tensor *= np.float32(1.0 / 255.0)
    return Letterboxed(tensor, (nw / w, nh / h), (w, h))


def forward_content(session, tensor: np.ndarray) -> np.ndarray:
    """Run the detector: (1, 3, S, S) float32 -> raw output (1, 4 + classes, anchors)."""
    name = session.get_inputs()[0].name
    (raw,) = session.run(None, {name: np.ascontiguousarray(tensor, dtype=np.float32)})[:1]
    return np.asarray(raw, dtype=np.float32)


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) x0 y0 x1 y1 box with each of (N, 4) boxes."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float) -> np.ndarray:
    """Greedy per-class NMS: indices of the kept boxes, best first. A box is dropped when a
    better box of the same class overlaps it by more than ``iou``."""
    order = np.argsort(-scores, kind="stable")
    # Shift each class into its own region so boxes of different classes never overlap.
    span = float(np.max(boxes[:, 2:]) - min(np.min(boxes[:, :2]), 0.0) + 1.0) if len(boxes) else 1.0
    shifted = boxes + (classes.astype(np.float64) * span)[:, None]
    keep: list[int] = []
    while order.size:
        best = int(order[0])
        keep.append(best)
        rest = order[1:]
        order = rest[box_iou(shifted[best], shifted[rest]) <= iou]
    return np.asarray(keep, dtype=np.int64)


def normalize_content(
    raw: np.ndarray,
    letterbox: Letterboxed,
    options: ContentOptions = ContentOptions(),
) -> ContentVerdict:
    """Decode the raw output into findings in input pixels and the verdict.

    Every (anchor, class) pair scoring at least ``candidate_floor`` is a candidate (not only each
    anchor's best class); the ``max_candidates`` best go through per-class NMS.
    """
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim == 3:
        raw = raw[0]
    if raw.ndim != 2 or raw.shape[0] != 4 + len(LABELS):
        raise ValueError(f"expected a raw output of shape (1, {4 + len(LABELS)}, anchors), got {raw.shape}")
    scores = raw[4:].T  # (anchors, classes)
    anchor, cls = np.nonzero(scores >= options.candidate_floor)
    if anchor.size == 0:
        return ContentVerdict(False, 0.0, ())
    score = scores[anchor, cls].astype(np.float64)
    if score.size > options.max_candidates:
        best = np.argsort(-score, kind="stable")[: options.max_candidates]
        anchor, cls, score = anchor[best], cls[best], score[best]

    cx, cy, bw, bh = (raw[i, anchor].astype(np.float64) for i in range(4))
    kx, ky = letterbox.scale
    w, h = letterbox.size
    boxes = np.stack(
        [
            np.clip((cx - bw / 2) / kx, 0, w),
            np.clip((cy - bh / 2) / ky, 0, h),
            np.clip((cx + bw / 2) / kx, 0, w),
            np.clip((cy + bh / 2) / ky, 0, h),
        ],
        axis=1,
    )
    keep = nms(boxes, score, cls, options.nms_iou)
    findings = tuple(
        Finding(LABELS[int(cls[i])], float(score[i]), tuple(float(v) for v in boxes[i]))  # type: ignore[arg-type]
        for i in keep
    )
    explicit = [f.score for f in findings if f.explicit]
    top = max(explicit, default=0.0)
    # Compared at the model's float32 precision, like the floor: a 0.45 score meets min_score 0.45.
    flagged = bool(explicit) and np.float32(top) >= np.float32(options.min_score)
    return ContentVerdict(bool(flagged), top, findings)


def peak_explicit_score(raw: np.ndarray) -> float:
    """The highest explicit-class score over every anchor of a raw output, with no floor (how far
    an image is from being flagged; for benchmarks and diagnostics)."""
    raw = np.asarray(raw)
    if raw.ndim == 3:
        raw = raw[0]
    return float(raw[[4 + i for i in EXPLICIT_CLASS_IDS]].max())


def flagged_share(verdicts: Sequence[ContentVerdict]) -> float:
    """The fraction of ``verdicts`` that are flagged (0.0 for none)."""
    if not verdicts:
        return 0.0
    return sum(1 for v in verdicts if v.flagged) / len(verdicts)


# --------------------------------------------------------------------------------------------
# The checker
# --------------------------------------------------------------------------------------------


class ContentChecker:
    """Checks images for explicit content with one (cached) detector session.

    ``model_path`` defaults to the manifest's ``nudenet_320n.onnx`` (raises
    :class:`~engine.errors.ModelMissing` with the fetch command when it is absent).
    ``providers`` are onnxruntime execution providers, by default :func:`default_providers`.
    """

    def __init__(
        self,
        model_path: str | os.PathLike | None = None,
        *,
        min_score: float = DEFAULT_MIN_SCORE,
        providers: Sequence[str] | None = None,
    ) -> None:
        if model_path is None:
            from engine.models import model_path as manifest_path

            model_path = manifest_path(MODEL_NAME)
        self.model_path = Path(model_path)
        if not self.model_path.is_file():
            from engine.errors import ModelMissing

            raise ModelMissing(f"Model file {self.model_path} does not exist")
        self.options = ContentOptions(min_score=min_score)
        self.providers = tuple(providers) if providers else default_providers()
        self.session = load_session(str(self.model_path.resolve()), self.providers)

    _defaults: dict[float, "ContentChecker"] = {}
    _defaults_lock = threading.Lock()

    @classmethod
    def default(cls, *, min_score: float = DEFAULT_MIN_SCORE) -> "ContentChecker":
        """The checker of the manifest's model on the default providers, one per ``min_score``."""
        with cls._defaults_lock:
            checker = cls._defaults.get(min_score)
            if checker is None:
                checker = cls._defaults[min_score] = cls(min_score=min_score)
            return checker

    def raw(self, rgb: np.ndarray) -> tuple[np.ndarray, Letterboxed]:
        """The raw model output for ``rgb`` and its letterbox (for diagnostics)."""
        letterbox = prepare_content(rgb)
        return forward_content(self.session, letterbox.tensor), letterbox

    def check(self, rgb: np.ndarray) -> ContentVerdict:
        """The verdict for one (H, W, 3) uint8 RGB image (RGBA: alpha is ignored)."""
        raw, letterbox = self.raw(rgb)
        return normalize_content(raw, letterbox, self.options)
