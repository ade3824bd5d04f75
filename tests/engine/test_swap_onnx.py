"""Neural face swap on ONNX Runtime, run through tiny ONNX models that carry each adapter's exact
input/output names and shapes (the real weights cannot be fetched here).

The tiny swappers compute ``output = target + 3 * source[:, :3]`` per channel (a colour shift
set by the source vector), so a test can predict the pasted face from the aligned crop: it
checks alignment (five points land on the model's template), input normalisation, output
de-normalisation, the source embedding (emap projection, converters, normalisation) and the
paste-back (pixels outside the face box unchanged). The tiny recogniser is an average pool of
the 112 px crop followed by a fixed matrix; the tiny converters are ``2x + 1``.

Tiny files are saved under the FaceFusion names in a temporary SAFEFACE_MODELS_DIR, and the
manifest's swap entries are pinned to them, so loading goes through the real model_path
(licence gate, size and sha256) and the real session code.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from engine.errors import LicenseRefused, ModelCorrupt, ModelMissing

SHIFT = 3.0
RNG = np.random.default_rng(7)
RECOGNISER_W = RNG.normal(size=(48, 512)).astype(np.float32)
EMAP = (RNG.normal(size=(512, 512)) / np.sqrt(512)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# tiny models
# ----------------------------------------------------------------------------------------------


def _save(model: onnx.ModelProto, path: Path) -> Path:
    model.opset_import[0].version = 17
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def swapper_model(path: Path, size: int, *, dynamic: bool = True, emap: np.ndarray | None = None,
                  target_name: str = "target", fp16: bool = False) -> Path:
    batch = "N" if dynamic else 1
    ftype = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    target = helper.make_tensor_value_info(target_name, ftype, [batch, 3, size, size])
    source = helper.make_tensor_value_info("source", ftype, [batch, 512])
    output = helper.make_tensor_value_info("output", ftype, [batch, 3, size, size])
    dtype = np.float16 if fp16 else np.float32
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "starts"),
        numpy_helper.from_array(np.array([3], np.int64), "ends"),
        numpy_helper.from_array(np.array([1], np.int64), "axes"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "unsq"),
        numpy_helper.from_array(np.array(SHIFT, dtype), "k"),
    ]
    if emap is not None:  # inswapper: the emap is the graph's LAST initializer
        inits.append(numpy_helper.from_array(emap.astype(dtype), "emap"))
    nodes = [
        helper.make_node("Slice", ["source", "starts", "ends", "axes"], ["s3"]),
        helper.make_node("Unsqueeze", ["s3", "unsq"], ["s4"]),
        helper.make_node("Mul", ["s4", "k"], ["shift"]),
        helper.make_node("Add", [target_name, "shift"], ["output"]),
    ]
    graph = helper.make_graph(nodes, "tiny_swapper", [target, source], [output], inits)
    return _save(helper.make_model(graph), path)


def recogniser_model(path: Path, input_name: str = "input.1") -> Path:
    image = helper.make_tensor_value_info(input_name, TensorProto.FLOAT, ["N", 3, 112, 112])
    out = helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])
    nodes = [
        helper.make_node("AveragePool", [input_name], ["pooled"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("MatMul", ["flat", "W"], ["683"]),
    ]
    graph = helper.make_graph(nodes, "tiny_arcface", [image], [out], [numpy_helper.from_array(RECOGNISER_W, "W")])
    return _save(helper.make_model(graph), path)


def converter_model(path: Path) -> Path:
    x = helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", 512])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["N", 512])
    nodes = [helper.make_node("Mul", ["input", "two"], ["m"]), helper.make_node("Add", ["m", "one"], ["output"])]
    inits = [numpy_helper.from_array(np.array(2.0, np.float32), "two"), numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    return _save(helper.make_model(helper.make_graph(nodes, "tiny_converter", [x], [y], inits)), path)


def recognise(crop: np.ndarray) -> np.ndarray:
    """What the tiny recogniser returns for an aligned 112 px RGB crop."""
    x = crop.astype(np.float32) / 127.5 - 1.0
    pooled = x.reshape(4, 28, 4, 28, 3).mean(axis=(1, 3)).transpose(2, 0, 1).reshape(-1)
    return pooled @ RECOGNISER_W


def build_models(folder: Path, *, static_batch: bool = False) -> dict[str, Path]:
    """Every swap-group file under its FaceFusion name (tiny)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "inswapper_128.onnx": swapper_model(folder / "inswapper_128.onnx", 128, emap=EMAP, dynamic=not static_batch),
        "inswapper_128_fp16.onnx": swapper_model(folder / "inswapper_128_fp16.onnx", 128, emap=EMAP, fp16=True),
        "arcface_w600k_r50.onnx": recogniser_model(folder / "arcface_w600k_r50.onnx"),
        "simswap_256.onnx": swapper_model(folder / "simswap_256.onnx", 256),
        "simswap_unofficial_512.onnx": swapper_model(folder / "simswap_unofficial_512.onnx", 512),
        "arcface_converter_ghost.onnx": converter_model(folder / "arcface_converter_ghost.onnx"),
        "arcface_converter_simswap.onnx": converter_model(folder / "arcface_converter_simswap.onnx"),
        "arcface_ghost.onnx": recogniser_model(folder / "arcface_ghost.onnx", "data"),
        "arcface_simswap.onnx": recogniser_model(folder / "arcface_simswap.onnx", "data"),
    }
    for variant in ("1a", "1b", "1c"):
        name = f"hyperswap_{variant}_256.onnx"
        files[name] = swapper_model(folder / name, 256)
    for n in (1, 2, 3):
        name = f"ghost_{n}_256.onnx"
        files[name] = swapper_model(folder / name, 256)
    return files


def pinned_manifest(files: dict[str, Path]):
    """The real manifest with its swap entries pinned to the tiny files (size and sha256)."""
    from engine import models

    pinned = []
    for entry in models.MANIFEST:
        path = files.get(entry.name)
        if path is not None and path.exists():
            data = path.read_bytes()
            entry = dataclasses.replace(entry, sha256=hashlib.sha256(data).hexdigest(), size=len(data), accepted=())
        pinned.append(entry)
    return tuple(pinned)


def use_models(monkeypatch, folder: Path, files: dict[str, Path]) -> None:
    from engine import models
    from engine.swap import neural

    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(folder))
    monkeypatch.delenv("SAFEFACE_COMMERCIAL", raising=False)
    for name in ("SAFEFACE_ONNX_PROVIDERS", "SAFEFACE_FACE_ENHANCER", "SAFEFACE_FACE_MASKS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(models, "MANIFEST", pinned_manifest(files))
    neural.clear_swappers()


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    folder = tmp_path_factory.mktemp("ff_models")
    return folder, build_models(folder)


@pytest.fixture
def tiny(monkeypatch, tiny_dir):
    from engine.swap import neural

    folder, files = tiny_dir
    use_models(monkeypatch, folder, files)
    yield folder, files
    neural.clear_swappers()


# ----------------------------------------------------------------------------------------------
# synthetic faces: a mesh whose five points are known
# ----------------------------------------------------------------------------------------------


def mesh_from_five(points: np.ndarray) -> np.ndarray:
    """A (468, 3) array whose five_points() are ``points`` (other vertices at the centre)."""
    from engine.swap import align

    mesh = np.zeros((468, 3), np.float32)
    mesh[:, :2] = points.mean(axis=0)
    mesh[list(align.RIGHT_EYE_CONTOUR), :2] = points[0]
    mesh[list(align.LEFT_EYE_CONTOUR), :2] = points[1]
    mesh[align.NOSE_TIP, :2] = points[2]
    mesh[align.MOUTH_RIGHT, :2] = points[3]
    mesh[align.MOUTH_LEFT, :2] = points[4]
    return mesh


def synthetic_frame(seed: int = 0, size=(360, 480)) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(40, 200, size=(size[0] // 8, size[1] // 8, 3)).astype(np.uint8)
    return cv2.resize(noise, (size[1], size[0]), interpolation=cv2.INTER_CUBIC)


def face_points(centre=(240, 180), width=120.0, angle=12.0) -> np.ndarray:
    """Five points of a face ``width`` px wide (eye-mouth box), rotated by ``angle`` degrees."""
    from engine.swap import align

    template = align.TEMPLATES["arcface_112_v2"] - 0.5
    rad = np.deg2rad(angle)
    rot = np.array([[np.cos(rad), -np.sin(rad)], [np.sin(rad), np.cos(rad)]])
    return (template * width @ rot.T + np.asarray(centre)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# alignment
# ----------------------------------------------------------------------------------------------


def test_five_points_and_alignment_put_the_face_on_the_template():
    from engine.swap import align

    points = face_points(angle=25)
    assert np.allclose(align.five_points(mesh_from_five(points)), points, atol=1e-4)
    for name in ("arcface_112_v1", "arcface_112_v2", "arcface_128", "ffhq_512"):
        matrix = align.align_matrix(points, name, 256)
        mapped = np.c_[points, np.ones(5)] @ matrix.T
        # a similarity cannot fit different templates exactly, but the arcface templates are
        # similar shapes: within 2 % of the crop
        assert np.abs(mapped - align.TEMPLATES[name] * 256).max() < 0.02 * 256, name
    exact = align.align_matrix(align.TEMPLATES["arcface_128"] * 300 + 40, "arcface_128", 128)
    assert np.allclose(exact[:, :2], np.eye(2) * 128 / 300, atol=1e-6)
    with pytest.raises(ValueError, match="468"):
        align.five_points(np.zeros((10, 2)))
    with pytest.raises(ValueError, match="degenerate"):
        align.align_matrix(np.zeros((5, 2)), "arcface_128", 128)
    with pytest.raises(ValueError, match="Unknown alignment template"):
        align.align_matrix(points, "nope", 128)


def test_warp_and_paste_back_round_trip_only_touches_the_face_box():
    from engine.swap import align

    frame = synthetic_frame(1)
    points = face_points(width=200, angle=-10)
    crop, affine = align.warp_face(frame, points, "arcface_128", 128)
    assert crop.shape == (128, 128, 3) and crop.dtype == np.uint8
    work = frame.copy()
    box = align.paste_back(work, np.zeros_like(crop), affine, align.box_mask(128, 0.3))
    x0, y0, x1, y1 = box
    changed = np.argwhere((work != frame).any(axis=2))
    assert changed.size and changed[:, 1].min() >= x0 and changed[:, 1].max() < x1
    assert changed[:, 0].min() >= y0 and changed[:, 0].max() < y1
    # the middle of the face is black now, well inside the soft mask
    cx, cy = points.mean(axis=0).astype(int)
    assert work[cy, cx].max() < 10
    # pasting the crop itself back with a full mask reproduces the face region closely
    again = frame.copy()
    align.paste_back(again, crop, affine, np.ones((128, 128), np.float32))
    inner = (slice(cy - 30, cy + 30), slice(cx - 30, cx + 30))
    assert np.abs(again[inner].astype(int) - frame[inner]).mean() < 12  # resampled twice, 1.6x down/up


# ----------------------------------------------------------------------------------------------
# adapters
# ----------------------------------------------------------------------------------------------


def expected_face(crop: np.ndarray, spec, vector: np.ndarray) -> np.ndarray:
    """What the tiny model + the adapter's de-normalisation give for an aligned crop."""
    mean, std = np.asarray(spec.mean, np.float32), np.asarray(spec.std, np.float32)
    x = (crop.astype(np.float32) / 255 - mean) / std + SHIFT * vector[:3]
    if spec.denormalise:
        x = x * std + mean
    return np.clip(np.rint(np.clip(x, 0, 1) * 255), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("model", [
    "inswapper_128", "inswapper_128_fp16", "hyperswap_1a_256", "hyperswap_1c_256", "simswap_256",
    "simswap_unofficial_512", "ghost_1_256", "ghost_3_256",
])
def test_each_adapter_aligns_normalises_and_pastes_back(tiny, model):
    from engine.swap import align
    from engine.swap.neural import NeuralSwapper, swapper_spec

    spec = swapper_spec(model)
    persona_points = face_points(centre=(250, 170), width=150, angle=5)
    persona = synthetic_frame(2)
    swapper = NeuralSwapper(model)
    source = swapper.prepare_source(persona, mesh_from_five(persona_points))

    # the source vector: recogniser on the arcface_112_v2 crop, then per family
    crop112, _ = align.warp_face(persona, persona_points, "arcface_112_v2", 112)
    raw = recognise(crop112).astype(np.float64)
    assert np.allclose(source.embedding, raw, rtol=1e-4, atol=1e-3)
    if spec.family == "inswapper":
        want = (raw / np.linalg.norm(raw)) @ EMAP.astype(np.float64)
    elif spec.family == "hyperswap":
        want = raw / np.linalg.norm(raw)
    elif spec.family == "simswap":  # converter (2x + 1), then normalised
        want = (2 * raw + 1) / np.linalg.norm(2 * raw + 1)
    else:  # ghost: converter output kept raw
        want = 2 * raw + 1
    assert np.allclose(source.vector, want, rtol=1e-3, atol=1e-3), model

    frame = synthetic_frame(3)
    points = face_points(centre=(230, 190), width=140, angle=-15)
    before = frame.copy()
    result = swapper.swap_face(frame, mesh_from_five(points), source)
    x0, y0, x1, y1 = result.box
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert (frame[outside] == before[outside]).all()
    assert result.coverage == pytest.approx(1.0) and result.occluded == 0.0

    # inside the mask's solid core the pasted face is the model's output on the aligned crop
    crop, affine = align.warp_face(before, points, spec.template, spec.size)
    predicted = expected_face(crop, spec, source.vector)
    core = align.box_mask(spec.size, 0.3) > 0.999
    ys, xs = np.nonzero(core)
    inverse = align.invert(affine)
    sample = np.linspace(0, len(ys) - 1, 200).astype(int)
    frame_xy = np.c_[xs[sample], ys[sample], np.ones(len(sample))] @ inverse.T
    got = frame[np.rint(frame_xy[:, 1]).astype(int), np.rint(frame_xy[:, 0]).astype(int)].astype(int)
    want_px = predicted[ys[sample], xs[sample]].astype(int)
    tolerance = 14 if spec.size <= 128 else 10  # two resamplings of a textured frame
    assert np.abs(got - want_px).mean() < tolerance, model
    # and the shift really came through (not an unchanged face)
    assert np.abs(got - before[np.rint(frame_xy[:, 1]).astype(int), np.rint(frame_xy[:, 0]).astype(int)]).mean() > 5


def test_emap_is_what_inswapper_sources_are_projected_with(tiny):
    from engine.swap.neural import NeuralSwapper, read_emap

    folder, files = tiny
    assert np.allclose(read_emap(files["inswapper_128.onnx"]), EMAP, atol=1e-6)
    swapper = NeuralSwapper("inswapper_128")
    raw = RNG.normal(size=512)
    assert np.allclose(swapper.embedder.source_vector(raw), (raw / np.linalg.norm(raw)) @ EMAP, atol=1e-4)
    # a hyperswap source of the same embedding is only normalised: the emap made the difference
    hyper = NeuralSwapper("hyperswap_1a_256")
    assert np.allclose(hyper.embedder.source_vector(raw), raw / np.linalg.norm(raw), atol=1e-6)


def test_swapper_without_emap_is_refused(tiny, tmp_path, monkeypatch):
    folder, files = tiny
    bad = dict(files)
    bad["inswapper_128.onnx"] = swapper_model(tmp_path / "inswapper_128.onnx", 128)  # no emap initializer
    for name, path in files.items():
        if name != "inswapper_128.onnx":
            os.link(path, tmp_path / name)
    use_models(monkeypatch, tmp_path, {**{n: tmp_path / n for n in files}, "inswapper_128.onnx": bad["inswapper_128.onnx"]})
    from engine.swap.neural import NeuralSwapper

    with pytest.raises(ModelCorrupt, match="emap"):
        NeuralSwapper("inswapper_128")


def test_ghost_and_simswap_fall_back_to_the_facefusion_2_recognisers(tiny_dir, tmp_path, monkeypatch):
    folder, files = tiny_dir
    keep = {n: p for n, p in files.items() if "converter" not in n}
    for name, path in keep.items():
        os.link(path, tmp_path / name)
    use_models(monkeypatch, tmp_path, {n: tmp_path / n for n in keep})
    from engine.swap.neural import NeuralSwapper

    points = face_points()
    image = synthetic_frame(4)
    crop112, _ = __import__("engine.swap.align", fromlist=["x"]).warp_face(image, points, "arcface_112_v2", 112)
    raw = recognise(crop112)
    for model in ("ghost_2_256", "simswap_256"):
        swapper = NeuralSwapper(model)
        assert swapper.embedder.spec.recogniser == f"arcface_{model.split('_')[0]}.onnx"
        source = swapper.prepare_source(image, mesh_from_five(points))
        assert np.allclose(source.vector, raw / np.linalg.norm(raw), atol=1e-4)
    # neither the converter nor the 2.x recogniser: a clear ModelMissing
    (tmp_path / "arcface_ghost.onnx").unlink()
    with pytest.raises(ModelMissing, match="arcface_converter_ghost.onnx.*or arcface_ghost.onnx"):
        NeuralSwapper("ghost_1_256")


# ----------------------------------------------------------------------------------------------
# runtime: providers, session cache, batches
# ----------------------------------------------------------------------------------------------


def test_provider_selection(monkeypatch, tmp_path):
    from engine.swap import onnx_runtime as rt

    monkeypatch.delenv("SAFEFACE_ONNX_PROVIDERS", raising=False)
    monkeypatch.setattr(rt, "available_providers", lambda: ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"))
    assert rt.preferred_providers() == (rt.TENSORRT, rt.CUDA, rt.CPU)
    assert rt.default_providers() == (rt.CUDA, rt.CPU)
    monkeypatch.setenv("SAFEFACE_ONNX_PROVIDERS", "cuda, cpu")
    assert rt.preferred_providers() == (rt.CUDA, rt.CPU)
    monkeypatch.setenv("SAFEFACE_ONNX_PROVIDERS", "tensorrt,cudnn")
    with pytest.raises(ValueError, match="unknown execution provider 'cudnn'"):
        rt.preferred_providers()
    monkeypatch.setattr(rt, "available_providers", lambda: ("CPUExecutionProvider",))
    monkeypatch.setenv("SAFEFACE_ONNX_PROVIDERS", "tensorrt,cuda")
    assert rt.preferred_providers() == (rt.CPU,)  # not offered by this build: CPU only
    # TensorRT gets an on-disk engine cache under the models folder, fp16 for fp16 files
    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(tmp_path))
    fp16 = swapper_model(tmp_path / "half.onnx", 128, fp16=True)
    fp32 = swapper_model(tmp_path / "full.onnx", 128)
    (trt, options), cuda, cpu = rt._provider_entries(str(fp16), (rt.TENSORRT, rt.CUDA, rt.CPU))
    assert trt == rt.TENSORRT and options["trt_engine_cache_enable"] and options["trt_fp16_enable"] is True
    assert Path(options["trt_engine_cache_path"]) == tmp_path / ".trt_cache" and (tmp_path / ".trt_cache").is_dir()
    assert rt._provider_entries(str(fp32), (rt.TENSORRT,))[0][1]["trt_fp16_enable"] is False
    assert cuda[0] == rt.CUDA and cpu == rt.CPU


def test_sessions_are_cached_and_run_on_cpu(tiny):
    from engine.swap import onnx_runtime as rt
    from engine.swap.neural import NeuralSwapper

    a = NeuralSwapper("hyperswap_1b_256")
    count = rt.cached_sessions()
    b = NeuralSwapper("hyperswap_1b_256")
    assert a.session is b.session and rt.cached_sessions() == count
    assert a.session.get_providers() == ["CPUExecutionProvider"]
    assert a.dynamic_batch


def test_batch_equals_one_by_one(tiny, tiny_dir, tmp_path, monkeypatch):
    from engine.swap.neural import NeuralSwapper

    swapper = NeuralSwapper("inswapper_128")
    crops = RNG.integers(0, 256, size=(3, 128, 128, 3)).astype(np.uint8)
    vectors = RNG.normal(size=(3, 512)).astype(np.float32) * 0.2
    together = swapper.swap_batch(crops, vectors)
    single = np.concatenate([swapper.swap_batch(crops[i:i + 1], vectors[i:i + 1]) for i in range(3)])
    assert together.shape == (3, 128, 128, 3) and (together == single).all()
    # several faces in one frame through swap_faces == one at a time
    frame = synthetic_frame(5, size=(400, 640))
    persona = swapper.prepare_source(synthetic_frame(6), mesh_from_five(face_points()))
    meshes = [mesh_from_five(face_points(centre=(160, 200), width=90)), mesh_from_five(face_points(centre=(470, 210), width=100))]
    batched, sequential = frame.copy(), frame.copy()
    swapper.swap_faces([(batched, m, persona) for m in meshes])
    for m in meshes:
        swapper.swap_face(sequential, m, persona)
    assert (batched == sequential).all() and (batched != frame).any()
    # a model with a fixed batch of 1 is run face by face, with the same result
    static = build_models(tmp_path / "static", static_batch=True)
    use_models(monkeypatch, tmp_path / "static", static)
    fixed = NeuralSwapper("inswapper_128")
    assert not fixed.dynamic_batch
    assert (fixed.swap_batch(crops, vectors) == together).all()


# ----------------------------------------------------------------------------------------------
# licences and broken files
# ----------------------------------------------------------------------------------------------


def test_licence_gate_refuses_non_commercial_models(tiny, monkeypatch):
    from engine.swap.neural import NeuralSwapper

    monkeypatch.setenv("SAFEFACE_COMMERCIAL", "1")
    for model in ("inswapper_128", "hyperswap_1a_256", "simswap_256"):
        with pytest.raises(LicenseRefused, match=f"{model}.onnx is licensed for non-commercial use only"):
            NeuralSwapper(model)
    # GHOST itself is Apache-2.0, but every recogniser it can use is not: refused, naming it
    with pytest.raises(LicenseRefused, match="arcface_w600k_r50.onnx|arcface_converter_ghost.onnx"):
        NeuralSwapper("ghost_1_256")
    monkeypatch.setenv("SAFEFACE_COMMERCIAL", "0")
    NeuralSwapper("inswapper_128")


def test_missing_corrupt_and_wrong_files_raise_typed_errors(tiny_dir, tmp_path, monkeypatch):
    from engine.swap.neural import NeuralSwapper

    folder, files = tiny_dir
    for name, path in files.items():
        os.link(path, tmp_path / name)
    names = {n: tmp_path / n for n in files}
    use_models(monkeypatch, tmp_path, names)
    # missing
    (tmp_path / "hyperswap_1b_256.onnx").unlink()
    with pytest.raises(ModelMissing, match=r"hyperswap_1b_256.onnx is missing.*--group swap"):
        NeuralSwapper("hyperswap_1b_256")
    # changed after pinning: sha256 mismatch
    (tmp_path / "simswap_256.onnx").unlink()
    data = bytearray(files["simswap_256.onnx"].read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "simswap_256.onnx").write_bytes(bytes(data))
    with pytest.raises(ModelCorrupt, match="simswap_256.onnx .* is corrupt"):
        NeuralSwapper("simswap_256")
    # not an ONNX file at all (pinned as found: onnxruntime refuses it)
    (tmp_path / "ghost_2_256.onnx").unlink()
    (tmp_path / "ghost_2_256.onnx").write_bytes(b"not a model" * 100)
    # wrong signature: an input named "image" where "target" is expected
    (tmp_path / "hyperswap_1c_256.onnx").unlink()
    swapper_model(tmp_path / "hyperswap_1c_256.onnx", 256, target_name="image")
    # wrong size: a 128 px model under a 256 px name
    (tmp_path / "ghost_3_256.onnx").unlink()
    swapper_model(tmp_path / "ghost_3_256.onnx", 128)
    use_models(monkeypatch, tmp_path, names)
    with pytest.raises(ModelCorrupt, match="ghost_2_256.onnx could not be loaded"):
        NeuralSwapper("ghost_2_256")
    with pytest.raises(ModelCorrupt, match=r"expected inputs 'target' \(N, 3, 256, 256\).*'image'"):
        NeuralSwapper("hyperswap_1c_256")
    with pytest.raises(ModelCorrupt, match=r"ghost_3_256.onnx does not have the signature"):
        NeuralSwapper("ghost_3_256")
    with pytest.raises(ValueError, match="Unknown face swapper 'faceswap_9000'"):
        NeuralSwapper("faceswap_9000")


def test_unpinned_production_files_load_with_a_warning(tiny_dir, tmp_path, monkeypatch, caplog):
    """The real manifest: most swap files have no published digest (sha256 "") and load as found,
    with an UNVERIFIED warning; a file matching an accepted published digest loads quietly."""
    from engine import models

    folder, files = tiny_dir
    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(tmp_path))
    os.link(files["hyperswap_1a_256.onnx"], tmp_path / "hyperswap_1a_256.onnx")
    entry = models.get_entry("hyperswap_1a_256.onnx")
    assert not entry.pinned and entry.size == 0 and entry.group == "swap"
    with caplog.at_level("WARNING", logger="engine.models"):
        assert models.model_path("hyperswap_1a_256.onnx") == tmp_path / "hyperswap_1a_256.onnx"
    assert "UNVERIFIED" in caplog.text and "hyperswap_1a_256.onnx" in caplog.text
    check = models.verify(["hyperswap_1a_256.onnx"])[0]
    assert check.ok and "unpinned" in check.detail
    (tmp_path / "empty.onnx").write_bytes(b"")
    os.replace(tmp_path / "empty.onnx", tmp_path / "ghost_1_256.onnx")
    with pytest.raises(ModelMissing, match="ghost_1_256.onnx is incomplete"):
        models.model_path("ghost_1_256.onnx")
    # the pinned inswapper (FaceFusion's digest, size unknown) refuses another file
    os.link(files["inswapper_128.onnx"], tmp_path / "inswapper_128.onnx")
    with pytest.raises(ModelCorrupt, match="expected 0fa95f167682"):
        models.model_path("inswapper_128.onnx")
    # an accepted published digest of another distribution counts as verified
    fake = dataclasses.replace(entry, accepted=((len(files["hyperswap_1a_256.onnx"].read_bytes()),
                                                 hashlib.sha256(files["hyperswap_1a_256.onnx"].read_bytes()).hexdigest()),))
    assert fake.digest_ok(fake.accepted[0][0], fake.accepted[0][1])
    # embedded groups must stay pinned
    bad = dataclasses.replace(models.MANIFEST[0], sha256="", size=0)
    assert "only production groups may be unpinned" in "\n".join(models.check_manifest((bad,)))


# ----------------------------------------------------------------------------------------------
# the real pipeline (face analysis, selection, verification, video) with a neural engine
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def photo_and_persona(request):
    """A target photo (corpus when SAFEFACE_CORPUS is set, else a generated face on a wider
    canvas) and a generated persona."""
    from tests.engine.conftest import require_models

    require_models("faces")
    require_models("generator")
    from engine.faces import FaceAnalyzer
    from engine.generate.stylegan import generate_face
    from engine.swap.pipeline import prepare_persona

    analyzer = FaceAnalyzer.default()
    folder = os.environ.get("SAFEFACE_CORPUS")
    if folder and (Path(folder) / "faces" / "face_obama_frontal.jpg").is_file():
        photo = cv2.cvtColor(cv2.imread(str(Path(folder) / "faces" / "face_obama_frontal.jpg")), cv2.COLOR_BGR2RGB)
    else:
        face = cv2.resize(generate_face(11), (360, 360), interpolation=cv2.INTER_AREA)
        photo = np.full((480, 640, 3), 90, np.uint8)
        photo[60:420, 140:500] = face
    persona = prepare_persona(cv2.resize(generate_face(2), (512, 512), interpolation=cv2.INTER_AREA), analyzer)
    return analyzer, photo, persona


def test_image_pipeline_runs_the_neural_swapper(tiny, photo_and_persona):
    from engine.swap.pipeline import ImageSwapOptions, swap_image

    analyzer, photo, persona = photo_and_persona
    options = ImageSwapOptions(engine="hyperswap_1a_256")
    out, reports = swap_image(photo, persona, options, analyzer=analyzer)
    swapped = [r for r in reports if r.action == "swapped"]
    assert swapped and all(r.shape_strength is None for r in swapped)
    assert all(r.escalation_step is not None and 0 <= r.escalation_step < len(options.neural_escalation) for r in swapped)
    assert "hyperswap_1a_256" in persona.sources  # the persona's embedding was prepared once and kept
    changed = (out != photo).any(axis=2)
    assert changed.any()
    faces = analyzer.analyze(photo)
    allowed = np.zeros(changed.shape, bool)
    for face in faces:  # nothing changes far from the faces
        x0, y0, x1, y1 = face.box
        w, h = x1 - x0, y1 - y0
        allowed[max(0, int(y0 - h)):int(y1 + h), max(0, int(x0 - w)):int(x1 + w)] = True
    assert not changed[~allowed].any()
    # the tiny hyperswap shifts colours by 0.5 * 3 * source[:3] (de-normalised): the face moved that way
    source = persona.sources["hyperswap_1a_256"].vector
    delta = out[changed].astype(float).mean(axis=0) - photo[changed].astype(float).mean(axis=0)
    assert np.sign(delta[np.abs(source[:3]) > 0.05]).tolist() == np.sign(source[:3][np.abs(source[:3]) > 0.05]).tolist()


def test_video_pipeline_runs_the_neural_swapper_in_batches(tiny, photo_and_persona, tmp_path, monkeypatch):
    from engine.media.video import probe_video
    from engine.swap import neural
    from engine.swap.pipeline import ImageSwapOptions
    from engine.swap.video import VideoSwapOptions, swap_video
    from tests.engine.test_media import write_video

    analyzer, photo, persona = photo_and_persona
    small = cv2.resize(photo, (320, int(320 * photo.shape[0] / photo.shape[1])) , interpolation=cv2.INTER_AREA)
    small = small[: small.shape[0] // 2 * 2]
    src = write_video(tmp_path / "in.mp4", frames=10, fps=10, size=(small.shape[1], small.shape[0]), audio=None,
                      frame_source=lambda i: np.roll(small, i, axis=1))
    runs = []
    real = neural.NeuralSwapper.swap_batch
    monkeypatch.setattr(neural.NeuralSwapper, "swap_batch", lambda self, c, v: runs.append(len(c)) or real(self, c, v))
    options = VideoSwapOptions(image=ImageSwapOptions(engine="inswapper_128"), batch_frames=4)
    report = swap_video(src, tmp_path / "out.mp4", persona, options, analyzer=analyzer)
    assert probe_video(tmp_path / "out.mp4").frame_count == 10
    assert report.frames == 10 and report.tracks and report.tracks[0]["frames"] == 10
    assert sum(runs) == 10 and max(runs) > 1  # several frames' faces per model run, every face once
