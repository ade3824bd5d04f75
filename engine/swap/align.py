"""Five-point face alignment for the ONNX face models (swappers, recognisers, enhancers, masks).

Every neural face model works on a square crop in which the eyes, nose tip and mouth corners sit
at fixed positions (its *template*). This module turns a 468-point MediaPipe mesh into those five
points, estimates the similarity transform frame -> crop, warps the crop out, and blends a
processed crop back into the frame through the inverse transform.

Templates are in [0, 1] crop coordinates (multiply by the crop size). Values are the published
ones (FaceFusion ``face_helper.py`` ``WARP_TEMPLATE_SET``; ``arcface_112_v2`` is InsightFace's
``arcface_dst`` 112 px template / 112, ``arcface_112_v1`` the older 112 px template from
InsightFace's ``face_align`` used by SimSwap and GHOST, ``ffhq_512`` the FFHQ alignment used by
GFPGAN / CodeFormer at 512 px). Point order is InsightFace's: subject's right eye (viewer's left),
subject's left eye, nose tip, subject's right mouth corner, subject's left mouth corner.
"""
from __future__ import annotations

import cv2
import numpy as np

TEMPLATES: dict[str, np.ndarray] = {
    name: np.asarray(points, dtype=np.float32)
    for name, points in {
        "arcface_112_v1": [
            [0.35473214, 0.45658929],
            [0.64526786, 0.45658929],
            [0.50000000, 0.61154464],
            [0.37913393, 0.77687500],
            [0.62086607, 0.77687500],
        ],
        "arcface_112_v2": [
            [0.34191607, 0.46157411],
            [0.65653393, 0.45983393],
            [0.50022500, 0.64050536],
            [0.37097589, 0.82469196],
            [0.63151696, 0.82325089],
        ],
        "arcface_128": [
            [0.36167656, 0.40387734],
            [0.63696719, 0.40235469],
            [0.50019687, 0.56044219],
            [0.38710391, 0.72160547],
            [0.61507734, 0.72034453],
        ],
        "ffhq_512": [
            [0.37691676, 0.46864664],
            [0.62285697, 0.46912813],
            [0.50123859, 0.61331904],
            [0.39308822, 0.72541100],
            [0.61150205, 0.72490465],
        ],
    }.items()
}

# MediaPipe face-mesh indices (canonical face model topology). Eye centres are the mean of the
# 16-point eyelid contour (the mesh has no iris points without refinement); 1 is the nose tip;
# 61 / 291 are the mouth corners on the subject's right / left.
RIGHT_EYE_CONTOUR = (7, 33, 246, 161, 160, 159, 158, 157, 173, 133, 155, 154, 153, 145, 144, 163)
LEFT_EYE_CONTOUR = (249, 263, 466, 388, 387, 386, 385, 384, 398, 362, 382, 381, 380, 374, 373, 390)
NOSE_TIP = 1
MOUTH_RIGHT, MOUTH_LEFT = 61, 291


def five_points(landmarks: np.ndarray) -> np.ndarray:
    """(468, 2|3) MediaPipe mesh in pixels -> (5, 2) float32 points in InsightFace order."""
    p = np.asarray(landmarks, dtype=np.float64)
    if p.ndim != 2 or p.shape[0] < 468 or p.shape[1] not in (2, 3):
        raise ValueError(f"five_points needs a (468, 2|3) face mesh, got shape {p.shape}")
    p = p[:, :2]
    points = np.stack([
        p[list(RIGHT_EYE_CONTOUR)].mean(axis=0),
        p[list(LEFT_EYE_CONTOUR)].mean(axis=0),
        p[NOSE_TIP],
        p[MOUTH_RIGHT],
        p[MOUTH_LEFT],
    ])
    return points.astype(np.float32)


def template_points(template: str, size: int, scale: float = 1.0) -> np.ndarray:
    """The template's five points in pixels of a ``size`` crop. ``scale`` > 1 widens the field of
    view around the face (the points move toward the crop centre by 1/scale)."""
    if template not in TEMPLATES:
        raise ValueError(f"Unknown alignment template {template!r}; known: {', '.join(sorted(TEMPLATES))}")
    if size <= 0 or not scale > 0:
        raise ValueError(f"Crop size and scale must be positive (got size={size}, scale={scale})")
    return ((TEMPLATES[template] - 0.5) / float(scale) + 0.5) * float(size)


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src onto dst
    (Umeyama 1991, without reflection); returns the 2x3 matrix."""
    src_mean, dst_mean = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - src_mean, dst - dst_mean
    var = (s ** 2).sum() / len(src)
    if not np.isfinite(var) or var < 1e-12:
        raise ValueError("The five face points are degenerate (all at one place); cannot align")
    cov = d.T @ s / len(src)
    u, sigma, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = float((sigma * sign).sum() / var)
    matrix = np.zeros((2, 3), dtype=np.float64)
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def align_matrix(points: np.ndarray, template: str, size: int, scale: float = 1.0) -> np.ndarray:
    """2x3 float64 affine (similarity) mapping frame pixels onto the ``size`` x ``size`` crop in
    which ``points`` (5, 2) land on ``template``."""
    src = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if src.shape != (5, 2) or not np.isfinite(src).all():
        raise ValueError(f"align_matrix needs five finite (x, y) points, got shape {src.shape}")
    return _similarity(src, template_points(template, size, scale).astype(np.float64))


def affine_scale(affine: np.ndarray) -> float:
    """The uniform scale factor of a similarity affine (crop pixels per frame pixel)."""
    return float(np.sqrt(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:, :2]))))


def invert(affine: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(affine, dtype=np.float64))


def warp_face(
    frame: np.ndarray, points: np.ndarray, template: str, size: int, scale: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Cut the aligned face out of ``frame`` (H x W x 3 uint8 RGB).

    Returns the crop (size x size x 3, same dtype) and the 2x3 affine frame -> crop. When the crop
    is much smaller than the face in the frame, the region is first reduced with area averaging so
    the crop is not aliased (a plain affine warp would skip pixels).
    """
    affine = align_matrix(points, template, size, scale)
    return warp_with(frame, affine, size), affine


def warp_with(frame: np.ndarray, affine: np.ndarray, size: int) -> np.ndarray:
    """Warp ``frame`` by a frame -> crop affine into a size x size crop (edge pixels replicated)."""
    if frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"warp_face needs an H x W x 3 image, got shape {frame.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    factor = affine_scale(affine)
    if factor < 0.5:
        # Reduce the region the crop covers with INTER_AREA to about the crop's resolution, then
        # warp with the remaining transform.
        x0, y0, x1, y1 = _frame_box(invert(affine), size, frame.shape, margin=2)
        if x1 > x0 and y1 > y0:
            region = frame[y0:y1, x0:x1]
            rw = max(1, int(round((x1 - x0) * factor * 1.5)))
            rh = max(1, int(round((y1 - y0) * factor * 1.5)))
            small = cv2.resize(region, (rw, rh), interpolation=cv2.INTER_AREA)
            sx, sy = rw / (x1 - x0), rh / (y1 - y0)
            # small pixel (u, v) <- frame (x0 + (u + .5) / sx - .5, ...)
            to_frame = np.array([[1 / sx, 0, x0 + 0.5 / sx - 0.5], [0, 1 / sy, y0 + 0.5 / sy - 0.5], [0, 0, 1]])
            combined = affine @ to_frame
            return cv2.warpAffine(small, combined, (size, size), flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpAffine(frame, affine, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def _frame_box(inverse: np.ndarray, size: int, shape, margin: int = 1) -> tuple[int, int, int, int]:
    """Integer box (x0, y0, x1, y1) in the frame covered by the crop square, clipped to the frame."""
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    mapped = corners @ inverse[:, :2].T + inverse[:, 2]
    h, w = shape[:2]
    x0 = int(np.clip(np.floor(mapped[:, 0].min()) - margin, 0, w))
    y0 = int(np.clip(np.floor(mapped[:, 1].min()) - margin, 0, h))
    x1 = int(np.clip(np.ceil(mapped[:, 0].max()) + margin, 0, w))
    y1 = int(np.clip(np.ceil(mapped[:, 1].max()) + margin, 0, h))
    return x0, y0, x1, y1


def paste_back(frame: np.ndarray, crop: np.ndarray, affine: np.ndarray, mask: np.ndarray) -> tuple[int, int, int, int]:
    """Blend ``crop`` (size x size x 3) into ``frame`` in place through the inverse of ``affine``
    (frame -> crop), weighted by ``mask`` (size x size float 0..1). Only the frame region the crop
    covers is touched; returns that box (x0, y0, x1, y1), empty (x0 == x1) when off-frame."""
    size = crop.shape[0]
    if crop.shape[:2] != (size, size) or mask.shape[:2] != (size, size):
        raise ValueError(f"paste_back needs a square crop and a mask of the same size, got {crop.shape} and {mask.shape}")
    inverse = invert(affine)
    x0, y0, x1, y1 = _frame_box(inverse, size, frame.shape)
    if x1 <= x0 or y1 <= y0:
        return x0, y0, x0, y0
    shifted = inverse.copy()
    shifted[:, 2] -= (x0, y0)
    box_size = (x1 - x0, y1 - y0)
    pasted = cv2.warpAffine(crop, shifted, box_size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    weight = cv2.warpAffine(np.clip(mask.astype(np.float32), 0.0, 1.0), shifted, box_size, flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    region = frame[y0:y1, x0:x1]
    w = weight[..., None]
    blended = region.astype(np.float32) * (1.0 - w) + pasted.astype(np.float32) * w
    if np.issubdtype(frame.dtype, np.integer):
        info = np.iinfo(frame.dtype)
        blended = np.clip(np.rint(blended), info.min, info.max)
    # Only pixels the mask reaches change (weight 0 leaves a pixel bit-exact).
    changed = weight > 0
    region[changed] = blended[changed].astype(frame.dtype)
    return x0, y0, x1, y1


def box_mask(size: int, blur: float = 0.3, padding=(0, 0, 0, 0)) -> np.ndarray:
    """Soft rectangle (size x size float32 0..1): 1 inside, fading to 0 at the crop edges.

    ``blur`` is the fade width as a fraction of half the crop; ``padding`` (top, right, bottom,
    left) in percent of the crop cuts extra margin off each side (FaceFusion's face-mask-blur and
    face-mask-padding semantics)."""
    if size <= 0:
        raise ValueError(f"box_mask size must be positive, got {size}")
    if not 0.0 <= blur <= 1.0:
        raise ValueError(f"box_mask blur must be within 0..1, got {blur}")
    if len(padding) != 4 or any(not 0 <= p < 100 for p in padding):
        raise ValueError(f"box_mask padding must be four percentages (top, right, bottom, left) in 0..100, got {padding}")
    blur_px = int(size * 0.5 * blur)
    edge = max(blur_px // 2, 1)
    top, right, bottom, left = (max(edge, int(size * p / 100)) for p in padding)
    mask = np.zeros((size, size), dtype=np.float32)
    mask[top:max(top, size - bottom), left:max(left, size - right)] = 1.0
    if blur_px > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), blur_px * 0.25)
    return mask
