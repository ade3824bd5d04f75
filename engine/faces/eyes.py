"""Eye refinement with MediaPipe's iris model: 71 eye-contour points (eyelids first) and 5 iris
points per eye, on a 64x64 crop around each eye of the face mesh.

The model is trained on the eye on the image's left (the subject's right eye); the other eye's
crop is mirrored before inference and the points mirrored back. Eyelids from this model are
sharper than the mesh's, so eye openness is measured on them.
Pipeline: :func:`prepare_eyes` -> :func:`forward_iris` (the only place the model runs) ->
:func:`normalize_eye`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .image import apply_affine, invert_affine, similarity_matrix, warp_crop

IRIS_MODEL = "iris_landmark.tflite"
EYE_SIZE = 64
EYE_ROI_SCALE = 2.3  # crop side = 2.3 x the eye-corner distance (MediaPipe's setting)
# (outer/inner corner the crop is oriented from -> to, mirrored?) for (subject's left, right) eye;
# the direction always points to the image's right so the crop is upright.
EYES = (((362, 263), True), ((33, 133), False))
# Contour indices: 0 and 8 are the eye corners, 1-7 the lower lid and 9-15 the upper lid (same
# order as the mesh's lid points); lid pairs (upper, lower) measured for openness:
CONTOUR_CORNERS = (0, 8)
CONTOUR_LIDS = ((11, 3), (12, 4), (13, 5))


@dataclass(frozen=True)
class EyeInput:
    tensor: np.ndarray  # (1, 64, 64, 3) float32 in [0, 1]
    matrix: np.ndarray  # image -> crop affine (before mirroring)
    mirrored: bool
    scale: float  # image pixels per crop pixel


def prepare_eyes(rgb, landmarks: np.ndarray) -> list[EyeInput]:
    """Crops for (subject's left, subject's right) eye from mesh ``landmarks``."""
    inputs = []
    for (a, b), mirrored in EYES:
        p0, p1 = landmarks[a, :2], landmarks[b, :2]
        width = max(float(np.linalg.norm(p1 - p0)), 1.0)
        angle = math.atan2(p1[1] - p0[1], p1[0] - p0[0])
        side = EYE_ROI_SCALE * width
        matrix = similarity_matrix((p0 + p1) / 2.0, side, angle, EYE_SIZE)
        crop = warp_crop(rgb, matrix, EYE_SIZE)
        if mirrored:
            crop = crop[:, ::-1]
        tensor = np.ascontiguousarray(crop, dtype=np.float32)[None] * (1.0 / 255.0)
        inputs.append(EyeInput(tensor, matrix, mirrored, side / EYE_SIZE))
    return inputs


def forward_iris(runner, data: EyeInput) -> tuple[np.ndarray, np.ndarray]:
    """(contour (71, 3), iris (5, 3)) in crop pixels, as the model outputs them."""
    outputs = runner.run(data.tensor)
    contour = next(o for o in outputs if o.size == 71 * 3).reshape(71, 3).astype(np.float64)
    iris = next(o for o in outputs if o.size == 5 * 3).reshape(5, 3).astype(np.float64)
    return contour, iris


def normalize_eye(contour: np.ndarray, iris: np.ndarray, data: EyeInput) -> tuple[np.ndarray, np.ndarray]:
    """Crop points -> image pixels (x, y, z with z in image pixels)."""
    inverse = invert_affine(data.matrix)
    out = []
    for points in (contour, iris):
        pts = np.array(points, dtype=np.float64)
        if data.mirrored:
            pts[:, 0] = EYE_SIZE - pts[:, 0]
        image = np.empty_like(pts)
        image[:, :2] = apply_affine(inverse, pts[:, :2])
        image[:, 2] = pts[:, 2] * data.scale
        out.append(image)
    return out[0], out[1]


def contour_openness(contour: np.ndarray) -> float:
    """Lid gap / eye width from one eye's contour (3-D, like the mesh measure)."""
    c = np.asarray(contour, dtype=np.float64)
    width = float(np.linalg.norm(c[CONTOUR_CORNERS[0]] - c[CONTOUR_CORNERS[1]]))
    if width <= 1e-9:
        return 0.0
    return float(np.mean([np.linalg.norm(c[u] - c[l]) for u, l in CONTOUR_LIDS]) / width)
