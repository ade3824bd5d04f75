"""Neural face swap with ONNX Runtime: the face-swap models FaceFusion users already have on disk.

A :class:`NeuralSwapper` plays the role of the classical mesh swap: a persona is prepared once
(:meth:`NeuralSwapper.prepare_source`: its identity embedding in the space the model expects),
then :meth:`NeuralSwapper.swap_face` replaces a face in a frame given its 468-point mesh and
returns the same :class:`~engine.swap.classical.SwapResult` (changed box, coverage, occluded).

Each model is described by data (:data:`SWAPPERS`); every fact is FaceFusion's, from its
``processors/modules/face_swapper.py`` model set (3.0 to 3.4: ``type``, ``template``, ``size``,
``mean``, ``standard_deviation``; ``prepare_crop_frame``: BGR->RGB, /255, (x - mean) / std, NCHW;
``normalize_crop_frame``: output * std + mean for ghost / hififace / hyperswap / uniface only, then
clip 0..1, x255; ``forward_swap_face``: inputs named ``source`` (1x512 embedding) and ``target``
(1x3xSxS), first output 1x3xSxS) and ``face_recognizer.py`` / 2.x ``face_analyser.calc_embedding``
(arcface_112_v2 112 px crop, RGB, x / 127.5 - 1, 512-d output):

=====================  ===============  ====  ====================  ==========================
model                  template         size  mean / std            source embedding
=====================  ===============  ====  ====================  ==========================
inswapper_128(_fp16)   arcface_128      128   0 / 1 (no de-norm)    w600k, normalised, x emap
hyperswap_1a/1b/1c     arcface_128      256   .5 / .5 (de-norm)     w600k, normalised
simswap_256            arcface_112_v1   256   ImageNet (no de-norm) converter(w600k), normalised
simswap_unofficial_512 arcface_112_v1   512   0 / 1 (no de-norm)    converter(w600k), normalised
ghost_1/2/3_256        arcface_112_v1   256   .5 / .5 (de-norm)     converter(w600k), raw
=====================  ===============  ====  ====================  ==========================

``emap`` is the last initializer of the inswapper graph (FaceFusion ``get_static_model_initializer``
/ InsightFace ``INSwapper``): source = (e / |e|) @ emap. The embedding converters are
FaceFusion 3.0's ``arcface_converter_{ghost,simswap}.onnx`` (input ``input``, 1x512); where they are
absent the FaceFusion 2.x recognisers ``arcface_{ghost,simswap}.onnx`` embed the face directly
(normalised, FaceFusion 2.x's rule for every model but inswapper).

Masks: a soft box mask (FaceFusion's default face-mask-blur 0.3, padding 0) and, when configured,
the occlusion / region masks of :mod:`engine.swap.masks` (``masks=``), combined by minimum; the
optional enhancer of :mod:`engine.swap.enhance` (``enhancer=``) runs on the pasted face.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Sequence

import numpy as np

from engine.errors import ModelCorrupt, ModelMissing
from engine.swap import align
from engine.swap.classical import SwapResult

RECOGNISER = "arcface_w600k_r50.onnx"
RECOGNISER_TEMPLATE, RECOGNISER_SIZE = "arcface_112_v2", 112
EMBEDDING = 512
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
BOX_BLUR = 0.3  # FaceFusion's default --face-mask-blur


@dataclass(frozen=True)
class Embedder:
    """How a face becomes the model's source vector: a recogniser on a 112 px crop, optionally
    followed by an embedding converter; ``normalise`` the result (or keep it raw)."""

    recogniser: str = RECOGNISER
    converter: str | None = None
    normalise: bool = True
    emap: bool = False  # inswapper: project through the graph's emap matrix

    @property
    def files(self) -> tuple[str, ...]:
        return (self.recogniser,) + ((self.converter,) if self.converter else ())


@dataclass(frozen=True)
class SwapperSpec:
    name: str
    family: str  # inswapper | hyperswap | simswap | ghost
    template: str
    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    denormalise: bool
    embedders: tuple[Embedder, ...]  # alternatives, the first whose files are all present is used

    @property
    def file(self) -> str:
        return f"{self.name}.onnx"


_INSWAPPER = dict(family="inswapper", template="arcface_128", size=128, mean=(0.0,) * 3, std=(1.0,) * 3,
                  denormalise=False, embedders=(Embedder(emap=True),))
_HYPERSWAP = dict(family="hyperswap", template="arcface_128", size=256, mean=(0.5,) * 3, std=(0.5,) * 3,
                  denormalise=True, embedders=(Embedder(),))
_SIMSWAP_EMBEDDERS = (Embedder(converter="arcface_converter_simswap.onnx"), Embedder(recogniser="arcface_simswap.onnx"))
_GHOST = dict(family="ghost", template="arcface_112_v1", size=256, mean=(0.5,) * 3, std=(0.5,) * 3, denormalise=True,
              embedders=(Embedder(converter="arcface_converter_ghost.onnx", normalise=False),
                         Embedder(recogniser="arcface_ghost.onnx")))

SWAPPERS: dict[str, SwapperSpec] = {
    spec.name: spec
    for spec in (
        SwapperSpec("inswapper_128", **_INSWAPPER),
        SwapperSpec("inswapper_128_fp16", **_INSWAPPER),
        *(SwapperSpec(f"hyperswap_{v}_256", **_HYPERSWAP) for v in ("1a", "1b", "1c")),
        SwapperSpec("simswap_256", "simswap", "arcface_112_v1", 256, IMAGENET_MEAN, IMAGENET_STD, False, _SIMSWAP_EMBEDDERS),
        SwapperSpec("simswap_unofficial_512", "simswap", "arcface_112_v1", 512, (0.0,) * 3, (1.0,) * 3, False,
                    _SIMSWAP_EMBEDDERS),
        *(SwapperSpec(f"ghost_{n}_256", **_GHOST) for n in (1, 2, 3)),
    )
}


def swapper_spec(name: str) -> SwapperSpec:
    spec = SWAPPERS.get(name.removesuffix(".onnx"))
    if spec is None:
        raise ValueError(f"Unknown face swapper {name!r}; choose classical or one of: {', '.join(SWAPPERS)}")
    return spec


# ------------------------------------------------------------------------------------------------
# Recognition
# ------------------------------------------------------------------------------------------------


def _ports():
    from engine.swap.onnx_runtime import Port

    return Port


def _present(name: str) -> bool:
    from engine.models import get_entry, is_present

    return is_present(get_entry(name))


class SourceEmbedder:
    """Turns a face (image + 5 points) into a swapper's source vector (1-D float32)."""

    def __init__(self, spec: Embedder, emap: np.ndarray | None = None, providers: Sequence[str] | None = None):
        from engine.swap.onnx_runtime import model_session

        Port = _ports()
        self.spec = spec
        self.recogniser = model_session(
            spec.recogniser, [Port("", (None, 3, RECOGNISER_SIZE, RECOGNISER_SIZE))], [Port("", (None, EMBEDDING))],
            providers=providers,
        )
        self.converter = None
        if spec.converter:
            self.converter = model_session(
                spec.converter, [Port("input", (None, EMBEDDING))], [Port("", (None, EMBEDDING))], providers=providers,
            )
        self.emap = emap

    def prepare_recognition(self, rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        crop, _ = align.warp_face(rgb, points, RECOGNISER_TEMPLATE, RECOGNISER_SIZE)
        return (crop.astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)[None]

    def forward_recognition(self, tensor: np.ndarray) -> np.ndarray:
        name = self.recogniser.get_inputs()[0].name
        return np.asarray(self.recogniser.run(None, {name: tensor})[0], np.float32).reshape(-1)

    def embed(self, rgb: np.ndarray, points: np.ndarray) -> np.ndarray:
        """The raw recogniser embedding of the face (512,)."""
        return self.forward_recognition(self.prepare_recognition(rgb, points))

    def source_vector(self, embedding: np.ndarray) -> np.ndarray:
        """The model's source input from a raw recogniser embedding."""
        e = np.asarray(embedding, np.float64).reshape(1, -1)
        norm = float(np.linalg.norm(e))
        if not np.isfinite(norm) or norm < 1e-12:
            raise ModelCorrupt(f"The recogniser {self.spec.recogniser} returned an empty embedding for this face.")
        if self.spec.emap:
            return ((e / norm) @ self.emap).astype(np.float32).reshape(-1)
        if self.converter is not None:
            e = np.asarray(self.converter.run(None, {"input": e.astype(np.float32)})[0], np.float64).reshape(1, -1)
            norm = float(np.linalg.norm(e))
        if self.spec.normalise:
            e = e / max(norm, 1e-12)
        return e.astype(np.float32).reshape(-1)


def read_emap(path) -> np.ndarray:
    """The inswapper ``emap`` (512 x 512): the graph's last initializer (FaceFusion
    ``get_static_model_initializer``; InsightFace ``INSwapper.__init__``)."""
    import onnx
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as error:  # noqa: BLE001
        raise ModelCorrupt(f"The model file {path.name} could not be read: {error}") from error
    if not model.graph.initializer:
        raise ModelCorrupt(f"The model file {path.name} has no initializers, so no emap matrix: not an inswapper model.")
    emap = numpy_helper.to_array(model.graph.initializer[-1]).astype(np.float64)
    if emap.shape != (EMBEDDING, EMBEDDING):
        raise ModelCorrupt(
            f"The model file {path.name} does not end with the 512x512 emap matrix inswapper models carry "
            f"(its last initializer is {emap.shape}): not an inswapper model."
        )
    return emap


# ------------------------------------------------------------------------------------------------
# The swapper
# ------------------------------------------------------------------------------------------------


@dataclass
class NeuralSource:
    """A persona prepared for one swapper: the model's source vector."""

    model: str
    vector: np.ndarray  # (512,) float32
    embedding: np.ndarray = field(repr=False)  # raw recogniser embedding


@dataclass
class _Job:
    frame: np.ndarray
    points: np.ndarray
    source: NeuralSource
    crop: np.ndarray | None = None
    affine: np.ndarray | None = None
    out: np.ndarray | None = None


class NeuralSwapper:
    """An ONNX face swapper (see :data:`SWAPPERS`). ``enhancer``: an
    :class:`engine.swap.enhance.FaceEnhancer`-like object with ``enhance(frame, points5) -> box``
    (optional); ``masks``: occlusion / region maskers of :mod:`engine.swap.masks` (each called
    on the aligned target crop, returning a crop-size float mask), combined with the box mask.

    Sessions are cached per (model file, providers) by :mod:`engine.swap.onnx_runtime`; every
    model file is reached through :func:`engine.models.model_path` (licence gate included)."""

    def __init__(self, model_name: str, enhancer: Any = None, masks: Sequence[Any] = (), *,
                 providers: Sequence[str] | None = None, box_blur: float = BOX_BLUR):
        from engine.models import model_path
        from engine.swap.onnx_runtime import batch_axis_dynamic, input_dtype, model_session, preferred_providers

        Port = _ports()
        self.spec = swapper_spec(model_name)
        self.name = self.spec.name
        self.enhancer = enhancer
        self.masks = tuple(masks)
        self.providers = tuple(providers) if providers else preferred_providers()
        size = self.spec.size
        self.session = model_session(
            self.spec.file,
            [Port("target", (None, 3, size, size)), Port("source", (None, EMBEDDING))],
            [Port("", (None, 3, size, size))],
            providers=self.providers,
        )
        self.dynamic_batch = batch_axis_dynamic(self.session, "target") and batch_axis_dynamic(self.session, "source")
        self.dtype = input_dtype(self.session, "target")
        self.source_dtype = input_dtype(self.session, "source")
        emap = read_emap(model_path(self.spec.file)) if self.spec.embedders[0].emap else None
        self.embedder = SourceEmbedder(self._embedder_spec(), emap, self.providers)
        self.box_mask = align.box_mask(size, box_blur)
        self._mean = np.asarray(self.spec.mean, np.float32)
        self._std = np.asarray(self.spec.std, np.float32)
        self._lock = threading.Lock()

    def _embedder_spec(self) -> Embedder:
        options = self.spec.embedders
        for option in options:
            if all(_present(f) for f in option.files):
                return option
        wanted = " or ".join(" + ".join(o.files) for o in options)
        raise ModelMissing(
            f"The face swapper {self.name} needs {wanted} in the models folder to embed the persona. "
            "Fetch them with: python -m engine models fetch --group swap"
        )

    # -- sources ---------------------------------------------------------------------------------

    def prepare_source(self, rgb: np.ndarray, landmarks: np.ndarray) -> NeuralSource:
        """The persona's source vector for this model (computed once per persona)."""
        embedding = self.embedder.embed(np.ascontiguousarray(rgb), align.five_points(landmarks))
        return NeuralSource(model=self.name, vector=self.embedder.source_vector(embedding), embedding=embedding)

    def source_for(self, persona) -> NeuralSource:
        """``prepare_source`` of a :class:`engine.swap.pipeline.Persona`, cached on it."""
        cache = persona.sources
        with self._lock:
            source = cache.get(self.name)
        if source is None:
            source = self.prepare_source(persona.image, persona.face.landmarks)
            with self._lock:
                cache[self.name] = source
        return source

    # -- the model -------------------------------------------------------------------------------

    def prepare_swap(self, crops: np.ndarray) -> np.ndarray:
        """(N, S, S, 3) RGB uint8 crops -> (N, 3, S, S) model input."""
        x = crops.astype(np.float32) / 255.0
        x = (x - self._mean) / self._std
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2)).astype(self.dtype)

    def forward_swap(self, target: np.ndarray, source: np.ndarray) -> np.ndarray:
        """The only place the swap model runs: one batch (the caller checked it may)."""
        feeds = {"target": target, "source": np.ascontiguousarray(source).astype(self.source_dtype)}
        return np.asarray(self.session.run(None, feeds)[0], np.float32)

    def normalize_swap(self, output: np.ndarray) -> np.ndarray:
        """(N, 3, S, S) model output -> (N, S, S, 3) RGB uint8."""
        x = output.transpose(0, 2, 3, 1)
        if self.spec.denormalise:
            x = x * self._std + self._mean
        return np.clip(np.rint(np.clip(x, 0.0, 1.0) * 255.0), 0, 255).astype(np.uint8)

    def swap_batch(self, crops: np.ndarray, sources: np.ndarray) -> np.ndarray:
        """Swap N aligned crops (N, S, S, 3 uint8) with N source vectors (N, 512): one run when
        the model has a dynamic batch axis, else one run per face. Returns N swapped crops."""
        crops = np.asarray(crops)
        sources = np.asarray(sources, np.float32).reshape(len(crops), -1)
        size = self.spec.size
        if crops.ndim != 4 or crops.shape[1:] != (size, size, 3):
            raise ValueError(f"{self.name} takes aligned {size}x{size} RGB crops, got {crops.shape}")
        if not len(crops):
            return crops.astype(np.uint8)
        target = self.prepare_swap(crops)
        if self.dynamic_batch or len(crops) == 1:
            return self.normalize_swap(self.forward_swap(target, sources))
        return np.concatenate([
            self.normalize_swap(self.forward_swap(target[i:i + 1], sources[i:i + 1])) for i in range(len(crops))
        ])

    # -- faces in frames -------------------------------------------------------------------------

    def _mask(self, crop: np.ndarray, use_masks: bool) -> tuple[np.ndarray, float]:
        mask = self.box_mask
        occluded = 0.0
        if use_masks:
            for masker in self.masks:
                extra = np.asarray(masker.mask(crop), np.float32)
                if extra.shape != mask.shape:
                    import cv2

                    extra = cv2.resize(extra, mask.shape[::-1], interpolation=cv2.INTER_LINEAR)
                if type(masker).__name__ == "OcclusionMasker":  # region masks exclude, they do not occlude
                    inside = self.box_mask > 0.5
                    occluded = max(occluded, float(1.0 - extra[inside].mean()) if inside.any() else 0.0)
                mask = np.minimum(mask, np.clip(extra, 0.0, 1.0))
        return mask, occluded

    def swap_faces(self, jobs: Sequence[tuple[np.ndarray, np.ndarray, NeuralSource]], *, passes: int = 1,
                   masks: bool = True, enhance: bool | None = None) -> list[SwapResult]:
        """Swap several faces, in one model run where the model allows: ``jobs`` are
        (frame, landmarks (468, 2|3), source); frames are modified in place (faces of the same
        frame are pasted in order). ``passes`` > 1 runs the model again on its own output (a
        stronger identity transfer, used by the protection escalation); ``masks=False`` ignores
        the occlusion / region masks; ``enhance`` (default: when an enhancer is configured)
        restores the pasted face."""
        if passes < 1:
            raise ValueError("passes must be at least 1")
        items = []
        for frame, landmarks, source in jobs:
            if source.model != self.name:
                raise ValueError(f"The source was prepared for {source.model}, not {self.name}")
            if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
                raise ValueError(f"Frames must be H x W x 3 uint8 RGB, got {frame.dtype} {frame.shape}")
            points = align.five_points(landmarks)
            crop, affine = align.warp_face(frame, points, self.spec.template, self.spec.size)
            items.append(_Job(frame, points, source, crop, affine))
        if not items:
            return []
        crops = np.stack([j.crop for j in items])
        vectors = np.stack([j.source.vector for j in items])
        swapped = crops
        for _ in range(passes):
            swapped = self.swap_batch(swapped, vectors)
        results = []
        use_enhancer = self.enhancer is not None if enhance is None else (enhance and self.enhancer is not None)
        for job, out in zip(items, swapped):
            mask, occluded = self._mask(job.crop, masks)
            x0, y0, x1, y1 = align.paste_back(job.frame, out, job.affine, mask)
            if use_enhancer:
                ex0, ey0, ex1, ey1 = self.enhancer.enhance(job.frame, job.points)
                if ex1 > ex0 and ey1 > ey0:
                    x0, y0, x1, y1 = min(x0, ex0), min(y0, ey0), max(x1, ex1), max(y1, ey1)
            coverage = float(mask.sum() / max(self.box_mask.sum(), 1e-6))
            results.append(SwapResult(box=(int(x0), int(y0), int(x1), int(y1)), coverage=coverage, occluded=occluded))
        return results

    def swap_face(self, frame: np.ndarray, landmarks: np.ndarray, source: NeuralSource, *, passes: int = 1,
                  masks: bool = True, enhance: bool | None = None) -> SwapResult:
        """Swap one face in ``frame`` (in place); see :meth:`swap_faces`."""
        return self.swap_faces([(frame, landmarks, source)], passes=passes, masks=masks, enhance=enhance)[0]


# ------------------------------------------------------------------------------------------------
# One swapper per configuration per process
# ------------------------------------------------------------------------------------------------

_swappers: dict[tuple, NeuralSwapper] = {}
_swappers_lock = threading.Lock()


def get_swapper(name: str, *, enhancer: str | None = None, masks: Sequence[str] | None = None) -> NeuralSwapper:
    """The process-wide :class:`NeuralSwapper` for ``name``, built once per configuration.

    ``enhancer``: a face enhancer name of :mod:`engine.swap.enhance`, ``""`` for none, or None for
    the worker's configuration (``SAFEFACE_FACE_ENHANCER``, read by ``FaceEnhancer.from_env``).
    ``masks``: mask model names of :mod:`engine.swap.masks` (``("xseg_1", "bisenet_resnet_34")``),
    ``()`` for the box mask only, or None for ``SAFEFACE_FACE_MASKS`` (``FaceMasks.from_env``)."""
    key = (swapper_spec(name).name, enhancer, None if masks is None else tuple(masks))
    with _swappers_lock:
        swapper = _swappers.get(key)
        if swapper is None:
            from engine.swap import enhance as enhance_module
            from engine.swap import masks as masks_module

            if masks is None:
                face_masks = masks_module.FaceMasks.from_env()
            else:
                face_masks = masks_module.FaceMasks.from_names(",".join(masks)) if masks else ()
            if enhancer is None:
                enhancer_obj = enhance_module.FaceEnhancer.from_env()
            else:
                enhancer_obj = enhance_module.FaceEnhancer(enhancer) if enhancer else None
            swapper = _swappers[key] = NeuralSwapper(key[0], enhancer_obj, tuple(face_masks))
        return swapper


def clear_swappers() -> None:
    with _swappers_lock:
        _swappers.clear()
