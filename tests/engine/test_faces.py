"""engine.faces: detection, mesh, pose, expression ratios, identity, ordering and selection.

Model-free tests (anchors, decoding, NMS, tiling, sorting, selection, pose of synthetic meshes)
run on a fresh clone. Tests marked ``models`` need the model files (``python -m engine models
fetch``): they skip when missing, and fail instead under CI. Corpus tests also need
SAFEFACE_CORPUS (see tests/conftest.py).
"""
from __future__ import annotations

import functools
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.errors import EngineError, ModelMissing, NoFaceFound
from engine.faces import (
    Face,
    FaceIndexOutOfRange,
    InvalidFaceSelection,
    NoMatchingFace,
    Pose,
    as_rgb,
    embedding_distance,
    select_faces,
    sort_faces,
)
from engine.faces import anchors as anc
from engine.faces import detection as det
from engine.faces import eyes as eye
from engine.faces import geometry as geo
from engine.faces import mesh as msh
from engine.faces.image import apply_affine, invert_affine, similarity_matrix, warp_crop

REPO = Path(__file__).resolve().parents[2]

# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------


def make_face(box, *, index=-1, score=0.9, embedding=None) -> Face:
    x0, y0, x1, y1 = box
    kp = np.array([[x0 + 0.3 * (x1 - x0), y0 + 0.4 * (y1 - y0)], [x0 + 0.7 * (x1 - x0), y0 + 0.4 * (y1 - y0)]] + [[0, 0]] * 4, float)
    face = Face(index=index, box=tuple(float(v) for v in box), score=score, keypoints=kp)
    if embedding is not None:
        face.embedding = np.asarray(embedding, dtype=np.float32)
    return face


def synthetic_mesh(yaw=0.0, pitch=0.0, roll=0.0, *, centre=(300.0, 200.0), scale=100.0) -> np.ndarray:
    """A 468-point 'mesh' whose pose-relevant points form a symmetric head (others at the
    centre), rotated by the given pose and written in image coordinates (y down, z away)."""
    head = np.zeros((468, 3))
    rng = np.random.default_rng(0)
    for k, (r, l) in enumerate(geo.SYMMETRIC_PAIRS):
        x, y, z = 0.3 + 0.15 * k, rng.uniform(-0.3, 0.4), -rng.uniform(0.0, 0.6)
        head[r] = (-x, y, z)
        head[l] = (x, y, z)
    head[geo.FOREHEAD] = (0.0, 0.9, 0.05)
    head[geo.SUBNASALE] = (0.0, -0.25, 0.05)
    head[geo.NOSE_TIP] = (0.0, -0.1, 0.45)
    # The mesh's forehead line leans back by PITCH_BIAS_DEG on an upright face: build that in.
    lean = geo.rotation_from_pose(0.0, geo.PITCH_BIAS_DEG, 0.0)
    rotation = geo.rotation_from_pose(yaw, pitch, roll) @ lean
    cam = head @ rotation.T * scale
    return np.stack([cam[:, 0] + centre[0], -cam[:, 1] + centre[1], -cam[:, 2]], axis=1)


def load_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        return as_rgb(np.asarray(image.convert("RGB")))


# ------------------------------------------------------------------------------------------------
# package hygiene
# ------------------------------------------------------------------------------------------------


def test_engine_faces_imports_without_django():
    code = "import sys, engine.faces; assert not any(m == 'django' or m.startswith('django.') for m in sys.modules), 'django imported'"
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_model_files_are_reached_through_engine_models(tmp_path, monkeypatch):
    from engine.faces import runtime

    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(tmp_path))
    with pytest.raises(ModelMissing) as error:
        runtime.model_path("face_landmark.tflite")
    assert "face_landmark.tflite" in str(error.value)


# ------------------------------------------------------------------------------------------------
# anchors, decoding, NMS (no models)
# ------------------------------------------------------------------------------------------------


def test_anchor_counts_match_the_detectors():
    short = anc.anchors_for(anc.SHORT_RANGE)
    full = anc.anchors_for(anc.FULL_RANGE)
    assert short.shape == (896, 2)
    assert full.shape == (2304, 2)


def test_short_range_anchor_layout():
    a = anc.generate_anchors(128, (8, 16, 16, 16), anchors_per_layer=2)
    # 16x16 grid, 2 anchors per cell, row-major, centres at (i + 0.5) / 16
    assert np.allclose(a[0], [0.5 / 16, 0.5 / 16]) and np.allclose(a[1], a[0])
    assert np.allclose(a[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(a[511], [15.5 / 16, 15.5 / 16])
    # then an 8x8 grid with the three stride-16 layers merged: 6 anchors per cell
    assert np.allclose(a[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(a[518], [1.5 / 8, 0.5 / 8])
    assert np.allclose(a[-1], [7.5 / 8, 7.5 / 8])


def test_full_range_anchor_layout():
    a = anc.generate_anchors(192, (4,), anchors_per_layer=1)
    assert np.allclose(a[0], [0.5 / 48, 0.5 / 48])
    assert np.allclose(a[47], [47.5 / 48, 0.5 / 48])
    assert np.allclose(a[48], [0.5 / 48, 1.5 / 48])


def test_decode_synthetic_regressors():
    anchors = np.array([[0.25, 0.5], [0.75, 0.75]], np.float32)
    size = 128
    raw = np.zeros((2, 16), np.float32)
    # anchor 0: box centred 8 px right of the anchor, 32x40 px; keypoint k at anchor + (k, -k) px
    raw[0, :4] = [8, 0, 32, 40]
    for k in range(6):
        raw[0, 4 + 2 * k : 6 + 2 * k] = [k, -k]
    boxes, kps = anc.decode_boxes(raw, anchors, size)
    cx, cy = 0.25 + 8 / size, 0.5
    assert np.allclose(boxes[0], [cx - 16 / size, cy - 20 / size, cx + 16 / size, cy + 20 / size], atol=1e-6)
    assert np.allclose(kps[0, 3], [0.25 + 3 / size, 0.5 - 3 / size], atol=1e-6)
    assert np.allclose(boxes[1], [0.75, 0.75, 0.75, 0.75])  # zero regressors: a point at the anchor


def test_sigmoid_scores_clip_without_overflow():
    with np.errstate(all="raise"):
        s = anc.sigmoid_scores(np.array([-1e6, -3.0, 0.0, 3.0, 1e6]))
    assert s[0] >= 0.0 and s[-1] <= 1.0 and abs(s[2] - 0.5) < 1e-6
    assert np.all(np.diff(s) >= 0)


def test_weighted_nms_merges_overlaps_and_keeps_separate_faces():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    scores = np.array([0.9, 0.6, 0.8])
    kps = np.zeros((3, 6, 2))
    kps[1] += 10.0
    out_boxes, out_scores, out_kps = anc.weighted_nms(boxes, scores, kps, iou_threshold=0.3)
    assert len(out_scores) == 2
    assert out_scores.tolist() == [0.9, 0.8]  # best score of each cluster, best first
    w = 0.6 / 1.5
    assert np.allclose(out_boxes[0], [w, w, 10 + w, 10 + w])  # score-weighted mean
    assert np.allclose(out_kps[0], 10.0 * w)
    assert np.allclose(out_boxes[1], [50, 50, 60, 60])


def test_weighted_nms_is_deterministic_and_handles_empty_input():
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10]], float)
    scores = np.array([0.7, 0.7, 0.7])
    first = anc.weighted_nms(boxes, scores, iou_threshold=0.3)
    second = anc.weighted_nms(boxes, scores, iou_threshold=0.3)
    assert np.array_equal(first[0], second[0]) and len(first[1]) == 2
    empty = anc.weighted_nms(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 6, 2)))
    assert empty[0].shape == (0, 4) and empty[2].shape == (0, 6, 2)


def _raw_for_box(spec, anchor_index, box_px, score_logit=5.0):
    """Detector output with one confident anchor regressing to ``box_px`` (tile pixels)."""
    anchors = anc.anchors_for(spec)
    n, size = len(anchors), spec.input_size
    regressors = np.zeros((n, 16), np.float32)
    logits = np.full(n, -10.0, np.float32)
    x0, y0, x1, y1 = box_px
    ax, ay = anchors[anchor_index] * size
    regressors[anchor_index, :4] = [(x0 + x1) / 2 - ax, (y0 + y1) / 2 - ay, x1 - x0, y1 - y0]
    logits[anchor_index] = score_logit
    return regressors, logits


def test_decode_tile_maps_back_to_image_pixels_and_drops_cut_faces():
    spec = anc.FULL_RANGE
    tile = det.Tile(spec, np.zeros((192, 192, 3), np.uint8), offset=(100.0, 40.0), scale=(0.5, 0.5), inner=(True, True, True, True))
    reg, logit = _raw_for_box(spec, 48 * 20 + 20, (70, 80, 110, 120))
    d = det.decode_tile(tile, reg, logit, 0.5, (2000, 2000))
    assert len(d) == 1
    assert np.allclose(d.boxes[0], [(70 + 100) / 0.5, (80 + 40) / 0.5, (110 + 100) / 0.5, (120 + 40) / 0.5], atol=1e-3)
    # the same face touching an inner tile border is left to a neighbouring tile
    reg, logit = _raw_for_box(spec, 48 * 20 + 1, (-5, 80, 30, 120))
    assert len(det.decode_tile(tile, reg, logit, 0.5, (2000, 2000))) == 0
    # ... but kept when that border is the image frame
    frame_tile = det.Tile(spec, tile.pixels, (0.0, 0.0), (1.0, 1.0), (False, True, True, True))
    assert len(det.decode_tile(frame_tile, reg, logit, 0.5, (192, 192))) == 1


def test_mirrored_pass_keeps_only_faces_cut_by_the_frame():
    boxes = np.array([
        [-40, 10, 40, 90],  # half outside on the left: a cut face
        [-90, 10, -10, 90],  # wholly in the reflection: a ghost
        [100, 10, 180, 90],  # inside: the plain pass handles it
        [-70, 10, 10, 90],  # mostly in the reflection
    ], float)
    assert det._crosses_frame(boxes, (400, 300)).tolist() == [True, False, False, False]


def test_pyramid_scales_and_tiles():
    assert det.pyramid_scales(1920, 1080, 400) == []  # the whole-image pass covers big faces
    scales = det.pyramid_scales(500, 375, 20)
    assert scales and max(scales) <= det.MAX_UPSCALE
    scales = det.pyramid_scales(4000, 3000, 20)
    assert len(scales) >= 2 and all(a / b <= det.LEVEL_RATIO + 1e-9 for a, b in zip(scales, scales[1:]))
    assert scales[-1] <= 1.25 * 192 / 4000 * det.LEVEL_RATIO
    assert det._positions(192, 192, 64) == [0]
    pos = det._positions(1000, 192, 64)
    assert pos[0] == 0 and pos[-1] == 1000 - 192 and all(b - a <= 128 for a, b in zip(pos, pos[1:]))


def test_prepare_detection_tiles():
    rgb = np.zeros((375, 500, 3), np.uint8)
    tiles = det.prepare_detection(rgb, min_size=20)
    kinds = [(t.spec.input_size, t.mirrored) for t in tiles[:4]]
    assert kinds == [(192, False), (128, False), (192, True), (128, True)]
    assert len(tiles) > 4
    for t in tiles:
        assert t.pixels.shape == (t.spec.input_size, t.spec.input_size, 3) and t.pixels.dtype == np.uint8
    # whole-image passes only when min_size is large
    assert len(det.prepare_detection(rgb, min_size=500)) == 4
    # the default grows with the image so a 4K photo stays cheap
    assert det.default_min_size(300, 200) == 20 and det.default_min_size(4000, 3000) == 200


def test_merge_detections_drops_a_part_inside_a_larger_face():
    big = det.Detections(np.array([[0, 0, 100, 100]], float), np.array([0.9]), np.zeros((1, 6, 2)))
    part = det.Detections(np.array([[20, 20, 50, 50]], float), np.array([0.8]), np.zeros((1, 6, 2)))
    other = det.Detections(np.array([[200, 0, 230, 30]], float), np.array([0.6]), np.zeros((1, 6, 2)))
    merged = det.merge_detections([big, part, other])
    assert len(merged) == 2 and merged.scores.tolist() == [0.9, 0.6]


# ------------------------------------------------------------------------------------------------
# image helpers and mesh ROI (no models)
# ------------------------------------------------------------------------------------------------


def test_as_rgb_converts_gray_rgba_and_float():
    assert as_rgb(np.zeros((4, 5), np.uint8)).shape == (4, 5, 3)
    rgba = np.zeros((4, 5, 4), np.uint8)
    rgba[..., 0] = 200
    out = as_rgb(rgba)
    assert out.shape == (4, 5, 3) and out[0, 0, 0] == 200
    assert as_rgb(np.ones((2, 2, 3), np.float32))[0, 0, 0] == 255
    with pytest.raises(EngineError):
        as_rgb(np.zeros((4, 5, 2), np.uint8))


def test_rotated_crop_roundtrip_and_orientation():
    m = similarity_matrix((100.0, 50.0), 40.0, math.radians(30), 192)
    assert np.allclose(apply_affine(m, np.array([[100.0, 50.0]])), [[96.0, 96.0]])
    # the direction at 30 degrees becomes horizontal
    p = np.array([[100 + 10 * math.cos(math.radians(30)), 50 + 10 * math.sin(math.radians(30))]])
    q = apply_affine(m, p)[0]
    assert abs(q[1] - 96.0) < 1e-9 and q[0] > 96.0
    assert np.allclose(apply_affine(invert_affine(m), apply_affine(m, p)), p)


def test_warp_crop_reduces_large_regions_without_aliasing():
    # pixel noise: a plain bilinear 10x reduction keeps it (aliasing), area averaging removes it
    image = np.random.default_rng(0).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    for side, angle in ((1920.0, 0.0), (1000.0, 0.3)):
        crop = warp_crop(image, similarity_matrix((1000.0, 1000.0), side, angle, 192), 192)[30:-30, 30:-30]
        assert crop.shape == (132, 132, 3)
        assert abs(float(crop.mean()) - 127.5) < 3 and float(crop.std()) < 20


def test_roi_from_detection_uses_eye_roll():
    box = (100, 100, 200, 200)
    kp = np.array([[130, 140], [170, 180], [150, 160], [150, 180], [110, 150], [190, 150]], float)
    roi = msh.roi_from_detection(box, kp)
    assert roi.center == (150.0, 150.0) and roi.size == pytest.approx(150.0)
    assert math.degrees(roi.angle) == pytest.approx(45.0)


def test_roi_from_landmarks_is_centred_on_the_mesh():
    mesh = synthetic_mesh(roll=20.0, centre=(400.0, 300.0))
    roi = msh.roi_from_landmarks(mesh)
    assert math.degrees(roi.angle) == pytest.approx(20.0, abs=0.5)
    assert np.hypot(roi.center[0] - 400.0, roi.center[1] - 300.0) < 60


# ------------------------------------------------------------------------------------------------
# pose and expression measurements (no models)
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pose",
    [(0, 0, 0), (30, 0, 0), (-60, 0, 0), (0, 20, 0), (0, -25, 0), (0, 0, 15), (25, -10, 12), (-40, 15, -20)],
)
def test_head_pose_of_a_synthetic_mesh(pose):
    estimated = geo.head_pose(synthetic_mesh(*pose))
    assert isinstance(estimated, Pose)
    assert np.allclose(tuple(estimated), pose, atol=0.5), estimated


def test_pose_signs_follow_the_image():
    # nose towards the image's right: its x grows relative to the face centre
    mesh = synthetic_mesh(yaw=30)
    assert mesh[geo.NOSE_TIP, 0] > 300.0
    # clockwise roll on screen: the subject's left eye side (image right) goes down
    mesh = synthetic_mesh(roll=20)
    assert mesh[263, 1] > mesh[33, 1]


def test_pose_rotation_roundtrip():
    for pose in [(10, 20, 30), (-70, 5, -12), (0, -45, 90)]:
        assert np.allclose(geo.pose_from_rotation(geo.rotation_from_pose(*pose)), pose, atol=1e-6)


def test_eye_and_mouth_openness():
    mesh = synthetic_mesh()
    # right eye: corners 10 apart, lids 3 apart; left eye lids closed; mouth 40 wide, 10 open
    for (a, b), lids, gap in ((geo.RIGHT_EYE[0], geo.RIGHT_EYE[1], 3.0), (geo.LEFT_EYE[0], geo.LEFT_EYE[1], 0.0)):
        mesh[a] = (0, 0, 0)
        mesh[b] = (10, 0, 0)
        for up, low in lids:
            mesh[up] = (5, -gap / 2, 0)
            mesh[low] = (5, gap / 2, 0)
    mesh[geo.MOUTH_CORNERS[0]] = (0, 50, 0)
    mesh[geo.MOUTH_CORNERS[1]] = (40, 50, 0)
    for up, low in geo.INNER_LIPS:
        mesh[up] = (20, 45, 0)
        mesh[low] = (20, 55, 0)
    left, right = geo.eye_openness(mesh)
    assert left == pytest.approx(0.0) and right == pytest.approx(0.3)
    assert geo.mouth_openness(mesh) == pytest.approx(0.25)


def test_eye_crops_mirror_the_subjects_left_eye_and_map_back():
    mesh = synthetic_mesh(roll=10.0)
    mesh[263] = (360, 190, 0)
    mesh[362] = (330, 185, 0)
    mesh[33] = (240, 170, 0)
    mesh[133] = (270, 175, 0)
    rgb = np.zeros((400, 600, 3), np.uint8)
    left, right = eye.prepare_eyes(rgb, mesh)
    assert left.mirrored and not right.mirrored
    assert left.tensor.shape == right.tensor.shape == (1, 64, 64, 3)
    for data, outer in ((left, 263), (right, 33)):
        crop_xy = apply_affine(data.matrix, mesh[[outer], :2])[0]
        if data.mirrored:
            crop_xy[0] = eye.EYE_SIZE - crop_xy[0]
        contour = np.zeros((71, 3))
        contour[0, :2] = crop_xy
        contour[0, 2] = 2.0
        image_points, _ = eye.normalize_eye(contour, np.zeros((5, 3)), data)
        assert np.allclose(image_points[0, :2], mesh[outer, :2], atol=1e-6)
        assert image_points[0, 2] == pytest.approx(2.0 * data.scale)
        assert crop_xy[0] < 32  # the outer corner is on the crop's left, as the model expects


def test_contour_openness():
    contour = np.zeros((71, 3))
    contour[0] = (0, 0, 0)
    contour[8] = (20, 0, 0)
    for up, low in eye.CONTOUR_LIDS:
        contour[up] = (10, -3, 0)
        contour[low] = (10, 3, 0)
    assert eye.contour_openness(contour) == pytest.approx(0.3)
    assert eye.contour_openness(np.zeros((71, 3))) == 0.0


def test_quality_score_ranks_sensibly():
    good = geo.quality_score(score=0.95, size=200, sharpness=500, pose=Pose(0, 0, 0))
    small = geo.quality_score(score=0.95, size=30, sharpness=500, pose=Pose(0, 0, 0))
    blurry = geo.quality_score(score=0.95, size=200, sharpness=5, pose=Pose(0, 0, 0))
    profile = geo.quality_score(score=0.95, size=200, sharpness=500, pose=Pose(80, 0, 0))
    assert 0.0 <= min(small, blurry, profile) and good <= 1.0
    assert good > max(small, blurry, profile)


def test_laplacian_sharpness():
    flat = np.full((64, 64, 3), 128, np.uint8)
    noisy = np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    assert geo.laplacian_sharpness(flat) == 0.0 < geo.laplacian_sharpness(noisy)


# ------------------------------------------------------------------------------------------------
# ordering and selection (no models)
# ------------------------------------------------------------------------------------------------


def test_sort_faces_left_to_right_with_indexes():
    faces = [make_face((300, 10, 350, 60)), make_face((0, 50, 50, 100)), make_face((150, 0, 200, 50))]
    ordered = sort_faces(faces)
    assert [f.box[0] for f in ordered] == [0, 150, 300]
    assert [f.index for f in ordered] == [0, 1, 2]


def test_sort_faces_orders_a_column_top_to_bottom_and_is_stable():
    # two faces almost above each other (centres 5 px apart in x): top first whatever the jitter
    top = (100, 0, 160, 60)
    bottom = (105, 100, 165, 160)
    right = (400, 50, 460, 110)
    for dx in (-8, -3, 0, 3, 8):
        lower = (bottom[0] + dx, bottom[1], bottom[2] + dx, bottom[3])
        for order in ([top, lower, right], [right, lower, top], [lower, right, top]):
            faces = sort_faces([make_face(b) for b in order])
            assert [f.box[1] for f in faces] == [0, 100, 50]
    # same boxes, any input order -> same result
    boxes = [(10 * i, (i * 37) % 50, 10 * i + 30, (i * 37) % 50 + 30) for i in range(8)]
    reference = [f.box for f in sort_faces([make_face(b) for b in boxes])]
    for seed in range(5):
        shuffled = [boxes[i] for i in np.random.default_rng(seed).permutation(len(boxes))]
        assert [f.box for f in sort_faces([make_face(b) for b in shuffled])] == reference


def _indexed(boxes, embeddings=None):
    faces = [make_face(b, embedding=None if embeddings is None else embeddings[i]) for i, b in enumerate(boxes)]
    return sort_faces(faces)


def test_select_all_largest_and_index():
    faces = _indexed([(0, 0, 20, 20), (100, 0, 160, 60), (300, 0, 340, 40)])
    chosen, others = select_faces(faces, "all")
    assert len(chosen) == 3 and others == []
    chosen, others = select_faces(faces, "largest")
    assert chosen[0].index == 1 and [f.index for f in others] == [0, 2]
    chosen, others = select_faces(faces, "index:2")
    assert chosen[0].index == 2 and [f.index for f in others] == [0, 1]
    chosen, _ = select_faces(faces, "index", index=0)
    assert chosen[0].index == 0


def test_select_index_out_of_range_says_how_many_faces():
    faces = _indexed([(0, 0, 20, 20), (100, 0, 160, 60)])
    with pytest.raises(FaceIndexOutOfRange) as error:
        select_faces(faces, "index:5")
    assert isinstance(error.value, NoFaceFound)
    assert "2 faces" in str(error.value) and "5" in str(error.value)
    with pytest.raises(FaceIndexOutOfRange):
        select_faces(faces, "index:-1")
    with pytest.raises(NoFaceFound):
        select_faces([], "largest")
    assert select_faces([], "all") == ([], [])


def test_select_rejects_malformed_requests():
    faces = _indexed([(0, 0, 20, 20)])
    for mode in ("biggest", "index:x", "index"):
        with pytest.raises(InvalidFaceSelection):
            select_faces(faces, mode)
    with pytest.raises(InvalidFaceSelection):
        select_faces(faces, "reference")  # no reference embedding
    with pytest.raises(InvalidFaceSelection):
        select_faces(faces, "reference", reference_embedding=np.zeros(128))  # no embeddings, no image


def test_select_by_reference_and_bystanders():
    rng = np.random.default_rng(3)
    alice, bob, carol = (rng.normal(0, 0.1, 128) for _ in range(3))
    faces = _indexed(
        [(0, 0, 50, 50), (100, 0, 150, 50), (200, 0, 250, 50)],
        embeddings=[bob, alice + rng.normal(0, 0.01, 128), carol],
    )
    chosen, others = select_faces(faces, "reference", reference_embedding=alice)
    assert [f.index for f in chosen] == [1] and [f.index for f in others] == [0, 2]
    chosen, others = select_faces(faces, "except-reference", reference_embedding=alice)
    assert [f.index for f in chosen] == [0, 2] and [f.index for f in others] == [1]
    chosen, _ = select_faces(faces, "except_reference", reference_embedding=alice)
    assert [f.index for f in chosen] == [0, 2]
    stranger = rng.normal(0, 0.1, 128) + 5.0
    with pytest.raises(NoMatchingFace) as error:
        select_faces(faces, "reference", reference_embedding=stranger)
    assert "No face matches the reference" in str(error.value) and isinstance(error.value, NoFaceFound)


def test_select_reference_computes_missing_embeddings_with_the_embedder():
    faces = _indexed([(0, 0, 50, 50), (100, 0, 150, 50)])
    calls = []

    def fake_embed(rgb, face):
        calls.append(face.index)
        face.embedding = np.full(128, float(face.index), np.float32)
        return face.embedding

    chosen, _ = select_faces(faces, "reference", reference_embedding=np.ones(128), rgb=np.zeros((10, 10, 3), np.uint8), embedder=fake_embed)
    assert [f.index for f in chosen] == [1] and calls == [0, 1]


# ------------------------------------------------------------------------------------------------
# with models
# ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def analyzed(analyzer, corpus):
    """name -> (rgb, faces), each corpus image analysed once per session."""

    @functools.lru_cache(maxsize=None)
    def get(name: str):
        rgb = load_rgb(corpus / "faces" / name)
        return rgb, analyzer.analyze(rgb)

    return get


def test_blank_and_noise_images_have_no_faces(analyzer):
    assert analyzer.analyze(np.zeros((480, 640, 3), np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 255, (600, 800, 3), dtype=np.uint8)
    assert analyzer.analyze(noise) == []
    assert analyzer.analyze(np.zeros((1, 1, 3), np.uint8)) == []


def test_default_analyzer_is_shared(analyzer):
    from engine.faces import FaceAnalyzer
    from engine.faces.runtime import compiled_model

    assert FaceAnalyzer.default() is analyzer
    assert compiled_model("face_landmark.tflite") is compiled_model("face_landmark.tflite")


SINGLE_FACE = [
    "face_obama_frontal.jpg",
    "face_obama_small_320x240.jpg",
    "face_biden_fullbody_2204px.jpg",
    "face_sundar_pichai_glasses.jpg",
    "face_woman_blonde_4352px.jpg",
    "face_george_clooney_older_2500px.jpg",
    "face_girl_child_smiling.jpg",
    "face_woman_surgical_mask.jpg",
    "face_rdj_frontal_1.webp",
    "face_kit_harington_beard_furs.jpg",
    "face_black_woman_tilted.jpg",
    "face_lin_manuel_miranda_rgba.png",
]
NO_FACE = ["noface_grass.jpg", "noface_dog_bicycle.jpg", "noface_street_cars_2482px.jpg"]
# dlib's annotations (examples/faces/training.xml): left, top, width, height
ELDERLY_FAMILY = [(194, 90, 37, 37), (158, 114, 37, 37), (381, 89, 45, 44), (94, 198, 37, 37), (178, 214, 37, 37), (294, 86, 37, 37), (309, 233, 45, 44)]
DINNER_TABLE = [(406, 166, 37, 37), (122, 134, 37, 37), (346, 138, 37, 37), (439, 175, 44, 44), (62, 134, 37, 37), (41, 194, 44, 44)]


def _matched(faces, annotations) -> int:
    """Annotated boxes with a detected face on them (IoU >= 0.3), one face per box."""
    used: set[int] = set()
    hits = 0
    for left, top, w, h in annotations:
        box = np.array([left, top, left + w, top + h], float)
        best, best_iou = None, 0.3
        for i, face in enumerate(faces):
            iou = anc.box_iou(box, np.asarray([face.box]))[0]
            if i not in used and iou >= best_iou:
                best, best_iou = i, iou
        if best is not None:
            used.add(best)
            hits += 1
    return hits


@pytest.mark.corpus
@pytest.mark.parametrize("name", SINGLE_FACE)
def test_single_face_images_have_exactly_one_face(analyzed, name):
    rgb, faces = analyzed(name)
    assert len(faces) == 1, faces
    face = faces[0]
    assert face.index == 0 and face.landmarks.shape == (468, 3) and face.keypoints.shape == (6, 2)
    assert face.presence >= 0.5 and 0.0 < face.quality <= 1.0
    # the mesh lies on the detected face
    x0, y0, x1, y1 = face.box
    nose = face.landmarks[1]
    assert x0 <= nose[0] <= x1 and y0 <= nose[1] <= y1


@pytest.mark.corpus
@pytest.mark.parametrize("name", NO_FACE)
def test_images_without_people_have_no_faces(analyzed, name):
    assert analyzed(name)[1] == []


@pytest.mark.corpus
def test_two_faces_left_to_right(analyzed):
    _, faces = analyzed("group_obama_biden_2faces.jpg")
    assert len(faces) == 2
    assert [f.index for f in faces] == [0, 1] and faces[0].center[0] < faces[1].center[0]


@pytest.mark.corpus
def test_small_faces_in_group_photos(analyzed):
    _, faces = analyzed("group_elderly_family_7faces.jpg")
    assert _matched(faces, ELDERLY_FAMILY) >= 5
    _, faces = analyzed("group_dinner_table_6faces.jpg")
    assert _matched(faces, DINNER_TABLE) >= 4
    _, faces = analyzed("group_oscar_selfie_7faces.jpg")
    assert len(faces) >= 5
    centres = [f.center[0] for f in faces]
    assert centres == sorted(centres) or all(f.index == i for i, f in enumerate(faces))


@pytest.mark.corpus
def test_face_cut_by_the_frame(analyzed):
    rgb, faces = analyzed("face_obama_partial_crop.jpg")
    assert len(faces) == 1 and faces[0].box[0] < 0  # the face continues past the left edge


@pytest.mark.corpus
def test_very_large_face_in_a_4k_photo(analyzed):
    _, faces = analyzed("face_woman_blonde_4352px.jpg")
    assert faces[0].size > 1000


@pytest.mark.corpus
def test_face_on_a_1080p_canvas(analyzer, corpus):
    import cv2

    rgb = load_rgb(corpus / "faces" / "face_obama_frontal.jpg")
    canvas = np.full((1080, 1920, 3), 90, np.uint8)
    small = cv2.resize(rgb, (int(rgb.shape[1] * 1080 / rgb.shape[0]), 1080), interpolation=cv2.INTER_AREA)
    canvas[:, 600 : 600 + small.shape[1]] = small
    faces = analyzer.analyze(canvas)
    assert len(faces) == 1 and abs(faces[0].pose.yaw) < 15


@pytest.mark.corpus
def test_analysis_is_deterministic(analyzer, corpus):
    rgb = load_rgb(corpus / "faces" / "group_elderly_family_7faces.jpg")
    a = analyzer.analyze(rgb)
    b = analyzer.analyze(rgb.copy())
    assert [f.box for f in a] == [f.box for f in b]
    assert all(np.array_equal(x.landmarks, y.landmarks) for x, y in zip(a, b))


@pytest.mark.corpus
def test_head_pose_on_real_faces(analyzed):
    frontal = analyzed("face_obama_frontal.jpg")[1][0]
    assert abs(frontal.pose.yaw) < 15 and abs(frontal.pose.roll) < 10
    profile = analyzed("face_woman_profile_left.jpeg")[1]
    assert len(profile) == 1 and abs(profile[0].pose.yaw) > 45
    assert frontal.quality > profile[0].quality


@pytest.mark.corpus
def test_expression_ratios(analyzed):
    obama = analyzed("face_obama_frontal.jpg")[1][0]
    laughing = analyzed("face_girl_child_smiling.jpg")[1][0]
    closed = analyzed("face_biden_fullbody_2204px.jpg")[1][0]
    assert laughing.mouth_open > obama.mouth_open > closed.mouth_open
    assert closed.mouth_open < 0.08
    for face in (obama, laughing, closed):
        left, right = face.eye_open
        assert 0.12 < left < 0.5 and 0.12 < right < 0.5


@pytest.mark.corpus
def test_wide_open_mouth_in_a_video_frame(analyzer, analyzed, corpus):
    import cv2

    capture = cv2.VideoCapture(str(corpus / "videos" / "video_woman_expressions_12s_silent.mp4"))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 320)
    ok, bgr = capture.read()
    capture.release()
    assert ok
    faces = analyzer.analyze(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    assert len(faces) == 1
    obama = analyzed("face_obama_frontal.jpg")[1][0]
    assert faces[0].mouth_open > obama.mouth_open + 0.1


@pytest.mark.corpus
def test_blurred_face_has_lower_quality(analyzed):
    sharp = analyzed("face_obama_frontal.jpg")[1][0]
    blurred = analyzed("face_motion_blur.jpg")[1]
    assert len(blurred) == 1
    assert blurred[0].sharpness < sharp.sharpness and blurred[0].quality < sharp.quality


@pytest.mark.corpus
def test_identity_embeddings(analyzer, analyzed):
    rgb_a, (obama,) = analyzed("face_obama_frontal.jpg")
    rgb_b, (obama_small,) = analyzed("face_obama_small_320x240.jpg")
    rgb_c, (biden,) = analyzed("face_biden_fullbody_2204px.jpg")
    e_a = analyzer.embed(rgb_a, obama)
    assert e_a.shape == (128,) and analyzer.embed(rgb_a, obama) is e_a  # cached on the face
    e_b = analyzer.embed(rgb_b, obama_small)
    e_c = analyzer.embed(rgb_c, biden)
    assert embedding_distance(e_a, e_b) < 0.6
    assert embedding_distance(e_a, e_c) > 0.6


@pytest.mark.corpus
def test_reference_selection_on_a_group(analyzer, analyzed):
    rgb_ref, (obama,) = analyzed("face_obama_frontal.jpg")
    reference = analyzer.embed(rgb_ref, obama)
    rgb, faces = analyzed("group_obama_biden_2faces.jpg")
    chosen, others = select_faces(faces, "reference", reference_embedding=reference, rgb=rgb)
    assert [f.index for f in chosen] == [0] and [f.index for f in others] == [1]  # Obama stands left
    bystanders, protected = select_faces(faces, "except-reference", reference_embedding=reference, rgb=rgb)
    assert [f.index for f in bystanders] == [1] and [f.index for f in protected] == [0]
    rgb_x, (woman,) = analyzed("face_woman_blonde_4352px.jpg")
    with pytest.raises(NoMatchingFace):
        select_faces(faces, "reference", reference_embedding=analyzer.embed(rgb_x, woman), rgb=rgb)


@pytest.mark.corpus
def test_track_refits_faces_without_detection(analyzer, analyzed):
    rgb, faces = analyzed("group_obama_biden_2faces.jpg")
    tracked = analyzer.track(rgb, faces)
    assert [f.index for f in tracked] == [0, 1]
    for old, new in zip(faces, tracked):
        span = np.linalg.norm(old.landmarks[33, :2] - old.landmarks[263, :2])
        assert np.abs(new.landmarks[:, :2] - old.landmarks[:, :2]).mean() < 0.1 * span


@pytest.mark.corpus
def test_fast_tracking_agrees_with_full_tracking(analyzer, analyzed):
    rgb, faces = analyzed("group_obama_biden_2faces.jpg")
    full = analyzer.track(rgb, faces)
    fast = analyzer.track(rgb, faces, fast=True)
    assert [f.index for f in fast] == [f.index for f in full] == [0, 1]
    for a, b in zip(full, fast):
        span = np.linalg.norm(a.landmarks[33, :2] - a.landmarks[263, :2])
        assert np.abs(a.landmarks[:, :2] - b.landmarks[:, :2]).mean() < 0.05 * span
        assert "irises" in a.extras and "irises" not in b.extras  # the iris model was skipped


@pytest.mark.corpus
def test_video_tracking_runs_the_same_mesh_model_on_one_thread(analyzer, analyzed):
    """track(fast=True) uses its own one-thread copy of the mesh model (video keeps both cores
    busy); it must give the same landmarks as the shared one."""
    rgb, faces = analyzed("group_obama_biden_2faces.jpg")
    tensor, _, _ = msh.prepare_mesh(rgb, msh.roi_from_landmarks(faces[0].landmarks))
    raw, logit = analyzer.forward_mesh(tensor)
    raw_one, logit_one = analyzer.forward_mesh(tensor, tracking=True)
    assert analyzer._tracking_mesh is not None and analyzer._tracking_mesh is not analyzer._mesh
    assert int(analyzer._tracking_mesh.compiled.get_property("INFERENCE_NUM_THREADS")) == 1
    assert np.abs(raw - raw_one).max() < 0.05 and abs(logit - logit_one) < 0.01
