"""Measurements on a 468-point face mesh: head pose, eye and mouth opening, quality.

All functions take landmarks in image pixels (x right, y down, z depth: smaller = nearer), as
:mod:`engine.faces.mesh` produces them, and are pure numpy (testable without models).
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from .types import Pose

# Mesh indices (MediaPipe face-mesh topology; "right"/"left" are the subject's).
FOREHEAD, CHIN, NOSE_TIP, SUBNASALE = 10, 152, 1, 2
# Symmetric (subject's right, subject's left) pairs on rigid parts of the face.
SYMMETRIC_PAIRS = ((33, 263), (133, 362), (234, 454), (127, 356), (93, 323), (70, 300))
EYE_CORNERS = (33, 133, 263, 362)
# Eyes: (corner, corner) and lid pairs (upper, lower).
RIGHT_EYE = ((33, 133), ((160, 144), (159, 145), (158, 153)))
LEFT_EYE = ((263, 362), ((387, 373), (386, 374), (385, 380)))
# Mouth: outer corners and inner-lip pairs (upper, lower).
MOUTH_CORNERS = (61, 291)
INNER_LIPS = ((82, 87), (13, 14), (312, 317))
# The mesh's forehead-to-subnasale line leans back by about this much on an upright, frontal face
# (median over frontal portraits of the corpus); removed so such a face reads pitch ~0.
PITCH_BIAS_DEG = 6.0


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-12 else v


def head_axes(landmarks: np.ndarray) -> np.ndarray:
    """Rotation matrix whose columns are the head's right-to-left (x), chin-to-forehead (y) and
    out-of-the-face (z) axes, in a camera frame with X right, Y up, Z towards the viewer."""
    p = np.asarray(landmarks, dtype=np.float64)
    cam = np.stack([p[:, 0], -p[:, 1], -p[:, 2]], axis=1)  # image (y down, z away) -> camera
    right = cam[[a for a, _ in SYMMETRIC_PAIRS]].mean(axis=0)
    left = cam[[b for _, b in SYMMETRIC_PAIRS]].mean(axis=0)
    ex = _unit(left - right)
    up = cam[FOREHEAD] - cam[SUBNASALE]
    ey = _unit(up - np.dot(up, ex) * ex)
    ez = np.cross(ex, ey)
    rotation = np.stack([ex, ey, ez], axis=1)
    if PITCH_BIAS_DEG:
        rotation = rotation @ _rx(-math.radians(PITCH_BIAS_DEG))
    return rotation


def _rx(b: float) -> np.ndarray:
    c, s = math.cos(b), math.sin(b)
    return np.array([[1, 0, 0], [0, c, s], [0, -s, c]])


def _ry(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def _rz(c_: float) -> np.ndarray:
    c, s = math.cos(c_), math.sin(c_)
    return np.array([[c, s, 0], [-s, c, 0], [0, 0, 1]])


def rotation_from_pose(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Head rotation for a pose in degrees: R = Rz(roll) Ry(yaw) Rx(pitch) (camera X right, Y up,
    Z towards the viewer; see :class:`~engine.faces.types.Pose` for the signs)."""
    return _rz(math.radians(roll)) @ _ry(math.radians(yaw)) @ _rx(math.radians(pitch))


def pose_from_rotation(rotation: np.ndarray) -> Pose:
    """Inverse of :func:`rotation_from_pose`."""
    r = np.asarray(rotation, dtype=np.float64)
    yaw = math.asin(max(-1.0, min(1.0, -r[2, 0])))
    pitch = math.atan2(-r[2, 1], r[2, 2])
    roll = math.atan2(-r[1, 0], r[0, 0])
    return Pose(math.degrees(yaw), math.degrees(pitch), math.degrees(roll))


def head_pose(landmarks: np.ndarray) -> Pose:
    """Yaw, pitch, roll (degrees) of a mesh; see :class:`~engine.faces.types.Pose`."""
    return pose_from_rotation(head_axes(landmarks))


def _dist(p: np.ndarray, a: int, b: int) -> float:
    return float(np.linalg.norm(p[a] - p[b]))


def _opening(p: np.ndarray, corners: tuple[int, int], lids) -> float:
    width = _dist(p, *corners)
    if width <= 1e-9:
        return 0.0
    return float(np.mean([_dist(p, a, b) for a, b in lids]) / width)


def eye_openness(landmarks: np.ndarray) -> tuple[float, float]:
    """(subject's left, subject's right) eye opening: lid gap / eye width, in 3-D so that head
    rotation does not change it. About 0.25-0.35 open, below ~0.12 closed."""
    p = np.asarray(landmarks, dtype=np.float64)
    return _opening(p, *LEFT_EYE), _opening(p, *RIGHT_EYE)


def mouth_openness(landmarks: np.ndarray) -> float:
    """Inner-lip gap / mouth width (3-D): ~0 closed, ~0.2 talking, 0.5+ wide open."""
    p = np.asarray(landmarks, dtype=np.float64)
    return _opening(p, MOUTH_CORNERS, INNER_LIPS)


def laplacian_sharpness(gray_or_rgb: np.ndarray) -> float:
    """Variance of the Laplacian of the central half of a face crop (the face, not background)."""
    img = np.asarray(gray_or_rgb)
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    h, w = img.shape[:2]
    centre = img[h // 4 : h - h // 4, w // 4 : w - w // 4]
    if centre.size == 0:
        return 0.0
    return float(cv2.Laplacian(centre, cv2.CV_64F).var())


def _smoothstep(x: float, lo: float, hi: float) -> float:
    t = min(max((x - lo) / (hi - lo), 0.0), 1.0)
    return t * t * (3 - 2 * t)


SHARPNESS_HALF = 60.0  # Laplacian variance (on the 192 px crop) that scores 0.5
SIZE_RANGE = (24.0, 112.0)  # face size (px) from useless to fully usable


def quality_score(*, score: float, size: float, sharpness: float, pose: Pose | None) -> float:
    """0-1 fitness of a face for swapping/recognition: geometric mean of detection confidence,
    size (24 px -> 0, 112 px+ -> 1), sharpness (Laplacian variance on the aligned crop) and
    frontalness (cos yaw x cos pitch). Each term is floored at 0.02 so one bad term lowers the
    score without erasing the others' ranking."""
    det = min(max(score, 0.0), 1.0)
    size_term = _smoothstep(size, *SIZE_RANGE)
    sharp = sharpness / (sharpness + SHARPNESS_HALF) if sharpness > 0 else 0.0
    if pose is None:
        frontal = 0.5
    else:
        frontal = max(math.cos(math.radians(pose.yaw)) * math.cos(math.radians(pose.pitch)), 0.0)
    terms = [max(t, 0.02) for t in (det, size_term, sharp, frontal)]
    return float(np.prod(terms) ** (1.0 / len(terms)))
