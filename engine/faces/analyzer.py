"""FaceAnalyzer: detection -> mesh -> measurements (-> identity on demand), models loaded once.

Each model step follows prepare_* (pure preprocessing) -> forward_* (the only place a network
runs) -> normalize_* (pure postprocessing); the pure parts live in the sibling modules and are
tested without models.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import numpy as np

from engine.errors import NoFaceFound

from . import detection as det
from . import eyes as eye
from . import mesh as msh
from .anchors import FULL_RANGE, SHORT_RANGE, box_iou
from .geometry import eye_openness, head_pose, laplacian_sharpness, mouth_openness, quality_score
from .identity import (
    ENCODER_MODEL,
    SHAPE_MODEL,
    EmbeddingInput,
    forward_embedding,
    normalize_embedding,
    prepare_embedding,
)
from .image import Pyramid, as_rgb
from .runtime import Runner, dlib_face_encoder, dlib_shape_predictor
from .selection import sort_faces
from .types import Face

CANDIDATE_SCORE = 0.4  # detector score for a candidate; the mesh then confirms or rejects it
MIN_PRESENCE = 0.5  # face-presence probability (mesh model) to accept a face
SECOND_PASS_PRESENCE = 0.1  # below this after the first mesh pass, a candidate is dropped at once
DUPLICATE_IOU = 0.5  # faces whose mesh boxes overlap this much are one face
CONTAINED_FRACTION = 0.7  # ... or when this much of the smaller mesh box lies in the larger


class FaceAnalyzer:
    """Holds the compiled detection, mesh and iris models (the dlib models load on first
    ``embed``). ``iris=False`` measures eye openness on the mesh alone (saves ~1.5 ms per face).

    Use :meth:`default` for the process-wide instance per device. Methods are thread-safe (each
    model's request is serialised); ``timings`` holds the milliseconds of the last ``analyze``
    (``detect_ms``; ``mesh_ms``: mesh passes, eyes and measurements; ``embed_ms``; ``total_ms``).
    """

    _defaults: dict[str, "FaceAnalyzer"] = {}
    _defaults_lock = threading.Lock()

    def __init__(
        self,
        device: str = "CPU",
        *,
        candidate_score: float = CANDIDATE_SCORE,
        min_presence: float = MIN_PRESENCE,
        refine: bool = True,
        iris: bool = True,
    ):
        self.device = device
        self.candidate_score = candidate_score
        self.min_presence = min_presence
        self.refine = refine
        self._detectors = {spec.name: Runner(spec.name, device) for spec in (FULL_RANGE, SHORT_RANGE)}
        self._mesh = Runner(msh.MESH_MODEL, device)
        self._tracking_mesh: Runner | None = None  # see track(fast=True)
        self._iris = Runner(eye.IRIS_MODEL, device) if iris else None
        self._dlib_lock = threading.Lock()
        self.timings: dict[str, float] = {}

    @classmethod
    def default(cls, device: str = "CPU") -> "FaceAnalyzer":
        """The shared analyzer for ``device`` (created on first use, then reused)."""
        with cls._defaults_lock:
            analyzer = cls._defaults.get(device)
            if analyzer is None:
                analyzer = cls._defaults[device] = cls(device)
            return analyzer

    # -- detection ------------------------------------------------------------------------------

    def forward_detector(self, tile: det.Tile) -> tuple[np.ndarray, np.ndarray]:
        return det.forward_detector(self._detectors[tile.spec.name], tile)

    def detect(self, rgb, *, min_size: float | None = None, min_score: float | None = None) -> det.Detections:
        """Raw detector candidates for ``rgb`` (array or Pyramid), before the mesh confirms them:
        boxes, scores, keypoints in image pixels (``min_score`` defaults to the candidate score)."""
        pyramid = rgb if isinstance(rgb, Pyramid) else Pyramid(as_rgb(rgb))
        tiles = det.prepare_detection(pyramid, min_size)
        raw = [self.forward_detector(tile) for tile in tiles]
        score = self.candidate_score if min_score is None else min_score
        h, w = pyramid.shape[:2]
        return det.normalize_detections(tiles, raw, min_score=score, image_size=(w, h))

    # -- mesh -----------------------------------------------------------------------------------

    def forward_mesh(self, tensor: np.ndarray, *, tracking: bool = False) -> tuple[np.ndarray, float]:
        """``tracking``: the video tracker's own one-thread copy of the model. Video work keeps
        both cores busy with decoding, swapping and encoding; a second inference thread there
        only waits for a core (and burns it spinning) while the swap thread needs it."""
        if not tracking or not self.device.upper().startswith("CPU"):
            return msh.forward_mesh(self._mesh, tensor)
        if self._tracking_mesh is None:
            self._tracking_mesh = Runner(msh.MESH_MODEL, self.device, threads=1)
        return msh.forward_mesh(self._tracking_mesh, tensor)

    def mesh(self, rgb, roi: msh.Roi, *, tracking: bool = False) -> tuple[np.ndarray, float, np.ndarray]:
        """One mesh pass on ``roi`` of ``rgb`` (array or Pyramid): (landmarks (468, 3) in image
        pixels, presence, 192 px crop)."""
        tensor, crop, matrix = msh.prepare_mesh(rgb, roi)
        raw, logit = self.forward_mesh(tensor, tracking=tracking)
        landmarks, presence = msh.normalize_mesh(raw, logit, matrix)
        return landmarks, presence, crop

    def _landmarks(self, rgb, roi: msh.Roi, second_pass: bool | None = None, *, tracking: bool = False):
        """Mesh with the optional re-centred second pass; None when it is not a face."""
        landmarks, presence, crop = self.mesh(rgb, roi, tracking=tracking)
        if (self.refine if second_pass is None else second_pass) and presence >= SECOND_PASS_PRESENCE:
            landmarks2, presence2, crop2 = self.mesh(rgb, msh.roi_from_landmarks(landmarks))
            if presence2 >= self.min_presence or presence2 >= presence:
                landmarks, presence, crop = landmarks2, presence2, crop2
        if presence < self.min_presence:
            return None
        return landmarks, presence, crop

    def forward_iris(self, data: eye.EyeInput) -> tuple[np.ndarray, np.ndarray]:
        return eye.forward_iris(self._iris, data)

    def eyes(self, rgb, landmarks: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """(contour (71, 3), iris (5, 3)) in image pixels for the (subject's left, right) eye."""
        return [eye.normalize_eye(*self.forward_iris(data), data) for data in eye.prepare_eyes(rgb, landmarks)]

    def _refine_eyes(self, face: Face, image) -> Face:
        """Eye openness from the iris model's eyelids (when enabled); contours and iris points go
        to ``face.extras['eye_contours']`` / ``['irises']`` as (left, right) pairs."""
        if self._iris is not None and face.landmarks is not None:
            (left_contour, left_iris), (right_contour, right_iris) = self.eyes(image, face.landmarks)
            face.eye_open = (eye.contour_openness(left_contour), eye.contour_openness(right_contour))
            face.extras["eye_contours"] = (left_contour, right_contour)
            face.extras["irises"] = (left_iris, right_iris)
        return face

    def _measure(self, face: Face, landmarks: np.ndarray, presence: float, crop: np.ndarray) -> Face:
        face.landmarks = landmarks
        face.presence = float(presence)
        face.pose = head_pose(landmarks)
        face.eye_open = eye_openness(landmarks)
        face.mouth_open = mouth_openness(landmarks)
        face.sharpness = laplacian_sharpness(crop)
        face.quality = quality_score(score=face.score, size=face.size, sharpness=face.sharpness, pose=face.pose)
        xy = landmarks[:, :2]
        face.extras["mesh_box"] = (float(xy[:, 0].min()), float(xy[:, 1].min()), float(xy[:, 0].max()), float(xy[:, 1].max()))
        return face

    # -- the whole analysis --------------------------------------------------------------------

    def analyze(self, rgb: np.ndarray, *, min_size: float | None = None, embeddings: bool = False) -> list[Face]:
        """Every face in ``rgb`` (HxWx3 uint8 RGB; gray/RGBA accepted), with landmarks, pose,
        openness and quality, sorted and indexed (see :func:`sort_faces`). ``min_size``: the smallest
        face side in pixels to search for (default: 20 px or 5% of the long side)."""
        t0 = time.perf_counter()
        rgb = as_rgb(rgb)
        pyramid = Pyramid(rgb)
        detections = self.detect(pyramid, min_size=min_size)
        t1 = time.perf_counter()
        faces: list[Face] = []
        for box, score, keypoints in zip(detections.boxes, detections.scores, detections.keypoints):
            found = self._landmarks(pyramid, msh.roi_from_detection(box, keypoints))
            if found is None:
                continue
            face = Face(index=-1, box=tuple(float(v) for v in box), score=float(score), keypoints=np.asarray(keypoints, np.float64))
            faces.append(self._measure(face, *found))
        faces = _drop_duplicates(faces)
        for face in faces:
            self._refine_eyes(face, pyramid)
        faces = sort_faces(faces)
        t2 = time.perf_counter()
        if embeddings:
            for face in faces:
                self.embed(rgb, face)
        t3 = time.perf_counter()
        self.timings = {
            "detect_ms": (t1 - t0) * 1e3,
            "mesh_ms": (t2 - t1) * 1e3,
            "embed_ms": (t3 - t2) * 1e3,
            "total_ms": (t3 - t0) * 1e3,
            "candidates": float(len(detections)),
        }
        return faces

    def track(self, rgb: np.ndarray, faces: Sequence[Face], *, fast: bool = False) -> list[Face]:
        """Re-fit faces found in a previous video frame on ``rgb`` from their landmarks alone (no
        detection: two mesh passes and the eyes, ~3-5 ms per face on 2 cores). Returns new Face
        objects (no cached embedding); faces the mesh no longer confirms are dropped; indexes kept.
        Run :meth:`analyze` again on scene cuts or every few frames to pick up new faces.

        ``fast``: one mesh pass (the previous frame's landmarks already centre the crop) and no
        iris model (eye openness then comes from the mesh alone): about half the time; the mesh
        runs on one inference thread (made for video, where the other core is busy)."""
        pyramid = Pyramid(as_rgb(rgb))
        out: list[Face] = []
        for old in faces:
            if old.landmarks is None:
                continue
            found = self._landmarks(
                pyramid, msh.roi_from_landmarks(old.landmarks), second_pass=False if fast else None, tracking=fast)
            if found is None:
                continue
            landmarks = found[0]
            xy = landmarks[:, :2]
            box = _box_from_mesh(xy, old)
            face = Face(index=old.index, box=box, score=old.score, keypoints=_keypoints_from_mesh(landmarks))
            face = self._measure(face, *found)
            out.append(face if fast else self._refine_eyes(face, pyramid))
        return out

    # -- identity -------------------------------------------------------------------------------

    def prepare_embedding(self, rgb: np.ndarray, face: Face) -> EmbeddingInput:
        if face.landmarks is None:
            found = self._landmarks(rgb, msh.roi_from_detection(face.box, face.keypoints))
            if found is None:
                raise NoFaceFound("The face is not clear enough to recognise.")
            self._refine_eyes(self._measure(face, *found), rgb)
        return prepare_embedding(rgb, face.landmarks, dlib_shape_predictor(SHAPE_MODEL))

    def forward_embedding(self, data: EmbeddingInput) -> np.ndarray:
        return forward_embedding(dlib_face_encoder(ENCODER_MODEL), data)

    def embed(self, rgb: np.ndarray, face: Face) -> np.ndarray:
        """The face's 128-d dlib identity embedding, computed once and cached on ``face``."""
        if face.embedding is None:
            rgb = as_rgb(rgb)
            with self._dlib_lock:
                data = self.prepare_embedding(rgb, face)
            face.embedding = normalize_embedding(self.forward_embedding(data))
            face.extras["five_points_from_predictor"] = data.from_predictor
        return face.embedding


def _mesh_box(face: Face) -> np.ndarray:
    return np.asarray(face.extras.get("mesh_box", face.box), dtype=np.float64)


def _same_face(a: Face, b: Face) -> bool:
    """Two meshes on one face: boxes overlap, noses coincide, or one box holds the other (a
    candidate whose mesh spread over a real face and its surroundings)."""
    box_a, box_b = _mesh_box(a), _mesh_box(b)
    if box_iou(box_a, box_b[None])[0] > DUPLICATE_IOU:
        return True
    if a.landmarks is not None and b.landmarks is not None:
        span = min(_eye_span(a.landmarks), _eye_span(b.landmarks))
        if np.linalg.norm(a.landmarks[1, :2] - b.landmarks[1, :2]) < 0.5 * span:
            return True
    ix = min(box_a[2], box_b[2]) - max(box_a[0], box_b[0])
    iy = min(box_a[3], box_b[3]) - max(box_a[1], box_b[1])
    if ix <= 0 or iy <= 0:
        return False
    smaller = min(_area(box_a), _area(box_b))
    return ix * iy > CONTAINED_FRACTION * smaller


def _area(box: np.ndarray) -> float:
    return float(max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0))


def _eye_span(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[263] - landmarks[33]))


def _drop_duplicates(faces: list[Face]) -> list[Face]:
    """Candidates whose meshes landed on the same face: keep the most confident one."""
    ranked = sorted(faces, key=lambda f: (-(f.presence or 0.0) * f.score, f.box))
    kept: list[Face] = []
    for face in ranked:
        if not any(_same_face(face, k) for k in kept):
            kept.append(face)
    return kept


def _keypoints_from_mesh(landmarks: np.ndarray) -> np.ndarray:
    """BlazeFace-style keypoints from mesh points (eye centres, nose tip, mouth centre, ears)."""
    p = landmarks[:, :2]
    return np.stack([
        p[[33, 133]].mean(axis=0),
        p[[263, 362]].mean(axis=0),
        p[1],
        p[[13, 14]].mean(axis=0),
        p[234],
        p[454],
    ])


def _box_from_mesh(xy: np.ndarray, old: Face) -> tuple[float, float, float, float]:
    """Move and scale the previous box with the mesh (keeps the detector's box convention)."""
    ox0, oy0, ox1, oy1 = old.extras.get("mesh_box", old.box)
    nx0, ny0 = xy.min(axis=0)
    nx1, ny1 = xy.max(axis=0)
    sx = (nx1 - nx0) / max(ox1 - ox0, 1e-6)
    sy = (ny1 - ny0) / max(oy1 - oy0, 1e-6)
    bx0, by0, bx1, by1 = old.box
    return (
        float(nx0 + (bx0 - ox0) * sx),
        float(ny0 + (by0 - oy0) * sy),
        float(nx1 + (bx1 - ox1) * sx),
        float(ny1 + (by1 - oy1) * sy),
    )


def detect_faces(rgb: np.ndarray, *, min_size: float | None = None, embeddings: bool = False, device: str = "CPU") -> list[Face]:
    """Every face in ``rgb`` with landmarks and measurements, using the shared analyzer."""
    return FaceAnalyzer.default(device).analyze(rgb, min_size=min_size, embeddings=embeddings)


def embed(rgb: np.ndarray, face: Face, *, device: str = "CPU") -> np.ndarray:
    """128-d identity embedding of ``face`` in ``rgb`` (cached on the face)."""
    return FaceAnalyzer.default(device).embed(rgb, face)
