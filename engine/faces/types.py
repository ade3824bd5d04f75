"""The face record every engine step passes around."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

# BlazeFace keypoint order (subject's right/left: the right eye is on the image's left in a
# frontal photo).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre", "right_ear", "left_ear")


class Pose(NamedTuple):
    """Head pose in degrees, in the camera's view.

    yaw > 0: the nose points towards the image's right; pitch > 0: looking up; roll > 0: the head
    is tilted clockwise on screen. (0, 0, 0) is an upright face looking into the camera.
    """

    yaw: float
    pitch: float
    roll: float


@dataclass(eq=False)
class Face:
    """One detected face, in the pixel coordinates of the analysed image (x right, y down; pixel
    ``i`` spans ``[i, i + 1)``).

    ``landmarks`` are the 468 MediaPipe face-mesh points (x, y, z); z is depth in the same pixel
    units, smaller = nearer the camera. ``eye_open`` is (subject's left, subject's right).
    ``embedding`` is filled on demand by :func:`engine.faces.embed` and cached here.
    """

    index: int
    box: tuple[float, float, float, float]
    score: float
    keypoints: np.ndarray  # (6, 2) BlazeFace keypoints, see KEYPOINT_NAMES
    landmarks: np.ndarray | None = None  # (468, 3)
    pose: Pose | None = None
    quality: float = 0.0
    mouth_open: float = 0.0
    eye_open: tuple[float, float] = (0.0, 0.0)
    embedding: np.ndarray | None = None
    presence: float | None = None  # face-presence probability from the mesh model
    sharpness: float | None = None  # variance of the Laplacian on the aligned face crop
    extras: dict = field(default_factory=dict, repr=False)

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def size(self) -> float:
        """Side of the square with the box's area (a scale for the face)."""
        return float(np.sqrt(max(self.width, 0.0) * max(self.height, 0.0)))

    @property
    def area(self) -> float:
        return max(self.width, 0.0) * max(self.height, 0.0)

    @property
    def center(self) -> tuple[float, float]:
        return (float(self.box[0] + self.box[2]) / 2.0, float(self.box[1] + self.box[3]) / 2.0)

    def __repr__(self) -> str:  # short: arrays make the default repr unreadable
        x0, y0, x1, y1 = self.box
        pose = "None" if self.pose is None else "(%.0f, %.0f, %.0f)" % tuple(self.pose)
        return (
            f"Face(index={self.index}, box=({x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}), "
            f"score={self.score:.2f}, pose={pose}, quality={self.quality:.2f}, "
            f"landmarks={'yes' if self.landmarks is not None else 'no'}, "
            f"embedding={'yes' if self.embedding is not None else 'no'})"
        )
