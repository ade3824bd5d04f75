"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) on OpenVINO.

dlib-bin computes a face descriptor in ~75 ms on two cores (no BLAS, GIL held). This module reads
dlib's own weights from the ``.dat`` file (dlib's native ``serialize()`` format, parsed here in
pure Python/numpy), rebuilds the same network with the OpenVINO graph API, and runs it on the CPU
in float32. The result is the same 128-d descriptor (max abs difference ~1e-5 to dlib's).

Typical use::

    net = DlibResNet.load(model_path("dlib_face_recognition_resnet_model_v1.dat"))
    chip = chip_from_shape(rgb, shape)         # dlib.get_face_chip(rgb, shape, 150, 0.25)
    vectors = net.embed_chips(chip[None])       # (1, 128) float64

* Input: a batch of aligned 150x150 RGB chips, ``(N, 150, 150, 3)`` uint8 (NHWC, any N >= 1;
  the compiled model has a dynamic batch dimension). The graph converts to float, subtracts
  dlib's channel means (read from the file) and divides by 256, as ``input_rgb_image_sized``
  does, then runs the network in NCHW.
* Output: ``(N, 128)`` float64 (computed in float32).
* Conversion takes ~70 ms once per process; nothing is written next to the ``.dat``.

The ``.dat`` format (what :func:`parse_network` reads)
-------------------------------------------------------
dlib writes integers as a control byte (low nibble: number of value bytes, 0x80: negative; the
bits 0x70 are always clear) followed by the magnitude in little-endian bytes; strings as such an
integer length then the bytes; ``bool`` as the character ``'0'``/``'1'``; ``float``/``double``
as two integers, an int64 mantissa and an int16 exponent (value = mantissa * 2**exponent;
mantissa 0 with exponent 32000/32001/32002 is +inf/-inf/NaN). A ``resizable_tensor`` is an
integer version (2), the dimensions (num_samples, k, nr, nc) as integers, then the values as raw
little-endian float32; an ``alias_tensor`` (a view into a layer's ``params``) is version 1 and
its four dimensions.

Network nesting decides the order: ``add_loss_layer`` writes its version, the loss details, then
the subnetwork; every ``add_layer`` writes its version (2; 3 for the layer sitting on the input
layer) and then *its subnetwork first*, then its own details (a version string such as
``"con_4"``, ``"affine_"``, ``"relu_"``, ``"avg_pool_2"``, ``"add_prev_"``...) and its state
(three bools, then the x_grad / cached_output / params_grad tensors, empty in a cleaned net);
``tag``/``skip`` layers write only a version (1) and their subnetwork. So the file holds the
loss layer, then a run of version numbers from the output down to the input, then the input
layer and the layers' details from the input up to the output. Tag/skip ids are template
arguments and are not in the file, so the layout of ``anet_type`` (dlib's
``examples/dnn_face_recognition_ex.cpp``) is spelled out in :func:`anet_layout` and every
version number, layer name and size read is checked against it.

Layer semantics reproduced here: ``con`` is a cross-correlation with explicit zero padding (as
stored: ``stride != 1 ? 0 : size/2``) and output ``1 + (n + 2p - k) // stride``; ``affine`` is
``x * gamma + beta`` per channel; ``max_pool``/``avg_pool`` use the stored windows, strides and
padding (0 here) with floor rounding; ``avg_pool_everything`` is the spatial mean;
``add_prev`` adds tensors of different shapes by zero-padding both to the larger channel count
and size (the values meet at the top-left corner, as dlib's ``tt::add`` does); ``fc_no_bias``
multiplies the flattened (k, nr, nc) input by a (num_inputs, num_outputs) matrix.
"""
from __future__ import annotations

import functools
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import ModelCorrupt, ModelMissing

CHIP_SIZE = 150
CHIP_PADDING = 0.25
EMBEDDING_SIZE = 128

# ----------------------------------------------------------------------------------------------
# The expected network: dlib's anet_type, as (kind, ...) entries from the output to the input.
# ----------------------------------------------------------------------------------------------


def anet_layout() -> list[tuple]:
    """The layers of dlib's ``anet_type`` below the loss layer, outermost (output) first.

    Entries: ``("fc", outputs)``, ``("avg_pool", size, stride)`` (size 0: everything),
    ``("max_pool", size, stride)``, ``("con", filters, size, stride)``, ``("affine",)``,
    ``("relu",)``, ``("add_prev", tag)``, ``("tag", id)``, ``("skip", tag)``; the input layer
    (``input_rgb_image_sized<150>``) is below the last entry.
    """

    def block(n: int, stride: int) -> list[tuple]:  # BN<con<N,3,3,1,1,relu<BN<con<N,3,3,s,s>>>>>
        return [("affine",), ("con", n, 3, 1), ("relu",), ("affine",), ("con", n, 3, stride)]

    def ares(n: int) -> list[tuple]:  # relu<add_prev1<block<N,BN,1,tag1<SUBNET>>>>
        return [("relu",), ("add_prev", 1), *block(n, 1), ("tag", 1)]

    def ares_down(n: int) -> list[tuple]:
        # relu<add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,BN,2,tag1<SUBNET>>>>>>>
        return [("relu",), ("add_prev", 2), ("avg_pool", 2, 2), ("skip", 1), ("tag", 2),
                *block(n, 2), ("tag", 1)]

    layout: list[tuple] = [("fc", EMBEDDING_SIZE), ("avg_pool", 0, 1)]
    layout += ares_down(256)  # alevel0
    layout += ares(256) + ares(256) + ares_down(256)  # alevel1
    layout += ares(128) + ares(128) + ares_down(128)  # alevel2
    layout += ares(64) + ares(64) + ares(64) + ares_down(64)  # alevel3
    layout += ares(32) + ares(32) + ares(32)  # alevel4
    layout += [("max_pool", 3, 2), ("relu",), ("affine",), ("con", 32, 7, 2)]
    return layout


# ----------------------------------------------------------------------------------------------
# Reading dlib's serialisation primitives
# ----------------------------------------------------------------------------------------------


class _Reader:
    """A cursor over the bytes of a .dat file; every failure is a :class:`ModelCorrupt`."""

    def __init__(self, data: bytes, name: str):
        self.data = memoryview(data)
        self.pos = 0
        self.name = name

    def fail(self, what: str) -> "ModelCorrupt":
        return ModelCorrupt(
            f"The model file {self.name} could not be read as dlib's face recognition network: "
            f"{what} (at byte {self.pos} of {len(self.data)}). Fetch it again with "
            "`python -m engine models fetch`."
        )

    def take(self, count: int) -> memoryview:
        if count < 0 or self.pos + count > len(self.data):
            raise self.fail("the file ends too early (truncated)")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def integer(self, max_bytes: int = 8, signed: bool = True) -> int:
        control = self.take(1)[0]
        if control & 0x70:
            raise self.fail(f"bad integer control byte 0x{control:02x}")
        size = control & 0x0F
        if size > max_bytes:
            raise self.fail(f"integer of {size} bytes where at most {max_bytes} fit")
        value = int.from_bytes(self.take(size), "little")
        if control & 0x80:
            if not signed:
                raise self.fail("negative value where an unsigned integer was expected")
            value = -value
        return value

    def count(self, limit: int = 1 << 31) -> int:
        value = self.integer()
        if not 0 <= value <= limit:
            raise self.fail(f"implausible size {value}")
        return value

    def string(self) -> str:
        length = self.integer(signed=False)
        if length > 4096:
            raise self.fail(f"implausible string length {length}")
        raw = bytes(self.take(length))
        try:
            return raw.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail("a layer name is not text") from None

    def boolean(self) -> bool:
        char = self.take(1)[0]
        if char not in (0x30, 0x31):
            raise self.fail(f"bad bool byte 0x{char:02x}")
        return char == 0x31

    def real(self) -> float:
        """dlib's portable float: int64 mantissa, int16 exponent."""
        mantissa = self.integer(8)
        exponent = self.integer(2)
        if mantissa == 0 and exponent in (32000, 32001, 32002):
            return (math.inf, -math.inf, math.nan)[exponent - 32000]
        try:
            return math.ldexp(float(mantissa), exponent)
        except OverflowError:
            raise self.fail("floating point value out of range") from None

    def version(self, expected: tuple[int, ...], what: str) -> int:
        value = self.integer()
        if value not in expected:
            raise self.fail(f"unexpected {what} version {value} (expected {expected})")
        return value

    def tensor(self) -> np.ndarray:
        """A resizable_tensor: (num_samples, k, nr, nc) float32 array."""
        self.version((2,), "tensor")
        dims = tuple(self.count() for _ in range(4))
        size = math.prod(dims)
        if size * 4 > len(self.data) - self.pos:
            raise self.fail(f"tensor of {dims} runs past the end of the file (truncated)")
        values = np.frombuffer(self.take(size * 4), dtype="<f4").astype(np.float32)
        return values.reshape(dims)

    def alias(self) -> tuple[int, int, int, int]:
        self.version((1,), "alias_tensor")
        return tuple(self.count() for _ in range(4))  # type: ignore[return-value]

    def name_in(self, allowed: tuple[str, ...], what: str) -> str:
        name = self.string()
        if name not in allowed:
            raise self.fail(f"found layer {name!r} where {what} ({' / '.join(allowed)}) belongs")
        return name


def _slice(reader: _Reader, params: np.ndarray, offset: int, dims: tuple[int, ...], what: str) -> np.ndarray:
    flat = params.reshape(-1)
    size = math.prod(dims)
    if offset + size > flat.size:
        raise reader.fail(f"{what} ({dims}) does not fit in the layer's {flat.size} parameters")
    return flat[offset:offset + size].reshape(dims)


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


@dataclass
class Layer:
    """One entry of the parsed network (input to output order); arrays are float32."""

    kind: str  # input, con, affine, relu, max_pool, avg_pool, add_prev, tag, skip, fc
    tag: int = 0
    size: int = 0  # window / filter size (0: the whole input)
    stride: int = 1
    padding: int = 0
    weights: np.ndarray | None = None  # con: (O, I, k, k); fc: (inputs, outputs); affine: gamma
    bias: np.ndarray | None = None  # con / fc bias, affine beta
    means: tuple[float, float, float] = (0.0, 0.0, 0.0)  # input: RGB averages


def _default_padding(size: int, stride: int) -> int:
    return 0 if stride != 1 else size // 2


def _read_con(r: _Reader, spec: tuple) -> Layer:
    _, filters_expected, size_expected, stride_expected = spec
    version = r.name_in(("con_4", "con_5"), "a con layer")
    params = r.tensor()
    filters = r.count()
    nr, nc = r.count(), r.count()
    stride_y, stride_x = r.count(), r.count()
    pad_y, pad_x = r.count(), r.count()
    w_dims = r.alias()
    b_dims = r.alias()
    for _ in range(4):  # learning-rate / weight-decay multipliers
        r.real()
    use_bias = r.boolean() if version == "con_5" else True
    expected_pad = _default_padding(size_expected, stride_expected)
    if (filters, nr, nc, stride_y, stride_x, pad_y, pad_x) != (
        filters_expected, size_expected, size_expected, stride_expected, stride_expected,
        expected_pad, expected_pad,
    ):
        raise r.fail(
            f"con layer is {filters} filters {nr}x{nc} stride {stride_y},{stride_x} padding "
            f"{pad_y},{pad_x}; expected {filters_expected} filters {size_expected}x{size_expected} "
            f"stride {stride_expected} padding {expected_pad}"
        )
    if w_dims[0] != filters or w_dims[2:] != (nr, nc):
        raise r.fail(f"con filter shape {w_dims} does not match {filters} {nr}x{nc} filters")
    weights = _slice(r, params, 0, w_dims, "con filters")
    bias = None
    if use_bias:
        if math.prod(b_dims) != filters:
            raise r.fail(f"con bias shape {b_dims} does not match {filters} filters")
        bias = _slice(r, params, math.prod(w_dims), (filters,), "con bias")
    elif params.size != math.prod(w_dims):
        raise r.fail("con parameter count does not match its filters")
    return Layer("con", size=nr, stride=stride_y, padding=pad_y, weights=weights, bias=bias)


def _read_affine(r: _Reader) -> Layer:
    version = r.name_in(("affine_", "affine_2", "bn_con2"), "an affine layer")
    if version == "bn_con2":  # a batch-norm layer that dlib converts to affine when loading
        params = r.tensor()
        g_dims, b_dims = r.alias(), r.alias()
        r.tensor(), r.tensor()  # means, invstds (training state)
        running_means, running_vars = r.tensor().reshape(-1), r.tensor().reshape(-1)
        r.integer(), r.integer()  # num_updates, running_stats_window_size
        for _ in range(4):
            r.real()
        eps = r.real()
        gamma = _slice(r, params, 0, (math.prod(g_dims),), "batch-norm gamma")
        beta = _slice(r, params, math.prod(g_dims), (math.prod(b_dims),), "batch-norm beta")
        if running_means.size != gamma.size or running_vars.size != gamma.size:
            raise r.fail("batch-norm running statistics do not match its channels")
        scale = (gamma / np.sqrt(running_vars + np.float32(eps))).astype(np.float32)
        shift = (beta - scale * running_means).astype(np.float32)
        return Layer("affine", weights=scale.reshape(g_dims), bias=shift.reshape(g_dims))
    params = r.tensor()
    g_dims, b_dims = r.alias(), r.alias()
    mode = r.integer()
    disabled = r.boolean() if version == "affine_2" else False
    if mode != 0 or g_dims != b_dims or g_dims[0] != 1:
        raise r.fail(f"affine layer mode {mode} / shapes {g_dims}, {b_dims} are not a per-channel affine")
    if disabled:
        return Layer("identity")
    gamma = _slice(r, params, 0, g_dims, "affine gamma")  # (1, k, 1, 1) in conv mode
    beta = _slice(r, params, math.prod(g_dims), g_dims, "affine beta")
    return Layer("affine", weights=gamma, bias=beta)


def _read_pool(r: _Reader, spec: tuple) -> Layer:
    kind, size_expected, stride_expected = spec
    r.name_in((f"{kind}_2",), f"a {kind} layer")
    nr, nc = r.count(), r.count()
    stride_y, stride_x = r.count(), r.count()
    pad_y, pad_x = r.count(), r.count()
    expected_pad = _default_padding(size_expected, stride_expected) if size_expected else 0
    if (nr, nc, stride_y, stride_x, pad_y, pad_x) != (
        size_expected, size_expected, stride_expected, stride_expected, expected_pad, expected_pad,
    ):
        raise r.fail(
            f"{kind} layer is {nr}x{nc} stride {stride_y},{stride_x} padding {pad_y},{pad_x}; "
            f"expected {size_expected}x{size_expected} stride {stride_expected} padding {expected_pad}"
        )
    return Layer(kind, size=nr, stride=stride_y, padding=pad_y)


def _read_fc(r: _Reader, spec: tuple) -> Layer:
    version = r.name_in(("fc_2", "fc_3"), "an fc_no_bias layer")
    outputs, inputs = r.count(), r.count()
    params = r.tensor()
    w_dims, _b_dims = r.alias(), r.alias()
    bias_mode = r.integer()
    for _ in range(4):
        r.real()
    if version == "fc_3":
        r.boolean()  # use_bias: irrelevant, fc_no_bias has no bias
    if outputs != spec[1] or bias_mode != 1:  # FC_NO_BIAS == 1
        raise r.fail(f"fc layer has {outputs} outputs, bias mode {bias_mode}; expected {spec[1]}, no bias")
    if w_dims != (inputs, outputs, 1, 1):
        raise r.fail(f"fc weight shape {w_dims} does not match {inputs} inputs x {outputs} outputs")
    return Layer("fc", weights=_slice(r, params, 0, (inputs, outputs), "fc weights"))


def _read_input(r: _Reader) -> Layer:
    r.name_in(("input_rgb_image_sized",), "the input layer")
    means = (r.real(), r.real(), r.real())
    nr, nc = r.count(), r.count()
    if (nr, nc) != (CHIP_SIZE, CHIP_SIZE):
        raise r.fail(f"input size {nr}x{nc}; expected {CHIP_SIZE}x{CHIP_SIZE}")
    if not all(math.isfinite(m) for m in means):
        raise r.fail("input channel averages are not finite")
    return Layer("input", size=nr, means=means)


def _read_details(r: _Reader, spec: tuple) -> Layer:
    kind = spec[0]
    if kind == "con":
        return _read_con(r, spec)
    if kind == "affine":
        return _read_affine(r)
    if kind in ("max_pool", "avg_pool"):
        return _read_pool(r, spec)
    if kind == "fc":
        return _read_fc(r, spec)
    if kind == "relu":
        r.name_in(("relu_",), "a relu layer")
        return Layer("relu")
    if kind == "add_prev":
        r.name_in(("add_prev_",), "an add_prev layer")
        return Layer("add_prev", tag=spec[1])
    raise AssertionError(kind)  # pragma: no cover - layout kinds are fixed


def _read_layer_state(r: _Reader, tensors: int = 3) -> None:
    for _ in range(3):  # this_layer_setup_called, gradient_input_is_stale, output disabled
        r.boolean()
    for _ in range(tensors):  # x_grad, cached_output, params_grad / grad_final
        r.tensor()


def parse_network(data: bytes, name: str = "dlib_face_recognition_resnet_model_v1.dat") -> list[Layer]:
    """Parse the bytes of dlib's serialised ``anet_type`` into layers, input first.

    Raises :class:`ModelCorrupt` when the bytes are not exactly that network (truncated, another
    file, another architecture, trailing bytes).
    """
    r = _Reader(data, name)
    layout = anet_layout()
    r.version((1,), "loss layer")
    r.name_in(("loss_metric_2",), "the loss_metric layer")
    r.real(), r.real()  # margin, distance threshold (training only)
    # The run of add_layer / tag / skip versions, from the output down to the layer on the input.
    input_version = 0
    for index, spec in enumerate(layout):
        if spec[0] in ("tag", "skip"):
            r.version((1,), f"{spec[0]} layer")
        elif index == len(layout) - 1:
            input_version = r.version((2, 3), "input add_layer")
        else:
            r.version((2,), "add_layer")
    # Then the details, from the input up to the output.
    layers = [_read_input(r)]
    for index, spec in enumerate(reversed(layout)):
        if spec[0] in ("tag", "skip"):
            layers.append(Layer(spec[0], tag=spec[1]))
            continue
        layers.append(_read_details(r, spec))
        _read_layer_state(r)
        if index == 0 and input_version == 3:
            r.count()  # _sample_expansion_factor
    if r.pos != len(r.data):
        raise r.fail(f"{len(r.data) - r.pos} unexpected bytes after the network")
    return layers


# ----------------------------------------------------------------------------------------------
# OpenVINO graph
# ----------------------------------------------------------------------------------------------


def build_model(layers: list[Layer]):
    """The OpenVINO model for ``layers``: input ``chips`` (N, 150, 150, 3) u8 RGB, output
    ``embedding`` (N, 128) f32."""
    import openvino as ov
    import openvino.opset13 as ops

    def const(array) -> object:
        return ops.constant(np.array(array, dtype=np.float32, order="C"))  # keeps 0-d scalars

    source = layers[0]
    chips = ops.parameter(ov.PartialShape([-1, source.size, source.size, 3]), ov.Type.u8, name="chips")
    x = ops.convert(chips, ov.Type.f32)
    x = ops.subtract(x, const(np.array(source.means, np.float32).reshape(1, 1, 1, 3)))
    x = ops.multiply(x, const(np.float32(1.0 / 256.0)))
    x = ops.transpose(x, ops.constant(np.array([0, 3, 1, 2], np.int64)))
    shape = (3, source.size, source.size)  # (C, H, W), tracked alongside the graph
    tags: dict[int, tuple[object, tuple[int, int, int]]] = {}

    def padded(node, have: tuple[int, int, int], want: tuple[int, int, int]):
        if have == want:
            return node
        extra = [0] + [w - h for h, w in zip(have, want)]
        return ops.pad(node, [0, 0, 0, 0], extra, "constant", const(np.float32(0)))

    for layer in layers[1:]:
        kind = layer.kind
        if kind == "con":
            out_c = layer.weights.shape[0]
            k, s, p = layer.size, layer.stride, layer.padding
            x = ops.convolution(x, const(layer.weights), [s, s], [p, p], [p, p], [1, 1])
            if layer.bias is not None:
                x = ops.add(x, const(layer.bias.reshape(1, out_c, 1, 1)))
            size = [1 + (n + 2 * p - k) // s for n in shape[1:]]
            shape = (out_c, size[0], size[1])
        elif kind == "affine":
            if layer.weights.shape[1] != shape[0]:
                raise ModelCorrupt(f"An affine layer has {layer.weights.shape[1]} channels, its input {shape[0]}")
            x = ops.add(ops.multiply(x, const(layer.weights)), const(layer.bias))
        elif kind == "relu":
            x = ops.relu(x)
        elif kind == "max_pool":
            k, s, p = layer.size, layer.stride, layer.padding
            x = ops.max_pool(x, [s, s], [1, 1], [p, p], [p, p], [k, k], "floor", "explicit").output(0)
            shape = (shape[0], *(1 + (n + 2 * p - k) // s for n in shape[1:]))
        elif kind == "avg_pool":
            if layer.size == 0:  # avg_pool_everything
                x = ops.reduce_mean(x, ops.constant(np.array([2, 3], np.int64)), True)
                shape = (shape[0], 1, 1)
            else:
                k, s, p = layer.size, layer.stride, layer.padding
                x = ops.avg_pool(x, [s, s], [p, p], [p, p], [k, k], True, "floor", "explicit")
                shape = (shape[0], *(1 + (n + 2 * p - k) // s for n in shape[1:]))
        elif kind == "tag":
            tags[layer.tag] = (x, shape)
        elif kind == "skip":
            x, shape = tags[layer.tag]
        elif kind == "add_prev":
            other, other_shape = tags[layer.tag]
            want = tuple(max(a, b) for a, b in zip(shape, other_shape))
            x = ops.add(padded(x, shape, want), padded(other, other_shape, want))
            shape = want
        elif kind == "fc":
            inputs, outputs = layer.weights.shape
            if math.prod(shape) != inputs:
                raise ModelCorrupt(f"The fc layer expects {inputs} inputs but receives {shape}")
            x = ops.reshape(x, ops.constant(np.array([0, inputs], np.int64)), True)
            x = ops.matmul(x, const(layer.weights), False, False)
            shape = (outputs, 1, 1)
        elif kind == "identity":
            pass
        else:  # pragma: no cover - parse_network only produces the kinds above
            raise AssertionError(kind)
    (x if hasattr(x, "get_tensor") else x.output(0)).get_tensor().set_names({"embedding"})
    result = ops.result(x)
    return ov.Model([result], [chips], "dlib_face_recognition_resnet_model_v1")


def load_model(dat_path: str | os.PathLike):
    """The OpenVINO model for the .dat at ``dat_path``, parsed and converted (~70 ms; reading a
    saved IR copy measured slower than that, so nothing is cached on disk)."""
    path = Path(dat_path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ModelMissing(f"The model file {path} is missing (python -m engine models fetch)") from None
    return build_model(parse_network(data, path.name))


# ----------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------


def compile_config() -> dict:
    """Latency-oriented CPU settings; float32 precision is forced because the CPU plugin
    defaults to bf16 on CPUs with AVX512-BF16/AMX, which moves descriptors by ~1e-2."""
    from .runtime import inference_threads

    return {
        "PERFORMANCE_HINT": "LATENCY",
        "INFERENCE_NUM_THREADS": inference_threads(),
        "INFERENCE_PRECISION_HINT": "f32",
    }


class DlibResNet:
    """dlib's face descriptor network compiled for the CPU with OpenVINO. Thread-safe: one infer
    request, serialised by a lock."""

    def __init__(self, model, device: str = "CPU"):
        from .runtime import _core

        self.device = device
        config = compile_config() if device.upper().startswith("CPU") else {}
        try:
            self.compiled = _core().compile_model(model, device, config)
        except RuntimeError as error:  # OpenVINO reports unusable models as RuntimeError
            raise ModelCorrupt(f"The converted dlib face recognition network could not be compiled: {error}") from error
        self._request = self.compiled.create_infer_request()
        self._output = self.compiled.outputs[0]
        self._lock = threading.Lock()

    @classmethod
    def load(cls, dat_path: str | os.PathLike) -> "DlibResNet":
        """The network for ``dat_path`` (one instance per resolved path and process)."""
        return _load_cached(str(Path(dat_path).resolve()))

    def embed_chips(self, chips: np.ndarray) -> np.ndarray:
        """Descriptors of aligned chips: (N, 150, 150, 3) uint8 RGB -> (N, 128) float64."""
        chips = np.asarray(chips)
        if chips.ndim == 3:
            raise ValueError("embed_chips takes a batch (N, 150, 150, 3); use chip[None] for one chip")
        if chips.ndim != 4 or chips.shape[1:] != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"chips must be (N, {CHIP_SIZE}, {CHIP_SIZE}, 3) RGB, got {chips.shape}")
        if chips.dtype != np.uint8:
            raise ValueError(f"chips must be uint8, got {chips.dtype}")
        if len(chips) == 0:
            return np.zeros((0, EMBEDDING_SIZE), np.float64)
        chips = np.ascontiguousarray(chips)
        with self._lock:
            self._request.infer({0: chips})
            out = np.array(self._request.get_tensor(self._output).data, dtype=np.float64)
        return out.reshape(len(chips), EMBEDDING_SIZE)


@functools.lru_cache(maxsize=None)
def _load_cached(resolved: str) -> DlibResNet:
    return DlibResNet(load_model(resolved))


def chip_from_shape(rgb: np.ndarray, shape) -> np.ndarray:
    """dlib's own aligned 150x150 chip for ``shape`` (a ``dlib.full_object_detection``), with the
    25% padding that ``compute_face_descriptor(img, shape, 0, 0.25)`` uses: byte-identical to
    the chip dlib embeds."""
    import dlib

    chip = dlib.get_face_chip(np.ascontiguousarray(rgb, dtype=np.uint8), shape, size=CHIP_SIZE, padding=CHIP_PADDING)
    return np.asarray(chip, dtype=np.uint8)


__all__ = ["CHIP_SIZE", "DlibResNet", "anet_layout", "build_model", "chip_from_shape", "load_model", "parse_network"]
