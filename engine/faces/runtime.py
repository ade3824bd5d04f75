"""Model files and compiled models, loaded once per process.

Model files are reached only through :func:`engine.models.model_path` (imported lazily, so this
package imports without it); each compiled model is cached per (file name, device).
"""
from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import numpy as np


def model_path(name: str) -> Path:
    """The path of model file ``name``; raises :class:`engine.errors.ModelMissing` if absent
    (imported lazily so that importing this package never touches the models folder)."""
    from engine.models import model_path as _model_path

    return _model_path(name)


def inference_threads() -> int:
    """Threads per inference: SAFEFACE_THREADS if set, else the CPUs this process may use (max 4:
    these models are small, more threads only add synchronisation)."""
    value = os.environ.get("SAFEFACE_THREADS", "").strip()
    if value.isdigit() and int(value) > 0:
        return int(value)
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 4))


@functools.lru_cache(maxsize=None)
def _core():
    import openvino

    return openvino.Core()


@functools.lru_cache(maxsize=None)
def compiled_model(name: str, device: str = "CPU", *, threads: int | None = None):
    """Compile a .tflite model once per (name, device, threads) with a latency-oriented
    configuration; ``threads``: CPU inference threads (default :func:`inference_threads`)."""
    from engine.errors import ModelCorrupt

    path = model_path(name)
    core = _core()
    config = {"PERFORMANCE_HINT": "LATENCY"}
    if device.upper().startswith("CPU"):
        config["INFERENCE_NUM_THREADS"] = threads or inference_threads()
    try:
        return core.compile_model(core.read_model(str(path)), device, config)
    except RuntimeError as error:  # OpenVINO raises RuntimeError for unreadable models
        raise ModelCorrupt(f"The model file {path.name} could not be loaded: {error}") from error


class Runner:
    """One infer request of a compiled model, serialised by a lock (requests are not thread-safe).

    ``run`` is the only place a network executes; it returns the outputs in model order.
    ``threads``: CPU inference threads (default :func:`inference_threads`).
    """

    def __init__(self, name: str, device: str = "CPU", *, threads: int | None = None):
        self.name = name
        self.device = device
        self.compiled = compiled_model(name, device, threads=threads) if threads else compiled_model(name, device)
        self.request = self.compiled.create_infer_request()
        self.outputs = list(self.compiled.outputs)
        self._lock = threading.Lock()

    def run(self, tensor: np.ndarray) -> list[np.ndarray]:
        tensor = np.ascontiguousarray(tensor, dtype=np.float32)
        with self._lock:
            self.request.infer({0: tensor})
            return [np.array(self.request.get_tensor(o).data) for o in self.outputs]


def _load_dlib(factory_name: str, name: str):
    import dlib

    from engine.errors import ModelCorrupt

    path = model_path(name)
    try:
        return getattr(dlib, factory_name)(str(path))
    except RuntimeError as error:
        raise ModelCorrupt(f"The model file {path.name} could not be loaded: {error}") from error


@functools.lru_cache(maxsize=None)
def dlib_shape_predictor(name: str = "shape_predictor_5_face_landmarks.dat"):
    return _load_dlib("shape_predictor", name)


@functools.lru_cache(maxsize=None)
def dlib_face_encoder(name: str = "dlib_face_recognition_resnet_model_v1.dat"):
    """dlib's face descriptor network, run by OpenVINO (see :mod:`engine.faces.dlib_resnet`)."""
    from .dlib_resnet import DlibResNet

    return DlibResNet.load(model_path(name))
