"""Measuring a generated face: its attributes (to label training samples and to check a request)
and its fitness as a swap source.

Everything is measured on a face-aligned canvas: the image is rotated and scaled so that the eyes
are level, ``IOD`` pixels apart, with their midpoint at ``EYES_AT``. Regions (cheeks, forehead,
the hair above the head, the sides of the neck, the nose bridge, the chin) are then fixed
rectangles or discs relative to mesh landmarks, whatever the face's size or roll.

``measure_face`` returns raw figures (``Measurement.raw``: continuous values such as ITA, smile
score, glasses edge energy) and their labels in the attribute vocabulary of
``engine.generate.attributes``; ``source_problems`` lists why a face is not fit to be a swap
source (empty when it is).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.faces.analyzer import FaceAnalyzer
from engine.faces.types import Face
from engine.generate.attributes import MONK_SWATCHES, monk_group

IOD = 64.0  # eye-centre distance on the aligned canvas (px)
CANVAS = (320, 400)  # width, height of the aligned canvas
EYES_AT = (160.0, 170.0)  # where the eye midpoint lands on the canvas
ANALYSIS_SIDE = 512  # the generated image is analysed at this size

# MediaPipe face-mesh landmark indices used here.
RIGHT_EYE = (33, 133)  # subject's right eye corners (image left)
LEFT_EYE = (362, 263)
FOREHEAD_TOP = 10
FOREHEAD = 151
NOSE_BRIDGE = 168
NOSE_BASE = 2
UPPER_LIP = 0
LOWER_LIP_BOTTOM = 17
CHIN = 152
MOUTH_CORNERS = (61, 291)
LIP_INNER = (13, 14)
CHEEKS = (50, 280, 205, 425)
JAW = (172, 397)  # lower jaw, subject's right/left
BROW_TOPS = (105, 334)
EYE_RIGHT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
EYE_LEFT = (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)


# Thresholds on the raw figures, chosen on contact sheets of the 2,500 samples of
# scripts/avatar_samples.py sorted by each figure.
SMILE_THRESHOLD = 0.15
GLASSES_THRESHOLD = 0.8
FACIAL_HAIR_THRESHOLD = 0.55
LONG_HAIR_THRESHOLD = 0.35
BACKGROUND_LIGHT_L = 55.0


@dataclass
class Measurement:
    """What a generated face looks like, and how fit it is to be a swap source."""

    faces: int
    face: Face | None = None
    raw: dict = field(default_factory=dict)
    labels: dict = field(default_factory=dict)  # attribute -> value key (attributes.CHOICES)
    analysed_image: np.ndarray | None = None  # the image the landmarks refer to (<= 512 px)

    def matches(self, requested: dict) -> dict[str, bool]:
        return {name: self.labels.get(name) == value for name, value in requested.items()}


# --------------------------------------------------------------------------------------------
# Colour helpers
# --------------------------------------------------------------------------------------------


def _lab(rgb_pixels: np.ndarray) -> np.ndarray:
    """RGB uint8 (..., 3) -> CIE Lab floats (L 0-100, a/b about -128..127)."""
    flat = np.asarray(rgb_pixels, np.uint8).reshape(-1, 1, 3)
    lab = cv2.cvtColor(flat.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    return lab.reshape(np.shape(rgb_pixels))


MONK_LAB = _lab(np.array(MONK_SWATCHES, np.uint8))


def ita_degrees(lab: np.ndarray) -> float:
    """Individual Typology Angle of a Lab colour: > 55 very light ... < -30 dark."""
    return float(math.degrees(math.atan2(lab[0] - 50.0, lab[2])))


def monk_tone(lab: np.ndarray) -> int:
    """Monk tone (1-10) of a skin colour: the swatch with the nearest ITA. ITA (lightness against
    yellowness) is far less sensitive to the lighting of a photo than a nearest-colour match."""
    return monk_from_ita(ita_degrees(lab))


def monk_from_ita(ita: float) -> int:
    return int(np.argmin([abs(ita - s) for s in MONK_ITA])) + 1


MONK_ITA = [ita_degrees(lab) for lab in MONK_LAB]


def _trimmed_median(lab_pixels: np.ndarray) -> np.ndarray:
    """Median Lab colour of the pixels whose lightness is within the 20th-80th percentile
    (drops specular highlights and shadows)."""
    if len(lab_pixels) == 0:
        return np.array([np.nan, np.nan, np.nan])
    lo, hi = np.percentile(lab_pixels[:, 0], [20, 80])
    keep = lab_pixels[(lab_pixels[:, 0] >= lo) & (lab_pixels[:, 0] <= hi)]
    return np.median(keep if len(keep) else lab_pixels, axis=0)


# --------------------------------------------------------------------------------------------
# The aligned canvas
# --------------------------------------------------------------------------------------------


@dataclass
class Aligned:
    rgb: np.ndarray  # (H, W, 3) uint8
    lab: np.ndarray  # (H, W, 3) float32
    points: np.ndarray  # (468, 2) landmarks on the canvas
    valid: np.ndarray  # (H, W) bool: pixels that came from inside the image

    def disc(self, centre, radius: float) -> np.ndarray:
        h, w = self.valid.shape
        yy, xx = np.ogrid[:h, :w]
        return ((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius * radius) & self.valid

    def rect(self, x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
        h, w = self.valid.shape
        mask = np.zeros((h, w), bool)
        xa, xb = sorted((int(round(x0)), int(round(x1))))
        ya, yb = sorted((int(round(y0)), int(round(y1))))
        mask[max(ya, 0) : max(min(yb, h), 0), max(xa, 0) : max(min(xb, w), 0)] = True
        return mask & self.valid

    def polygon(self, indices) -> np.ndarray:
        mask = np.zeros(self.valid.shape, np.uint8)
        cv2.fillPoly(mask, [np.round(self.points[list(indices)]).astype(np.int32)], 1)
        return mask.astype(bool) & self.valid


def align(rgb: np.ndarray, landmarks: np.ndarray) -> Aligned:
    xy = np.asarray(landmarks, np.float64)[:, :2]
    right = xy[list(RIGHT_EYE)].mean(axis=0)
    left = xy[list(LEFT_EYE)].mean(axis=0)
    d = left - right
    scale = IOD / max(float(np.hypot(*d)), 1e-6)
    angle = math.atan2(d[1], d[0])
    c, s = math.cos(angle) * scale, math.sin(angle) * scale
    a = np.array([[c, s], [-s, c]])
    mid = (left + right) / 2.0
    t = np.asarray(EYES_AT) - a @ mid
    matrix = np.hstack([a, t[:, None]])
    size = CANVAS
    warped = cv2.warpAffine(rgb, matrix, size, flags=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    valid = cv2.warpAffine(np.full(rgb.shape[:2], 255, np.uint8), matrix, size, flags=cv2.INTER_NEAREST) > 0
    points = xy @ a.T + t
    lab = cv2.cvtColor(warped.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    return Aligned(warped, lab, points, valid)


# --------------------------------------------------------------------------------------------
# Age and gender (dlib-models' age predictor and gender classifier, on OpenVINO)
# --------------------------------------------------------------------------------------------

# dlib's age predictor (ResNet-10, 81 classes: 0 ... 80 years, class 0 read as 3 months) and gender
# classifier, both on dlib's own aligned face chips with 20% padding (64 px for age, 32 px for
# gender), RGB minus the training means, divided by 256. They replace the Levi-Hassner CaffeNets
# (8 coarse Adience buckets), which read generated faces 10-20 years young: on contact sheets
# faces that look 50-65 measured "adult", and the softmax over the buckets could not be mapped
# to our bands whatever the mapping (see scripts/learn_directions.py).
AGE_MODEL = "dlib_age-v1.onnx"
GENDER_MODEL = "dlib_gender-v1.onnx"
AGE_CHIP, GENDER_CHIP, CHIP_PADDING = 64, 32, 0.2
CHIP_MEANS = np.array([122.781998, 117.000999, 104.297997], np.float32)
AGE_CLASS_YEARS = np.array([0.25, *range(1, 81)], np.float32)


def face_chips(rgb: np.ndarray, face: Face, analyzer: FaceAnalyzer) -> tuple[np.ndarray, np.ndarray]:
    """(64 px age chip, 32 px gender chip): dlib's aligned chips from its 5-point shape, placed
    the way the identity embedding places it (rectangle and points checked against the mesh)."""
    import dlib

    data = analyzer.prepare_embedding(rgb, face)
    rect = dlib.rectangle(*data.rect)
    shape = dlib.full_object_detection(rect, [dlib.point(int(round(x)), int(round(y))) for x, y in data.points])
    image = np.ascontiguousarray(data.image, dtype=np.uint8)
    return tuple(np.asarray(dlib.get_face_chip(image, shape, size=size, padding=CHIP_PADDING), np.uint8)
                 for size in (AGE_CHIP, GENDER_CHIP))


def _chip_tensor(chip: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(((chip.astype(np.float32) - CHIP_MEANS) / 256.0).transpose(2, 0, 1)[None])


def forward_age_gender(age_chip: np.ndarray, gender_chip: np.ndarray) -> tuple[np.ndarray, float]:
    """(probabilities over the 81 age classes, probability of a feminine presentation)."""
    from engine.faces.runtime import compiled_model

    ages = next(iter(compiled_model(AGE_MODEL)(_chip_tensor(age_chip)).values()))[0]
    female, male = next(iter(compiled_model(GENDER_MODEL)(_chip_tensor(gender_chip)).values()))[0]
    return ages.astype(np.float64), float(female / max(female + male, 1e-9))


def age_years(age_probabilities: np.ndarray) -> float:
    """Expected age over the classes (what dlib reports; far steadier than the arg-max class)."""
    p = np.asarray(age_probabilities, np.float64)
    return float(np.dot(p, AGE_CLASS_YEARS) / max(float(np.sum(p)), 1e-9))


def age_band(years: float) -> str:
    if years < 30:
        return "young"
    if years < 45:
        return "adult"
    if years < 60:
        return "middle"
    return "senior"


# --------------------------------------------------------------------------------------------
# Raw measures on the aligned canvas
# --------------------------------------------------------------------------------------------


def _lit_colour(lab_pixels: np.ndarray) -> np.ndarray:
    """A skin colour as it would read under even light: the lightness of the well-lit part of the
    region (80th-95th percentile: shading and shadow pull a median far below the skin's own
    tone, speculars are dropped) with the median hue of the region."""
    if len(lab_pixels) == 0:
        return np.array([np.nan, np.nan, np.nan])
    lo, hi = np.percentile(lab_pixels[:, 0], [80, 95])
    lit = lab_pixels[(lab_pixels[:, 0] >= lo) & (lab_pixels[:, 0] <= hi)]
    body = _trimmed_median(lab_pixels)
    return np.array([float(np.median(lit[:, 0])) if len(lit) else body[0], body[1], body[2]])


def _skin(al: Aligned) -> tuple[np.ndarray, np.ndarray, dict]:
    """(skin colour for matching regions, lit skin colour for the tone, extra figures)."""
    p = al.points
    radius = 0.11 * IOD
    cheeks = [al.lab[al.disc(p[i], radius)] for i in CHEEKS]
    forehead = al.lab[al.disc(p[FOREHEAD], 0.14 * IOD)]
    pixels = np.concatenate(cheeks + [forehead])
    right_l = float(np.median(np.concatenate([cheeks[0][:, 0], cheeks[2][:, 0]]))) if len(cheeks[0]) else float("nan")
    left_l = float(np.median(np.concatenate([cheeks[1][:, 0], cheeks[3][:, 0]]))) if len(cheeks[1]) else float("nan")
    lower = np.concatenate([cheeks[2], cheeks[3]])
    extra = {"cheek_l_difference": abs(right_l - left_l),
             "lower_cheek_l": float(np.median(lower[:, 0])) if len(lower) else float("nan")}
    return _trimmed_median(pixels), _lit_colour(pixels), extra


def _distance(lab_pixels: np.ndarray, colour: np.ndarray) -> np.ndarray:
    return np.linalg.norm(lab_pixels - colour[None, :], axis=-1)


def _hair_pixels(al: Aligned, skin: np.ndarray, background: np.ndarray) -> tuple[np.ndarray, int]:
    """(Lab pixels that look like hair, pixels looked at) around the top of the head: a band
    over the forehead and down both temples to eye level, outside the face oval. Dropped: the
    background's colour, and skin's chroma at any plausible lightness (a bald or shaved scalp,
    a receding hairline; the old band over the forehead alone read scalp as red hair and a
    bright background as grey)."""
    p = al.points
    top = p[FOREHEAD_TOP]
    oval = p[list(FACE_OVAL)]
    x_r, x_l = oval[:, 0].min(), oval[:, 0].max()
    eyes_y = p[list(RIGHT_EYE) + list(LEFT_EYE), 1].mean()
    region = al.rect(x_r - 0.1 * IOD, top[1] - 0.8 * IOD, x_l + 0.1 * IOD, top[1] + 0.1 * IOD)
    region |= al.rect(x_r - 0.45 * IOD, top[1], x_r + 0.02 * IOD, eyes_y) | al.rect(x_l - 0.02 * IOD, top[1], x_l + 0.45 * IOD, eyes_y)
    pixels = al.lab[region & ~al.polygon(FACE_OVAL)]
    skinlike = ((np.abs(pixels[:, 1] - skin[1]) < 7.0) & (np.abs(pixels[:, 2] - skin[2]) < 9.0)
                & (pixels[:, 0] > skin[0] - 35.0) & (pixels[:, 0] < skin[0] + 15.0))
    return pixels[(_distance(pixels, background) > 12.0) & ~skinlike], len(pixels)


def _hair(al: Aligned, skin: np.ndarray, background: np.ndarray) -> dict:
    """Hair colour around the top of the head; length from the sides of the neck."""
    p = al.points
    hairlike, looked_at = _hair_pixels(al, skin, background)
    coverage = len(hairlike) / max(looked_at, 1)
    colour = _trimmed_median(hairlike) if len(hairlike) >= 40 else np.array([np.nan] * 3)
    # Sides of the neck, from mouth level to well below the chin, just outside the jaw.
    y0, y1 = p[MOUTH_CORNERS, 1].mean(), p[CHIN, 1] + 0.7 * IOD
    jaw_r, jaw_l = p[JAW[0], 0], p[JAW[1], 0]
    sides = al.rect(jaw_r - 0.75 * IOD, y0, jaw_r - 0.15 * IOD, y1) | al.rect(jaw_l + 0.15 * IOD, y0, jaw_l + 0.75 * IOD, y1)
    side_pixels = al.lab[sides]
    if np.isfinite(colour[0]) and len(side_pixels):
        near_hair = _distance(side_pixels, colour) < 16.0
        off_background = _distance(side_pixels, background) > 14.0
        off_skin = _distance(side_pixels, skin) > 14.0
        long_share = float(np.mean(near_hair & off_background & off_skin))
    else:
        long_share = 0.0
    return {"hair_coverage": coverage, "hair_lab": colour.tolist(), "hair_long_share": long_share}


def hair_colour_name(lab) -> str | None:
    """Colour name of a hair Lab colour; bands set on contact sheets of generated faces with a
    swatch of the measured colour beside each face."""
    L, a, b = lab
    if not np.isfinite(L):
        return None
    chroma = math.hypot(a, b)
    if L < 22:
        return "black"
    if chroma < 10 and L > 45:
        return "grey"
    if a > 15 and a > 0.6 * b and 25 <= L < 62:
        return "red"
    if (L > 50 and b > 11) or (L > 44 and b > 18):
        return "blonde"
    return "brown"


def _background(al: Aligned, rgb: np.ndarray) -> tuple[np.ndarray, dict]:
    """The image's border above the shoulders (top strip and upper sides) - its colour and
    how plain the background right beside the face is."""
    h, w = rgb.shape[:2]
    m = max(int(0.06 * min(h, w)), 2)
    strips = [rgb[:m, :], rgb[: h * 6 // 10, :m], rgb[: h * 6 // 10, -m:]]
    lab = _lab(np.concatenate([s.reshape(-1, 3) for s in strips]))
    colour = _trimmed_median(lab)
    # Texture beside the face (cheek level, just outside the oval): a busy background there is
    # what a turned or hairy source drags into a swapped face.
    p = al.points
    y0, y1 = p[RIGHT_EYE[0], 1], p[MOUTH_CORNERS[0], 1]
    x_r = p[list(FACE_OVAL), 0].min()
    x_l = p[list(FACE_OVAL), 0].max()
    gray = cv2.cvtColor(al.rgb, cv2.COLOR_RGB2GRAY).astype(np.float32)
    lap = np.abs(cv2.Laplacian(gray, cv2.CV_32F, ksize=3))
    ring = al.rect(x_r - 0.35 * IOD, y0, x_r - 0.05 * IOD, y1) | al.rect(x_l + 0.05 * IOD, y0, x_l + 0.35 * IOD, y1)
    busy = float(np.mean(lap[ring])) if ring.any() else 0.0
    return colour, {"background_l": float(colour[0]), "beside_face_texture": busy}


def _smile(p: np.ndarray) -> float:
    """How far the mouth corners sit above the lips' centre line, and how wide the mouth is,
    relative to the eye distance: ~0 neutral, > SMILE_THRESHOLD smiling."""
    corners = p[list(MOUTH_CORNERS)]
    centre_y = (p[LIP_INNER[0], 1] + p[LIP_INNER[1], 1]) / 2.0
    lift = (centre_y - corners[:, 1].mean()) / IOD
    width = np.linalg.norm(corners[0] - corners[1]) / IOD
    return float(lift + 0.5 * (width - 0.78))


def _glasses(al: Aligned) -> float:
    """Edge energy on the nose bridge between the eyes and just outside the eye corners, where
    frames sit and bare skin is smooth."""
    p = al.points
    gray = cv2.cvtColor(al.rgb, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    gy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
    gx = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3))
    bridge = p[NOSE_BRIDGE]
    mid_y = (p[RIGHT_EYE[0], 1] + p[LEFT_EYE[1], 1]) / 2
    bridge_mask = al.rect(bridge[0] - 0.12 * IOD, mid_y - 0.25 * IOD, bridge[0] + 0.12 * IOD, bridge[1] + 0.05 * IOD)
    outer = al.rect(p[RIGHT_EYE[0], 0] - 0.35 * IOD, mid_y - 0.12 * IOD, p[RIGHT_EYE[0], 0] - 0.08 * IOD, mid_y + 0.12 * IOD) | al.rect(
        p[LEFT_EYE[1], 0] + 0.08 * IOD, mid_y - 0.12 * IOD, p[LEFT_EYE[1], 0] + 0.35 * IOD, mid_y + 0.12 * IOD
    )
    energy = 0.0
    if bridge_mask.any():
        energy += float(np.percentile(gy[bridge_mask], 90))
    if outer.any():
        energy += float(np.percentile(gx[outer], 90))
    return energy / 2.0


def _facial_hair(al: Aligned, lower_cheek_l: float) -> float:
    """Share of the upper lip, chin and jaw that is much darker than the lower cheeks beside them
    (stubble and beards; shading under the lip is milder)."""
    p = al.points
    upper = al.rect(p[MOUTH_CORNERS[0], 0] + 0.1 * IOD, p[NOSE_BASE, 1] + 0.06 * IOD, p[MOUTH_CORNERS[1], 0] - 0.1 * IOD, p[UPPER_LIP, 1] - 0.02 * IOD)
    chin = al.rect(p[MOUTH_CORNERS[0], 0], p[LOWER_LIP_BOTTOM, 1] + 0.1 * IOD, p[MOUTH_CORNERS[1], 0], p[CHIN, 1] - 0.05 * IOD)
    jaw = al.disc(p[JAW[0]] * 0.7 + p[CHIN] * 0.3, 0.12 * IOD) | al.disc(p[JAW[1]] * 0.7 + p[CHIN] * 0.3, 0.12 * IOD)
    pixels = al.lab[upper | chin | jaw]
    if not len(pixels) or not np.isfinite(lower_cheek_l):
        return 0.0
    return float(np.mean(pixels[:, 0] < lower_cheek_l - 10.0))


def _lip_colour_excess(al: Aligned, skin: np.ndarray) -> float:
    """How much more saturated the lips are than the skin (Lab chroma): natural lips ~5-15,
    lipstick well above."""
    lips = al.polygon(LIPS_OUTER) & ~al.polygon(LIPS_INNER)
    pixels = al.lab[lips]
    if len(pixels) < 10:
        return 0.0
    lip = np.median(pixels, axis=0)
    return float(math.hypot(lip[1], lip[2]) - math.hypot(skin[1], skin[2]))


def _eye_darkness(al: Aligned, skin: np.ndarray) -> float:
    """Skin lightness minus the 75th-percentile lightness inside the eye openings: open eyes show
    bright sclera (~10-30), dark glasses hide them (much more)."""
    pixels = al.lab[al.polygon(EYE_RIGHT) | al.polygon(EYE_LEFT)]
    if len(pixels) < 10:
        return 100.0
    return float(skin[0] - np.percentile(pixels[:, 0], 75))


def _forehead_skin_share(al: Aligned, skin: np.ndarray) -> float:
    p = al.points
    brows_y = p[list(BROW_TOPS), 1].min()
    top = p[FOREHEAD_TOP]
    x0, x1 = p[BROW_TOPS[0], 0], p[BROW_TOPS[1], 0]
    region = al.rect(x0, top[1] + 0.1 * (brows_y - top[1]), x1, brows_y - 0.1 * IOD)
    pixels = al.lab[region]
    if not len(pixels):
        return 0.0
    return float(np.mean(_distance(pixels, skin) < 18.0))


def _mirror_index(centred: np.ndarray) -> np.ndarray:
    """For each mesh point, the nearest point of the mesh mirrored across the head's midline."""
    mirrored = centred[:, :2] * np.array([-1.0, 1.0])
    return np.linalg.norm(centred[:, None, :2] - mirrored[None, :, :], axis=-1).argmin(axis=1)


def _symmetry(landmarks: np.ndarray) -> float:
    """Mean mismatch of mirrored mesh points (in the head's own frame, relative to the eye
    distance): a well-formed frontal face ~0.02-0.05 (turned heads score higher, which the pose
    check refuses anyway); GAN artefacts (melted eyes, odd jaws) and strongly asymmetric
    expressions score higher."""
    from engine.faces.geometry import head_axes

    p = np.asarray(landmarks, np.float64)
    centred = (p - p.mean(axis=0)) @ head_axes(p)
    partner = centred[_mirror_index(centred)] * np.array([-1.0, 1.0, 1.0])
    d = np.linalg.norm(centred[:, :2] - partner[:, :2], axis=1)
    iod = np.linalg.norm(centred[list(RIGHT_EYE)].mean(0) - centred[list(LEFT_EYE)].mean(0))
    return float(np.mean(d) / max(iod, 1e-6))


# --------------------------------------------------------------------------------------------
# The whole measurement
# --------------------------------------------------------------------------------------------


def measure_face(rgb: np.ndarray, analyzer: FaceAnalyzer | None = None, *, embed: bool = True) -> Measurement:
    """Attributes and source fitness of the face in a generated image (RGB uint8)."""
    analyzer = analyzer or FaceAnalyzer.default()
    h, w = rgb.shape[:2]
    scale = ANALYSIS_SIDE / max(h, w)
    small = cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    faces = analyzer.analyze(small, min_size=0.12 * min(small.shape[:2]))
    result = Measurement(faces=len(faces), analysed_image=small)
    if not faces:
        return result
    face = max(faces, key=lambda f: f.area)
    result.face = face
    al = align(small, face.landmarks)
    skin, lit_skin, skin_extra = _skin(al)
    background, background_extra = _background(al, small)
    ages, feminine = forward_age_gender(*face_chips(small, face, analyzer))
    years = age_years(ages)
    raw = {
        "ita": ita_degrees(lit_skin),
        "skin_lab": lit_skin.tolist(),
        "monk": monk_tone(lit_skin),
        "age": years,
        "feminine": feminine,
        "smile": _smile(al.points),
        "mouth_open": float(face.mouth_open),
        "eye_open": [float(v) for v in face.eye_open],
        "glasses": _glasses(al),
        "facial_hair": _facial_hair(al, skin_extra["lower_cheek_l"]),
        "forehead_skin": _forehead_skin_share(al, skin),
        "lip_colour_excess": _lip_colour_excess(al, skin),
        "eye_darkness": _eye_darkness(al, skin),
        "symmetry": _symmetry(face.landmarks),
        "yaw": float(face.pose.yaw),
        "pitch": float(face.pose.pitch),
        "roll": float(face.pose.roll),
        "sharpness": float(face.sharpness or 0.0),
        "presence": float(face.presence or 0.0),
        "detection_score": float(face.score),
        **skin_extra,
        **background_extra,
        **_hair(al, skin, background),
    }
    result.raw = raw
    result.labels = labels_from_raw(raw)
    if embed:
        # dlib aligns a 150 px chip; the analysed image's face (~250 px) is plenty for it.
        raw["embedding"] = analyzer.embed(small, face).astype(np.float32).tolist()
    return result


def labels_from_raw(raw: dict) -> dict[str, str]:
    hair = hair_colour_name(raw["hair_lab"]) if raw.get("hair_coverage", 0) > 0.25 else None
    labels = {
        "age_band": age_band(raw["age"]),
        "gender": "feminine" if raw["feminine"] >= 0.5 else "masculine",
        "skin_tone": monk_group(raw["monk"]),
        "expression": "smile" if raw["smile"] >= SMILE_THRESHOLD else "neutral",
        "glasses": "yes" if raw["glasses"] >= GLASSES_THRESHOLD else "no",
        "facial_hair": "yes" if raw["facial_hair"] >= FACIAL_HAIR_THRESHOLD else "no",
        "background": "light" if raw["background_l"] >= BACKGROUND_LIGHT_L else "dark",
        "hair_length": "long" if raw["hair_long_share"] >= LONG_HAIR_THRESHOLD else "short",
    }
    if hair:
        labels["hair_colour"] = hair
    return labels


# Limits of a fit swap source (see ``source_problems``).
MAX_YAW, MAX_PITCH, MAX_ROLL = 12.0, 12.0, 10.0
MIN_EYE_OPEN = 0.18
MIN_FOREHEAD_SKIN = 0.6
MAX_CHEEK_L_DIFFERENCE = 15.0
MAX_BESIDE_FACE_TEXTURE = 70.0
MAX_SYMMETRY = 0.08
MIN_SHARPNESS = 25.0
MIN_PRESENCE = 0.9
MIN_AGE = 17.0  # personas are adults
MAX_LIP_COLOUR_EXCESS = 30.0  # lip chroma over skin chroma: lipstick (natural lips ~5-15)
MAX_EYE_DARKNESS = 50.0  # skin minus bright eye lightness: dark glasses (open eyes ~10-35)


def source_problems(m: Measurement) -> list[str]:
    """Why this generated face should not be offered as a swap source (empty: it is fit)."""
    if m.faces == 0:
        return ["no face found"]
    problems = []
    if m.faces > 1:
        problems.append("more than one face")
    r = m.raw
    if abs(r["yaw"]) > MAX_YAW or abs(r["pitch"]) > MAX_PITCH or abs(r["roll"]) > MAX_ROLL:
        problems.append("head not frontal")
    if min(r["eye_open"]) < MIN_EYE_OPEN:
        problems.append("eyes not open")
    if r["forehead_skin"] < MIN_FOREHEAD_SKIN:
        problems.append("forehead covered by hair")
    if r["cheek_l_difference"] > MAX_CHEEK_L_DIFFERENCE:
        problems.append("strong shadow on one side")
    if r["beside_face_texture"] > MAX_BESIDE_FACE_TEXTURE:
        problems.append("busy background beside the face")
    if r["symmetry"] > MAX_SYMMETRY:
        problems.append("distorted face (mesh asymmetry)")
    if r["sharpness"] < MIN_SHARPNESS:
        problems.append("blurred")
    if r["eye_darkness"] > MAX_EYE_DARKNESS:
        problems.append("eyes hidden behind dark glasses")
    if r["lip_colour_excess"] > MAX_LIP_COLOUR_EXCESS:
        problems.append("strong make-up")
    if r["age"] < MIN_AGE:
        problems.append("looks like a child")
    if r["presence"] < MIN_PRESENCE:
        problems.append("face not confirmed by the mesh")
    return problems
