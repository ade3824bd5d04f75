"""Face detection: BlazeFace full-range + short-range over an image pyramid of tiles.

Pipeline: :func:`prepare_detection` (letterboxed whole image for both detectors, plus 192x192
tiles of finer pyramid levels when ``min_size`` asks for faces too small for the whole-image pass)
-> :func:`forward_detector` (the only place a detector runs) -> :func:`normalize_detections`
(decode, map back to image pixels, drop detections cut by an inner tile border, weighted NMS
across tiles, scales and models).

Coverage argument: tiles overlap by ``TILE_OVERLAP`` pixels, so a face up to that size (at the
tile's scale) lies whole inside some tile; anything larger is at least ``TILE_OVERLAP / LEVEL_RATIO``
pixels at the next coarser level, which the full-range model still finds (it works down to ~12 px
in its input). Faces cut by a tile's inner border are dropped there and found whole elsewhere.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .anchors import FULL_RANGE, SHORT_RANGE, DetectorSpec, anchors_for, box_iou, decode_boxes, sigmoid_scores, weighted_nms
from .image import Pyramid, resize

TILE_FACE_PX = 20.0  # a face of min_size is searched at a scale where it is this big in a tile
TILE_OVERLAP = 64  # pixels of overlap between neighbouring tiles (at tile scale)
LEVEL_RATIO = 2.5  # largest scale step between pyramid levels
MAX_UPSCALE = 1.0  # never enlarge the image for tiling
MIN_SIZE_FLOOR = 20.0  # smallest face searched for by default, pixels
MIN_SIZE_FRACTION = 0.05  # ... or this fraction of the image's long side, whichever is larger
NMS_IOU = 0.3
EDGE_MARGIN = 2.0  # tile pixels: a box this close to an inner tile border is cut by it
CONTAINED = 0.7  # a box this much inside a larger, better detection is a part of that face
MIRROR_PAD = 0.2  # reflection padding (fraction of the long side) of the frame-edge pass
MIRROR_INSIDE = 0.35  # a frame-edge detection must have this much of its box inside the image


def default_min_size(width: int, height: int) -> float:
    """Default smallest face (box side, pixels) searched for: 20 px, or 5% of the long side on
    large images (so a 4K photo costs about as much as a 500 px one)."""
    return max(MIN_SIZE_FLOOR, MIN_SIZE_FRACTION * max(width, height))


@dataclass(frozen=True)
class Tile:
    """One detector input: a square crop of one pyramid level, and how to map it back."""

    spec: DetectorSpec
    pixels: np.ndarray  # (S, S, 3) uint8
    offset: tuple[float, float]  # tile origin in level pixels (negative: letterbox padding)
    scale: tuple[float, float]  # level pixels per image pixel (x, y)
    inner: tuple[bool, bool, bool, bool]  # left, top, right, bottom border lies inside the image
    mirrored: bool = False  # the image was padded by reflection: only frame-cut faces count


@dataclass
class Detections:
    """Detections in image pixels: boxes (N, 4) x0 y0 x1 y1, scores (N,), keypoints (N, 6, 2)."""

    boxes: np.ndarray
    scores: np.ndarray
    keypoints: np.ndarray

    @classmethod
    def empty(cls) -> "Detections":
        return cls(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2)))

    def __len__(self) -> int:
        return len(self.scores)

    def take(self, keep) -> "Detections":
        return Detections(self.boxes[keep], self.scores[keep], self.keypoints[keep])


def pyramid_scales(width: int, height: int, min_size: float) -> list[float]:
    """Scales (level px per image px) of the tiled levels, finest first; [] when the whole-image
    pass already covers ``min_size``."""
    base = FULL_RANGE.input_size / max(width, height)
    target = min(TILE_FACE_PX / max(min_size, 1.0), MAX_UPSCALE)
    scales: list[float] = []
    scale = target
    while scale > base * 1.25:
        scales.append(scale)
        scale /= LEVEL_RATIO
    return scales


def _positions(length: int, size: int, overlap: int) -> list[int]:
    if length <= size:
        return [0]
    count = math.ceil((length - size) / (size - overlap)) + 1
    return [round(i * (length - size) / (count - 1)) for i in range(count)]


def _letterbox(image: np.ndarray, scale_to_image: tuple[float, float], spec: DetectorSpec, *, mirror_pad: float = 0.0) -> Tile:
    """Whole ``image`` (already reduced by ``scale_to_image`` = (kx, ky)) fitted into the detector
    square.

    With ``mirror_pad`` the image is first extended on every side by that fraction of its long side
    with its own reflection: a face cut by the frame becomes a roughly symmetric whole face the
    detectors recognise (only detections crossing the frame are kept from such a pass).
    """
    size = spec.input_size
    pad = 0
    if mirror_pad:
        pad = int(round(mirror_pad * max(image.shape[:2])))
        image = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    h, w = image.shape[:2]
    fit = size / max(w, h)
    nw, nh = max(1, round(w * fit)), max(1, round(h * fit))
    small = resize(image, nw, nh)
    ox, oy = (size - nw) // 2, (size - nh) // 2
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[oy : oy + nh, ox : ox + nw] = small
    fx, fy = nw / w, nh / h
    kx, ky = scale_to_image[0] * fx, scale_to_image[1] * fy
    offset = (-float(ox) - pad * fx, -float(oy) - pad * fy)
    return Tile(spec, pixels, offset, (kx, ky), (False, False, False, False), mirrored=bool(pad))


def prepare_detection(image, min_size: float | None = None) -> list[Tile]:
    """Detector inputs for ``image`` (RGB array or :class:`~engine.faces.image.Pyramid`): the
    letterboxed image for the full-range and short-range models (plain, and reflection-padded for
    faces cut by the frame), then full-range tiles of each pyramid level
    :func:`pyramid_scales` asks for."""
    pyramid = image if isinstance(image, Pyramid) else Pyramid(np.asarray(image))
    h, w = pyramid.shape[:2]
    if min_size is None:
        min_size = default_min_size(w, h)
    size = FULL_RANGE.input_size
    # Whole-image passes work on a copy about twice the detector's size (cheap for 4K inputs).
    fit = min(1.0, 2 * size / max(w, h))
    reduced, kx, ky = pyramid.scaled(fit)
    tiles = [
        _letterbox(reduced, (kx, ky), FULL_RANGE),
        _letterbox(reduced, (kx, ky), SHORT_RANGE),
        _letterbox(reduced, (kx, ky), FULL_RANGE, mirror_pad=MIRROR_PAD),
        _letterbox(reduced, (kx, ky), SHORT_RANGE, mirror_pad=MIRROR_PAD),
    ]
    for scale in pyramid_scales(w, h, min_size):
        level, kx, ky = pyramid.scaled(scale)
        lh, lw = level.shape[:2]
        for y in _positions(lh, size, TILE_OVERLAP):
            for x in _positions(lw, size, TILE_OVERLAP):
                crop = level[y : y + size, x : x + size]
                pixels = crop
                if crop.shape[:2] != (size, size):
                    pixels = np.zeros((size, size, 3), np.uint8)
                    pixels[: crop.shape[0], : crop.shape[1]] = crop
                inner = (x > 0, y > 0, x + size < lw, y + size < lh)
                tiles.append(Tile(FULL_RANGE, np.ascontiguousarray(pixels), (float(x), float(y)), (kx, ky), inner))
    return tiles


def to_tensor(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 NHWC in [-1, 1] (what both BlazeFace models expect)."""
    return (pixels.astype(np.float32) * (2.0 / 255.0) - 1.0)[None]


def forward_detector(runner, tile: Tile) -> tuple[np.ndarray, np.ndarray]:
    """Run one detector on one tile: (regressors (N, 16), logits (N,))."""
    outputs = runner.run(to_tensor(tile.pixels))
    regressors = next(o for o in outputs if o.shape[-1] == 16)
    logits = next(o for o in outputs if o.shape[-1] == 1)
    return regressors.reshape(-1, 16), logits.reshape(-1)


def decode_tile(
    tile: Tile,
    regressors: np.ndarray,
    logits: np.ndarray,
    min_score: float,
    image_size: tuple[int, int] | None = None,
) -> Detections:
    """Candidates of one tile above ``min_score``, in image pixels; those cut by an inner tile
    border are dropped (they are found whole in a neighbouring tile or a coarser level)."""
    spec = tile.spec
    scores = sigmoid_scores(logits, spec.score_clip)
    keep = np.flatnonzero(scores >= min_score)
    if keep.size == 0:
        return Detections.empty()
    anchors = anchors_for(spec)[keep]
    boxes, keypoints = decode_boxes(regressors[keep], anchors, spec.input_size)
    size = float(spec.input_size)
    boxes = boxes.astype(np.float64) * size
    keypoints = keypoints.astype(np.float64) * size
    left, top, right, bottom = tile.inner
    cut = np.zeros(len(keep), bool)
    if left:
        cut |= boxes[:, 0] < EDGE_MARGIN
    if top:
        cut |= boxes[:, 1] < EDGE_MARGIN
    if right:
        cut |= boxes[:, 2] > size - EDGE_MARGIN
    if bottom:
        cut |= boxes[:, 3] > size - EDGE_MARGIN
    ox, oy = tile.offset
    kx, ky = tile.scale
    boxes[:, [0, 2]] = (boxes[:, [0, 2]] + ox) / kx
    boxes[:, [1, 3]] = (boxes[:, [1, 3]] + oy) / ky
    keypoints[..., 0] = (keypoints[..., 0] + ox) / kx
    keypoints[..., 1] = (keypoints[..., 1] + oy) / ky
    ok = ~cut
    if tile.mirrored and image_size is not None:
        ok &= _crosses_frame(boxes, image_size)
    return Detections(boxes[ok], scores[keep][ok].astype(np.float64), keypoints[ok])


def _crosses_frame(boxes: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """Boxes cut by the image frame with enough of them inside it (not a reflection ghost)."""
    w, h = image_size
    crosses = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w) | (boxes[:, 3] > h)
    iw = np.clip(np.minimum(boxes[:, 2], w) - np.maximum(boxes[:, 0], 0), 0, None)
    ih = np.clip(np.minimum(boxes[:, 3], h) - np.maximum(boxes[:, 1], 0), 0, None)
    area = np.clip(boxes[:, 2] - boxes[:, 0], 1e-9, None) * np.clip(boxes[:, 3] - boxes[:, 1], 1e-9, None)
    return crosses & (iw * ih >= MIRROR_INSIDE * area)


def merge_detections(parts: list[Detections], *, iou_threshold: float = NMS_IOU) -> Detections:
    """Weighted NMS over all candidates, then drop boxes lying mostly inside a larger, higher
    scoring detection (a facial part detected as a face at a fine scale)."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return Detections.empty()
    boxes = np.concatenate([p.boxes for p in parts])
    scores = np.concatenate([p.scores for p in parts])
    keypoints = np.concatenate([p.keypoints for p in parts])
    boxes, scores, keypoints = weighted_nms(boxes, scores, keypoints, iou_threshold=iou_threshold)
    merged = Detections(boxes, scores, keypoints)
    return suppress_contained(merged)


def suppress_contained(dets: Detections, fraction: float = CONTAINED) -> Detections:
    if len(dets) < 2:
        return dets
    boxes = dets.boxes
    areas = np.clip(boxes[:, 2] - boxes[:, 0], 0, None) * np.clip(boxes[:, 3] - boxes[:, 1], 0, None)
    keep = np.ones(len(dets), bool)
    for i in range(len(dets)):
        for j in range(len(dets)):
            if i == j or not keep[j] or areas[j] < 2.0 * areas[i]:
                continue
            ix = min(boxes[i, 2], boxes[j, 2]) - max(boxes[i, 0], boxes[j, 0])
            iy = min(boxes[i, 3], boxes[j, 3]) - max(boxes[i, 1], boxes[j, 1])
            if ix > 0 and iy > 0 and ix * iy > fraction * areas[i] and dets.scores[j] >= dets.scores[i] - 0.1:
                keep[i] = False
                break
    return dets.take(keep)


def normalize_detections(
    tiles: list[Tile],
    raw: list[tuple[np.ndarray, np.ndarray]],
    *,
    min_score: float,
    image_size: tuple[int, int],
) -> Detections:
    """Decode every tile's raw output and merge them into one set of detections.
    ``image_size`` is (width, height) of the analysed image."""
    parts = [decode_tile(tile, reg, logit, min_score, image_size) for tile, (reg, logit) in zip(tiles, raw)]
    return merge_detections(parts)


__all__ = [
    "Detections",
    "Tile",
    "box_iou",
    "default_min_size",
    "decode_tile",
    "forward_detector",
    "merge_detections",
    "normalize_detections",
    "prepare_detection",
    "pyramid_scales",
]
