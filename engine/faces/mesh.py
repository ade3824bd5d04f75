"""468-point face mesh (MediaPipe face_landmark) on a rotation-aligned square crop.

Pipeline per face: :func:`roi_from_detection` (square around the box, rolled by the detector's
eye keypoints) -> :func:`prepare_mesh` (warp to 192x192) -> :func:`forward_mesh` (the only place
the mesh model runs) -> :func:`normalize_mesh` (points back to image pixels, presence score).
A second pass re-centres the crop on the first pass's mesh (:func:`roi_from_landmarks`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .image import apply_affine, invert_affine, similarity_matrix, warp_crop

MESH_MODEL = "face_landmark.tflite"
MESH_SIZE = 192
NUM_LANDMARKS = 468
ROI_SCALE = 1.5  # crop side = 1.5 x face extent (MediaPipe's setting for this model)
# Mesh indices used to orient the crop: outer corners of the subject's right and left eye.
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263


@dataclass(frozen=True)
class Roi:
    """A rotated square in image pixels: centre (x, y), side, and angle (radians, image y down)
    of the subject's right-to-left eye direction."""

    center: tuple[float, float]
    size: float
    angle: float

    def matrix(self, out_size: int = MESH_SIZE) -> np.ndarray:
        return similarity_matrix(self.center, self.size, self.angle, out_size)


def roi_from_detection(box, keypoints) -> Roi:
    """MediaPipe's detection -> ROI rule: box centre, side = 1.5 x the box's long side, angle from
    the right-eye to the left-eye keypoint."""
    x0, y0, x1, y1 = (float(v) for v in box)
    kp = np.asarray(keypoints, dtype=np.float64)
    dx, dy = kp[1] - kp[0]
    angle = math.atan2(dy, dx) if (dx or dy) else 0.0
    size = max(x1 - x0, y1 - y0) * ROI_SCALE
    return Roi(((x0 + x1) / 2.0, (y0 + y1) / 2.0), max(size, 1.0), angle)


def roi_from_landmarks(landmarks: np.ndarray, scale: float = ROI_SCALE) -> Roi:
    """ROI around a mesh: angle from the outer eye corners, centre and side from the mesh's bounding
    box measured in that rotated frame."""
    pts = np.asarray(landmarks, dtype=np.float64)[:, :2]
    dx, dy = pts[LEFT_EYE_OUTER] - pts[RIGHT_EYE_OUTER]
    angle = math.atan2(dy, dx) if (dx or dy) else 0.0
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, s], [-s, c]])  # image -> face-aligned frame
    local = pts @ rot.T
    lo, hi = local.min(axis=0), local.max(axis=0)
    centre_local = (lo + hi) / 2.0
    centre = rot.T @ centre_local
    size = float(max(hi - lo)) * scale
    return Roi((float(centre[0]), float(centre[1])), max(size, 1.0), angle)


def prepare_mesh(rgb, roi: Roi) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(input tensor (1, 192, 192, 3) in [0, 1], the uint8 crop, image->crop affine) for an RGB
    array or a :class:`~engine.faces.image.Pyramid` of one."""
    matrix = roi.matrix(MESH_SIZE)
    crop = warp_crop(rgb, matrix, MESH_SIZE)
    tensor = crop.astype(np.float32)[None] * (1.0 / 255.0)
    return tensor, crop, matrix


def forward_mesh(runner, tensor: np.ndarray) -> tuple[np.ndarray, float]:
    """Run the mesh model: (raw landmarks (468, 3) in crop pixels, presence logit)."""
    outputs = runner.run(tensor)
    points = next(o for o in outputs if o.size == NUM_LANDMARKS * 3)
    logit = next(o for o in outputs if o.size == 1)
    return points.reshape(NUM_LANDMARKS, 3).astype(np.float64), float(logit.reshape(-1)[0])


def normalize_mesh(raw: np.ndarray, logit: float, matrix: np.ndarray) -> tuple[np.ndarray, float]:
    """Crop-pixel mesh -> image pixels (x, y, z; z scaled like x/y), and presence probability."""
    inverse = invert_affine(matrix)
    xy = apply_affine(inverse, raw[:, :2])
    scale = math.sqrt(abs(np.linalg.det(inverse[:, :2])))
    landmarks = np.empty((len(raw), 3), dtype=np.float64)
    landmarks[:, :2] = xy
    landmarks[:, 2] = raw[:, 2] * scale
    presence = 1.0 / (1.0 + math.exp(-max(min(logit, 60.0), -60.0)))
    return landmarks, presence
