"""The classical mesh swap on synthetic faces (no models, no corpus needed)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.swap.classical import SwapOptions, prepare_source, swap_face, topology

LAYOUT = np.asarray(json.loads((Path(__file__).parent / "data/frontal_layout.json").read_text())["points"])
SKIN = (205, 160, 130)


def face_landmarks(centre, height, *, mouth_open=0.0):
    points = LAYOUT * height + np.asarray(centre, dtype=float)
    if mouth_open:
        inner = topology().lips_inner
        mid = points[inner].mean(0)
        points[inner] = mid + (points[inner] - mid) * np.array([1.0, 1.0 + mouth_open * 8])
    return points


def draw_face(size, landmarks, colour, *, pattern=False, seed=0):
    rng = np.random.default_rng(seed)
    image = np.full((size[1], size[0], 3), (90, 110, 140), np.uint8)
    hull = cv2.convexHull(np.round(landmarks[topology().oval]).astype(np.int32))
    cv2.fillConvexPoly(image, hull, colour)
    if pattern:  # texture that identifies the source
        for y in range(0, size[1], 14):
            cv2.line(image, (0, y), (size[0], y), (colour[0] - 50, colour[1] - 50, colour[2] - 50), 4)
    for loop in (topology().left_eye, topology().right_eye):
        cv2.fillConvexPoly(image, cv2.convexHull(np.round(landmarks[loop]).astype(np.int32)), (40, 30, 30))
    image = np.clip(image.astype(np.int16) + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    return image


@pytest.fixture
def source():
    lm = face_landmarks((256, 270), 300)
    return prepare_source(draw_face((512, 512), lm, (180, 150, 120), pattern=True, seed=1), lm)


def test_swap_changes_the_face_and_nothing_far_from_it(source):
    lm = face_landmarks((300, 260), 220)
    target = draw_face((640, 480), lm, SKIN)
    frame = target.copy()
    result = swap_face(frame, lm, source)
    x0, y0, x1, y1 = result.box
    assert 0 <= x0 < x1 <= 640 and 0 <= y0 < y1 <= 480
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(frame[outside], target[outside])
    cheek = (slice(250, 290), slice(240, 280))
    assert np.abs(frame[cheek].astype(int) - target[cheek].astype(int)).mean() > 4  # the stripes arrived
    # colour is matched to the target's skin, not the source's
    assert np.abs(frame[cheek].reshape(-1, 3).mean(0) - np.array(SKIN)).max() < 25
    assert result.coverage > 0.9


def test_face_cut_by_the_frame_edge(source):
    lm = face_landmarks((20, 200), 240)  # left half of the face outside the frame
    target = draw_face((400, 400), lm, SKIN)
    frame = target.copy()
    result = swap_face(frame, lm, source)
    assert result.box[0] == 0 and frame.shape == target.shape
    assert np.isfinite(frame).all()


def test_tiny_or_invisible_face_is_left_alone(source):
    frame = np.zeros((100, 100, 3), np.uint8)
    result = swap_face(frame, face_landmarks((-500, -500), 50), source)
    assert result.coverage == 0.0 and not frame.any()


def test_open_mouth_keeps_the_targets_inner_mouth(source):
    lm = face_landmarks((300, 260), 240, mouth_open=0.6)
    target = draw_face((640, 480), lm, SKIN)
    inner = np.zeros(target.shape[:2], np.uint8)
    cv2.fillPoly(inner, [np.round(lm[topology().lips_inner]).astype(np.int32)], 1)
    inner = cv2.erode(inner, np.ones((7, 7), np.uint8)).astype(bool)
    cv2.fillPoly(target, [np.round(lm[topology().lips_inner]).astype(np.int32)], (30, 10, 10))  # dark mouth
    frame = target.copy()
    swap_face(frame, lm, source, SwapOptions(shape_strength=0.0))
    assert inner.sum() > 100
    assert np.abs(frame[inner].astype(int) - target[inner].astype(int)).mean() < 3


def test_eye_openings_stay_the_targets_own(source):
    """Blinks and gaze follow the target: the eye openings are the target's pixels (unless
    keep_eyes is off, when the persona's eyes are painted in)."""
    lm = face_landmarks((300, 260), 240)
    target = draw_face((640, 480), lm, SKIN)
    eyes = np.zeros(target.shape[:2], np.uint8)
    for loop in (topology().left_eye, topology().right_eye):
        cv2.fillPoly(eyes, [np.round(lm[loop]).astype(np.int32)], 1)
    target[eyes.astype(bool)] = (20, 160, 40)  # green eyes: nothing like the persona's
    inner = cv2.erode(eyes, np.ones((5, 5), np.uint8)).astype(bool)
    kept, painted = target.copy(), target.copy()
    swap_face(kept, lm, source, SwapOptions(shape_strength=0.0))
    swap_face(painted, lm, source, SwapOptions(shape_strength=0.0, keep_eyes=False))
    assert inner.sum() > 30
    assert np.abs(kept[inner].astype(int) - target[inner].astype(int)).mean() < 4
    assert np.abs(painted[inner].astype(int) - target[inner].astype(int)).mean() > 30


def test_video_cache_reuses_colour_and_grain_between_frames(source):
    lm = face_landmarks((300, 260), 240)
    target = draw_face((640, 480), lm, SKIN)
    cache: dict = {}
    first, second = target.copy(), target.copy()
    swap_face(first, lm, source, SwapOptions(), cache)
    assert {"skin", "colour", "grain"} <= set(cache)
    colour = cache["colour"]
    shifted = lm + np.array([3.0, 2.0])  # the next frame: the face moved a little
    swap_face(second, shifted, source, SwapOptions(), cache)
    assert cache["colour"] is colour  # statistics were reused, not recomputed
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 0.1  # but the frame was swapped anew
    alone = target.copy()
    swap_face(alone, lm, source, SwapOptions())
    assert np.abs(alone.astype(int) - first.astype(int)).mean() < 1.0  # same result without a cache


def test_persona_hair_or_background_is_not_pasted_onto_the_forehead(source):
    lm = face_landmarks((300, 260), 240)
    target = draw_face((640, 480), lm, SKIN)
    # The target's forehead above the mesh is skin; the persona has a red band there.
    ring = np.zeros(target.shape[:2], np.uint8)
    oval = lm[topology().oval]
    centre = oval.mean(0)
    cv2.fillConvexPoly(ring, np.round(centre + 1.5 * (oval - centre)).astype(np.int32), 1)
    target[ring.astype(bool) & (np.arange(480)[:, None] < 200)] = SKIN
    image = source.image.copy()
    image[:60] = (230, 20, 20)
    red_source = prepare_source(image, source.landmarks)
    frame = target.copy()
    swap_face(frame, lm, red_source)
    top = frame[:200]
    red = (top[..., 0].astype(int) - top[..., 1].astype(int) > 90)
    assert red.sum() < 20


def test_something_in_front_of_the_face_stays_in_front(source):
    lm = face_landmarks((300, 240), 260)
    target = draw_face((640, 480), lm, SKIN)
    mask_box = (slice(260, 330), slice(230, 370))  # a blue "surgical mask" over the lower face
    target[mask_box] = (70, 120, 210)
    frame = target.copy()
    result = swap_face(frame, lm, source)
    inner = (slice(270, 320), slice(245, 355))
    assert np.abs(frame[inner].astype(int) - target[inner].astype(int)).mean() < 4
    assert result.occluded > 0.05
    cheek = (slice(200, 230), slice(250, 290))
    assert np.abs(frame[cheek].astype(int) - target[cheek].astype(int)).mean() > 3


def test_shape_transfer_moves_the_jaw_line(source):
    narrow = face_landmarks((300, 240), 240) * np.array([0.8, 1.0]) + np.array([60, 0])
    wide_source = prepare_source(source.image, source.landmarks)
    target = draw_face((640, 480), narrow, SKIN)
    texture_only, shaped = target.copy(), target.copy()
    swap_face(texture_only, narrow, wide_source, SwapOptions(shape_strength=0.0))
    swap_face(shaped, narrow, wide_source, SwapOptions(shape_strength=1.0))
    assert np.abs(texture_only.astype(int) - shaped.astype(int)).mean() > 0.5


def test_topology_is_a_consistent_manifold():
    topo = topology()
    assert topo.mesh.shape == (852, 3)
    edges = {}
    for tri in topo.mesh:
        for a, b in ((tri[0], tri[1]), (tri[1], tri[2]), (tri[2], tri[0])):
            edges[(a, b)] = edges.get((a, b), 0) + 1
    assert max(edges.values()) == 1  # consistent winding: no directed edge used twice
    assert len(topo.oval) == 36 and len(topo.lips_inner) == 20


def test_triangle_affines_in_closed_form_match_a_least_squares_solve():
    from engine.swap.classical import _affines

    rng = np.random.default_rng(3)
    dst = rng.uniform(0, 200, (60, 2))
    src = rng.uniform(0, 500, (60, 2))
    tris = np.stack([rng.permutation(60)[:3] for _ in range(40)])
    dst[tris[0, 2]] = (dst[tris[0, 0]] + dst[tris[0, 1]]) / 2  # a degenerate (zero-area) triangle
    maps = _affines(dst, src, tris)
    assert maps.shape == (40, 2, 3)
    for t, (a, b, c) in enumerate(tris):
        d = np.column_stack([dst[[a, b, c]], np.ones(3)])
        expected = (np.linalg.pinv(d) @ src[[a, b, c]]).T
        assert np.allclose(maps[t], expected, atol=1e-6 * max(1.0, np.abs(expected).max()))
    # every proper triangle maps its own corners exactly
    corners = np.einsum("tij,tkj->tki", maps[1:, :, :2], dst[tris[1:]]) + maps[1:, None, :, 2]
    assert np.allclose(corners, src[tris[1:]], atol=1e-6)


def test_rasterise_paints_in_order_and_marks_the_outside_zero():
    from engine.swap.classical import _rasterise

    points = np.array([[2.0, 2.0], [30.0, 2.0], [2.0, 30.0], [10.0, 10.0], [40.0, 10.0], [10.0, 40.0]])
    tris = np.array([[0, 1, 2], [3, 4, 5]])
    over = _rasterise(points, tris, np.array([0, 1]), np.zeros(2), (48, 48))
    under = _rasterise(points, tris, np.array([1, 0]), np.zeros(2), (48, 48))
    assert over[0, 0] == 0 and over[4, 4] == 1 and over[15, 20] == 2 and over[40, 40] == 0
    assert over[12, 12] == 2 and under[12, 12] == 1  # the overlap goes to the triangle painted last
    assert ((over > 0) == (under > 0)).all()


def test_skin_mask_is_the_weighted_robust_distance():
    from engine.swap.classical import _skin_mask

    rng = np.random.default_rng(5)
    median, mad = np.array([140.0, 150.0, 110.0]), np.array([30.0, 9.0, 7.0])
    ycrcb = np.clip(median + rng.normal(0, 2.5, (40, 50, 3)) * mad, 0, 255).astype(np.uint8)
    z = (ycrcb.astype(np.float64) - median) / mad * np.array([0.35, 1.0, 1.0])
    expected = np.sqrt((z**2).sum(-1)) < 3.2
    got = _skin_mask(ycrcb, (median, mad))
    assert got.dtype == bool and got.shape == (40, 50)
    assert 0.05 < expected.mean() < 0.95 and (got == expected).mean() > 0.999


def test_nearest_inside_extends_values_from_the_nearest_inside_pixel():
    from engine.swap.classical import _nearest_inside

    inside = np.zeros((30, 60), bool)
    inside[10:20, 5:15] = True
    inside[10:20, 45:55] = True
    values = np.zeros((30, 60), np.int32)
    values[10:20, 5:15] = 7
    values[10:20, 45:55] = 9
    values[15, 14] = 8  # the left block's right edge, middle row
    near = _nearest_inside(inside, values)
    assert (near[inside] == values[inside]).all()
    assert near[0, 0] == 7 and near[29, 59] == 9 and near[15, 17] == 8
    assert (near[:, :25] != 9).all() and (near[:, 35:] == 9).all()


def test_shape_transfer_keeps_the_targets_jaw_drop(source):
    """A speaking target's chin is lower than the closed-mouthed persona's: moving toward the
    persona's proportions must not close the target's jaw."""
    from engine.swap.classical import CHIN_VERTEX, LOWER_LIP, UPPER_LIP, shaped_points

    target = face_landmarks((256, 270), 300)
    size = np.linalg.norm(target[CHIN_VERTEX] - target[10])
    drop = 0.06 * size
    below = target[:, 1] > target[[61, 291], 1].mean() + 0.02 * size
    assert below[LOWER_LIP] and not below[UPPER_LIP]
    target[below, 1] += drop  # the jaw opens: lower lip, chin and lower face move down
    moved = shaped_points(target, source, 1.0)
    assert abs(moved[CHIN_VERTEX, 1] - target[CHIN_VERTEX, 1]) < 0.25 * drop
    gap = lambda p: p[LOWER_LIP, 1] - p[UPPER_LIP, 1]  # noqa: E731
    assert gap(moved) == pytest.approx(gap(target), abs=0.5)
