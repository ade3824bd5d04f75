"""Optional face enhancer (restorer) after a swap: GFPGAN, CodeFormer, RestoreFormer++ on ONNX Runtime.

A swap model's output is soft (128-256 px); a face restorer re-draws the face at 512 px. Each face
is aligned to the restorer's template, restored, and pasted back through a soft box mask (times an
occlusion / region mask when :class:`engine.swap.masks.FaceMasks` are given), then blended with the
original by ``blend`` (0: unchanged, 1: fully restored; FaceFusion's default 80 % -> 0.8).

How the swapper uses this::

    from engine.swap import enhance, masks
    enhancer = enhance.FaceEnhancer.from_env(masks=masks.FaceMasks.from_env())  # None when off
    ...after swapping every face of a frame:
    if enhancer:
        enhancer.enhance(frame, points5)                      # in place; returns the changed box
        enhancer.enhance_batch([(frame, p) for p in faces])  # several faces / frames, batched

``points5`` are the five InsightFace-order points of the face in the frame
(:func:`engine.swap.align.five_points` of the MediaPipe mesh). Frames are H x W x 3 uint8 RGB.

Configuration: ``SAFEFACE_FACE_ENHANCER`` (empty: off; else one of :data:`ENHANCERS`) and
``SAFEFACE_FACE_ENHANCER_BLEND`` (0..1, default 0.8). Files are found through
:func:`engine.models.model_path` under FaceFusion's file names (``gfpgan_1.4.onnx``...), with the
licence gate: ``codeformer`` (S-Lab License 1.0, non-commercial) is refused when
``SAFEFACE_COMMERCIAL=1``.

Model facts (FaceFusion's public source ``facefusion/processors/modules/face_enhancer/core.py``,
commit 028066106377bea7d8a197eceaae0d75f598c30e; also hpc203/facefusion-onnxrun
``cpp/faceenhancer.cpp``, which reads the same files):

* template ``ffhq_512``, crop 512 x 512 for gfpgan_1.2 / 1.3 / 1.4, codeformer and
  restoreformer_plus_plus;
* input ``input``: NCHW float32 ``(1, 3, 512, 512)``, RGB, ``(x / 255 - 0.5) / 0.5`` (-1..1);
* CodeFormer only: input ``weight``, a float64 (``numpy.double``) array of shape ``(1,)``, the
  fidelity weight (FaceFusion's ``--face-enhancer-weight``, default 0.5, range 0..1);
* output: the first output, ``[0]`` is ``(3, 512, 512)`` RGB in -1..1 (clipped, ``(y + 1) / 2 * 255``,
  rounded). Output names are not stated in any source found; the first output is used.
* paste back with a box mask (FaceFusion's ``face_mask_blur`` default 0.3, padding 0) and the
  occlusion mask when configured; blend ``frame * (1 - blend) + pasted * blend``.

Whether these files have a dynamic batch axis is not documented; :attr:`FaceEnhancer.batched` is
read from the file (a fixed batch of 1 runs faces one by one).
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from engine.errors import ModelCorrupt
from engine.swap import align, onnx_runtime
from engine.swap.masks import FaceMasks, MAX_BATCH, check_input, dynamic_batch, onnx_session


@dataclass(frozen=True)
class EnhancerModel:
    name: str
    file: str
    template: str
    size: int
    has_weight: bool  # CodeFormer's fidelity input


ENHANCERS: dict[str, EnhancerModel] = {
    "gfpgan_1.2": EnhancerModel("gfpgan_1.2", "gfpgan_1.2.onnx", "ffhq_512", 512, False),
    "gfpgan_1.3": EnhancerModel("gfpgan_1.3", "gfpgan_1.3.onnx", "ffhq_512", 512, False),
    "gfpgan_1.4": EnhancerModel("gfpgan_1.4", "gfpgan_1.4.onnx", "ffhq_512", 512, False),
    "codeformer": EnhancerModel("codeformer", "codeformer.onnx", "ffhq_512", 512, True),
    "restoreformer_plus_plus": EnhancerModel(
        "restoreformer_plus_plus", "restoreformer_plus_plus.onnx", "ffhq_512", 512, False
    ),
}

ENV_ENHANCER = "SAFEFACE_FACE_ENHANCER"
ENV_BLEND = "SAFEFACE_FACE_ENHANCER_BLEND"
DEFAULT_BLEND = 0.8
DEFAULT_WEIGHT = 0.5
DEFAULT_MASK_BLUR = 0.3


def _unit(name: str, value: float) -> float:
    value = float(value)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be within 0..1, got {value}")
    return value


class FaceEnhancer:
    """One face restorer model (see the module doc). Thread-safe for inference (ONNX Runtime
    sessions are); ``enhance`` writes into the frame it is given."""

    def __init__(self, model_name: str = "gfpgan_1.4", blend: float = DEFAULT_BLEND, *,
                 weight: float = DEFAULT_WEIGHT, mask_blur: float = DEFAULT_MASK_BLUR,
                 masks: FaceMasks | None = None, providers: Sequence[str] | None = None, manifest=None):
        from engine.models import model_path

        if model_name not in ENHANCERS:
            raise ValueError(f"Unknown face enhancer {model_name!r}; known: {', '.join(ENHANCERS)}")
        self.model = ENHANCERS[model_name]
        self.blend = _unit("blend", blend)
        self.weight = _unit("weight", weight)
        self.mask_blur = _unit("mask_blur", mask_blur)
        self.masks = masks if masks else None
        self.path = model_path(self.model.file, manifest=manifest)  # licence gate, size, sha256
        self.session = onnx_session(self.path, providers)
        self._check_signature()
        self.batched = dynamic_batch(self.session)
        self.input_dtype = onnx_runtime.input_dtype(self.session, "input")  # float16 files too
        self._box_mask = align.box_mask(self.model.size, self.mask_blur)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, *, masks: FaceMasks | None = None,
                 providers=None, manifest=None) -> FaceEnhancer | None:
        """The enhancer ``SAFEFACE_FACE_ENHANCER`` names (None when empty), with
        ``SAFEFACE_FACE_ENHANCER_BLEND``."""
        environ = os.environ if environ is None else environ
        name = environ.get(ENV_ENHANCER, "").strip()
        if not name or name.lower() in ("0", "off", "none", "false"):
            return None
        if name not in ENHANCERS:
            raise ValueError(f"{ENV_ENHANCER}={name!r} is not a known face enhancer; known: {', '.join(ENHANCERS)}")
        raw = environ.get(ENV_BLEND, "").strip()
        try:
            blend = float(raw) if raw else DEFAULT_BLEND
            blend = _unit(ENV_BLEND, blend)
        except ValueError:
            raise ValueError(f"{ENV_BLEND}={raw!r} must be a number within 0..1") from None
        return cls(name, blend, masks=masks, providers=providers, manifest=manifest)

    # ----------------------------------------------------------------------------------------

    def _check_signature(self) -> None:
        size, file = self.model.size, self.model.file
        check_input(self.session, file, "input", (None, 3, size, size))
        names = {i.name for i in self.session.get_inputs()}
        if self.model.has_weight:
            weight = check_input(self.session, file, "weight", (None,))
            self._weight_dtype = np.float64 if "double" in weight.type else np.float32
        extra = names - {"input", "weight"} if self.model.has_weight else names - {"input"}
        if extra:
            raise ModelCorrupt(
                f"{file} has the wrong signature: unexpected input(s) {', '.join(sorted(extra))} "
                f"(a {self.model.name} model takes {'input and weight' if self.model.has_weight else 'input'} only). "
                "Is it the right model file?"
            )
        outputs = self.session.get_outputs()
        if not outputs or len(outputs[0].shape) != 4:
            raise ModelCorrupt(
                f"{file} has the wrong signature: first output is "
                f"{[list(o.shape) for o in outputs][:1] or 'missing'}, expected (N, 3, {size}, {size})"
            )

    def prepare_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """RGB uint8 crops -> (N, 3, size, size) float32 in -1..1."""
        batch = np.stack(crops).astype(np.float32) / 255.0
        batch = (batch - 0.5) / 0.5
        return np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=self.input_dtype)

    def forward(self, batch: np.ndarray) -> np.ndarray:
        """The only place the network runs: (N, 3, size, size) -> (N, 3, size, size)."""
        def run(items: np.ndarray) -> np.ndarray:
            feed = {"input": items}
            if self.model.has_weight:
                feed["weight"] = np.array([self.weight], dtype=self._weight_dtype)
            return np.asarray(self.session.run(None, feed)[0])

        if self.batched or len(batch) == 1:
            out = run(batch)
        else:
            out = np.concatenate([run(b[None]) for b in batch])
        size = self.model.size
        if out.shape != (len(batch), 3, size, size):
            raise ModelCorrupt(
                f"{self.model.file} returned {out.shape}, expected {(len(batch), 3, size, size)}"
            )
        return out

    def normalize_crops(self, output: np.ndarray) -> np.ndarray:
        """(N, 3, size, size) in -1..1 -> (N, size, size, 3) uint8 RGB."""
        images = (np.clip(output.astype(np.float32), -1.0, 1.0) + 1.0) / 2.0
        return np.rint(images.transpose(0, 2, 3, 1) * 255.0).astype(np.uint8)

    # ----------------------------------------------------------------------------------------

    def enhance(self, frame: np.ndarray, points5: np.ndarray) -> tuple[int, int, int, int]:
        """Restore the face at ``points5`` in ``frame`` (in place); returns the changed box
        (x0, y0, x1, y1) in frame pixels."""
        return self.enhance_batch([(frame, points5)])[0]

    def enhance_batch(self, faces: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[tuple[int, int, int, int]]:
        """Restore several faces, ``[(frame, points5), ...]`` (the frames may be one frame or
        several video frames), with as few inference calls as the model allows.

        Every crop is cut before anything is pasted, so the result equals calling
        :meth:`enhance` face by face whenever the faces' boxes do not overlap."""
        for frame, _points in faces:
            if not (isinstance(frame, np.ndarray) and frame.ndim == 3 and frame.shape[2] == 3
                    and frame.dtype == np.uint8):
                raise ValueError(f"enhance needs H x W x 3 uint8 RGB frames, got {getattr(frame, 'shape', None)}")
        size, template = self.model.size, self.model.template
        warped = [align.warp_face(frame, points, template, size) for frame, points in faces]
        boxes: list[tuple[int, int, int, int]] = []
        for start in range(0, len(faces), MAX_BATCH):
            chunk = warped[start:start + MAX_BATCH]
            crops = [crop for crop, _ in chunk]
            restored = self.normalize_crops(self.forward(self.prepare_crops(crops)))
            if self.masks:
                masks = self.masks.crop_masks(crops, [self._box_mask] * len(crops))
            else:
                masks = [self._box_mask] * len(crops)
            for (frame, _), (_, affine), face, mask in zip(faces[start:start + MAX_BATCH], chunk, restored, masks):
                boxes.append(align.paste_back(frame, face, affine, mask * self.blend))
        return boxes
