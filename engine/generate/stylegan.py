"""MobileStyleGAN (FFHQ, 1024 px) on OpenVINO: deterministic faces of nobody from a seed.

z (1, 512) ~ N(0, 1) from the seed -> mapping network -> style (1, 512) -> synthesis network ->
image (1, 3, 1024, 1024) in [-1, 1]. Truncation pulls the style toward the average face, which
trades variety for realism (0.7 is the usual compromise).

Speed (seconds per face on the 2-core CPU, see bench/results/avatars.json): the synthesis network
is compiled in float32 (``INFERENCE_PRECISION_HINT``: on a CPU with AVX512-BF16 but no AMX,
OpenVINO's default bfloat16 is about twice as slow as float32, and less exact), and its eight
inverse Haar wavelet transforms are rewritten (:func:`fuse_inverse_wavelets`): as exported they
are a 5-D split (a reference, single-threaded kernel) feeding six stride-2 transposed
convolutions; the same arithmetic is one channel gather, one 4x4 group convolution and a
depth-to-space, which halves the network's time with identical output (to float rounding).
"""
from __future__ import annotations

import functools
import threading
from dataclasses import dataclass

import numpy as np

from engine.models import model_path

MAPPING = ("MappingNetwork.xml", "MappingNetwork.bin")
SYNTHESIS = ("SynthesisNetwork.xml", "SynthesisNetwork.bin")


@dataclass(frozen=True)
class GeneratorOptions:
    truncation: float = 0.7
    average_samples: int = 2048  # seeds used once to estimate the average style


# One 2x2 output block of the inverse Haar transform from the four sub-bands of a channel:
# rows are the block's pixels (top-left, top-right, bottom-left, bottom-right), columns the bands
# (LL, then the three detail bands in the order the network stores them).
HAAR_SYNTHESIS = 0.5 * np.array([[1, 1, 1, 1], [1, 1, -1, -1], [1, -1, 1, -1], [1, -1, -1, 1]], np.float32)


def _consumer(output):
    (target,) = output.get_target_inputs()
    return target.get_node()


def fuse_inverse_wavelets(model) -> int:
    """Replace every inverse Haar transform of MobileStyleGAN's synthesis network by a gather, a
    grouped 1x1 convolution and a depth-to-space; returns how many were replaced.

    As exported (pytorch_wavelets' DWTInverse), an inverse transform takes (1, 4C, H, W) wavelet
    features, splits off the C low-pass channels, reshapes the 3C detail channels to (C, 3),
    splits those again in a 5-D tensor and recombines the four bands with six stride-2
    transposed convolutions (filters 1/sqrt2 (1, 1) and 1/sqrt2 (1, -1)) and three adds. Every
    output pixel of a 2x2 block is a fixed +-1/2 sum of the four bands at its position
    (``HAAR_SYNTHESIS``); the rewrite gathers each channel's four bands next to each other, mixes
    them with a grouped 1x1 convolution and moves the four results into the 2x2 block."""
    import openvino.opset13 as ops

    replaced = 0
    for split in [op for op in model.get_ordered_ops() if op.get_type_name() == "VariadicSplit"]:
        features = split.input_value(0)
        lengths = np.asarray(split.input_value(2).get_node().get_data()).ravel()
        if features.get_partial_shape().rank.get_length() != 4 or len(lengths) != 2 or lengths[1] != 3 * lengths[0]:
            continue  # the inner 5-D split of the detail bands, handled with its transform
        channels = int(lengths[0])
        # low-pass -> row transposed conv -> add (rows done) -> column transposed conv -> add (output)
        rows = _consumer(_consumer(split.output(0)).output(0))
        output = _consumer(_consumer(rows.output(0)).output(0))
        if output.get_type_name() != "Add":
            raise RuntimeError(f"Unexpected inverse wavelet transform at {split.get_friendly_name()}")
        order = np.empty(4 * channels, np.int64)
        for c in range(channels):
            order[4 * c] = c
            order[4 * c + 1 : 4 * c + 4] = channels + 3 * c + np.arange(3)
        bands = ops.gather(features, ops.constant(order), ops.constant(np.int64(1)))
        weights = np.tile(HAAR_SYNTHESIS[None, :, :, None, None], (channels, 1, 1, 1, 1))
        blocks = ops.group_convolution(bands, ops.constant(weights), [1, 1], [0, 0], [0, 0], [1, 1])
        image = ops.depth_to_space(blocks, "depth_first", 2)
        for target in list(output.output(0).get_target_inputs()):
            target.replace_source_output(image.output(0))
        replaced += 1
    model.validate_nodes_and_infer_types()
    return replaced


@functools.lru_cache(maxsize=2)
def _networks(device: str = "CPU"):
    import openvino

    from engine.faces.runtime import inference_threads

    core = openvino.Core()
    config = {"INFERENCE_NUM_THREADS": inference_threads(), "PERFORMANCE_HINT": "LATENCY"}
    if device.upper().startswith("CPU"):
        config["INFERENCE_PRECISION_HINT"] = "f32"
    mapping = core.compile_model(core.read_model(*map(model_path, MAPPING)), device, config)
    model = core.read_model(*map(model_path, SYNTHESIS))
    fuse_inverse_wavelets(model)
    synthesis = core.compile_model(model, device, config)
    return mapping, synthesis


@functools.lru_cache(maxsize=2)
def _average_style(samples: int, device: str = "CPU") -> np.ndarray:
    mapping, _ = _networks(device)
    rng = np.random.default_rng(20240607)
    styles = [forward_mapping(rng.standard_normal((1, 512)).astype(np.float32), device) for _ in range(samples)]
    return np.mean(styles, axis=0)


def prepare_latent(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 512)).astype(np.float32)


_idle: dict[tuple[int, str], list] = {}
_idle_lock = threading.Lock()


def _infer(network: int, data: np.ndarray, device: str) -> np.ndarray:
    """Run network 0 (mapping) or 1 (synthesis) on an idle infer request, kept for the next call:
    a compiled model's own request serves one call at a time, and a generation job renders on two
    threads (the next candidate ahead, a refinement of this one); a request that has run before
    also runs faster than a new one (its buffers are already in memory)."""
    key = (network, device)
    with _idle_lock:
        idle = _idle.setdefault(key, [])
        request = idle.pop() if idle else _networks(device)[network].create_infer_request()
    try:
        return np.array(request.infer([np.ascontiguousarray(data, np.float32)])[0])
    finally:
        with _idle_lock:
            _idle[key].append(request)


def forward_mapping(z: np.ndarray, device: str = "CPU") -> np.ndarray:
    return _infer(0, z, device).astype(np.float32)


def forward_synthesis(style: np.ndarray, device: str = "CPU") -> np.ndarray:
    return _infer(1, style, device)


def normalize_image(raw: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) in [-1, 1] -> RGB uint8 (H, W, 3)."""
    image = np.clip((raw[0].transpose(1, 2, 0) + 1.0) * 127.5 + 0.5, 0, 255)
    return image.astype(np.uint8)


def style_for_seed(seed: int, options: GeneratorOptions = GeneratorOptions(), device: str = "CPU") -> np.ndarray:
    style = forward_mapping(prepare_latent(seed), device)
    if options.truncation < 1.0:
        average = _average_style(options.average_samples, device)
        style = average + options.truncation * (style - average)
    return style


def generate_face(seed: int, options: GeneratorOptions = GeneratorOptions(), device: str = "CPU") -> np.ndarray:
    """The face for ``seed``: RGB uint8, 1024x1024, identical on every call."""
    return normalize_image(forward_synthesis(style_for_seed(seed, options, device), device))
