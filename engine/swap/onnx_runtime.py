"""ONNX Runtime sessions for the neural face models (swappers, recognisers, enhancers, masks).

* Execution providers, in order of preference, among those this onnxruntime build offers:
  TensorRT (its engines cached on disk under ``<models folder>/.trt_cache`` so a worker builds
  them once; fp16 kernels when the model file itself is fp16), CUDA, CPU. ``SAFEFACE_ONNX_PROVIDERS``
  (a comma list: ``tensorrt``, ``cuda``, ``cpu`` or full provider names) overrides the order, e.g.
  ``cuda,cpu`` on a worker where TensorRT engine builds are unwanted. Providers the build lacks are
  dropped; CPU is always last.
* :func:`load_session` builds one session per (model path, providers) and caches it
  (``InferenceSession.run`` is thread-safe, so one session serves every thread).
* :func:`model_session` resolves a manifest name through :func:`engine.models.model_path` (which
  applies the licence gate and the integrity checks) and checks the model's signature against
  what the caller expects (:class:`Port`), raising :class:`~engine.errors.ModelCorrupt` with the
  expected and the found inputs/outputs when they differ.

Django-free; imported lazily by the swap code so the engine imports without onnxruntime.
"""
from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import ModelCorrupt

TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
PREFERENCE = (TENSORRT, CUDA, CPU)
_ALIASES = {"tensorrt": TENSORRT, "trt": TENSORRT, "cuda": CUDA, "gpu": CUDA, "cpu": CPU}
PROVIDERS_ENV = "SAFEFACE_ONNX_PROVIDERS"


def available_providers() -> tuple[str, ...]:
    import onnxruntime

    return tuple(onnxruntime.get_available_providers())


def parse_providers(text: str) -> tuple[str, ...]:
    """``"tensorrt,cuda,cpu"`` (or full provider names) -> provider names; ValueError on an
    unknown name so a typo in the environment is reported, not silently ignored."""
    names: list[str] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            continue
        name = _ALIASES.get(item.lower(), item)
        if not name.endswith("ExecutionProvider"):
            raise ValueError(
                f"{PROVIDERS_ENV}: unknown execution provider {item!r} (use tensorrt, cuda, cpu "
                "or a full onnxruntime provider name)"
            )
        if name not in names:
            names.append(name)
    return tuple(names)


def preferred_providers(*, tensorrt: bool = True) -> tuple[str, ...]:
    """The providers sessions use: ``SAFEFACE_ONNX_PROVIDERS`` when set, else TensorRT, CUDA, CPU;
    in both cases only those this build offers, CPU always last. ``tensorrt=False`` leaves
    TensorRT out of the default order (models with changing input sizes, where engine builds
    would dominate)."""
    available = set(available_providers())
    configured = os.environ.get(PROVIDERS_ENV, "").strip()
    wanted = parse_providers(configured) if configured else tuple(
        p for p in PREFERENCE if tensorrt or p != TENSORRT
    )
    chosen = [p for p in wanted if p in available and p != CPU]
    return (*chosen, CPU)


def default_providers() -> tuple[str, ...]:
    """Providers for small models with varying input sizes: CUDA (when offered) then CPU."""
    return preferred_providers(tensorrt=False)


def trt_cache_dir() -> Path:
    from engine.models import models_dir

    return models_dir() / ".trt_cache"


def is_fp16_model(path: str | os.PathLike) -> bool:
    """True when the model's weights are stored as float16 (e.g. inswapper_128_fp16.onnx)."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - unreadable files are reported by the session load
        return False
    floats = [t.data_type for t in model.graph.initializer if t.data_type in (1, 10)]
    return bool(floats) and floats.count(10) * 2 >= len(floats)


def _provider_entries(path: str, providers: Sequence[str]) -> list:
    entries: list = []
    for name in providers:
        if name == TENSORRT:
            cache = trt_cache_dir()
            cache.mkdir(parents=True, exist_ok=True)
            entries.append((name, {
                "trt_engine_cache_enable": True,
                "trt_engine_cache_path": str(cache),
                "trt_timing_cache_enable": True,
                "trt_timing_cache_path": str(cache),
                "trt_fp16_enable": is_fp16_model(path),
            }))
        elif name == CUDA:
            entries.append((name, {"cudnn_conv_algo_search": "HEURISTIC"}))
        else:
            entries.append(name)
    return entries


_lock = threading.Lock()
_sessions: dict[tuple[str, tuple[str, ...]], object] = {}


def load_session(path: str | os.PathLike, providers: Sequence[str] | None = None, *, threads: int | None = None):
    """An onnxruntime session for the model at ``path``, built once per (path, providers).
    Raises :class:`ModelCorrupt` when onnxruntime cannot load the file."""
    import onnxruntime

    from engine.faces.runtime import inference_threads

    providers = tuple(providers) if providers else preferred_providers()
    key = (str(Path(path).resolve()), providers)
    with _lock:
        session = _sessions.get(key)
        if session is not None:
            return session
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or inference_threads()
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.log_severity_level = 3  # errors only
        try:
            session = onnxruntime.InferenceSession(
                key[0], sess_options=options, providers=_provider_entries(key[0], providers)
            )
        except Exception as error:  # onnxruntime raises its own exception types for bad files
            raise ModelCorrupt(f"The model file {Path(path).name} could not be loaded by onnxruntime: {error}") from error
        _sessions[key] = session
        return session


def clear_sessions() -> None:
    """Forget every cached session (tests; a worker that swaps model files)."""
    with _lock:
        _sessions.clear()


def cached_sessions() -> int:
    with _lock:
        return len(_sessions)


@dataclass(frozen=True)
class Port:
    """An expected model input or output: its name and shape; ``None`` in the shape is any size
    (a dynamic or a fixed batch axis), an int must match a fixed dimension (a symbolic
    dimension in the file is accepted for it)."""

    name: str
    shape: tuple[int | None, ...]

    def matches(self, found_shape: Sequence) -> bool:
        if len(found_shape) != len(self.shape):
            return False
        return all(want is None or not isinstance(got, int) or got == want for want, got in zip(self.shape, found_shape))

    def describe(self) -> str:
        return f"{self.name or '*'!r} {_shape(self.shape)}"


def _shape(shape) -> str:
    return "(" + ", ".join("N" if d is None else str(d) for d in shape) + ")"


def _describe(args) -> str:
    return ", ".join(f"{a.name!r} {_shape(a.shape)}" for a in args) or "none"


def check_signature(session, model: str, inputs: Sequence[Port], outputs: Sequence[Port] = ()) -> None:
    """Raise :class:`ModelCorrupt` unless the session has every expected input (by name, with a
    compatible shape) and its first outputs match ``outputs`` in order (shapes only when the
    expected output is unnamed: ``""``)."""
    listed = session.get_inputs()
    found_inputs = {a.name: a for a in listed}
    problems = []
    for position, port in enumerate(inputs):
        # An unnamed expected input ("") is matched by position (recognisers: any input name).
        arg = found_inputs.get(port.name) if port.name else (listed[position] if position < len(listed) else None)
        if arg is None or not port.matches(arg.shape):
            problems.append(port.describe())
    found_outputs = session.get_outputs()
    for position, port in enumerate(outputs):
        arg = found_outputs[position] if position < len(found_outputs) else None
        if arg is None or (port.name and arg.name != port.name) or not port.matches(arg.shape):
            problems.append(f"output {port.describe()}")
    extra = [n for n in found_inputs if n not in {p.name for p in inputs}] if all(p.name for p in inputs) else (
        [a.name for a in listed[len(inputs):]]
    )
    if problems or extra:
        raise ModelCorrupt(
            f"The model file {model} does not have the signature SafeFace expects for it: expected inputs "
            f"{', '.join(p.describe() for p in inputs)}"
            + (f" and outputs {', '.join(p.describe() for p in outputs)}" if outputs else "")
            + f"; the file has inputs {_describe(session.get_inputs())} and outputs {_describe(found_outputs)}. "
            "Is it the right file for this name?"
        )


def model_session(
    name: str, inputs: Sequence[Port], outputs: Sequence[Port] = (), *, providers: Sequence[str] | None = None
):
    """The checked, cached session of manifest model ``name`` (licence gate, presence and integrity
    through :func:`engine.models.model_path`; signature through :func:`check_signature`)."""
    from engine.models import model_path

    path = model_path(name)
    session = load_session(path, providers)
    check_signature(session, name, inputs, outputs)
    return session


def batch_axis_dynamic(session, input_name: str) -> bool:
    """True when the named input accepts any batch size (its first dimension is symbolic)."""
    for arg in session.get_inputs():
        if arg.name == input_name:
            return bool(arg.shape) and not isinstance(arg.shape[0], int)
    return False


def input_dtype(session, input_name: str) -> np.dtype:
    for arg in session.get_inputs():
        if arg.name == input_name:
            return np.dtype(np.float16) if arg.type == "tensor(float16)" else np.dtype(np.float32)
    return np.dtype(np.float32)
