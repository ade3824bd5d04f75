"""engine.safety.content: the explicit-content gate for swap targets.

Model-free tests drive the letterbox, decoding, NMS and verdict on hand-made raw outputs, and run
the whole checker on a tiny ONNX model written here (protobuf wire format by hand: the ``onnx``
package is not a dependency) with the real model's signature. Tests that need the real NudeNet
model skip when it is missing (fail under CI); corpus tests also need SAFEFACE_CORPUS (see
tests/conftest.py).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.errors import ModelCorrupt, ModelMissing
from engine.safety import EXPLICIT_LABELS, LABELS, ContentChecker, ContentVerdict, Finding, flagged_share
from engine.safety import content as cnt

from .conftest import require_models

ANCHORS = 2100
ROWS = 4 + len(LABELS)


def cls(label: str) -> int:
    return LABELS.index(label)


def raw_output(*detections: tuple[int, tuple[float, float, float, float], dict[str, float]]) -> np.ndarray:
    """A (1, 22, 2100) raw output: each detection is (anchor, (cx, cy, w, h) in 320-space,
    {label: score}); every other score is 0."""
    raw = np.zeros((1, ROWS, ANCHORS), np.float32)
    for anchor, box, scores in detections:
        raw[0, :4, anchor] = box
        for label, score in scores.items():
            raw[0, 4 + cls(label), anchor] = score
    return raw


def letterbox_for(width: int, height: int) -> cnt.Letterboxed:
    return cnt.prepare_content(np.zeros((height, width, 3), np.uint8))


# --------------------------------------------------------------------------------------------
# labels and letterbox
# --------------------------------------------------------------------------------------------


def test_labels_and_explicit_set():
    assert len(LABELS) == 18 and len(set(LABELS)) == 18
    assert LABELS[1] == "FACE_FEMALE" and LABELS[12] == "FACE_MALE" and LABELS[17] == "BUTTOCKS_COVERED"
    assert EXPLICIT_LABELS == {
        "FEMALE_GENITALIA_EXPOSED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "ANUS_EXPOSED",
    }
    assert EXPLICIT_LABELS <= set(LABELS)
    assert [LABELS[i] for i in cnt.EXPLICIT_CLASS_IDS] == [l for l in LABELS if l in EXPLICIT_LABELS]


def test_letterbox_scales_the_long_side_and_pads_right_and_bottom_black():
    rgb = np.zeros((480, 640, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    rgb[..., 2] = 51  # a little blue
    box = cnt.prepare_content(rgb)
    assert box.tensor.shape == (1, 3, 320, 320) and box.tensor.dtype == np.float32
    assert box.scale == (0.5, 0.5) and box.size == (640, 480)
    image, pad = box.tensor[0, :, :240, :], box.tensor[0, :, 240:, :]
    np.testing.assert_allclose(image[0], 1.0)  # channel 0 is red: RGB order, 0..1
    np.testing.assert_allclose(image[1], 0.0)
    np.testing.assert_allclose(image[2], 0.2, atol=1e-6)
    assert not pad.any()  # bottom padding is black


def test_letterbox_of_a_portrait_pads_on_the_right():
    box = cnt.prepare_content(np.full((800, 400, 3), 255, np.uint8))
    assert box.scale == (0.4, 0.4)
    assert box.tensor[0, :, :, :160].min() == 1.0 and not box.tensor[0, :, :, 160:].any()


def test_letterbox_of_a_large_photo_is_reduced_first():
    rgb = np.full((2903, 4352, 3), 128, np.uint8)
    box = cnt.prepare_content(rgb)
    assert box.tensor.shape == (1, 3, 320, 320)
    assert box.size == (4352, 2903)
    assert box.scale == pytest.approx((320 / 4352, 213 / 2903))
    np.testing.assert_allclose(box.tensor[0, :, :213, :], 128 / 255, atol=1e-6)
    assert not box.tensor[0, :, 213:, :].any()


def test_small_images_are_enlarged_and_rgba_and_grey_are_accepted():
    rgba = np.zeros((100, 50, 4), np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 0  # fully transparent: the colour still counts, alpha is dropped
    box = cnt.prepare_content(rgba)
    assert box.scale == (3.2, 3.2)
    np.testing.assert_allclose(box.tensor[0, :, :, :160], 200 / 255, atol=1e-6)
    np.testing.assert_array_equal(
        cnt.prepare_content(np.full((100, 50), 200, np.uint8)).tensor, box.tensor
    )


@pytest.mark.parametrize(
    "bad",
    [np.zeros((10, 10, 3), np.float32), np.zeros((10, 10, 2), np.uint8), np.zeros((0, 10, 3), np.uint8)],
)
def test_bad_images_are_value_errors(bad):
    with pytest.raises(ValueError):
        cnt.prepare_content(bad)


# --------------------------------------------------------------------------------------------
# decoding, NMS and the verdict on synthetic raw outputs
# --------------------------------------------------------------------------------------------


def test_boxes_are_mapped_back_to_input_pixels():
    raw = raw_output((5, (100, 50, 40, 20), {"FEMALE_BREAST_EXPOSED": 0.9}))
    verdict = cnt.normalize_content(raw, letterbox_for(640, 480))
    assert verdict == ContentVerdict(True, pytest.approx(0.9), (Finding("FEMALE_BREAST_EXPOSED", pytest.approx(0.9), (160.0, 80.0, 240.0, 120.0)),))
    assert verdict.findings[0].box == (160.0, 80.0, 240.0, 120.0)


def test_boxes_of_a_reduced_photo_and_clipping_to_the_image():
    # 4352 x 2903 -> 320 x 213: kx = 320/4352, ky = 213/2903
    raw = raw_output(
        (0, (160, 100, 32, 20), {"FACE_MALE": 0.8}),
        (1, (310, 210, 40, 30), {"FEET_EXPOSED": 0.7}),  # crosses the right border and the padding
    )
    verdict = cnt.normalize_content(raw, letterbox_for(4352, 2903))
    face, feet = verdict.findings
    kx, ky = 320 / 4352, 213 / 2903
    assert face.label == "FACE_MALE"
    assert face.box == pytest.approx((144 / kx, 90 / ky, 176 / kx, 110 / ky))
    assert feet.box == pytest.approx((290 / kx, 195 / ky, 4352.0, 2903.0))


def test_nms_removes_an_overlapping_duplicate_of_the_same_class_only():
    raw = raw_output(
        (10, (100, 100, 50, 50), {"BUTTOCKS_EXPOSED": 0.7}),
        (11, (103, 101, 50, 50), {"BUTTOCKS_EXPOSED": 0.9}),  # the better duplicate
        (12, (250, 250, 40, 40), {"BUTTOCKS_EXPOSED": 0.6}),  # elsewhere: kept
        (13, (100, 100, 50, 50), {"BELLY_EXPOSED": 0.5}),  # same place, other class: kept
    )
    verdict = cnt.normalize_content(raw, letterbox_for(320, 320))
    assert [(f.label, round(f.score, 3)) for f in verdict.findings] == [
        ("BUTTOCKS_EXPOSED", 0.9),
        ("BUTTOCKS_EXPOSED", 0.6),
        ("BELLY_EXPOSED", 0.5),
    ]
    assert verdict.findings[0].box == pytest.approx((78, 76, 128, 126))
    # Moderate overlap (IoU 1/3 < 0.45) is two detections, not a duplicate.
    apart = raw_output(
        (10, (100, 100, 50, 50), {"BUTTOCKS_EXPOSED": 0.7}),
        (11, (125, 100, 50, 50), {"BUTTOCKS_EXPOSED": 0.9}),
    )
    assert len(cnt.normalize_content(apart, letterbox_for(320, 320)).findings) == 2


def test_nms_helper_matches_a_hand_computation():
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [0, 0, 10, 10], [20, 20, 30, 30]], float)
    scores = np.array([0.5, 0.9, 0.8, 0.3])
    classes = np.array([0, 0, 1, 0])
    # box 1 (0.9) suppresses box 0 (IoU 9/11); box 2 is another class; box 3 is apart.
    assert cnt.nms(boxes, scores, classes, 0.45).tolist() == [1, 2, 3]
    assert cnt.nms(boxes, scores, classes, 0.95).tolist() == [1, 2, 0, 3]
    assert cnt.box_iou(boxes[0], boxes[1:2])[0] == pytest.approx(90 / 110)


def test_min_score_and_the_candidate_floor_are_honoured():
    raw = raw_output(
        (3, (100, 100, 50, 50), {"ANUS_EXPOSED": 0.45}),
        (4, (200, 200, 50, 50), {"MALE_GENITALIA_EXPOSED": 0.19}),  # under the 0.2 floor
    )
    box = letterbox_for(320, 320)
    below = cnt.normalize_content(raw, box)  # default min_score 0.5
    assert not below.flagged and below.score == pytest.approx(0.45)
    assert [f.label for f in below.findings] == ["ANUS_EXPOSED"]
    above = cnt.normalize_content(raw, box, cnt.ContentOptions(min_score=0.4))
    assert above.flagged and above.score == pytest.approx(0.45)
    assert cnt.normalize_content(raw, box, cnt.ContentOptions(min_score=0.45)).flagged  # >= counts
    nothing = cnt.normalize_content(raw_output((4, (200, 200, 50, 50), {"ANUS_EXPOSED": 0.19})), box)
    assert nothing == ContentVerdict(False, 0.0, ())


def test_non_explicit_labels_never_flag():
    not_explicit = [label for label in LABELS if label not in EXPLICIT_LABELS]
    raw = raw_output(*[(i, (20 + 14 * i, 20 + 14 * i, 10, 10), {label: 0.99}) for i, label in enumerate(not_explicit)])
    verdict = cnt.normalize_content(raw, letterbox_for(320, 320), cnt.ContentOptions(min_score=0.01))
    assert not verdict.flagged and verdict.score == 0.0
    assert sorted(f.label for f in verdict.findings) == sorted(not_explicit)  # still reported


def test_a_covered_class_cannot_hide_an_exposed_one_at_the_same_anchor():
    raw = raw_output((7, (100, 100, 60, 60), {"BUTTOCKS_COVERED": 0.7, "BUTTOCKS_EXPOSED": 0.6}))
    verdict = cnt.normalize_content(raw, letterbox_for(320, 320))
    assert verdict.flagged and verdict.score == pytest.approx(0.6)
    assert {f.label for f in verdict.findings} == {"BUTTOCKS_COVERED", "BUTTOCKS_EXPOSED"}


def test_candidates_are_capped_and_decoding_is_vectorised():
    raw = np.zeros((1, ROWS, ANCHORS), np.float32)
    grid = np.arange(ANCHORS)
    raw[0, 0], raw[0, 1] = (grid % 50) * 6 + 5, (grid // 50) * 7 + 5  # 2100 separate 4x4 boxes
    raw[0, 2:4] = 4
    raw[0, 4 + cls("FACE_FEMALE")] = np.linspace(0.21, 0.95, ANCHORS)
    verdict = cnt.normalize_content(raw, letterbox_for(320, 320), cnt.ContentOptions(max_candidates=300))
    assert len(verdict.findings) == 300
    assert verdict.findings[0].score == pytest.approx(0.95)
    assert min(f.score for f in verdict.findings) > 0.8


def test_raw_output_shape_is_checked_and_peak_score_sees_everything():
    with pytest.raises(ValueError):
        cnt.normalize_content(np.zeros((1, 20, ANCHORS), np.float32), letterbox_for(320, 320))
    raw = raw_output((9, (10, 10, 5, 5), {"FEMALE_GENITALIA_EXPOSED": 0.05, "FACE_MALE": 0.9}))
    assert cnt.peak_explicit_score(raw) == pytest.approx(0.05)


def test_options_are_validated():
    for bad in (dict(min_score=0), dict(min_score=1.5), dict(nms_iou=0), dict(max_candidates=0)):
        with pytest.raises(ValueError):
            cnt.ContentOptions(**bad)


def test_flagged_share():
    yes, no = ContentVerdict(True, 0.8, ()), ContentVerdict(False, 0.0, ())
    assert flagged_share([]) == 0.0
    assert flagged_share([yes, no, no, no]) == 0.25
    assert flagged_share([no] * 10) == 0.0


# --------------------------------------------------------------------------------------------
# the whole checker on a tiny ONNX model written here
# --------------------------------------------------------------------------------------------


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _int(field: int, value: int) -> bytes:
    return _varint(field << 3) + _varint(value)


def _bytes(field: int, value: bytes | str) -> bytes:
    data = value.encode() if isinstance(value, str) else value
    return _varint(field << 3 | 2) + _varint(len(data)) + data


def _tensor(name: str, array: np.ndarray) -> bytes:  # TensorProto
    kind = {np.dtype(np.float32): 1, np.dtype(np.int64): 7}[array.dtype]
    dims = b"".join(_int(1, d) for d in array.shape)
    return dims + _int(2, kind) + _bytes(8, name) + _bytes(9, array.astype(array.dtype.newbyteorder("<")).tobytes())


def _value_info(name: str, shape: tuple[int, ...]) -> bytes:  # ValueInfoProto of a float tensor
    dims = b"".join(_bytes(1, _int(1, d)) for d in shape)
    tensor_type = _int(1, 1) + _bytes(2, dims)
    return _bytes(1, name) + _bytes(2, _bytes(1, tensor_type))


def _node(op: str, inputs: list[str], outputs: list[str], **ints: int) -> bytes:  # NodeProto
    attributes = b"".join(_bytes(5, _bytes(1, k) + _int(3, v) + _int(20, 2)) for k, v in ints.items())
    return b"".join(_bytes(1, i) for i in inputs) + b"".join(_bytes(2, o) for o in outputs) + _bytes(4, op) + attributes


def tiny_model(path: Path, boxes: np.ndarray, scores: np.ndarray) -> Path:
    """A model with NudeNet's signature: output0 = concat(boxes, scores * mean(images)).

    ``boxes`` (1, 4, 2100) and ``scores`` (1, 18, 2100) are constants; the scores are scaled by
    the mean of the input tensor, so what the checker feeds the model shows in the verdict."""
    nodes = [
        _node("ReduceMean", ["images"], ["mean4"], keepdims=1),
        _node("Reshape", ["mean4", "shape3"], ["mean3"]),
        _node("Mul", ["scores", "mean3"], ["scaled"]),
        _node("Concat", ["boxes", "scaled"], ["output0"], axis=1),
    ]
    initializers = [
        _tensor("boxes", boxes.astype(np.float32)),
        _tensor("scores", scores.astype(np.float32)),
        _tensor("shape3", np.array([1, 1, 1], np.int64)),
    ]
    graph = (
        b"".join(_bytes(1, n) for n in nodes)
        + _bytes(2, "tiny")
        + b"".join(_bytes(5, t) for t in initializers)
        + _bytes(11, _value_info("images", (1, 3, 320, 320)))
        + _bytes(12, _value_info("output0", (1, boxes.shape[1] + scores.shape[1], boxes.shape[2])))
    )
    model = _int(1, 8) + _bytes(2, "safeface-tests") + _bytes(7, graph) + _bytes(8, _bytes(1, "") + _int(2, 13))
    path.write_bytes(model)
    return path


@pytest.fixture
def tiny(tmp_path) -> Path:
    raw = raw_output(
        (0, (100, 50, 40, 20), {"FEMALE_GENITALIA_EXPOSED": 0.88}),
        (1, (200, 200, 20, 20), {"FACE_FEMALE": 0.6}),
    )
    return tiny_model(tmp_path / "tiny.onnx", raw[:, :4], raw[:, 4:])


def test_checker_runs_a_model_end_to_end(tiny):
    checker = ContentChecker(tiny, providers=["CPUExecutionProvider"])
    white = np.full((480, 640, 3), 255, np.uint8)  # input mean 0.75 (a quarter is padding)
    verdict = checker.check(white)
    assert verdict.flagged and verdict.score == pytest.approx(0.66, abs=1e-5)
    assert [f.label for f in verdict.findings] == ["FEMALE_GENITALIA_EXPOSED", "FACE_FEMALE"]
    assert verdict.findings[0].box == pytest.approx((160, 80, 240, 120))
    assert verdict.findings[1].box == pytest.approx((380, 380, 420, 420))
    # Red only: mean 0.25 -> explicit 0.22 (kept, not flagged), face 0.15 (under the floor).
    red = np.zeros((480, 640, 4), np.uint8)
    red[..., 0] = 255
    red[..., 3] = 255
    dim = checker.check(red)
    assert not dim.flagged and dim.score == pytest.approx(0.22, abs=1e-5)
    assert [f.label for f in dim.findings] == ["FEMALE_GENITALIA_EXPOSED"]
    assert ContentChecker(tiny, min_score=0.15, providers=["CPUExecutionProvider"]).check(red).flagged
    assert checker.check(np.zeros((480, 640, 3), np.uint8)) == ContentVerdict(False, 0.0, ())


def test_sessions_are_cached_per_model_and_providers(tiny):
    a = ContentChecker(tiny, providers=["CPUExecutionProvider"])
    b = ContentChecker(str(tiny), min_score=0.9, providers=("CPUExecutionProvider",))
    assert a.session is b.session and a.options != b.options


def test_missing_and_broken_model_files_raise_typed_errors(tmp_path, monkeypatch):
    with pytest.raises(ModelMissing):
        ContentChecker(tmp_path / "absent.onnx")
    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(tmp_path / "empty"))
    with pytest.raises(ModelMissing, match="models fetch"):
        ContentChecker()
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ModelCorrupt):
        ContentChecker(junk, providers=["CPUExecutionProvider"])
    wrong = tiny_model(tmp_path / "wrong.onnx", np.zeros((1, 4, 10)), np.zeros((1, 3, 10)))  # 7 rows
    with pytest.raises(ModelCorrupt, match="not the expected detector"):
        ContentChecker(wrong, providers=["CPUExecutionProvider"])


# --------------------------------------------------------------------------------------------
# the real model
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def checker() -> ContentChecker:
    require_models("safety")
    return ContentChecker.default()


def test_real_model_signature_and_a_blank_image(checker):
    (images,), (output,) = checker.session.get_inputs(), checker.session.get_outputs()
    assert images.name == "images" and images.shape[1] == 3 and output.shape[1] == ROWS
    raw, box = checker.raw(np.full((240, 320, 3), 127, np.uint8))
    assert raw.shape == (1, ROWS, ANCHORS)
    assert checker.check(np.full((240, 320, 3), 127, np.uint8)) == ContentVerdict(False, 0.0, ())
    assert ContentChecker.default() is checker


def corpus_images(corpus: Path) -> list[Path]:
    files = sorted(p for p in (corpus / "faces").iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".webp"))
    assert len(files) >= 20
    return files


@pytest.mark.corpus
def test_no_corpus_image_is_flagged(checker, corpus):
    from engine.media import load_image

    scores = {p.name: checker.check(load_image(p).pixels).score for p in corpus_images(corpus)}
    flagged = {name: score for name, score in scores.items() if score >= 0.5}
    assert flagged == {}


@pytest.mark.corpus
def test_a_face_photo_yields_a_face_finding_around_the_face(checker, corpus):
    from engine.media import load_image

    image = load_image(corpus / "faces" / "face_obama_frontal.jpg")  # 910 x 1137
    faces = [f for f in checker.check(image.pixels).findings if f.label in ("FACE_FEMALE", "FACE_MALE")]
    assert len(faces) == 1 and faces[0].score > 0.5
    # Where NudeNet's own reference code puts this face: x 370-615, y 155-432.
    assert faces[0].box == pytest.approx((370, 155, 615, 432), abs=12)


@pytest.mark.corpus
def test_a_4k_photo_maps_the_face_back_to_full_resolution(checker, corpus):
    from engine.media import load_image

    image = load_image(corpus / "faces" / "face_woman_blonde_4352px.jpg")
    verdict = checker.check(image.pixels)
    (face,) = [f for f in verdict.findings if f.label.startswith("FACE_")]
    x0, y0, x1, y1 = face.box
    assert 1500 < x0 < x1 < 3500 and 500 < y0 < y1 < 2200 and x1 - x0 > 800
    assert not verdict.flagged


@pytest.mark.corpus
def test_a_talking_head_video_is_not_refused(checker, corpus):
    from engine.media import iter_frames, probe_video

    path = corpus / "videos" / "video_aoc_talking_5s.mp4"
    every = max(1, round(float(probe_video(path).fps)))
    verdicts = [checker.check(frame.rgb) for frame in iter_frames(path, every=every)]
    assert len(verdicts) >= 4
    assert flagged_share(verdicts) == 0.0
