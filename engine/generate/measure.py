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

import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.faces.analyzer import FaceAnalyzer
from engine.faces.types import Face
from engine.generate.attributes import MONK_SWATCHES, monk_group
from engine.models import model_path

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
TEMPLES = (54, 284)
BROW_TOPS = (105, 334)
EYE_RIGHT = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
EYE_LEFT = (362, 382, 381, 380, 374, 373, 390, 249, 263, 466, 388, 387, 386, 385, 384, 398)
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)
FACE_OVAL = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400,
             377, 152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)

AGE_BUCKETS = ((0, 2), (4, 6), (8, 12), (15, 20), (25, 32), (38, 43), (48, 53), (60, 100))
CAFFE_MEAN = (78.4263377603, 87.7689143744, 114.895847746)  # BGR means of the Adience training set

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
# Age and gender (Levi & Hassner CaffeNets, OpenCV dnn)
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _age_gender_nets():
    age = cv2.dnn.readNetFromCaffe(str(model_path("deploy_age.prototxt")), str(model_path("age_net.caffemodel")))
    gender = cv2.dnn.readNetFromCaffe(str(model_path("deploy_gender.prototxt")), str(model_path("gender_net.caffemodel")))
    return age, gender


def prepare_age_gender(rgb: np.ndarray, face: Face) -> np.ndarray:
    """A 227 px BGR blob of the face box widened by 40% (the nets were trained on loose crops)."""
    x0, y0, x1, y1 = face.extras.get("mesh_box", face.box)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    side = max(x1 - x0, y1 - y0) * 1.4
    h, w = rgb.shape[:2]
    xa, ya = int(max(cx - side / 2, 0)), int(max(cy - side / 2, 0))
    xb, yb = int(min(cx + side / 2, w)), int(min(cy + side / 2, h))
    crop = cv2.cvtColor(np.ascontiguousarray(rgb[ya:yb, xa:xb]), cv2.COLOR_RGB2BGR)
    return cv2.dnn.blobFromImage(crop, 1.0, (227, 227), CAFFE_MEAN, swapRB=False)


def forward_age_gender(blob: np.ndarray) -> tuple[np.ndarray, float]:
    """(probabilities over AGE_BUCKETS, probability of a feminine presentation)."""
    age_net, gender_net = _age_gender_nets()
    age_net.setInput(blob)
    ages = age_net.forward()[0]
    gender_net.setInput(blob)
    male, female = gender_net.forward()[0]
    return ages, float(female / max(male + female, 1e-9))


def age_years(age_probabilities: np.ndarray) -> float:
    mids = np.array([(a + b) / 2.0 for a, b in AGE_BUCKETS])
    return float(np.dot(age_probabilities, mids) / max(float(np.sum(age_probabilities)), 1e-9))


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


def _hair(al: Aligned, skin: np.ndarray, background: np.ndarray) -> dict:
    """Hair colour from the band above the forehead; length from the sides of the neck."""
    p = al.points
    top = p[FOREHEAD_TOP]
    temple_span = abs(p[TEMPLES[1], 0] - p[TEMPLES[0], 0])
    band = al.rect(top[0] - 0.35 * temple_span, top[1] - 0.75 * IOD, top[0] + 0.35 * temple_span, top[1] - 0.2 * IOD)
    pixels = al.lab[band]
    hairlike = pixels[(_distance(pixels, skin) > 14.0) & (_distance(pixels, background) > 14.0)]
    coverage = len(hairlike) / max(len(pixels), 1)
    colour = _trimmed_median(hairlike) if len(hairlike) >= 30 else np.array([np.nan] * 3)
    # Sides of the neck, from mouth level to well below the chin, just outside the jaw.
    y0, y1 = p[MOUTH_CORNERS, 1].mean(), p[CHIN, 1] + 0.7 * IOD
    jaw_r, jaw_l = p[JAW[0], 0], p[JAW[1], 0]
    sides = al.rect(jaw_r - 0.75 * IOD, y0, jaw_r - 0.15 * IOD, y1) | al.rect(jaw_l + 0.15 * IOD, y0, jaw_l + 0.75 * IOD, y1)
    side_pixels = al.lab[sides]
    if len(hairlike) >= 30 and len(side_pixels):
        near_hair = _distance(side_pixels, colour) < 16.0
        off_background = _distance(side_pixels, background) > 14.0
        off_skin = _distance(side_pixels, skin) > 14.0
        long_share = float(np.mean(near_hair & off_background & off_skin))
    else:
        long_share = 0.0
    return {"hair_coverage": coverage, "hair_lab": colour.tolist(), "hair_long_share": long_share}


def hair_colour_name(lab) -> str | None:
    L, a, b = lab
    if not np.isfinite(L):
        return None
    chroma = math.hypot(a, b)
    if chroma < 12 and L > 52:
        return "grey"
    if L < 24:
        return "black"
    if a > 14 and a > 0.55 * b and L < 60:
        return "red"
    if L > 52 and b > 16:
        return "blonde"
    if chroma < 9 and L > 45:
        return "grey"
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
    ages, feminine = forward_age_gender(prepare_age_gender(small, face))
    years = age_years(ages)
    raw = {
        "ita": ita_degrees(lit_skin),
        "skin_lab": lit_skin.tolist(),
        "monk": monk_tone(lit_skin),
        "age": years,
        "age_probabilities": [float(v) for v in ages],
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
