"""MobileStyleGAN (FFHQ, 1024 px) on OpenVINO: deterministic faces of nobody from a seed.

z (1, 512) ~ N(0, 1) from the seed -> mapping network -> style (1, 512) -> synthesis network ->
image (1, 3, 1024, 1024) in [-1, 1]. Truncation pulls the style toward the average face, which
trades variety for realism (0.7 is the usual compromise).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from engine.models import model_path

MAPPING = ("MappingNetwork.xml", "MappingNetwork.bin")
SYNTHESIS = ("SynthesisNetwork.xml", "SynthesisNetwork.bin")


@dataclass(frozen=True)
class GeneratorOptions:
    truncation: float = 0.7
    average_samples: int = 2048  # seeds used once to estimate the average style


@functools.lru_cache(maxsize=2)
def _networks(device: str = "CPU"):
    import openvino

    from engine.faces.runtime import inference_threads

    core = openvino.Core()
    config = {"INFERENCE_NUM_THREADS": inference_threads(), "PERFORMANCE_HINT": "LATENCY"}
    mapping = core.compile_model(core.read_model(*map(model_path, MAPPING)), device, config)
    synthesis = core.compile_model(core.read_model(*map(model_path, SYNTHESIS)), device, config)
    return mapping, synthesis


@functools.lru_cache(maxsize=2)
def _average_style(samples: int, device: str = "CPU") -> np.ndarray:
    mapping, _ = _networks(device)
    rng = np.random.default_rng(20240607)
    styles = [forward_mapping(rng.standard_normal((1, 512)).astype(np.float32), device) for _ in range(samples)]
    return np.mean(styles, axis=0)


def prepare_latent(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((1, 512)).astype(np.float32)


def forward_mapping(z: np.ndarray, device: str = "CPU") -> np.ndarray:
    mapping, _ = _networks(device)
    return next(iter(mapping(z).values())).astype(np.float32)


def forward_synthesis(style: np.ndarray, device: str = "CPU") -> np.ndarray:
    _, synthesis = _networks(device)
    return next(iter(synthesis(style.astype(np.float32)).values()))


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
