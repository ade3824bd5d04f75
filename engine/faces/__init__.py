"""Face analysis: detection, 468-point mesh, head pose, expression ratios, quality, identity
embeddings, deterministic ordering and face selection. Django-free; CPU (OpenVINO + dlib).

Typical use::

    from engine.faces import detect_faces, select_faces, embed

    faces = detect_faces(rgb)                     # sorted left to right, index 0..n-1
    chosen, others = select_faces(faces, "index:1")
    vector = embed(rgb, faces[0])                 # 128-d, cached on the face

Model files come from :func:`engine.models.model_path` (``python -m engine models fetch``).
"""
from .analyzer import FaceAnalyzer, detect_faces, embed
from .geometry import eye_openness, head_pose, mouth_openness
from .identity import SAME_PERSON, embedding_distance
from .image import as_rgb
from .selection import (
    FaceIndexOutOfRange,
    InvalidFaceSelection,
    NoMatchingFace,
    Selection,
    select_faces,
    sort_faces,
)
from .types import KEYPOINT_NAMES, Face, Pose

__all__ = [
    "KEYPOINT_NAMES",
    "SAME_PERSON",
    "Face",
    "FaceAnalyzer",
    "FaceIndexOutOfRange",
    "InvalidFaceSelection",
    "NoMatchingFace",
    "Pose",
    "Selection",
    "as_rgb",
    "detect_faces",
    "embed",
    "embedding_distance",
    "eye_openness",
    "head_pose",
    "mouth_openness",
    "select_faces",
    "sort_faces",
]
