"""Identity embeddings: dlib's 5-point shape predictor + ResNet face descriptor (128-d; the same
person is usually < 0.6 apart in Euclidean distance).

The dlib rectangle and a fallback set of 5 points come from the face mesh, so embedding works for
any face the mesh found (including ones dlib's own detector would miss). Pipeline:
:func:`prepare_embedding` (crop + scale the face region, place the rectangle, predict the 5
points and check them against the mesh) -> :func:`forward_embedding` (the only place the ResNet
runs) -> :func:`normalize_embedding`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .image import resize

SHAPE_MODEL = "shape_predictor_5_face_landmarks.dat"
ENCODER_MODEL = "dlib_face_recognition_resnet_model_v1.dat"
EMBEDDING_SIZE = 128
SAME_PERSON = 0.6  # dlib's published threshold

# dlib's 5-point order: subject's left eye outer, left eye inner, right eye outer, right eye
# inner, base of the nose; and the mesh points at those places.
DLIB_FIVE_FROM_MESH = (263, 362, 33, 133, 2)
RECT_SIDE_PER_EYE_SPAN = 1.7  # dlib's frontal-detector box side / outer-eye-corner distance
WORK_FACE_PX = 300.0  # faces larger than this are reduced before dlib sees them
FIVE_POINT_TOLERANCE = 0.2  # x eye span: predicted points further than this from the mesh are rejected


@dataclass
class EmbeddingInput:
    image: np.ndarray  # uint8 RGB region the descriptor is computed on
    rect: tuple[int, int, int, int]  # left, top, right, bottom in ``image``
    points: np.ndarray  # (5, 2) in ``image``, dlib order
    from_predictor: bool


def five_points_from_mesh(landmarks: np.ndarray) -> np.ndarray:
    return np.asarray(landmarks, dtype=np.float64)[list(DLIB_FIVE_FROM_MESH), :2]


def rect_from_mesh(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """A square like dlib's frontal detector would put on this face: centred between the eyes'
    and the mouth's centres, side 1.7 x the outer-eye-corner span (measured in 3-D so that a turned
    head does not shrink it)."""
    p = np.asarray(landmarks, dtype=np.float64)
    eyes = p[[33, 133, 263, 362], :2].mean(axis=0)
    mouth = p[[61, 291, 13, 14], :2].mean(axis=0)
    cx, cy = (eyes + mouth) / 2.0
    span = float(np.linalg.norm(p[263] - p[33]))
    half = max(span * RECT_SIDE_PER_EYE_SPAN / 2.0, 4.0)
    return cx - half, cy - half, cx + half, cy + half


def prepare_embedding(rgb: np.ndarray, landmarks: np.ndarray, predictor=None) -> EmbeddingInput:
    """Cut the face's neighbourhood out of ``rgb`` (reduced to ~300 px faces), place the dlib
    rectangle, and predict the 5 points with ``predictor`` (mesh points when it disagrees)."""
    import dlib

    x0, y0, x1, y1 = rect_from_mesh(landmarks)
    side = x1 - x0
    h, w = rgb.shape[:2]
    margin = side  # the chip uses 25% padding; keep plenty of context around the rectangle
    cx0 = max(int(math.floor(x0 - margin)), 0)
    cy0 = max(int(math.floor(y0 - margin)), 0)
    cx1 = min(int(math.ceil(x1 + margin)), w)
    cy1 = min(int(math.ceil(y1 + margin)), h)
    if cx1 - cx0 < 2 or cy1 - cy0 < 2:
        cx0, cy0, cx1, cy1 = 0, 0, w, h
    region = rgb[cy0:cy1, cx0:cx1]
    factor = min(1.0, WORK_FACE_PX / max(side, 1.0))
    if factor < 1.0:
        nw = max(2, int(round(region.shape[1] * factor)))
        nh = max(2, int(round(region.shape[0] * factor)))
        fx, fy = nw / region.shape[1], nh / region.shape[0]
        region = resize(region, nw, nh)
    else:
        fx = fy = 1.0
    region = np.ascontiguousarray(region)

    def local(xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64)
        return np.stack([(xy[..., 0] - cx0) * fx, (xy[..., 1] - cy0) * fy], axis=-1)

    (lx0, ly0), (lx1, ly1) = local(np.array([[x0, y0], [x1, y1]]))
    rect = (int(round(lx0)), int(round(ly0)), int(round(lx1)), int(round(ly1)))
    mesh_points = local(five_points_from_mesh(landmarks))
    points, from_predictor = mesh_points, False
    if predictor is not None:
        shape = predictor(region, dlib.rectangle(*rect))
        predicted = np.array([[shape.part(i).x, shape.part(i).y] for i in range(shape.num_parts)], float)
        span = float(np.linalg.norm(mesh_points[0] - mesh_points[2])) or 1.0
        error = float(np.linalg.norm(predicted - mesh_points, axis=1).mean()) / span
        if predicted.shape == (5, 2) and error <= FIVE_POINT_TOLERANCE:
            points, from_predictor = predicted, True
    return EmbeddingInput(region, rect, points, from_predictor)


def forward_embedding(encoder, data: EmbeddingInput) -> np.ndarray:
    """dlib's ResNet on the aligned chip of ``data`` (dlib's own chip extraction): the raw 128
    floats. ``encoder`` is a :class:`engine.faces.dlib_resnet.DlibResNet` (dlib's weights on
    OpenVINO, ~20x faster than dlib-bin and without holding the GIL)."""
    import dlib

    from .dlib_resnet import chip_from_shape

    rect = dlib.rectangle(*data.rect)
    parts = [dlib.point(int(round(x)), int(round(y))) for x, y in data.points]
    shape = dlib.full_object_detection(rect, parts)
    return encoder.embed_chips(chip_from_shape(data.image, shape)[None])[0]


def normalize_embedding(raw: np.ndarray) -> np.ndarray:
    """dlib descriptors are used as they are (not unit-normalised: the 0.6 threshold assumes
    that); returned as a read-only float32 (128,) array."""
    vector = np.asarray(raw, dtype=np.float32).reshape(EMBEDDING_SIZE).copy()
    vector.flags.writeable = False
    return vector


def embedding_distance(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - np.asarray(b, np.float64)))
