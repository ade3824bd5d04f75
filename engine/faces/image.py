"""Image helpers: RGB normalisation, letterboxing, rotated square crops.

Coordinates are continuous pixel coordinates (pixel ``i`` spans ``[i, i + 1)``); affine matrices
map image coordinates to crop coordinates in that convention and are converted for OpenCV (pixel
centres at integers) only where OpenCV is called.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from engine.errors import UnsupportedMedia


def as_rgb(image: np.ndarray) -> np.ndarray:
    """A contiguous HxWx3 uint8 RGB array from gray, RGB or RGBA input (alpha is dropped)."""
    array = np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4) or min(array.shape[:2]) < 1:
        raise UnsupportedMedia(f"Expected an RGB image array, got shape {array.shape}.")
    if array.shape[2] == 1:
        array = np.repeat(array, 3, axis=2)
    elif array.shape[2] == 4:
        array = array[:, :, :3]
    if array.dtype != np.uint8:
        if np.issubdtype(array.dtype, np.floating) and array.size and float(np.nanmax(array)) <= 1.0:
            array = array * 255.0
        array = np.clip(np.nan_to_num(array), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(array)


def resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize with area averaging when shrinking (no aliasing) and bilinear when enlarging."""
    h, w = image.shape[:2]
    if (w, h) == (width, height):
        return image
    shrink = width < w or height < h
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


class Pyramid:
    """An image and its exact 2x reductions (area-averaged), built lazily and shared by the
    detection and mesh steps of one analysis. Level ``k`` pixel ``i`` covers image pixels
    ``[i * 2**k, (i + 1) * 2**k)`` exactly (an odd last row/column is dropped before halving, which
    also keeps OpenCV on its fast integer-factor path)."""

    def __init__(self, rgb: np.ndarray):
        self.levels = [rgb]

    @property
    def image(self) -> np.ndarray:
        return self.levels[0]

    @property
    def shape(self) -> tuple[int, ...]:
        return self.levels[0].shape

    def level(self, k: int) -> tuple[np.ndarray, int]:
        """(image of level ``k`` or the smallest available, its level number)."""
        while len(self.levels) <= k:
            prev = self.levels[-1]
            h, w = prev.shape[:2]
            if min(h, w) < 32:
                break
            even = prev[: h // 2 * 2, : w // 2 * 2]
            self.levels.append(cv2.resize(even, (w // 2, h // 2), interpolation=cv2.INTER_AREA))
        k = min(k, len(self.levels) - 1)
        return self.levels[k], k

    def for_scale(self, scale: float) -> tuple[np.ndarray, int]:
        """The smallest level still at least ``scale`` times the image's resolution."""
        k = int(math.floor(math.log2(1.0 / scale) + 1e-9)) if scale < 1.0 else 0
        return self.level(max(k, 0))

    def scaled(self, scale: float) -> tuple[np.ndarray, float, float]:
        """The image reduced by ``scale`` (<= 1): (pixels, kx, ky) with the exact factors used."""
        h, w = self.shape[:2]
        nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
        img, k = self.for_scale(scale)
        lh, lw = img.shape[:2]
        small = resize(img, nw, nh)
        return small, nw / lw / 2**k, nh / lh / 2**k


def similarity_matrix(center, size: float, angle: float, out_size: int) -> np.ndarray:
    """2x3 affine mapping image coords to an ``out_size`` square crop of side ``size`` centred on
    ``center``, rotated by ``-angle`` (radians, image y down) so a direction at ``angle`` becomes
    horizontal."""
    scale = out_size / float(size)
    c, s = math.cos(angle), math.sin(angle)
    a = scale * np.array([[c, s], [-s, c]], dtype=np.float64)
    t = np.array([out_size / 2.0, out_size / 2.0]) - a @ np.asarray(center, dtype=np.float64)
    return np.hstack([a, t[:, None]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(np.asarray(matrix, dtype=np.float64))


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points[..., :2] @ matrix[:, :2].T + matrix[:, 2]


def _to_cv(matrix: np.ndarray) -> np.ndarray:
    """Edge-convention affine -> OpenCV's pixel-centre convention."""
    m = np.array(matrix, dtype=np.float64)
    m[:, 2] = m[:, 2] + m[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return m


def warp_crop(image, matrix: np.ndarray, out_size: int, *, border: int = cv2.BORDER_CONSTANT) -> np.ndarray:
    """Warp ``image`` (an array or a :class:`Pyramid`) by ``matrix`` (image -> crop) into an
    ``out_size`` square.

    When the crop shrinks the image, it is taken from the pyramid level closest above the crop's
    resolution, and if that still shrinks by more than 1.33x the covered region is reduced with
    area averaging first, so the bilinear warp does not alias (a 2000 px face into 192 px).
    """
    matrix = np.asarray(matrix, dtype=np.float64)
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    if isinstance(image, Pyramid):
        image, k = image.for_scale(scale)
        if k:
            matrix = matrix @ np.array([[2.0**k, 0, 0], [0, 2.0**k, 0], [0, 0, 1]])
            scale *= 2.0**k
    else:
        image = np.asarray(image)
    if scale < 0.75:
        inverse = invert_affine(matrix)
        corners = apply_affine(inverse, np.array([[0, 0], [out_size, 0], [0, out_size], [out_size, out_size]], float))
        h, w = image.shape[:2]
        x0 = max(int(math.floor(corners[:, 0].min())) - 2, 0)
        y0 = max(int(math.floor(corners[:, 1].min())) - 2, 0)
        x1 = min(int(math.ceil(corners[:, 0].max())) + 2, w)
        y1 = min(int(math.ceil(corners[:, 1].max())) + 2, h)
        if x1 - x0 >= 2 and y1 - y0 >= 2:
            factor = min(1.0, scale)
            nw = max(1, int(round((x1 - x0) * factor)))
            nh = max(1, int(round((y1 - y0) * factor)))
            small = cv2.resize(image[y0:y1, x0:x1], (nw, nh), interpolation=cv2.INTER_AREA)
            kx, ky = nw / (x1 - x0), nh / (y1 - y0)
            # crop = M @ p, p = q / k + offset  (q: coordinates in `small`)
            pre = np.array([[1.0 / kx, 0, x0], [0, 1.0 / ky, y0], [0, 0, 1]])
            matrix = np.asarray(matrix, dtype=np.float64) @ pre
            image = small
    return cv2.warpAffine(
        image,
        _to_cv(matrix),
        (out_size, out_size),
        flags=cv2.INTER_LINEAR,
        borderMode=border,
        borderValue=(0, 0, 0),
    )
