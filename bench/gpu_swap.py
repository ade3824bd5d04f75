"""Neural face swap speed: the swap pipeline's own stages at 1080p, and 720p video throughput of
the whole pipeline, with a swap-model-sized network (issue 7's GPU figures).

The real inswapper_128 weights cannot be fetched here, and speed does not depend on weight values:
the script builds an ONNX graph with inswapper_128's exact signature (``target`` N x 3 x 128 x 128,
``source`` N x 512, output N x 3 x 128 x 128, a 512 x 512 ``emap`` as last initializer) and about
its size (~138 M float32 parameters, ~550 MB, like the 554,253,681-byte original): a strided conv
encoder to 1024 channels at 16 x 16, seven style-modulated residual blocks (two 3 x 3 1024-channel
convs each, the source vector added per channel), a conv decoder back to 128 px. Its compute
(~36 GMAC per face) is an assumption: inswapper's own FLOP count is not published. A tiny
recogniser stands in for arcface_w600k_r50 (it runs once per persona, not per frame).

Both are saved under their FaceFusion names in a temporary models folder and the manifest is
pinned to them, so the run goes through the real loading code (engine.models.model_path,
engine.swap.onnx_runtime: TensorRT -> CUDA -> CPU, session cache) and the real pipeline
(engine.swap.pipeline / engine.swap.video with ``engine="inswapper_128"``).

Stages at 1080p (median ms per frame, one face): detect + mesh (CPU, as in production), alignment
(warp of the 128 px crop), ONNX swap (one face; and a batch of 4), paste-back. Video: frames per
second of ``swap_video`` on a 720p clip (decode, analysis/tracking, batched swap, encode), target
>= 60 fps on an H100.

Usage: .venv/bin/python bench/gpu_swap.py [--frames 120] [--repeats 20] [--out bench/results/gpu_swap.json]
Without a CUDA/TensorRT provider it runs a bounded CPU pass (fewer frames and repeats) and records
why there are no GPU figures.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def build_swapper(path: Path, *, width: int = 1024, blocks: int = 7, fp16: bool = False) -> int:
    """An inswapper_128-signature graph of about inswapper's size; returns its parameter count."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    dtype = np.float16 if fp16 else np.float32
    ftype = TensorProto.FLOAT16 if fp16 else TensorProto.FLOAT
    inits, nodes, count = [], [], [0]

    def weight(name, shape, scale):
        array = (rng.standard_normal(shape, dtype=np.float32) * scale).astype(dtype)
        inits.append(numpy_helper.from_array(array, name))
        count[0] += array.size
        return name

    def conv(x, cin, cout, k, stride, name, act=True):
        w = weight(f"{name}.w", (cout, cin, k, k), (2.0 / (cin * k * k)) ** 0.5)
        b = weight(f"{name}.b", (cout,), 0.0)
        nodes.append(helper.make_node("Conv", [x, w, b], [f"{name}.y"], kernel_shape=[k, k], strides=[stride, stride],
                                      pads=[k // 2] * 4))
        if not act:
            return f"{name}.y"
        nodes.append(helper.make_node("LeakyRelu", [f"{name}.y"], [f"{name}.a"], alpha=0.2))
        return f"{name}.a"

    x = conv("target", 3, 128, 7, 1, "enc0")
    x = conv(x, 128, 256, 3, 2, "enc1")  # 64
    x = conv(x, 256, 512, 3, 2, "enc2")  # 32
    x = conv(x, 512, width, 3, 2, "enc3")  # 16
    for i in range(blocks):
        style_w = weight(f"style{i}.w", (512, width), 0.02)
        nodes.append(helper.make_node("MatMul", ["source", style_w], [f"style{i}.s"]))
        nodes.append(helper.make_node("Unsqueeze", [f"style{i}.s", "axes23"], [f"style{i}.u"]))
        h = conv(x, width, width, 3, 1, f"res{i}a")
        nodes.append(helper.make_node("Add", [h, f"style{i}.u"], [f"res{i}.m"]))
        h = conv(f"res{i}.m", width, width, 3, 1, f"res{i}b", act=False)
        nodes.append(helper.make_node("Add", [x, h], [f"res{i}.o"]))
        x = f"res{i}.o"
    for i, (cin, cout) in enumerate(((width, 512), (512, 256), (256, 128))):
        nodes.append(helper.make_node("Resize", [x, "", "scale2"], [f"up{i}"], mode="nearest"))
        x = conv(f"up{i}", cin, cout, 3, 1, f"dec{i}")
    y = conv(x, 128, 3, 3, 1, "out", act=False)
    nodes.append(helper.make_node("Sigmoid", [y], ["output"]))
    inits.append(numpy_helper.from_array(np.array([2, 3], np.int64), "axes23"))
    inits.append(numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scale2"))
    weight("emap", (512, 512), 1 / np.sqrt(512))  # last initializer, like inswapper's
    graph = helper.make_graph(
        nodes, "inswapper_sized",
        [helper.make_tensor_value_info("target", ftype, ["N", 3, 128, 128]),
         helper.make_tensor_value_info("source", ftype, ["N", 512])],
        [helper.make_tensor_value_info("output", ftype, ["N", 3, 128, 128])], inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return count[0]


def build_recogniser(path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(1).standard_normal((48, 512)).astype(np.float32)
    nodes = [
        helper.make_node("AveragePool", ["input.1"], ["p"], kernel_shape=[28, 28], strides=[28, 28]),
        helper.make_node("Flatten", ["p"], ["f"], axis=1),
        helper.make_node("MatMul", ["f", "W"], ["683"]),
    ]
    graph = helper.make_graph(
        nodes, "recogniser", [helper.make_tensor_value_info("input.1", TensorProto.FLOAT, ["N", 3, 112, 112])],
        [helper.make_tensor_value_info("683", TensorProto.FLOAT, ["N", 512])], [numpy_helper.from_array(w, "W")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def pin_manifest(folder: Path) -> None:
    from engine import models

    pinned = []
    for entry in models.MANIFEST:
        path = folder / entry.name
        if entry.group == "swap" and path.exists():
            data = path.read_bytes()
            entry = dataclasses.replace(entry, sha256=hashlib.sha256(data).hexdigest(), size=len(data), accepted=())
        pinned.append(entry)
    models.MANIFEST = tuple(pinned)


def median_ms(fn, repeats: int) -> float:
    fn()  # warm-up (TensorRT engine build, CUDA graphs, caches)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def write_clip(path: Path, frames: list[np.ndarray], fps: int = 30) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "yuv420p"
        for rgb in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def canvas(face: np.ndarray, size: tuple[int, int], shift: int = 0) -> np.ndarray:
    w, h = size
    out = np.full((h, w, 3), 70, np.uint8)
    side = int(h * 0.6)
    tile = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    x = (w - side) // 2 + shift
    y = (h - side) // 2
    out[y:y + side, x:x + side] = tile
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=120, help="frames of the 720p clip (GPU run)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats per stage (GPU run)")
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu_swap.json"))
    args = parser.parse_args()

    from engine.swap import onnx_runtime

    providers = onnx_runtime.preferred_providers()
    gpu = [p for p in providers if p != onnx_runtime.CPU]
    frames, repeats = (args.frames, args.repeats) if gpu else (min(args.frames, 12), min(args.repeats, 3))
    work = Path(tempfile.mkdtemp(prefix="safeface-gpu-swap-"))
    os.environ["SAFEFACE_MODELS_DIR"] = str(work)
    for name in ("SAFEFACE_FACE_ENHANCER", "SAFEFACE_FACE_MASKS", "SAFEFACE_COMMERCIAL"):
        os.environ.pop(name, None)
    from engine import models

    embedded = Path(os.environ.get("SAFEFACE_EMBEDDED_MODELS", ROOT / "var" / "models"))
    for entry in models.MANIFEST:  # the embedded models (face analysis, generator) stay where they are
        if entry.group in models.EMBEDDED_GROUPS and (embedded / entry.name).exists():
            (work / entry.name).symlink_to(embedded / entry.name)
    started = time.perf_counter()
    params = build_swapper(work / "inswapper_128.onnx")
    build_recogniser(work / "arcface_w600k_r50.onnx")
    pin_manifest(work)
    build_s = time.perf_counter() - started

    from engine.faces import FaceAnalyzer
    from engine.generate.stylegan import generate_face
    from engine.swap import align
    from engine.swap.neural import get_swapper
    from engine.swap.pipeline import ImageSwapOptions, prepare_persona
    from engine.swap.video import VideoSwapOptions, swap_video

    analyzer = FaceAnalyzer.default()
    persona = prepare_persona(generate_face(2), analyzer)
    swapper = get_swapper("inswapper_128", enhancer="", masks=())
    source = swapper.source_for(persona)

    # --- stages at 1080p -------------------------------------------------------------------------
    frame = canvas(generate_face(11), (1920, 1080))
    face = max(analyzer.analyze(frame), key=lambda f: f.area)
    points = align.five_points(face.landmarks)
    crop, affine = align.warp_face(frame, points, "arcface_128", 128)
    swapped = swapper.swap_batch(crop[None], source.vector[None])[0]
    batch4 = np.repeat(crop[None], 4, axis=0)
    vectors4 = np.repeat(source.vector[None], 4, axis=0)
    stages = {
        "detect_mesh_cpu": median_ms(lambda: analyzer.analyze(frame), repeats),
        "track_mesh_cpu": median_ms(lambda: analyzer.track(frame, [face], fast=True), repeats),
        "align": median_ms(lambda: align.warp_face(frame, points, "arcface_128", 128), repeats),
        "onnx_swap_1": median_ms(lambda: swapper.swap_batch(crop[None], source.vector[None]), repeats),
        "onnx_swap_batch4_per_face": round(median_ms(lambda: swapper.swap_batch(batch4, vectors4), repeats) / 4, 2),
        "paste_back": median_ms(lambda: align.paste_back(frame.copy(), swapped, affine, swapper.box_mask), repeats),
    }

    # --- 720p video through the whole pipeline ------------------------------------------------------
    face720 = generate_face(11)
    clip = work / "clip720.mp4"
    write_clip(clip, [canvas(face720, (1280, 720), shift=int(40 * np.sin(i / 8))) for i in range(frames)])
    options = VideoSwapOptions(image=ImageSwapOptions(engine="inswapper_128", enhancer="", masks=()), batch_frames=8)
    report = swap_video(clip, work / "out720.mp4", persona, options, analyzer=analyzer)

    session = swapper.session
    result = {
        "device": "gpu" if gpu else "cpu",
        "gpu": gpu[0] if gpu else None,
        "reason": None if gpu else "no GPU lent to this session (onnxruntime offers only the CPU provider here)",
        "providers": list(session.get_providers()),
        "onnxruntime": __import__("onnxruntime").__version__,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "network": {
            "signature": "inswapper_128 (target Nx3x128x128, source Nx512 -> Nx3x128x128, emap last initializer)",
            "parameters": params,
            "file_bytes": (work / "inswapper_128.onnx").stat().st_size,
            "gmac_per_face_estimate": 36,
            "build_seconds": round(build_s, 1),
        },
        "stages_1080p_ms": stages,
        "swap_fps_1080p_one_face": round(1000 / sum(stages[k] for k in ("track_mesh_cpu", "align", "onnx_swap_batch4_per_face", "paste_back")), 2),
        "video_720p": {
            "frames": report.frames,
            "fps": round(report.fps, 2),
            "seconds": round(report.seconds, 2),
            "stage_seconds": report.stage_seconds,
            "batch_frames": options.batch_frames,
            "target_fps": 60,
            "meets_target": report.fps >= 60,
        },
        "repeats": repeats,
        "bounded_cpu_run": not gpu,
    }
    import shutil

    shutil.rmtree(work, ignore_errors=True)  # the ~600 MB network and the clips
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
