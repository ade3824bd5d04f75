"""SSD anchor generation and BlazeFace box decoding.

Written from the published MediaPipe ``SsdAnchorsCalculator`` / ``TensorsToDetectionsCalculator``
options for the two BlazeFace detectors:

* short range: 128x128 input, 4 layers, strides (8, 16, 16, 16), one aspect ratio (1.0) plus the
  interpolated-scale anchor -> 2 anchors per cell per layer; consecutive layers with the same
  stride share one grid, so 16*16*2 + 8*8*6 = 896 anchors.
* full range (sparse): 192x192 input, 1 layer, stride 4, no interpolated anchor -> 48*48 = 2304.

With ``fixed_anchor_size`` every anchor is 1x1 (in normalised units), so an anchor is just its
centre. Regressors per anchor: 4 box values (centre x, centre y, width, height) then 6 keypoints
(x, y), all in input pixels relative to the anchor centre; scales = input size.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

NUM_KEYPOINTS = 6


@dataclass(frozen=True)
class DetectorSpec:
    """What the decoder needs to know about one BlazeFace variant."""

    name: str  # model file name
    input_size: int
    strides: tuple[int, ...]
    interpolated_anchor: bool  # one extra anchor per layer (interpolated scale, aspect 1.0)
    score_clip: float = 100.0
    min_score: float = 0.5

    @property
    def anchors_per_layer(self) -> int:
        return 2 if self.interpolated_anchor else 1


SHORT_RANGE = DetectorSpec(
    name="face_detection_short_range.tflite",
    input_size=128,
    strides=(8, 16, 16, 16),
    interpolated_anchor=True,
)
FULL_RANGE = DetectorSpec(
    name="face_detection_full_range_sparse.tflite",
    input_size=192,
    strides=(4,),
    interpolated_anchor=False,
)


def generate_anchors(
    input_size: int,
    strides: tuple[int, ...] | list[int],
    *,
    anchors_per_layer: int = 2,
    offset: float = 0.5,
) -> np.ndarray:
    """Anchor centres as an (N, 2) float32 array of normalised (x, y), in model output order.

    Layers that share a stride are merged into one grid; each cell of that grid then carries
    ``anchors_per_layer`` anchors for every merged layer, emitted cell by cell (row-major), which is
    the order the detector's regressor tensor uses.
    """
    strides = list(strides)
    centres: list[np.ndarray] = []
    layer = 0
    while layer < len(strides):
        stride = strides[layer]
        repeats = 0
        while layer < len(strides) and strides[layer] == stride:
            repeats += anchors_per_layer
            layer += 1
        cells = int(np.ceil(input_size / stride))
        axis = (np.arange(cells, dtype=np.float64) + offset) / cells
        ys, xs = np.meshgrid(axis, axis, indexing="ij")
        grid = np.stack([xs.ravel(), ys.ravel()], axis=1)  # row-major cells
        centres.append(np.repeat(grid, repeats, axis=0))
    return np.concatenate(centres, axis=0).astype(np.float32)


def anchors_for(spec: DetectorSpec) -> np.ndarray:
    """The anchors of ``spec`` (computed once, read-only)."""
    anchors = _ANCHOR_CACHE.get(spec.name)
    if anchors is None:
        anchors = generate_anchors(spec.input_size, spec.strides, anchors_per_layer=spec.anchors_per_layer)
        anchors.flags.writeable = False
        _ANCHOR_CACHE[spec.name] = anchors
    return anchors


_ANCHOR_CACHE: dict[str, np.ndarray] = {}


def sigmoid_scores(raw: np.ndarray, clip: float = 100.0) -> np.ndarray:
    """Logits -> probabilities, clipping first as MediaPipe does (avoids overflow warnings)."""
    raw = np.clip(np.asarray(raw, dtype=np.float64).reshape(-1), -clip, clip)
    return 1.0 / (1.0 + np.exp(-raw))


def decode_boxes(raw: np.ndarray, anchors: np.ndarray, input_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode regressors (N, 16) against anchors (N, 2).

    Returns ``boxes`` (N, 4) as normalised (x0, y0, x1, y1) and ``keypoints`` (N, 6, 2) normalised
    (x, y), both relative to the model input square.
    """
    raw = np.asarray(raw, dtype=np.float32).reshape(len(anchors), -1)
    scale = float(input_size)
    cx = raw[:, 0] / scale + anchors[:, 0]
    cy = raw[:, 1] / scale + anchors[:, 1]
    w = raw[:, 2] / scale
    h = raw[:, 3] / scale
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    kp = raw[:, 4 : 4 + 2 * NUM_KEYPOINTS].reshape(-1, NUM_KEYPOINTS, 2) / scale
    kp = kp + anchors[:, None, :]
    return boxes, kp


def box_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box against (N, 4) boxes, all (x0, y0, x1, y1)."""
    ix0 = np.maximum(box[0], boxes[:, 0])
    iy0 = np.maximum(box[1], boxes[:, 1])
    ix1 = np.minimum(box[2], boxes[:, 2])
    iy1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area = max(float((box[2] - box[0]) * (box[3] - box[1])), 0.0)
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    union = area + areas - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def weighted_nms(
    boxes: np.ndarray,
    scores: np.ndarray,
    keypoints: np.ndarray | None = None,
    *,
    iou_threshold: float = 0.3,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Weighted non-maximum suppression (MediaPipe's ``WEIGHTED`` algorithm).

    Candidates are taken in descending score order (ties by input order, so the result is
    deterministic); each kept detection is the score-weighted mean of every remaining candidate
    overlapping it by more than ``iou_threshold``, and keeps the best score of that cluster.
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    n = len(scores)
    if keypoints is not None:
        keypoints = np.asarray(keypoints, dtype=np.float64).reshape(n, NUM_KEYPOINTS, 2)
    order = np.argsort(-scores, kind="stable")
    remaining = order
    out_boxes, out_scores, out_kps = [], [], []
    while remaining.size:
        top = remaining[0]
        ious = box_iou(boxes[top], boxes[remaining])
        cluster = remaining[ious > iou_threshold]
        if cluster.size == 0 or cluster[0] != top:
            cluster = np.concatenate([[top], cluster[cluster != top]])
        w = scores[cluster]
        w = w / w.sum() if w.sum() > 0 else np.full(len(cluster), 1.0 / len(cluster))
        out_boxes.append((boxes[cluster] * w[:, None]).sum(axis=0))
        out_scores.append(scores[top])
        if keypoints is not None:
            out_kps.append((keypoints[cluster] * w[:, None, None]).sum(axis=0))
        remaining = remaining[~np.isin(remaining, cluster)]
    b = np.array(out_boxes, dtype=np.float64).reshape(-1, 4)
    s = np.array(out_scores, dtype=np.float64)
    k = None
    if keypoints is not None:
        k = np.array(out_kps, dtype=np.float64).reshape(len(s), NUM_KEYPOINTS, 2)
    return b, s, k
