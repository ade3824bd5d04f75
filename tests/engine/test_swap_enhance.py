"""Face enhancer (GFPGAN / CodeFormer ONNX) and occlusion / region masks (XSeg / BiSeNet ONNX).

The real weights cannot be fetched here, so every test builds a tiny ONNX model with the real
file's name, input / output names and shapes, computing something checkable, and loads it through
the real code path: a temporary SAFEFACE_MODELS_DIR, a manifest entry (the production entry with the
tiny file's size and sha256), engine.models.model_path (licence gate, size, hash), onnxruntime.

* enhancer model: ``y = -x`` (de-normalised: 255 - v per channel) plus a +2 marker (clipped to
  white) on the RED channel around the ffhq_512 template's eye points: alignment, RGB order,
  normalisation, de-normalisation and paste-back show in the frame's pixels.
* CodeFormer model: ``y = x * weight``.
* XSeg model: visibility ``1 - channel0`` of its NHWC input (channel 0 is blue, XSeg takes BGR).
* BiSeNet model: 1x1 convolution, class 1 (skin) = normalised red, 10 (nose) = green, 0
  (background) = blue.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.errors import LicenseRefused, ModelCorrupt, ModelMissing
from engine.models import MANIFEST, get_entry
from engine.swap import align, masks
from engine.swap.enhance import ENHANCERS, FaceEnhancer
from engine.swap.masks import FaceMasks, OcclusionMasker, RegionMasker, combine_masks

SIZE = 512
OPSET = [helper.make_opsetid("", 17)]


# --------------------------------------------------------------------------------------------
# tiny models
# --------------------------------------------------------------------------------------------


def _save(model: onnx.ModelProto) -> bytes:
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def eye_marker(radius: int = 12) -> np.ndarray:
    """(1, 1, 512, 512) float32: 2.0 in squares around the ffhq_512 eye points, 0 elsewhere."""
    marker = np.zeros((1, 1, SIZE, SIZE), np.float32)
    for x, y in align.template_points("ffhq_512", SIZE)[:2]:
        marker[0, 0, int(y) - radius:int(y) + radius, int(x) - radius:int(x) + radius] = 2.0
    return marker


def enhancer_model(batch="N", size: int = SIZE) -> bytes:
    """GFPGAN-shaped: input 'input' (batch, 3, s, s) -> output 'output' = -x + red eye marker."""
    zeros = np.zeros((1, 2, size, size), np.float32)
    marker = np.concatenate([eye_marker()[:, :, :size, :size], zeros], axis=1)  # red channel only
    graph = helper.make_graph(
        [helper.make_node("Neg", ["input"], ["neg"]), helper.make_node("Add", ["neg", "marker"], ["output"])],
        "tiny_gfpgan",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, size, size])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 3, size, size])],
        initializer=[numpy_helper.from_array(marker, "marker")],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET))


def codeformer_model() -> bytes:
    """CodeFormer-shaped: inputs 'input' (N, 3, 512, 512) and 'weight' (1,) double -> x * weight."""
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["weight"], ["w"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["input", "w"], ["output"]),
        ],
        "tiny_codeformer",
        [
            helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE]),
            helper.make_tensor_value_info("weight", TensorProto.DOUBLE, [1]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET))


def xseg_model(batch="N") -> bytes:
    """XSeg-shaped: input 'input' (N, 256, 256, 3) BGR 0..1 -> 'output' (N, 256, 256, 1) = 1 - blue."""
    graph = helper.make_graph(
        [
            helper.make_node("Slice", ["input", "starts", "ends", "axes"], ["blue"]),
            helper.make_node("Sub", ["one", "blue"], ["output"]),
        ],
        "tiny_xseg",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 256, 256, 3])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [batch, 256, 256, 1])],
        initializer=[
            numpy_helper.from_array(np.array([0], np.int64), "starts"),
            numpy_helper.from_array(np.array([1], np.int64), "ends"),
            numpy_helper.from_array(np.array([3], np.int64), "axes"),
            numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        ],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET))


def bisenet_model() -> bytes:
    """BiSeNet-shaped: input 'input' (N, 3, 512, 512) -> 'output' (N, 19, 512, 512) class scores."""
    weights = np.zeros((19, 3, 1, 1), np.float32)
    weights[1, 0] = 1.0  # skin <- red
    weights[10, 1] = 1.0  # nose <- green
    weights[0, 2] = 1.0  # background <- blue
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "w"], ["output"])],
        "tiny_bisenet",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 19, SIZE, SIZE])],
        initializer=[numpy_helper.from_array(weights, "w")],
    )
    return _save(helper.make_model(graph, opset_imports=OPSET))


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    folder.mkdir()
    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(folder))
    monkeypatch.delenv("SAFEFACE_COMMERCIAL", raising=False)
    masks.clear_sessions()
    yield folder
    masks.clear_sessions()


def install(folder: Path, files: dict[str, bytes]) -> list:
    """Write ``files`` into the models folder; return a manifest whose entries for them are the
    production entries with these files' sizes and hashes."""
    replaced = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        replaced[name] = dataclasses.replace(
            get_entry(name), sha256=hashlib.sha256(data).hexdigest(), size=len(data)
        )
    return [replaced.get(e.name, e) for e in MANIFEST]


# --------------------------------------------------------------------------------------------
# synthetic frames and faces
# --------------------------------------------------------------------------------------------


def smooth_frame(h: int = 480, w: int = 640) -> np.ndarray:
    """Gently varying colours, distinct per channel (interpolation errors stay tiny), 40..200."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    r = 70 + 60 * (x / w)
    g = 110 + 50 * (y / h)
    b = 150 + 40 * np.sin(x / 97.0) * np.cos(y / 83.0)
    return np.stack([r, g, b], axis=-1).round().astype(np.uint8)


def face_points(cx: float, cy: float, width: float, angle_deg: float = 0.0) -> np.ndarray:
    """Five points of a face whose ffhq_512 crop is ``width`` frame pixels wide, centred at
    (cx, cy), rotated by ``angle_deg``."""
    t = align.TEMPLATES["ffhq_512"] - 0.5
    a = np.deg2rad(angle_deg)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (t @ rot.T * width + (cx, cy)).astype(np.float32)


def box_of(points: np.ndarray, width: float, cx: float, cy: float) -> tuple[int, int, int, int]:
    half = width / np.sqrt(2)  # a rotated square's half extent at most
    return int(cx - half) - 2, int(cy - half) - 2, int(cx + half) + 3, int(cy + half) + 3


def outside_unchanged(before: np.ndarray, after: np.ndarray, box) -> None:
    x0, y0, x1, y1 = box
    keep = np.ones(before.shape[:2], bool)
    keep[max(y0, 0):y1, max(x0, 0):x1] = False
    assert keep.any()
    assert np.array_equal(before[keep], after[keep]), "pixels outside the pasted box changed"


def face_core(points: np.ndarray) -> tuple[slice, slice]:
    """A small box between the eyes and the mouth (box mask ~ 1 there, no marker)."""
    nose = points[2]
    return slice(int(nose[1]) - 6, int(nose[1]) + 6), slice(int(nose[0]) - 6, int(nose[0]) + 6)


# --------------------------------------------------------------------------------------------
# enhancer
# --------------------------------------------------------------------------------------------


def test_enhancer_aligns_normalises_and_pastes_back(models_dir):
    manifest = install(models_dir, {"gfpgan_1.4.onnx": enhancer_model()})
    enhancer = FaceEnhancer("gfpgan_1.4", blend=1.0, manifest=manifest)
    frame = smooth_frame()
    before = frame.copy()
    points = face_points(300, 250, 220, angle_deg=12)

    box = enhancer.enhance(frame, points)

    # Only the crop's footprint may change, and it did change.
    x0, y0, x1, y1 = box
    assert (x0, y0) >= (0, 0) and x1 > x0 and y1 > y0
    outside_unchanged(before, frame, box)
    # De-normalisation of -x is 255 - v exactly; only warp/unwarp interpolation differs.
    rows, cols = face_core(points)
    expected = 255 - before[rows, cols].astype(int)
    assert np.abs(frame[rows, cols].astype(int) - expected).max() <= 3
    # The marker drawn at the template's eye points lands on the frame's eye points, red only:
    # alignment (rotation included) and RGB channel order.
    for x, y in points[:2]:
        px = frame[int(round(y)), int(round(x))].astype(int)
        orig = before[int(round(y)), int(round(x))].astype(int)
        assert px[0] >= 250, f"no red marker at eye ({x:.0f}, {y:.0f}): {px}"
        assert abs(px[2] - (255 - orig[2])) <= 3, "blue channel should be inverted, not marked"
    # Midway between the eyes there is no marker.
    mid = points[:2].mean(axis=0).round().astype(int)
    assert frame[mid[1], mid[0], 0] < 250


def test_enhancer_blend_mixes_with_the_original(models_dir):
    manifest = install(models_dir, {"gfpgan_1.4.onnx": enhancer_model()})
    points = face_points(320, 240, 200)
    rows, cols = face_core(points)
    frame = smooth_frame()
    original = frame[rows, cols].astype(float)

    FaceEnhancer("gfpgan_1.4", blend=0.8, manifest=manifest).enhance(frame, points)
    expected = 0.2 * original + 0.8 * (255 - original)
    assert np.abs(frame[rows, cols] - expected).max() <= 3

    untouched = smooth_frame()
    FaceEnhancer("gfpgan_1.4", blend=0.0, manifest=manifest).enhance(untouched, points)
    assert np.array_equal(untouched, smooth_frame())


def test_codeformer_weight_input(models_dir):
    manifest = install(models_dir, {"codeformer.onnx": codeformer_model()})
    points = face_points(320, 240, 200)
    rows, cols = face_core(points)

    identity = smooth_frame()
    FaceEnhancer("codeformer", blend=1.0, weight=1.0, manifest=manifest).enhance(identity, points)
    assert np.abs(identity.astype(int) - smooth_frame().astype(int)).max() <= 2  # y = x

    grey = smooth_frame()
    FaceEnhancer("codeformer", blend=1.0, weight=0.0, manifest=manifest).enhance(grey, points)
    assert np.all(np.abs(grey[rows, cols].astype(int) - 128) <= 1)  # y = 0 -> mid grey

    half = smooth_frame()
    FaceEnhancer("codeformer", blend=1.0, weight=0.5, manifest=manifest).enhance(half, points)
    v = smooth_frame()[rows, cols].astype(float)
    expected = ((v / 127.5 - 1) * 0.5 + 1) / 2 * 255
    assert np.abs(half[rows, cols] - expected).max() <= 2


@pytest.mark.parametrize("batch", ["N", 1])
def test_batch_equals_one_by_one(models_dir, monkeypatch, batch):
    manifest = install(models_dir, {"gfpgan_1.4.onnx": enhancer_model(batch=batch)})
    enhancer = FaceEnhancer("gfpgan_1.4", blend=0.8, manifest=manifest)
    assert enhancer.batched is (batch == "N")
    calls = []
    run = enhancer.session.run
    monkeypatch.setattr(enhancer.session, "run", lambda *a, **k: calls.append(a[1]["input"].shape[0]) or run(*a, **k))
    faces = [face_points(160, 200, 150, 8), face_points(470, 260, 170, -15)]
    other_frame = np.ascontiguousarray(smooth_frame()[::-1])
    faces_other = face_points(330, 240, 180, 4)

    one = smooth_frame()
    other_one = other_frame.copy()
    boxes_one = [enhancer.enhance(one, p) for p in faces] + [enhancer.enhance(other_one, faces_other)]

    many = smooth_frame()
    other_many = other_frame.copy()
    boxes_many = enhancer.enhance_batch([(many, faces[0]), (many, faces[1]), (other_many, faces_other)])

    assert boxes_one == boxes_many
    # One inference for the three faces when the batch axis is dynamic, one per face otherwise.
    assert calls == [1, 1, 1] + ([3] if batch == "N" else [1, 1, 1])
    assert np.array_equal(one, many)
    assert np.array_equal(other_one, other_many)
    assert not np.array_equal(many, smooth_frame())


def test_enhancer_keeps_occluded_pixels_with_xseg(models_dir):
    manifest = install(models_dir, {"gfpgan_1.4.onnx": enhancer_model(), "xseg_1.onnx": xseg_model()})
    face_masks = FaceMasks(occluder=OcclusionMasker("xseg_1", manifest=manifest))
    points = face_points(320, 240, 220)
    frame = smooth_frame()
    frame[..., 2] = 0  # the tiny XSeg sees "visible" where blue is 0
    frame[250:300, 250:300] = (0, 0, 255)  # a blue "hand" over the lower face
    before = frame.copy()

    FaceEnhancer("gfpgan_1.4", blend=1.0, masks=face_masks, manifest=manifest).enhance(frame, points)

    assert np.array_equal(frame[262:288, 262:288], before[262:288, 262:288]), "occluder was painted over"
    visible = before[200:210, 330:340].astype(int)
    assert np.abs(frame[200:210, 330:340].astype(int) - (255 - visible)).max() <= 3


def test_enhancer_from_env(models_dir):
    manifest = install(models_dir, {"gfpgan_1.4.onnx": enhancer_model()})
    assert FaceEnhancer.from_env({}, manifest=manifest) is None
    assert FaceEnhancer.from_env({"SAFEFACE_FACE_ENHANCER": ""}, manifest=manifest) is None
    enhancer = FaceEnhancer.from_env(
        {"SAFEFACE_FACE_ENHANCER": "gfpgan_1.4", "SAFEFACE_FACE_ENHANCER_BLEND": "0.25"}, manifest=manifest
    )
    assert enhancer.model.name == "gfpgan_1.4" and enhancer.blend == 0.25
    with pytest.raises(ValueError, match="not a known face enhancer.*gfpgan_1.4"):
        FaceEnhancer.from_env({"SAFEFACE_FACE_ENHANCER": "gfpgan_9"}, manifest=manifest)
    with pytest.raises(ValueError, match="SAFEFACE_FACE_ENHANCER_BLEND"):
        FaceEnhancer.from_env(
            {"SAFEFACE_FACE_ENHANCER": "gfpgan_1.4", "SAFEFACE_FACE_ENHANCER_BLEND": "2"}, manifest=manifest
        )


def test_enhancer_rejects_bad_arguments(models_dir):
    manifest = install(models_dir, {"gfpgan_1.4.onnx": enhancer_model()})
    with pytest.raises(ValueError, match="Unknown face enhancer"):
        FaceEnhancer("gfpgan_2", manifest=manifest)
    with pytest.raises(ValueError, match="blend must be within 0..1"):
        FaceEnhancer("gfpgan_1.4", blend=1.5, manifest=manifest)
    enhancer = FaceEnhancer("gfpgan_1.4", manifest=manifest)
    with pytest.raises(ValueError, match="uint8 RGB"):
        enhancer.enhance(np.zeros((100, 100), np.uint8), face_points(50, 50, 40))
    with pytest.raises(ValueError, match="degenerate"):
        enhancer.enhance(smooth_frame(), np.zeros((5, 2), np.float32))


# --------------------------------------------------------------------------------------------
# licence gate, missing / corrupt / wrong files
# --------------------------------------------------------------------------------------------


def test_licence_gate_refuses_non_commercial_models(models_dir, monkeypatch):
    manifest = install(models_dir, {
        "codeformer.onnx": codeformer_model(),
        "gfpgan_1.4.onnx": enhancer_model(),
        "xseg_1.onnx": xseg_model(),
        "bisenet_resnet_34.onnx": bisenet_model(),
    })
    monkeypatch.setenv("SAFEFACE_COMMERCIAL", "1")
    with pytest.raises(LicenseRefused, match=r"codeformer\.onnx.*non-commercial.*S-Lab"):
        FaceEnhancer("codeformer", manifest=manifest)
    with pytest.raises(LicenseRefused, match=r"bisenet_resnet_34\.onnx.*non-commercial.*CelebAMask-HQ"):
        RegionMasker("bisenet_resnet_34", manifest=manifest)
    # Commercial-use licences load.
    assert FaceEnhancer("gfpgan_1.4", manifest=manifest).model.name == "gfpgan_1.4"
    assert OcclusionMasker("xseg_1", manifest=manifest).model.name == "xseg_1"
    monkeypatch.delenv("SAFEFACE_COMMERCIAL")
    assert FaceEnhancer("codeformer", manifest=manifest).model.has_weight


def test_facefusion_folder_file_loads_unverified_through_the_real_manifest(models_dir, caplog):
    # The production entries are unpinned (FaceFusion publishes no sha256): a file dropped into
    # the models folder under FaceFusion's name loads, with a warning naming its digest.
    data = enhancer_model()
    (models_dir / "gfpgan_1.2.onnx").write_bytes(data)
    with caplog.at_level("WARNING", logger="engine.models"):
        enhancer = FaceEnhancer("gfpgan_1.2", blend=1.0)
    assert enhancer.path == models_dir / "gfpgan_1.2.onnx"
    assert "UNVERIFIED" in caplog.text and hashlib.sha256(data).hexdigest() in caplog.text
    frame = smooth_frame()
    enhancer.enhance(frame, face_points(320, 240, 200))
    assert not np.array_equal(frame, smooth_frame())


def test_missing_file_names_it_and_the_fix(models_dir):
    manifest = install(models_dir, {"xseg_1.onnx": xseg_model()})
    with pytest.raises(ModelMissing, match=r"gfpgan_1\.4\.onnx is missing.*--group enhance"):
        FaceEnhancer("gfpgan_1.4", manifest=manifest)
    with pytest.raises(ModelMissing, match=r"xseg_2\.onnx is missing.*--group masks"):
        OcclusionMasker("xseg_2", manifest=manifest)


def test_corrupt_file_is_refused(models_dir):
    data = enhancer_model()
    manifest = install(models_dir, {"gfpgan_1.4.onnx": data})
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF
    (models_dir / "gfpgan_1.4.onnx").write_bytes(bytes(damaged))
    with pytest.raises(ModelCorrupt, match=r"gfpgan_1\.4\.onnx .*corrupt"):
        FaceEnhancer("gfpgan_1.4", manifest=manifest)


def test_unloadable_file_is_a_typed_error(models_dir):
    # Right size and hash for the manifest, but not an ONNX model at all.
    manifest = install(models_dir, {"gfpgan_1.3.onnx": b"this is not a protobuf model" * 10})
    with pytest.raises(ModelCorrupt, match=r"gfpgan_1\.3\.onnx could not be loaded by onnxruntime"):
        FaceEnhancer("gfpgan_1.3", manifest=manifest)


def test_wrong_signature_is_a_typed_error(models_dir):
    manifest = install(models_dir, {
        "gfpgan_1.4.onnx": xseg_model(),  # an occluder under an enhancer's name
        "restoreformer_plus_plus.onnx": enhancer_model(size=256),  # wrong resolution
        "codeformer.onnx": enhancer_model(),  # no weight input
        "xseg_1.onnx": bisenet_model(),
        "bisenet_resnet_18.onnx": xseg_model(),
    })
    with pytest.raises(ModelCorrupt, match=r"gfpgan_1\.4\.onnx has the wrong signature: input 'input'"):
        FaceEnhancer("gfpgan_1.4", manifest=manifest)
    with pytest.raises(ModelCorrupt, match=r"restoreformer_plus_plus\.onnx has the wrong signature.*512"):
        FaceEnhancer("restoreformer_plus_plus", manifest=manifest)
    with pytest.raises(ModelCorrupt, match=r"codeformer\.onnx has the wrong signature: no input named 'weight'"):
        FaceEnhancer("codeformer", manifest=manifest)
    with pytest.raises(ModelCorrupt, match=r"xseg_1\.onnx has the wrong signature"):
        OcclusionMasker("xseg_1", manifest=manifest)
    with pytest.raises(ModelCorrupt, match=r"bisenet_resnet_18\.onnx has the wrong signature"):
        RegionMasker("bisenet_resnet_18", manifest=manifest)


def test_manifest_entries_use_facefusion_names_and_licences():
    for name in ENHANCERS:
        entry = get_entry(f"{name}.onnx")
        assert entry.group == "enhance"
        assert entry.source.url.startswith("https://github.com/facefusion/facefusion-assets/releases/download/models-3.")
        assert entry.source.url.endswith(f"/{name}.onnx")
    assert get_entry("codeformer.onnx").commercial_use is False
    assert get_entry("gfpgan_1.4.onnx").commercial_use is True
    for name in masks.MASK_MODELS:
        entry = get_entry(f"{name}.onnx")
        assert entry.group == "masks" and entry.source.url.endswith(f"/{name}.onnx")


# --------------------------------------------------------------------------------------------
# masks
# --------------------------------------------------------------------------------------------


def occluded_crop(h: int, w: int) -> np.ndarray:
    """Orange crop with a blue rectangle over its central third."""
    crop = np.zeros((h, w, 3), np.uint8)
    crop[:] = (200, 100, 0)
    crop[h // 3:2 * h // 3, w // 3:2 * w // 3] = (0, 0, 255)
    return crop


@pytest.mark.parametrize("shape", [(256, 256), (128, 128), (200, 300), (512, 512)])
def test_occlusion_mask_marks_the_occluder_at_any_crop_size(models_dir, shape):
    manifest = install(models_dir, {"xseg_2.onnx": xseg_model()})
    h, w = shape
    mask = OcclusionMasker("xseg_2", manifest=manifest).mask(occluded_crop(h, w))
    assert mask.shape == (h, w) and mask.dtype == np.float32
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    m = max(12, h // 12)  # the smoothing softens about 2 sigma = 10 px around the edge
    assert np.all(mask[h // 3 + m:2 * h // 3 - m, w // 3 + m:2 * w // 3 - m] < 0.05), "occluder not masked"
    assert np.all(mask[:h // 3 - m, :] > 0.95) and np.all(mask[2 * h // 3 + m:, :] > 0.95), "face masked"


def test_occlusion_masks_batch_matches_single(models_dir):
    manifest = install(models_dir, {"xseg_3.onnx": xseg_model()})
    masker = OcclusionMasker("xseg_3", manifest=manifest)
    assert masker.batched
    crops = [occluded_crop(256, 256), np.ascontiguousarray(occluded_crop(180, 240)[::-1, ::-1])]
    assert all(np.array_equal(a, masker.mask(c)) for a, c in zip(masker.masks(crops), crops))


def test_region_mask_selects_labels_in_rgb_order(models_dir):
    manifest = install(models_dir, {"bisenet_resnet_34.onnx": bisenet_model()})
    crop = np.zeros((300, 300, 3), np.uint8)
    crop[:, :150] = (255, 0, 0)  # red -> skin (label 1)
    crop[:, 150:] = (0, 255, 0)  # green -> nose (label 10)
    crop[100:200, 220:280] = (0, 0, 255)  # blue -> background (label 0)

    skin = RegionMasker("bisenet_resnet_34", regions=("skin",), manifest=manifest).mask(crop)
    assert skin.shape == (300, 300) and skin.dtype == np.float32
    assert np.all(skin[:, :130] > 0.95) and np.all(skin[:, 170:] < 0.05)

    nose = RegionMasker("bisenet_resnet_34", regions="nose", manifest=manifest).mask(crop)
    assert np.all(nose[:, :130] < 0.05)
    assert np.all(nose[:80, 170:] > 0.95) and np.all(nose[120:180, 235:265] < 0.05)

    both = RegionMasker("bisenet_resnet_34", regions=("skin", "nose", "lips"), manifest=manifest).masks([crop])[0]
    assert np.all(both[:80] > 0.95) and np.all(both[120:180, 235:265] < 0.05)


def test_region_names_are_checked_before_loading(models_dir):
    with pytest.raises(ValueError, match="Unknown face region.*cheek.*skin"):
        RegionMasker("bisenet_resnet_34", regions=("skin", "cheek"))
    assert masks.resolve_regions(("eyes", "lips")) == (4, 5, 12, 13)
    assert masks.resolve_regions("upper_lip, Nose") == (10, 12)
    with pytest.raises(ValueError, match="Unknown parser model"):
        RegionMasker("bisenet_resnet_50")


def test_combine_masks_is_the_minimum():
    box = align.box_mask(64, blur=0.3)
    occlusion = np.ones((64, 64), np.float32)
    occlusion[20:40, 20:40] = 0.0
    region = np.full((64, 64), 0.5, np.float32)
    combined = combine_masks(box, occlusion, region)
    assert combined.dtype == np.float32 and combined.shape == (64, 64)
    assert np.array_equal(combined, np.minimum(np.minimum(box, occlusion), region))
    assert np.array_equal(combine_masks(box), box)
    with pytest.raises(ValueError, match="occlusion mask is \\(32, 32\\)"):
        combine_masks(box, np.ones((32, 32), np.float32))


def test_face_masks_from_env(models_dir):
    manifest = install(models_dir, {"xseg_1.onnx": xseg_model(), "bisenet_resnet_34.onnx": bisenet_model()})
    assert not FaceMasks.from_env({}, manifest=manifest)
    both = FaceMasks.from_env(
        {"SAFEFACE_FACE_MASKS": "xseg_1, bisenet_resnet_34", "SAFEFACE_FACE_MASK_REGIONS": "skin,nose"},
        manifest=manifest,
    )
    assert both.occluder.model.name == "xseg_1" and both.parser.labels == (1, 10)
    assert list(both) == [both.occluder, both.parser]  # what NeuralSwapper(masks=...) iterates
    crop = occluded_crop(256, 256)
    mask = both.crop_mask(crop, align.box_mask(256))
    expected = combine_masks(align.box_mask(256), both.occluder.mask(crop), both.parser.mask(crop))
    assert np.array_equal(mask, expected)
    with pytest.raises(ValueError, match="unknown mask model 'occluder'"):
        FaceMasks.from_env({"SAFEFACE_FACE_MASKS": "occluder"}, manifest=manifest)
    with pytest.raises(ValueError, match="two occlusion models"):
        FaceMasks.from_env({"SAFEFACE_FACE_MASKS": "xseg_1,xseg_2"}, manifest=manifest)


# --------------------------------------------------------------------------------------------
# real faces (SAFEFACE_CORPUS and the embedded face models)
# --------------------------------------------------------------------------------------------


@pytest.mark.corpus
def test_enhancer_on_real_faces(corpus, analyzer, models_dir):
    import cv2

    manifest = install(models_dir, {"gfpgan_1.4.onnx": enhancer_model(), "xseg_1.onnx": xseg_model()})
    enhancer = FaceEnhancer("gfpgan_1.4", blend=1.0, manifest=manifest)
    for name in ("faces/face_obama_frontal.jpg", "faces/group_obama_biden_2faces.jpg"):
        bgr = cv2.imread(str(corpus / name))
        assert bgr is not None, name
        rgb = np.ascontiguousarray(bgr[:, :, ::-1])
        faces = analyzer.analyze(rgb)
        assert faces, f"no face found in {name}"
        points = [align.five_points(f.landmarks) for f in faces]
        before = rgb.copy()
        boxes = enhancer.enhance_batch([(rgb, p) for p in points])
        keep = np.ones(rgb.shape[:2], bool)
        for x0, y0, x1, y1 in boxes:
            keep[y0:y1, x0:x1] = False
        assert np.array_equal(rgb[keep], before[keep])
        for p in points:
            for x, y in p[:2]:  # the red marker sits on each detected eye
                assert rgb[int(round(y)), int(round(x)), 0] >= 250
        # The occluder runs on real crops and returns a crop-sized mask in 0..1.
        crop, _ = align.warp_face(before, points[0], "ffhq_512", 512)
        mask = OcclusionMasker("xseg_1", manifest=manifest).mask(crop)
        assert mask.shape == (512, 512) and 0.0 <= mask.min() <= mask.max() <= 1.0
