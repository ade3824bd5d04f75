"""Occlusion and face-region masks of an aligned face crop (FaceFusion-compatible ONNX models).

A swapped or enhanced face is pasted back through a mask of the crop. The box mask
(:func:`engine.swap.align.box_mask`) only fades the crop's edges; these models refine it:

* :class:`OcclusionMasker` (``xseg_1`` / ``xseg_2`` / ``xseg_3``, DeepFaceLab's XSeg as shipped by
  FaceFusion): per pixel, "this is visible face". Hands, hair, glasses frames, a microphone in
  front of the face come out 0, so the original pixels stay on top of the new face.
* :class:`RegionMasker` (``bisenet_resnet_18`` / ``bisenet_resnet_34``, BiSeNet face parsing trained
  on CelebAMask-HQ): 1 on the chosen face regions (skin, brows, eyes, nose, mouth, lips...).
* :func:`combine_masks` multiplies nothing and guesses nothing: it is the per-pixel minimum of the
  box mask and whichever model masks are given (FaceFusion's rule), clipped to 0..1.

Both maskers take an RGB uint8 crop of any size (square or not), resize it to the model's input,
and return a float32 0..1 mask the size of the crop, ready for :func:`engine.swap.align.paste_back`.
Their ``masks`` method runs several crops in one call (one batch when the model's batch axis is
dynamic).

How the swapper uses this (configuration from the environment)::

    from engine.swap import align, masks
    face_masks = masks.FaceMasks.from_env()          # SAFEFACE_FACE_MASKS, ..._REGIONS; may be empty
    # either hand it to the swapper: NeuralSwapper(name, enhancer, masks=face_masks) (it iterates
    # the configured maskers and calls .mask(crop)), or combine by hand:
    crop, affine = align.warp_face(frame, points5, "arcface_128", 128)
    swapped = ...                                     # the swap model's output crop (RGB uint8)
    mask = face_masks.crop_mask(crop, align.box_mask(128, blur=0.3))   # masks of the TARGET crop
    align.paste_back(frame, swapped, affine, mask)

``SAFEFACE_FACE_MASKS`` is a comma list of model names (``xseg_1,bisenet_resnet_34``; empty: box
mask only); ``SAFEFACE_FACE_MASK_REGIONS`` the regions the parser keeps (default: FaceFusion's ten).
Model files are found through :func:`engine.models.model_path` (licence gate, size and hash), under
their FaceFusion file names, so a FaceFusion ``.assets/models`` folder can serve as
``SAFEFACE_MODELS_DIR``.

Model facts (all from FaceFusion's public source, ``facefusion/face_masker.py`` at commit
4d34a92f6fc36130c653b63f377a288e50b7c976, and ``facefusion/choices.py``):

* XSeg: input ``input``, NHWC float32 ``(1, 256, 256, 3)``, 0..1, channel order as FaceFusion's
  frames, i.e. BGR (it feeds its cv2 BGR crop unchanged, ``/ 255``); first output ``[0]`` is
  256 x 256 (x 1) visibility in 0..1. Post-processing: clip, resize to the crop, Gaussian blur
  sigma 5 px, then ``(clip(0.5, 1) - 0.5) * 2``.
* BiSeNet: input ``input``, NCHW float32 ``(1, 3, 512, 512)``, RGB, ``(x / 255 - mean) / std`` with
  ImageNet mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225); first output ``[0]`` is
  ``(19, 512, 512)`` class scores in CelebAMask-HQ label order; the mask is ``argmax`` in the chosen
  labels, resized and smoothed like XSeg's. Region labels: skin 1, left-eyebrow 2, right-eyebrow 3,
  left-eye 4, right-eye 5, glasses 6, nose 10, mouth 11, upper-lip 12, lower-lip 13.
* Output tensor names are not given in any source found (FaceFusion runs ``session.run(None,
  ...)`` and takes the first output); this module also takes the first output, whatever its name.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from engine.errors import ModelCorrupt
from engine.swap import onnx_runtime

# --------------------------------------------------------------------------------------------
# Model descriptions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MaskModel:
    name: str  # FaceFusion model name
    file: str  # FaceFusion file name (the manifest entry)
    size: int  # square input side in pixels
    kind: str  # "occluder" or "parser"


OCCLUDERS: dict[str, MaskModel] = {
    # FaceFusion face_masker.py create_static_model_set: xseg_1/xseg_2 (models-3.1.0),
    # xseg_3 (models-3.2.0), all 'size': (256, 256).
    name: MaskModel(name, f"{name}.onnx", 256, "occluder") for name in ("xseg_1", "xseg_2", "xseg_3")
}
PARSERS: dict[str, MaskModel] = {
    # bisenet_resnet_18 (models-3.1.0), bisenet_resnet_34 (models-3.0.0), 'size': (512, 512).
    name: MaskModel(name, f"{name}.onnx", 512, "parser") for name in ("bisenet_resnet_18", "bisenet_resnet_34")
}
MASK_MODELS: dict[str, MaskModel] = {**OCCLUDERS, **PARSERS}

# CelebAMask-HQ's 19 parsing labels in BiSeNet's output channel order (face-parsing.PyTorch;
# FaceFusion's older face_masker.py FACE_PARSER_REGION_MAP lists the same order 0..18).
CELEBAMASK_LABELS = (
    "background", "skin", "left-eyebrow", "right-eyebrow", "left-eye", "right-eye", "glasses",
    "left-ear", "right-ear", "earring", "nose", "mouth", "upper-lip", "lower-lip", "neck",
    "necklace", "cloth", "hair", "hat",
)
# The regions FaceFusion offers for its region mask (facefusion/choices.py face_mask_region_set).
REGIONS: dict[str, int] = {
    "skin": 1,
    "left-eyebrow": 2,
    "right-eyebrow": 3,
    "left-eye": 4,
    "right-eye": 5,
    "glasses": 6,
    "nose": 10,
    "mouth": 11,
    "upper-lip": 12,
    "lower-lip": 13,
}
# Shorthands for pairs.
REGION_GROUPS: dict[str, tuple[str, ...]] = {
    "eyebrows": ("left-eyebrow", "right-eyebrow"),
    "brows": ("left-eyebrow", "right-eyebrow"),
    "eyes": ("left-eye", "right-eye"),
    "lips": ("upper-lip", "lower-lip"),
}
DEFAULT_REGIONS: tuple[str, ...] = tuple(REGIONS)

IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)
SMOOTH_SIGMA = 5.0  # FaceFusion's Gaussian blur of the occlusion / region mask, in crop pixels
MAX_BATCH = 16  # crops per inference call at most (bounds memory on long batches)

ENV_MASKS = "SAFEFACE_FACE_MASKS"
ENV_REGIONS = "SAFEFACE_FACE_MASK_REGIONS"


def resolve_regions(regions: Sequence[str] | str) -> tuple[int, ...]:
    """Region names (FaceFusion's, plus ``eyes`` / ``brows`` / ``eyebrows`` / ``lips``) -> sorted
    CelebAMask-HQ label numbers. Raises ``ValueError`` naming the unknown ones."""
    if isinstance(regions, str):
        regions = [r for r in regions.replace(" ", "").split(",") if r]
    labels: set[int] = set()
    unknown: list[str] = []
    for region in regions:
        key = str(region).strip().lower().replace("_", "-")
        if key in REGIONS:
            labels.add(REGIONS[key])
        elif key in REGION_GROUPS:
            labels.update(REGIONS[r] for r in REGION_GROUPS[key])
        else:
            unknown.append(str(region))
    if unknown:
        raise ValueError(
            f"Unknown face region(s) {', '.join(unknown)}; known: "
            f"{', '.join([*REGIONS, *REGION_GROUPS])}"
        )
    if not labels:
        raise ValueError("A region mask needs at least one face region")
    return tuple(sorted(labels))


# --------------------------------------------------------------------------------------------
# ONNX sessions: the swap backends' shared cache (engine.swap.onnx_runtime: TensorRT -> CUDA ->
# CPU, one session per model path and provider list)
# --------------------------------------------------------------------------------------------


def onnx_session(path: Path, providers: Sequence[str] | None = None):
    """The cached onnxruntime session of the model file at ``path`` (:class:`ModelCorrupt` when
    onnxruntime cannot load it)."""
    return onnx_runtime.load_session(path, providers)


def clear_sessions() -> None:
    """Forget the cached sessions (tests; freeing GPU memory)."""
    onnx_runtime.clear_sessions()


def _dim(value) -> int | None:
    """A fixed dimension, or None for a symbolic / unknown one."""
    return value if isinstance(value, int) and value > 0 else None


def check_input(session, file: str, name: str, shape: Sequence[int | None]) -> object:
    """The session input ``name``; raises :class:`ModelCorrupt` when it is absent or its fixed
    dimensions differ from ``shape`` (None: any)."""
    inputs = {i.name: i for i in session.get_inputs()}
    if name not in inputs:
        raise ModelCorrupt(
            f"{file} has the wrong signature: no input named {name!r} "
            f"(inputs: {', '.join(inputs) or 'none'}). Is it the right model file?"
        )
    declared = list(inputs[name].shape)
    if len(declared) != len(shape) or any(
        want is not None and _dim(got) is not None and got != want for got, want in zip(declared, shape)
    ):
        raise ModelCorrupt(
            f"{file} has the wrong signature: input {name!r} is {declared}, expected "
            f"{['N' if s is None else s for s in shape]}. Is it the right model file?"
        )
    if "float" not in inputs[name].type and "double" not in inputs[name].type:
        raise ModelCorrupt(
            f"{file} has the wrong signature: input {name!r} is {inputs[name].type}, expected a float tensor"
        )
    return inputs[name]


def dynamic_batch(session, name: str = "input") -> bool:
    """Whether the first axis of input ``name`` accepts any batch size."""
    for item in session.get_inputs():
        if item.name == name:
            return _dim(item.shape[0]) is None
    return False


def _resize(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area averaging when shrinking (no aliasing), bilinear when enlarging."""
    if image.shape[1] == width and image.shape[0] == height:
        return image
    shrinking = width < image.shape[1] or height < image.shape[0]
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)


def _check_crop(crop: np.ndarray) -> np.ndarray:
    crop = np.asarray(crop)
    if crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[0] < 2 or crop.shape[1] < 2:
        raise ValueError(f"A face crop must be an H x W x 3 RGB image, got shape {crop.shape}")
    if crop.dtype != np.uint8:
        raise ValueError(f"A face crop must be uint8 RGB, got {crop.dtype}")
    return crop


def smooth(mask: np.ndarray, sigma: float = SMOOTH_SIGMA) -> np.ndarray:
    """FaceFusion's mask smoothing: blur, then keep only what stays above one half, stretched
    back to 0..1 (a hard-edged blob gets a soft edge that lies just inside the original one)."""
    mask = np.clip(mask.astype(np.float32), 0.0, 1.0)
    if sigma > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigma)
        mask = (np.clip(mask, 0.5, 1.0) - 0.5) * 2.0
    return mask.astype(np.float32)


class _MaskerBase:
    model: MaskModel

    def __init__(self, model: str, table: Mapping[str, MaskModel], *, providers=None, manifest=None,
                 smooth_sigma: float = SMOOTH_SIGMA):
        from engine.models import model_path

        if model not in table:
            raise ValueError(f"Unknown {next(iter(table.values())).kind} model {model!r}; known: {', '.join(table)}")
        if smooth_sigma < 0:
            raise ValueError(f"smooth_sigma must be >= 0, got {smooth_sigma}")
        self.model = table[model]
        self.smooth_sigma = float(smooth_sigma)
        self.path = model_path(self.model.file, manifest=manifest)  # licence gate, size, sha256
        self.session = onnx_session(self.path, providers)
        self._check_signature()
        self.batched = dynamic_batch(self.session)
        self.input_dtype = onnx_runtime.input_dtype(self.session, "input")  # float16 files too

    def _check_signature(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _output_rank(self, ranks: tuple[int, ...]) -> None:
        outputs = self.session.get_outputs()
        if not outputs or len(outputs[0].shape) not in ranks:
            got = [list(o.shape) for o in outputs]
            raise ModelCorrupt(
                f"{self.model.file} has the wrong signature: first output is {got[:1] or 'missing'}, "
                f"expected rank {' or '.join(map(str, ranks))}. Is it the right model file?"
            )

    # prepare_* -> forward -> normalize_*
    def prepare(self, crop: np.ndarray) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The only place the network runs: (N, ...) float32 -> first output (N, ...)."""
        if self.batched or len(batch) == 1:
            return np.asarray(self.session.run(None, {"input": batch})[0])
        return np.concatenate([np.asarray(self.session.run(None, {"input": b[None]})[0]) for b in batch])

    def normalize(self, output: np.ndarray, crop_shape) -> np.ndarray:  # pragma: no cover
        raise NotImplementedError

    def mask(self, crop: np.ndarray) -> np.ndarray:
        """Mask of one crop: float32 H x W in 0..1, H x W the crop's."""
        return self.masks([crop])[0]

    def masks(self, crops: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Masks of several crops (any sizes), in as few inference calls as the model allows."""
        crops = [_check_crop(c) for c in crops]
        results: list[np.ndarray] = []
        for start in range(0, len(crops), MAX_BATCH):
            chunk = crops[start:start + MAX_BATCH]
            batch = np.stack([self.prepare(c) for c in chunk]).astype(self.input_dtype, copy=False)
            output = self.forward(batch)
            if output.shape[0] != len(chunk):
                raise ModelCorrupt(
                    f"{self.model.file} returned {output.shape[0]} results for {len(chunk)} crops"
                )
            results.extend(self.normalize(o, c.shape) for o, c in zip(output, chunk))
        return results


class OcclusionMasker(_MaskerBase):
    """XSeg occlusion mask: 1 where the face is visible, 0 where something covers it.

    ``OcclusionMasker("xseg_1").mask(crop)`` -> float32 H x W (crop's size) in 0..1.
    """

    def __init__(self, model: str = "xseg_1", *, providers=None, manifest=None, smooth_sigma: float = SMOOTH_SIGMA):
        super().__init__(model, OCCLUDERS, providers=providers, manifest=manifest, smooth_sigma=smooth_sigma)

    def _check_signature(self) -> None:
        size = self.model.size
        check_input(self.session, self.model.file, "input", (None, size, size, 3))
        self._output_rank((3, 4))

    def prepare(self, crop: np.ndarray) -> np.ndarray:
        """RGB crop -> (256, 256, 3) BGR float32 in 0..1 (XSeg's NHWC input, one item)."""
        size = self.model.size
        return _resize(crop, size, size)[:, :, ::-1].astype(np.float32) / 255.0

    def normalize(self, output: np.ndarray, crop_shape) -> np.ndarray:
        visible = np.asarray(output, dtype=np.float32)
        if visible.ndim == 3:
            visible = visible[..., 0] if visible.shape[-1] == 1 else visible[0]
        visible = np.clip(visible, 0.0, 1.0)
        visible = cv2.resize(visible, (crop_shape[1], crop_shape[0]), interpolation=cv2.INTER_LINEAR)
        return smooth(visible, self.smooth_sigma)


class RegionMasker(_MaskerBase):
    """BiSeNet face-parsing mask: 1 on the chosen face regions of the crop.

    ``RegionMasker("bisenet_resnet_34", regions=("skin", "nose", "lips")).mask(crop)``.
    """

    def __init__(self, model: str = "bisenet_resnet_34", regions: Sequence[str] | str = DEFAULT_REGIONS, *,
                 providers=None, manifest=None, smooth_sigma: float = SMOOTH_SIGMA):
        self.labels = resolve_regions(regions)  # validate before touching the model file
        super().__init__(model, PARSERS, providers=providers, manifest=manifest, smooth_sigma=smooth_sigma)

    def _check_signature(self) -> None:
        size = self.model.size
        check_input(self.session, self.model.file, "input", (None, 3, size, size))
        self._output_rank((4,))
        classes = _dim(self.session.get_outputs()[0].shape[1])
        if classes is not None and classes != len(CELEBAMASK_LABELS):
            raise ModelCorrupt(
                f"{self.model.file} has the wrong signature: {classes} classes, expected "
                f"{len(CELEBAMASK_LABELS)} (CelebAMask-HQ). Is it the right model file?"
            )

    def prepare(self, crop: np.ndarray) -> np.ndarray:
        """RGB crop -> (3, 512, 512) ImageNet-normalised float32 (BiSeNet's NCHW input, one item)."""
        size = self.model.size
        image = _resize(crop, size, size).astype(np.float32) / 255.0
        image = (image - IMAGENET_MEAN) / IMAGENET_STD
        return image.transpose(2, 0, 1)

    def normalize(self, output: np.ndarray, crop_shape) -> np.ndarray:
        scores = np.asarray(output)
        if scores.ndim != 3 or scores.shape[0] != len(CELEBAMASK_LABELS):
            raise ModelCorrupt(
                f"{self.model.file} returned scores of shape {scores.shape}, expected "
                f"({len(CELEBAMASK_LABELS)}, H, W)"
            )
        chosen = np.isin(scores.argmax(axis=0), self.labels).astype(np.float32)
        chosen = cv2.resize(chosen, (crop_shape[1], crop_shape[0]), interpolation=cv2.INTER_LINEAR)
        return smooth(chosen, self.smooth_sigma)


def combine_masks(box_mask: np.ndarray, occlusion: np.ndarray | None = None,
                  region: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel minimum of the box mask and the given model masks (all the same H x W), as
    float32 clipped to 0..1: a pixel is pasted only as much as every mask allows."""
    box = np.asarray(box_mask, dtype=np.float32)
    if box.ndim != 2:
        raise ValueError(f"box_mask must be a 2-D mask, got shape {box.shape}")
    combined = box
    for label, extra in (("occlusion", occlusion), ("region", region)):
        if extra is None:
            continue
        extra = np.asarray(extra, dtype=np.float32)
        if extra.shape != box.shape:
            raise ValueError(f"The {label} mask is {extra.shape}, the box mask {box.shape}: they must match")
        combined = np.minimum(combined, extra)
    return np.clip(combined, 0.0, 1.0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------------


def parse_mask_names(value: str) -> tuple[str | None, str | None]:
    """``"xseg_1,bisenet_resnet_34"`` -> (occluder name or None, parser name or None). Empty ->
    (None, None). ``ValueError`` for unknown names or two models of one kind."""
    names = [n.strip() for n in (value or "").split(",") if n.strip()]
    occluder = parser = None
    for name in names:
        if name in OCCLUDERS:
            if occluder and occluder != name:
                raise ValueError(f"{ENV_MASKS} names two occlusion models ({occluder}, {name}); choose one")
            occluder = name
        elif name in PARSERS:
            if parser and parser != name:
                raise ValueError(f"{ENV_MASKS} names two face parsers ({parser}, {name}); choose one")
            parser = name
        else:
            raise ValueError(f"{ENV_MASKS}: unknown mask model {name!r}; known: {', '.join(MASK_MODELS)}")
    return occluder, parser


class FaceMasks:
    """The configured model masks (none, an occluder, a parser, or both) applied to aligned crops."""

    def __init__(self, occluder: OcclusionMasker | None = None, parser: RegionMasker | None = None):
        self.occluder = occluder
        self.parser = parser

    @classmethod
    def from_names(cls, value: str, regions: Sequence[str] | str = DEFAULT_REGIONS, *, providers=None,
                   manifest=None) -> FaceMasks:
        occluder, parser = parse_mask_names(value)
        return cls(
            OcclusionMasker(occluder, providers=providers, manifest=manifest) if occluder else None,
            RegionMasker(parser, regions, providers=providers, manifest=manifest) if parser else None,
        )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, providers=None, manifest=None) -> FaceMasks:
        """From ``SAFEFACE_FACE_MASKS`` and ``SAFEFACE_FACE_MASK_REGIONS`` (see the module doc)."""
        environ = os.environ if environ is None else environ
        regions = environ.get(ENV_REGIONS, "").strip() or DEFAULT_REGIONS
        return cls.from_names(environ.get(ENV_MASKS, ""), regions, providers=providers, manifest=manifest)

    def __bool__(self) -> bool:
        return self.occluder is not None or self.parser is not None

    def __iter__(self):
        """The configured maskers (each has ``mask(crop)``), so ``NeuralSwapper(..., masks=face_masks)``
        takes this set as its sequence of maskers."""
        return iter([m for m in (self.occluder, self.parser) if m is not None])

    def crop_mask(self, crop: np.ndarray, box_mask: np.ndarray) -> np.ndarray:
        """:func:`combine_masks` of ``box_mask`` and this set's masks of ``crop``."""
        return self.crop_masks([crop], [box_mask])[0]

    def crop_masks(self, crops: Sequence[np.ndarray], box_masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Batched :meth:`crop_mask` (one inference call per model for all crops)."""
        if len(crops) != len(box_masks):
            raise ValueError(f"{len(crops)} crops but {len(box_masks)} box masks")
        occlusion = self.occluder.masks(crops) if self.occluder and crops else [None] * len(crops)
        region = self.parser.masks(crops) if self.parser and crops else [None] * len(crops)
        return [combine_masks(b, o, r) for b, o, r in zip(box_masks, occlusion, region)]
