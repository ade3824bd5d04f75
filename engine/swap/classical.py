"""Classical face swap on the 468-point face mesh (the embedded CPU backend).

One rasterisation pass over an *extended* mesh drives everything:
- the 852 mesh triangles, fans that fill the eye and mouth holes, and a ring of triangles from
  the face oval out to 1.6x its size (forehead to hairline, jaw, cheeks);
- every pixel inside gets two sample positions: where the source texture comes from (persona
  face) and where the target itself comes from (a smooth "liquify" that moves the face's
  proportions toward the source while the ring's outer edge stays fixed, so the jaw line moves
  with the face and no ghost outline is left behind);
- masks decide which pixels take the source: the face, minus the target's inner mouth, minus
  self-occluded triangles, minus whatever is in front of the face (non-skin pixels found by a
  robust skin-colour model fitted on the target's own visible skin), plus the forehead up to
  the hairline (the skin model stops it at hair);
- the source is matched to the target in colour (Lab statistics), low-frequency lighting and
  grain before a feathered blend.

Inputs are plain arrays: RGB uint8 images and (468, 2|3) landmark arrays in pixel coordinates.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

TOPOLOGY_FILE = Path(__file__).with_name("face_topology.json")
RING_SCALE = 1.6
UP_VERTEX, CHIN_VERTEX, NOSE_TIP = 10, 152, 1
UPPER_LIP, LOWER_LIP, MOUTH_LEFT, MOUTH_RIGHT = 13, 14, 61, 291  # inner-lip middles, mouth corners


@dataclass(frozen=True)
class Topology:
    mesh: np.ndarray  # (852, 3) vertex indices into the 468 landmarks
    oval: np.ndarray  # (36,) ordered face-oval loop
    left_eye: np.ndarray
    right_eye: np.ndarray
    lips_inner: np.ndarray
    lips_outer: np.ndarray
    brows: np.ndarray
    # Extended mesh over 468 + 3 hole centres + len(oval) ring points:
    triangles: np.ndarray  # (T, 3)
    kind: np.ndarray  # (T,) 0 mesh, 1 eye hole, 2 mouth hole, 3 ring
    ring_start: int  # index of the first ring vertex in the extended point list


@lru_cache(maxsize=1)
def topology() -> Topology:
    data = json.loads(TOPOLOGY_FILE.read_text())
    regions = {k: np.asarray(v, dtype=np.int32) for k, v in data["regions"].items()}
    mesh = np.asarray(data["triangles"], dtype=np.int32)
    left_eye_c, right_eye_c, mouth_c = 468, 469, 470
    ring_start = 471
    tris, kinds = [mesh], [np.zeros(len(mesh), np.int8)]
    for loop, centre, kind in (
        (regions["left_eye"], left_eye_c, 1),
        (regions["right_eye"], right_eye_c, 1),
        (regions["lips_inner"], mouth_c, 2),
    ):
        fan = np.stack([loop, np.roll(loop, -1), np.full(len(loop), centre)], axis=1)
        tris.append(fan)
        kinds.append(np.full(len(fan), kind, np.int8))
    oval = regions["face_oval"]
    n = len(oval)
    ring = ring_start + np.arange(n)
    strip_a = np.stack([oval, np.roll(oval, -1), ring], axis=1)
    strip_b = np.stack([np.roll(oval, -1), np.roll(ring, -1), ring], axis=1)
    tris += [strip_a, strip_b]
    kinds += [np.full(n, 3, np.int8), np.full(n, 3, np.int8)]
    return Topology(
        mesh=mesh,
        oval=oval,
        left_eye=regions["left_eye"],
        right_eye=regions["right_eye"],
        lips_inner=regions["lips_inner"],
        lips_outer=regions["lips_outer"],
        brows=np.concatenate([regions["left_eyebrow"], regions["right_eyebrow"]]),
        triangles=np.concatenate(tris).astype(np.int32),
        kind=np.concatenate(kinds),
        ring_start=ring_start,
    )


def extend_points(landmarks: np.ndarray) -> np.ndarray:
    """468 landmarks -> extended points: + eye and mouth centres + the outer ring."""
    topo = topology()
    pts = np.asarray(landmarks, dtype=np.float64)[:, :2]
    centres = np.stack([pts[topo.left_eye].mean(0), pts[topo.right_eye].mean(0), pts[topo.lips_inner].mean(0)])
    oval = pts[topo.oval]
    centre = oval.mean(0)
    ring = centre + RING_SCALE * (oval - centre)
    return np.concatenate([pts, centres, ring])


@dataclass(frozen=True)
class SwapOptions:
    shape_strength: float = 0.6  # 0: texture only; 1: the source's full proportions
    keep_inner_mouth: bool = True
    keep_eyes: bool = True  # the target's own eye openings: blinks and gaze follow the target
    eye_margin: float = 0.0  # with this much (of the eye's size) of the target's lids around them (video)
    occlusion: bool = True
    forehead: bool = True  # extend to the hairline
    feather: float = 0.06  # edge softness as a fraction of face size
    grain: bool = True
    seed: int = 0
    texture_face: float = 300.0  # face height (px) up to which the persona texture is sampled and toned
    mask_face: float = 150.0  # face height (px) at which geometry, masks and colour statistics are computed


@dataclass
class PreparedSource:
    """A persona face ready to be swapped in (computed once per persona)."""

    image: np.ndarray  # RGB uint8
    points: np.ndarray  # extended points (471 + ring, 2)
    landmarks: np.ndarray  # (468, 2)
    _levels: dict = field(default_factory=dict, repr=False)

    @property
    def face_size(self) -> float:
        return float(np.linalg.norm(self.landmarks[UP_VERTEX] - self.landmarks[CHIN_VERTEX]))

    def level(self, face_size: float) -> tuple[np.ndarray, float]:
        """The source image halved as often as it can be while its face stays at least
        ``face_size`` tall (sampling a much larger texture would alias), and that scale factor."""
        factor, image = 1.0, self.image
        while self.face_size * factor / 2 >= face_size and min(image.shape[:2]) >= 32:
            factor /= 2
            if factor not in self._levels:
                self._levels[factor] = cv2.resize(
                    image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)
            image = self._levels[factor]
        return image, factor


def prepare_source(rgb: np.ndarray, landmarks: np.ndarray) -> PreparedSource:
    return PreparedSource(
        image=np.ascontiguousarray(rgb),
        points=extend_points(landmarks),
        landmarks=np.asarray(landmarks, dtype=np.float64)[:, :2],
    )


@dataclass
class SwapResult:
    box: tuple[int, int, int, int]  # region of the frame that changed (x0, y0, x1, y1)
    coverage: float  # share of the face mask actually replaced (occluders excluded)
    occluded: float  # share of the face found to be covered by something in front


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (2x3) mapping src points onto dst points."""
    matrix, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    if matrix is None:
        matrix = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float64)
    return matrix


def shaped_points(target: np.ndarray, source: PreparedSource, strength: float) -> np.ndarray:
    """Target landmarks moved toward the source's proportions, keeping the target's pose and
    expression: each feature (eyes, mouth) moves as a whole, so openness and blinks stay."""
    topo = topology()
    tgt = np.asarray(target, dtype=np.float64)[:, :2]
    if strength <= 0:
        return tgt.copy()
    opened = _jaw_opened_like(source.landmarks, tgt)
    matrix = _similarity(opened, tgt)
    aligned = opened @ matrix[:, :2].T + matrix[:, 2]
    offset = aligned - tgt
    for group in (topo.left_eye, topo.right_eye, np.concatenate([topo.lips_inner, topo.lips_outer])):
        offset[group] = offset[group].mean(0)
    face_size = np.linalg.norm(tgt[UP_VERTEX] - tgt[CHIN_VERTEX])
    # Smooth the field a little so no single noisy landmark tears the mesh.
    limit = 0.12 * face_size
    lengths = np.linalg.norm(offset, axis=1, keepdims=True)
    offset *= np.minimum(1.0, limit / np.maximum(lengths, 1e-6))
    return tgt + strength * offset


def _jaw_opened_like(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The persona's landmarks with the jaw opened as far (relative to face size) as the target's,
    before they are aligned onto the target. Without this the chin and jaw moved toward the
    persona's own jaw position, so a speaking target's jaw drop was partly undone (mouth opening
    correlated 0.87 instead of 0.93 with the input on a corpus talking head). The lower face
    moves down by the difference in inner-lip gap: fully at the lower lip and chin, a third at the
    mouth corners' height, and less toward the jaw angles (the jaw turns about the ears)."""

    def frame(points):
        down = points[CHIN_VERTEX, :2] - points[UP_VERTEX, :2]
        size = float(np.linalg.norm(down)) or 1.0
        return down / size, size

    source = np.asarray(source, dtype=np.float64)[:, :2]
    t_down, t_size = frame(target)
    down, size = frame(source)
    target_gap = float((target[LOWER_LIP, :2] - target[UPPER_LIP, :2]) @ t_down) / t_size
    source_gap = float((source[LOWER_LIP] - source[UPPER_LIP]) @ down) / size
    drop = (target_gap - source_gap) * size
    across = np.array([-down[1], down[0]])
    centre = (source[MOUTH_LEFT] + source[MOUTH_RIGHT]) / 2
    below = (source - centre) @ down / size
    aside = np.abs((source - centre) @ across) / size
    weight = np.clip((below + 0.02) / 0.06, 0.0, 1.0) * np.clip(1.0 - aside / 0.6, 0.0, 1.0)
    return source + (weight * drop)[:, None] * down[None, :]


def _grown(loop: np.ndarray, margin: float) -> np.ndarray:
    """A closed outline scaled about its centre by ``1 + margin``."""
    centre = loop.mean(0)
    return centre + (loop - centre) * (1.0 + margin)


def _affines(dst: np.ndarray, src: np.ndarray, tris: np.ndarray) -> np.ndarray:
    """Per-triangle 2x3 matrices mapping dst-triangle coordinates to src-triangle coordinates,
    in closed form (barycentric coordinates: a batched solve costs more than the whole rest);
    degenerate triangles get the least-squares map."""
    a, b, c = dst[tris[:, 0]], dst[tris[:, 1]], dst[tris[:, 2]]
    e1, e2 = b - a, c - a
    det = e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]
    good = np.abs(det) > 1e-6
    inverse = np.where(good, 1.0 / np.where(good, det, 1.0), 0.0)[:, None]
    origin = src[tris[:, 0]]
    s1, s2 = src[tris[:, 1]] - origin, src[tris[:, 2]] - origin
    per_x = (e2[:, 1:2] * s1 - e1[:, 1:2] * s2) * inverse  # d src / d x, (T, 2)
    per_y = (e1[:, 0:1] * s2 - e2[:, 0:1] * s1) * inverse  # d src / d y
    offset = origin - per_x * a[:, 0:1] - per_y * a[:, 1:2]
    out = np.stack([per_x, per_y, offset], axis=2)  # (T, 2, 3)
    if not good.all():
        d = np.concatenate([dst[tris[~good]], np.ones((int((~good).sum()), 3, 1))], axis=2)
        out[~good] = np.transpose(np.linalg.pinv(d) @ src[tris[~good]], (0, 2, 1))
    return out


def _signed_areas(points: np.ndarray, tris: np.ndarray) -> np.ndarray:
    a, b, c = points[tris[:, 0]], points[tris[:, 1]], points[tris[:, 2]]
    return (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])


def _rasterise(points: np.ndarray, tris: np.ndarray, order: np.ndarray, origin: np.ndarray, shape) -> np.ndarray:
    """Triangle id (+1) per pixel of the box; later triangles in ``order`` win overlaps.
    (~1000 small triangles: the per-call overhead is the cost, so all indexing is done once.)"""
    ids = np.zeros(shape, dtype=np.int32)
    polygons = np.round((points - origin) * 16).astype(np.int32)[tris[order]]
    fill = cv2.fillConvexPoly
    for polygon, value in zip(polygons, (order + 1).tolist()):
        fill(ids, polygon, value, cv2.LINE_8, 4)
    return ids


def _skin_model(ycrcb: np.ndarray, sample: np.ndarray):
    values = ycrcb[sample].astype(np.float32)
    if len(values) < 50:
        return None
    median = np.median(values, axis=0)
    mad = np.median(np.abs(values - median), axis=0) * 1.4826 + np.array([6.0, 2.5, 2.5])
    return median, mad


# Luma varies with shading, so it counts for less than chroma.
_SKIN_WEIGHTS = np.array([0.35, 1.0, 1.0])


def _skin_mask(ycrcb: np.ndarray, model, limit: float = 3.2) -> np.ndarray:
    """Pixels within ``limit`` robust deviations of the skin model. The input is 8-bit, so each
    channel's weighted squared deviation comes from a 256-entry table."""
    median, mad = model
    levels = np.arange(256, dtype=np.float64)[:, None]
    table = (((levels - median) * (_SKIN_WEIGHTS / mad)) ** 2).astype(np.float32).reshape(1, 256, 3)
    return cv2.transform(cv2.LUT(ycrcb, table), np.ones((1, 3), np.float32)) < limit * limit


def _blur(image: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur whose cost does not grow with sigma: large blurs run on a smaller copy."""
    factor = int(sigma // 3)
    if factor < 2:
        return cv2.GaussianBlur(image, (0, 0), sigma)
    h, w = image.shape[:2]
    small = cv2.resize(image, (max(1, w // factor), max(1, h // factor)), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigma / factor)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def _grow(mask: np.ndarray, radius: float) -> np.ndarray:
    """Dilation by a disc of ``radius`` pixels, in time independent of the radius."""
    if radius < 1:
        return mask.astype(bool)
    return cv2.distanceTransform((~mask.astype(bool)).astype(np.uint8), cv2.DIST_L2, 3) <= radius


def _shrink(mask: np.ndarray, radius: float) -> np.ndarray:
    if radius < 1:
        return mask.astype(bool)
    return cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 3) > radius


def _lab_stats(lab: np.ndarray, mask: np.ndarray):
    values = lab[mask].astype(np.float32)
    return values.mean(0), values.std(0) + 1e-3


def _resize(image: np.ndarray, size: tuple[int, int], interpolation=cv2.INTER_LINEAR) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=interpolation)


def _nearest_inside(inside: np.ndarray, values: np.ndarray) -> np.ndarray:
    """For every pixel, ``values`` at the nearest ``inside`` pixel (its own when inside)."""
    _, labels = cv2.distanceTransformWithLabels(
        (~inside).astype(np.uint8), cv2.DIST_L2, 3, labelType=cv2.DIST_LABEL_PIXEL)
    # OpenCV numbers the zero pixels in raster order, the order of values[inside].
    return values[inside][labels - 1]


def swap_face(
    frame: np.ndarray,
    target_landmarks: np.ndarray,
    source: PreparedSource,
    options: SwapOptions = SwapOptions(),
    cache: dict | None = None,
) -> SwapResult:
    """Swaps ``source`` onto the face at ``target_landmarks``; ``frame`` (RGB uint8) is edited in place.

    ``cache``: a dict kept per tracked face across video frames; the skin model, the colour
    statistics and the grain decision are computed when it is empty and reused after (clear it
    on key frames so they follow the lighting).

    Three resolutions, each only as fine as it needs to be:
    - *mask* scale (face ~``options.mask_face`` px): the mesh is rasterised once into per-pixel sample
      maps (piecewise affine, so they upsample exactly), and masks, occlusion and colour
      statistics are computed there;
    - *texture* scale (face up to ``options.texture_face`` px, the detail a persona texture has): the
      persona is sampled, toned and given the photo's grain;
    - the frame's own resolution: the liquified target and the final blend, so hair and
      background stay sharp. The blend (and the texture's upsampling and grain) covers only
      the box where the blend weight is not zero; the rest of the crop is the liquified target."""
    topo = topology()
    height, width = frame.shape[:2]
    tgt = np.asarray(target_landmarks, dtype=np.float64)[:, :2]
    moved = shaped_points(tgt, source, options.shape_strength)
    full_target = extend_points(tgt)  # where target pixels come from
    full_dest = extend_points(moved)  # the output geometry
    full_dest[topo.ring_start:] = full_target[topo.ring_start:]  # ring edge fixed: continuity with the frame

    both = np.concatenate([full_dest, full_target])
    x0, y0 = np.floor(both.min(0)).astype(int) - 2
    x1, y1 = np.ceil(both.max(0)).astype(int) + 3
    x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, width), min(y1, height)
    if x1 - x0 < 4 or y1 - y0 < 4:
        return SwapResult((x0, y0, x1, y1), 0.0, 0.0)
    crop = frame[y0:y1, x0:x1].copy()  # the liquified target is written over the frame from it
    crop_size = (x1 - x0, y1 - y0)
    full_size = max(float(np.linalg.norm(full_dest[UP_VERTEX] - full_dest[CHIN_VERTEX])), 1.0)
    origin = np.array([x0, y0], dtype=np.float64)

    def scaled_size(face_px: float) -> tuple[int, int]:
        factor = min(1.0, face_px / full_size)
        return max(4, round(crop_size[0] * factor)), max(4, round(crop_size[1] * factor))

    lo_size, hi_size = scaled_size(options.mask_face), scaled_size(max(options.texture_face, options.mask_face))
    lo_factor = np.array([lo_size[0] / crop_size[0], lo_size[1] / crop_size[1]])
    work = _resize(crop, lo_size, cv2.INTER_AREA)
    p_target = (full_target - origin + 0.5) * lo_factor - 0.5
    p_dest = (full_dest - origin + 0.5) * lo_factor - 0.5
    box_w, box_h = lo_size
    face_size = float(np.linalg.norm(p_dest[UP_VERTEX] - p_dest[CHIN_VERTEX]))

    # --- geometry: one rasterisation, per-pixel sample maps ---------------------------------
    tris = topo.triangles
    areas = _signed_areas(p_dest, tris[topo.kind == 0])
    facing = np.sign(np.sum(areas)) or 1.0
    mesh_area = np.abs(areas)
    back = (np.sign(areas) != facing) & (mesh_area > 0.5 * np.median(mesh_area))
    # Paint order: ring, holes, back-facing mesh, then front-facing mesh on top.
    mesh_idx = np.flatnonzero(topo.kind == 0)
    order = np.concatenate([
        np.flatnonzero(topo.kind == 3), np.flatnonzero((topo.kind == 1) | (topo.kind == 2)),
        mesh_idx[back], mesh_idx[~back],
    ])
    ids = _rasterise(p_dest, tris, order, np.zeros(2), (box_h, box_w))  # 0: outside the extended mesh
    inside = ids > 0
    if not inside.any():
        return SwapResult((x0, y0, x1, y1), 0.0, 0.0)
    # Per-triangle lookup tables indexed by ``ids`` (row 0: outside). Outside the extended mesh
    # the target map is the identity and the source map continues the nearest triangle's affine
    # map, so both maps can be upsampled without seams.
    identity = np.array([[1, 0, 0, 0, 1, 0]], np.float32)
    to_target = np.concatenate([identity, _affines(p_dest, p_target, tris).reshape(-1, 6).astype(np.float32)])
    to_source = np.concatenate([identity, _affines(p_dest, source.points, tris).reshape(-1, 6).astype(np.float32)])
    near = _nearest_inside(inside, ids)
    xs = np.arange(box_w, dtype=np.float32)[None, :]
    ys = np.arange(box_h, dtype=np.float32)[:, None]

    def sample_map(table: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        c = np.take(table, index.ravel(), axis=0).reshape(box_h, box_w, 6)
        map_x = c[..., 2] + c[..., 0] * xs
        map_x += c[..., 1] * ys
        map_y = c[..., 5] + c[..., 3] * xs
        map_y += c[..., 4] * ys
        return map_x, map_y

    grid_x, grid_y = sample_map(to_target, ids)
    smap_x, smap_y = sample_map(to_source, near)
    # Target, liquified into the new proportions (identity outside the extended mesh).
    warped_target = cv2.remap(work, grid_x, grid_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    lo_src_image, lo_src_factor = source.level(face_size)
    warped_source = cv2.remap(
        lo_src_image, (smap_x + 0.5) * lo_src_factor - 0.5, (smap_y + 0.5) * lo_src_factor - 0.5,
        cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)

    kind = np.concatenate([[-1], topo.kind]).astype(np.int8)[ids]

    # --- masks ----------------------------------------------------------------------------
    hidden_table = np.zeros(len(tris) + 1, bool)
    hidden_table[mesh_idx[back] + 1] = True
    hidden = hidden_table[ids]
    region = (kind >= 0) & (kind <= 2)  # the face, holes and folds included
    local = p_dest.astype(np.float32)
    # The target's own eye openings and inner mouth, filled as polygons (a smiling mouth's
    # outline is not convex, so the hole fans alone would miss parts of it).
    # The eyes keep a margin (``options.eye_margin`` of their size) of the target's lids and
    # lashes, which is where a blink shows.
    hole_loops = ([local[topo.lips_inner]] if options.keep_inner_mouth else []) + (
        [_grown(local[topo.left_eye], options.eye_margin), _grown(local[topo.right_eye], options.eye_margin)]
        if options.keep_eyes else [])
    holes = np.zeros((box_h, box_w), np.uint8)
    if hole_loops:
        cv2.fillPoly(holes, [np.round(loop * 16).astype(np.int32) for loop in hole_loops], 1, shift=4)
    holes = holes.astype(bool) & region
    face = region & ~holes & ~hidden

    features = np.zeros((box_h, box_w), np.uint8)
    for loop in (topo.left_eye, topo.right_eye, topo.lips_outer):
        cv2.fillPoly(features, [np.round(local[loop]).astype(np.int32)], 1)
    brow_pts = np.round(local[topo.brows]).astype(np.int32)
    if len(brow_pts) >= 3:
        for half in (brow_pts[: len(brow_pts) // 2], brow_pts[len(brow_pts) // 2:]):
            cv2.fillConvexPoly(features, cv2.convexHull(half), 1)
    grow = max(1.5, 0.015 * face_size)
    features = _grow(features, grow)

    ycrcb = cv2.cvtColor(warped_target, cv2.COLOR_RGB2YCrCb)
    # Skin is learnt from the upper face (forehead, temples, around the eyes), which masks,
    # hands and microphones rarely cover; the lower face must then agree with it.
    up = p_dest[UP_VERTEX] - p_dest[CHIN_VERTEX]
    up /= np.linalg.norm(up) + 1e-9
    nose = p_dest[NOSE_TIP]
    height_above_nose = (xs - np.float32(nose[0])) * np.float32(up[0]) + (ys - np.float32(nose[1])) * np.float32(up[1])
    skin_sample = face & ~features & (height_above_nose > np.float32(0.12 * max(face_size, 1.0)))
    if skin_sample.sum() < 200:
        skin_sample = face & ~features
    persistent = cache is not None
    cache = {} if cache is None else cache
    if "skin" not in cache:
        cache["skin"] = _skin_model(ycrcb, skin_sample)
    model = cache["skin"]
    occluded_share = 0.0
    skin = np.ones((box_h, box_w), bool)
    occluder = np.zeros((box_h, box_w), bool)
    if options.occlusion and model is not None:
        skin = _skin_mask(ycrcb, model)
        radius = max(1.0, 0.01 * face_size)
        nonskin = _grow(_shrink(~skin & face & ~features, radius), radius)  # opening: no specks
        # A feature (eye, brow, mouth) counts as covered when most of the skin around it is
        # covered. Each is looked at in its own box (its ring cannot reach further).
        reach = 3 * grow
        band = _grow(features, reach) & ~features & face
        covered_features = np.zeros_like(features)
        n_feat, feat_labels, feat_stats, _ = cv2.connectedComponentsWithStats(features.astype(np.uint8))
        margin = int(np.ceil(reach)) + 2
        for label in range(1, n_feat):
            fx, fy, fw, fh = (int(v) for v in feat_stats[label, :4])
            part_box = (slice(max(fy - margin, 0), fy + fh + margin), slice(max(fx - margin, 0), fx + fw + margin))
            part = feat_labels[part_box] == label
            ring = _grow(part, reach) & band[part_box]
            if ring.sum() > 20 and nonskin[part_box][ring].mean() > 0.5:
                covered_features[part_box] |= part
        occluder = nonskin | (covered_features & region)
        occluder = _shrink(_grow(occluder, radius), radius) & region  # closing: whole occluders
        occluded_share = float(occluder[face].mean()) if face.any() else 0.0
        face &= ~occluder

    # Outer alpha: the face with its holes filled, plus the forehead up to the hairline.
    outer = (region & ~occluder).astype(np.float32)
    if options.forehead:
        centre = p_dest[topo.oval].mean(0).astype(np.float32)
        rel_x, rel_y = xs - centre[0], ys - centre[1]
        upness = (rel_x * np.float32(up[0]) + rel_y * np.float32(up[1])) / (np.sqrt(rel_x**2 + rel_y**2) + np.float32(1e-6))
        weight = np.clip((upness - np.float32(0.55)) / np.float32(0.3), 0.0, 1.0)
        # Skin in the target *and* in the persona: neither's hair, hat or background is pasted.
        source_ycrcb = cv2.cvtColor(warped_source, cv2.COLOR_RGB2YCrCb)
        if "source_skin" not in cache:
            cache["source_skin"] = _skin_model(source_ycrcb, skin_sample)
        candidates = (kind == 3) & skin
        if cache["source_skin"] is not None:
            candidates &= _skin_mask(source_ycrcb, cache["source_skin"])
        forehead = weight * candidates
        # only the part of the ring connected to the face (no islands of skin-coloured wall)
        n_lab, labels = cv2.connectedComponents(((forehead > 0.2) | face).astype(np.uint8))
        if n_lab > 1 and face.any():
            keep = np.zeros(n_lab, bool)
            keep[labels[face]] = True
            keep[0] = False
            forehead *= keep[labels]
        outer = np.maximum(outer, forehead)

    coverage = float(face.sum() / max(1, ((kind == 0) | (kind == 1)).sum()))
    # The liquified target, at full resolution, straight into the frame.
    base = _full_resolution_target(crop, grid_x, grid_y, lo_factor, out=frame[y0:y1, x0:x1])
    if not face.any():
        return SwapResult((x0, y0, x1, y1), 0.0, occluded_share)

    # --- colour and light (statistics at the mask scale) ----------------------------------
    target_lab = cv2.cvtColor(warped_target, cv2.COLOR_RGB2LAB)
    source_lab = cv2.cvtColor(warped_source, cv2.COLOR_RGB2LAB)
    stats_mask = face & ~features
    if stats_mask.sum() < 50:
        stats_mask = face
    if "colour" not in cache:
        t_mean, t_std = _lab_stats(target_lab, stats_mask)
        s_mean, s_std = _lab_stats(source_lab, stats_mask)
        # Contrast follows the photo within limits; chroma is amplified little (a small
        # chroma spread amplified turns lips and cheeks garish).
        gain = np.clip(t_std / s_std, 0.5, 1.25)
        gain[0] = np.clip(gain[0], 0.7, 1.4)
        cache["colour"] = (s_mean, gain, t_mean)
    s_mean, gain, t_mean = cache["colour"]
    # The persona's colours moved to the photo's statistics (an 8-bit input: one table per channel).
    levels = np.arange(256, dtype=np.float32)[:, None]
    toned = cv2.LUT(source_lab, ((levels - s_mean) * gain + t_mean).astype(np.float32).reshape(1, 256, 3))
    # Low-frequency lighting: the target's shading replaces the source's (the three weighted
    # averages blurred as one 3-channel image).
    sigma = max(2.0, face_size / 10)
    stats_weight = stats_mask.astype(np.float32)
    sums = _blur(cv2.merge([stats_weight, target_lab[..., 0] * stats_weight, toned[..., 0] * stats_weight]), sigma)
    weight_map = sums[..., 0] + np.float32(1e-4)
    light = np.clip((sums[..., 1] - sums[..., 2]) / weight_map, -40, 40)

    # --- the blend weight (mask scale) --------------------------------------------------------
    # The outer edge is soft; the edges of what must stay the target's (eye openings, inner
    # mouth, things in front of the face) are much sharper.
    soft = max(1.0, options.feather * face_size)
    core = _shrink(outer > 0.5, soft * 0.8).astype(np.float32)
    outer = np.where(outer >= 0.5, outer * core, outer)  # erode the solid part; soft forehead weights stay
    alpha = _blur(outer, soft * 0.5)
    keep = (holes | hidden | occluder) & region
    if keep.any():
        edge = max(0.6, 0.012 * face_size)
        alpha *= 1.0 - _blur(_grow(keep, edge).astype(np.float32), edge)
    alpha = np.clip(alpha, 0.0, 1.0)
    # Where the persona shows at all (a weight under 1/1024 changes no 8-bit pixel) and the
    # skin the grain is measured on: the only part of the crop worked at full resolution.
    shown = (alpha > 1.0 / 1024) | stats_mask
    cols, rows = np.flatnonzero(shown.any(0)), np.flatnonzero(shown.any(1))
    lo_box = (max(int(cols[0]) - 1, 0), max(int(rows[0]) - 1, 0), min(int(cols[-1]) + 2, box_w), min(int(rows[-1]) + 2, box_h))
    fx, fy = lo_factor
    bx0 = max(int(np.floor((lo_box[0] + 0.5) / fx - 0.5)), 0)
    by0 = max(int(np.floor((lo_box[1] + 0.5) / fy - 0.5)), 0)
    bx1 = min(int(np.ceil((lo_box[2] - 0.5) / fx - 0.5)) + 1, crop_size[0])
    by1 = min(int(np.ceil((lo_box[3] - 0.5) / fy - 0.5)) + 1, crop_size[1])
    part = (slice(by0, by1), slice(bx0, bx1))

    # --- the persona's texture at the texture scale -----------------------------------------
    tex_image, tex_factor = source.level(face_size * max(1.0, options.texture_face / options.mask_face))
    hi_smap_x = _resize((smap_x + 0.5) * tex_factor - 0.5, hi_size)
    hi_smap_y = _resize((smap_y + 0.5) * tex_factor - 0.5, hi_size)
    texture = cv2.remap(tex_image, hi_smap_x, hi_smap_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # The tone change is worked out in Lab at the mask scale and carried to the texture as a
    # smooth per-channel RGB ratio (Lab conversions at the texture scale cost more than the
    # rest of the texture work; the ratio keeps the texture's fine detail).
    toned[..., 0] += light
    toned = cv2.cvtColor(np.clip(toned, 0, 255, out=toned).astype(np.uint8), cv2.COLOR_LAB2RGB).astype(np.float32)
    ratio = np.clip((toned + 1.0) / (warped_source.astype(np.float32) + 1.0), 0.25, 4.0)
    result = cv2.multiply(texture, _resize(ratio, hi_size), dtype=cv2.CV_8U)
    # Grain and focus are compared at the frame's resolution, where the result is seen.
    base_part = base[part]
    mode, amount = "none", 0.0
    if options.grain:
        if "grain" not in cache:
            skin_part = _resize(stats_mask.astype(np.uint8), crop_size, cv2.INTER_NEAREST)[part].astype(bool)
            cache["grain"] = _grain(base_part, _resize(result, crop_size, cv2.INTER_CUBIC)[part], skin_part)
        mode, amount = cache["grain"]
    if mode == "soften":  # the source is sharper: soften it to the photo's focus
        sigma = amount * hi_size[0] / crop_size[0]
        if sigma >= 0.3:
            result = cv2.GaussianBlur(result, (0, 0), sigma)
    result = _resize(result, crop_size, cv2.INTER_CUBIC)[part]
    if mode == "noise":  # the photo is grainier: add matching grain
        result = _add_grain(result, amount, cache if persistent else None, options.seed)

    # --- feathered blend at full resolution -------------------------------------------------
    alpha = _resize(alpha, crop_size)[part]
    blended = cv2.blendLinear(result, base_part, alpha, 1.0 - alpha, dst=base_part)
    if blended is not base_part:
        base_part[...] = blended
    return SwapResult((x0, y0, x1, y1), coverage, occluded_share)


def _grain(base: np.ndarray, result: np.ndarray, mask: np.ndarray) -> tuple[str, float]:
    """Compares fine detail (high-pass std) of the target and the toned persona texture over
    the skin, both at the frame's resolution: ("soften", sigma), ("noise", std) or ("none", 0)."""
    target = cv2.cvtColor(base, cv2.COLOR_RGB2GRAY).astype(np.float32)
    persona = cv2.cvtColor(result, cv2.COLOR_RGB2GRAY).astype(np.float32)
    skin = _resize(mask.astype(np.uint8), (base.shape[1], base.shape[0]), cv2.INTER_NEAREST).astype(bool)
    t_hf = float((target - cv2.GaussianBlur(target, (0, 0), 1.2))[skin].std())
    r_hf = float((persona - cv2.GaussianBlur(persona, (0, 0), 1.2))[skin].std())
    if r_hf > t_hf * 1.25:
        return "soften", min(2.0, 0.6 * np.sqrt(max(r_hf**2 - t_hf**2, 0.0)) / max(t_hf, 0.5))
    if t_hf > r_hf * 1.1:
        return "noise", float(np.sqrt(t_hf**2 - r_hf**2))
    return "none", 0.0


def _add_grain(result: np.ndarray, std: float, cache: dict | None, seed: int) -> np.ndarray:
    """Adds luminance grain. Across video frames (``cache`` given) a noise field twice the size
    is drawn once, as saturating uint8 offsets, and cut at a new random place each frame: fresh
    grain for the price of two uint8 additions."""
    h, w = result.shape[:2]
    if cache is None:
        noise = np.random.default_rng(seed).standard_normal((h, w), dtype=np.float32) * np.float32(std)
        return np.clip(result + noise[..., None] + 0.5, 0, 255).astype(np.uint8)
    rng = cache.setdefault("rng", np.random.default_rng(seed))
    std = round(std * 2) / 2  # steps of 0.5 grey levels: small changes keep the field
    field_ = cache.get("noise")
    if field_ is None or field_[0].shape[0] < h + 16 or field_[0].shape[1] < w + 16 or field_[2] != std:
        noise = np.round(rng.standard_normal((2 * h, 2 * w), dtype=np.float32) * np.float32(std))
        noise = np.repeat(np.clip(noise, -127, 127)[..., None], 3, axis=2)
        field_ = cache["noise"] = (np.maximum(noise, 0).astype(np.uint8), np.maximum(-noise, 0).astype(np.uint8), std)
    y, x = rng.integers(0, field_[0].shape[0] - h + 1), rng.integers(0, field_[0].shape[1] - w + 1)
    brighter, darker = field_[0][y:y + h, x:x + w], field_[1][y:y + h, x:x + w]
    return cv2.subtract(cv2.add(result, brighter), darker)


def _full_resolution_target(crop: np.ndarray, grid_x: np.ndarray, grid_y: np.ndarray, factor: np.ndarray,
                            out: np.ndarray | None = None) -> np.ndarray:
    """The liquified target at the crop's own resolution (grids come from the mask scale),
    written into ``out`` when given (which must not overlap ``crop``)."""
    size = (crop.shape[1], crop.shape[0])
    if (grid_x.shape[1], grid_x.shape[0]) != size:
        # Bilinear upsampling commutes with the affine change of units: convert at the mask
        # scale, on ~1/10 of the pixels.
        fx, fy = np.float32(factor[0]), np.float32(factor[1])
        grid_x = cv2.resize((grid_x + np.float32(0.5)) / fx - np.float32(0.5), size, interpolation=cv2.INTER_LINEAR)
        grid_y = cv2.resize((grid_y + np.float32(0.5)) / fy - np.float32(0.5), size, interpolation=cv2.INTER_LINEAR)
    result = cv2.remap(crop, grid_x, grid_y, cv2.INTER_LINEAR, dst=out, borderMode=cv2.BORDER_REFLECT)
    if out is not None and result is not out:  # a view OpenCV could not write through
        out[...] = result
    return out if out is not None else result
