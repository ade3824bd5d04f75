"""Diffusion avatars: Mobius / SDXL / SD1.5 pipelines loaded from the models folder.

The production avatar generator (``SAFEFACE_GENERATOR=diffusers``). Everything comes from
``$SAFEFACE_MODELS_DIR`` (:func:`engine.models.models_dir`); nothing is fetched from a model hub.

Which model: ``$SAFEFACE_DIFFUSERS_MODEL`` (default ``mobius``) names, inside the models folder,

* a diffusers folder (``<name>/model_index.json`` with its ``unet/``, ``vae/``, ``text_encoder*/``,
  ``tokenizer*/`` and ``scheduler/`` sub-folders, as ``save_pretrained`` writes it), or
* a single-file checkpoint ``<name>.safetensors`` (or ``<name>`` itself ending in ``.safetensors``).
  A single file holds weights only, so it needs the diffusers configs beside it, offline:
  the folder ``<stem>.config/`` laid out like a diffusers folder without weights
  (``model_index.json``, ``scheduler/scheduler_config.json``, ``unet/config.json``,
  ``vae/config.json``, ``text_encoder*/config.json`` and the ``tokenizer*/`` files) - the
  configs of the base model the checkpoint was fine-tuned from (SDXL base 1.0 or SD 1.5).

SDXL or SD1.5 is read from the model itself: ``model_index.json``'s ``_class_name`` for a folder,
the checkpoint's tensor names for a single file (``conditioner.embedders.1.*``: SDXL's second text
encoder; ``cond_stage_model.*``: SD 1.x/2.x), and runs ``StableDiffusionXLPipeline`` or
``StableDiffusionPipeline``.

Per-model settings and the licence come from a sidecar ``safeface.json`` in the model folder (or
in ``<stem>.config/``), over built-in values for the models we know (:data:`KNOWN_MODELS`)::

    {"license": "Apache-2.0", "commercial_use": true, "steps": 50, "guidance": 5.0,
     "clip_skip": 3, "size": 1024, "lcm_steps": 4, "lcm_guidance": 1.0}

A model whose licence is unknown counts as non-commercial: with ``SAFEFACE_COMMERCIAL=1`` it is
refused (:func:`engine.models.check_license`) before anything is loaded.

Speed: fp16 on CUDA (fp32 on CPU), PyTorch 2 scaled-dot-product attention in the UNet and VAE,
and optionally an LCM-LoRA (``$SAFEFACE_DIFFUSERS_LCM_LORA``: a ``.safetensors`` file name in the
models folder) fused into the UNet weights, with ``LCMScheduler``, 4 steps and guidance 1.
Candidates render as one batch, each from its own seeded ``torch.Generator`` (on the CPU, so a
seed gives the same starting noise on any device): a seed renders the same image alone or in a
batch, and again later.

Steps: :func:`prepare_prompts` -> :func:`forward_diffusion` (the only place the model runs) ->
:func:`normalize_images`.
"""
from __future__ import annotations

import hashlib
import json
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import ModelCorrupt, ModelMissing
from engine.models import check_license, models_dir

DEFAULT_MODEL = "mobius"
SIDECAR = "safeface.json"
CONFIG_SUFFIX = ".config"
SDXL = "sdxl"
SD15 = "sd15"
PIPELINE_CLASSES = {"StableDiffusionXLPipeline": SDXL, "StableDiffusionPipeline": SD15}
UNKNOWN_LICENSE = "unknown (no licence in safeface.json): treated as non-commercial"
SWITCH_HINT = "or set SAFEFACE_GENERATOR=stylegan to use the embedded generator"

# Generation defaults per architecture, for models we know nothing else about.
ARCH_DEFAULTS = {
    SDXL: dict(steps=30, guidance=5.0, clip_skip=None, size=1024),
    SD15: dict(steps=30, guidance=7.5, clip_skip=None, size=512),
}

# Built-in facts about known models, matched on the model name (folder or file stem, lower case).
# Mobius: Apache-2.0; its card recommends 50 steps, CFG 3.5-7 and clip skip 3 (RESEARCH.md).
KNOWN_MODELS: dict[str, dict] = {
    "mobius": dict(license="Apache-2.0", commercial_use=True, steps=50, guidance=5.0, clip_skip=3, size=1024),
    "stable-diffusion-xl-base-1.0": dict(license="CreativeML Open RAIL++-M", commercial_use=True, steps=30, guidance=5.0, size=1024),
    "sd_xl_base_1.0": dict(license="CreativeML Open RAIL++-M", commercial_use=True, steps=30, guidance=5.0, size=1024),
    "stable-diffusion-v1-5": dict(license="CreativeML OpenRAIL-M", commercial_use=True, steps=30, guidance=7.5, size=512),
    "v1-5-pruned-emaonly": dict(license="CreativeML OpenRAIL-M", commercial_use=True, steps=30, guidance=7.5, size=512),
}

# safeface.json keys and their types (steps etc. are checked for range in _settings).
SIDECAR_KEYS = {
    "license": str,
    "commercial_use": bool,
    "steps": int,
    "guidance": (int, float),
    "clip_skip": (int, type(None)),
    "size": int,
    "lcm_steps": int,
    "lcm_guidance": (int, float),
}
LCM_STEPS = 4
LCM_GUIDANCE = 1.0  # <= 1: no classifier-free guidance, one UNet pass per step


@dataclass(frozen=True)
class ModelSpec:
    """A diffusion model found in the models folder, with its settings (nothing loaded yet)."""

    name: str  # as configured (folder name or file name)
    path: Path  # the diffusers folder, or the .safetensors file
    form: str  # "folder" or "single_file"
    config_dir: Path  # the folder holding model_index.json (the model folder, or <stem>.config)
    architecture: str  # SDXL or SD15
    license: str
    commercial_use: bool
    steps: int
    guidance: float
    clip_skip: int | None
    size: int  # output side in pixels (square)
    lcm_lora: Path | None = None
    lcm_steps: int = LCM_STEPS
    lcm_guidance: float = LCM_GUIDANCE

    @property
    def label(self) -> str:
        return f"diffusers:{self.name}"

    @property
    def schedule(self) -> tuple[int, float]:
        """(steps, guidance) actually used: the LCM few-step schedule when a LoRA is set."""
        return (self.lcm_steps, self.lcm_guidance) if self.lcm_lora else (self.steps, self.guidance)


# --------------------------------------------------------------------------------------------
# Finding the model and its settings
# --------------------------------------------------------------------------------------------


def configured_model() -> str:
    return os.environ.get("SAFEFACE_DIFFUSERS_MODEL", "").strip() or DEFAULT_MODEL


def configured_lcm_lora() -> str:
    return os.environ.get("SAFEFACE_DIFFUSERS_LCM_LORA", "").strip()


def _plain_name(name: str, what: str) -> None:
    if not name or "/" in name or "\\" in name or name in (".", "..") or name.startswith("."):
        raise ModelMissing(f"{what} must be a plain name inside the models folder, got {name!r}.")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelCorrupt(f"{path} cannot be read as JSON ({error}). Restore it from the model's release.") from None
    if not isinstance(data, dict):
        raise ModelCorrupt(f"{path} must hold a JSON object.")
    return data


def _sidecar(config_dir: Path) -> dict:
    path = config_dir / SIDECAR
    if not path.is_file():
        return {}
    data = _read_json(path)
    for key, value in data.items():
        if key not in SIDECAR_KEYS:
            raise ModelCorrupt(f"{path}: unknown setting {key!r} (known: {', '.join(SIDECAR_KEYS)}).")
        kind = SIDECAR_KEYS[key]
        if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
            raise ModelCorrupt(f"{path}: {key} has the wrong type ({type(value).__name__}: {value!r}).")
    return data


def _settings(name: str, architecture: str, sidecar: dict, where: Path) -> dict:
    stem = name.lower().removesuffix(".safetensors")
    known = KNOWN_MODELS.get(stem, {})
    settings = {**ARCH_DEFAULTS[architecture], "license": UNKNOWN_LICENSE, "commercial_use": False, **known}
    if "license" in sidecar and "commercial_use" not in sidecar:
        settings["commercial_use"] = False  # a licence without a ruling on commercial use: not allowed
    settings.update(sidecar)
    problems = []
    if not 1 <= settings["steps"] <= 200:
        problems.append(f"steps {settings['steps']} (1-200)")
    if not 0 <= settings["guidance"] <= 30:
        problems.append(f"guidance {settings['guidance']} (0-30)")
    if settings["clip_skip"] is not None and not 0 <= settings["clip_skip"] <= 10:
        problems.append(f"clip_skip {settings['clip_skip']} (0-10 or null)")
    if not 32 <= settings["size"] <= 2048 or settings["size"] % 8:
        problems.append(f"size {settings['size']} (32-2048, a multiple of 8)")
    if not 1 <= settings.get("lcm_steps", LCM_STEPS) <= 50:
        problems.append(f"lcm_steps {settings['lcm_steps']} (1-50)")
    if not 0 <= settings.get("lcm_guidance", LCM_GUIDANCE) <= 30:
        problems.append(f"lcm_guidance {settings['lcm_guidance']} (0-30)")
    if problems:
        raise ModelCorrupt(f"{where / SIDECAR}: out of range: {', '.join(problems)}.")
    return settings


def checkpoint_architecture(path: Path) -> str:
    """SDXL or SD15 from a single-file checkpoint's tensor names (reads the header only)."""
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            keys = list(handle.keys())
    except Exception as error:  # safetensors raises its own error types for a damaged header
        raise ModelCorrupt(
            f"Checkpoint {path} cannot be read as safetensors ({error}). Download it again."
        ) from None
    if any(k.startswith("conditioner.embedders.1.") for k in keys):
        return SDXL
    if any(k.startswith("cond_stage_model.") for k in keys):
        return SD15
    raise ModelCorrupt(
        f"Checkpoint {path} is not a Stable Diffusion 1.x or SDXL checkpoint (no CLIP text encoder "
        "tensors: neither cond_stage_model.* nor conditioner.embedders.*)."
    )


def _folder_architecture(config_dir: Path) -> str:
    index = _read_json(config_dir / "model_index.json")
    class_name = index.get("_class_name", "")
    if class_name not in PIPELINE_CLASSES:
        raise ModelMissing(
            f"{config_dir / 'model_index.json'} describes a {class_name or 'unnamed'} pipeline; SafeFace runs "
            f"{' and '.join(PIPELINE_CLASSES)} models (Mobius, SDXL, SD 1.5)."
        )
    return PIPELINE_CLASSES[class_name]


def resolve_model(name: str | None = None, lcm_lora: str | None = None, directory: Path | None = None) -> ModelSpec:
    """Find the configured model in the models folder and read its settings; checks the licence
    before anything is loaded. Raises ModelMissing / ModelCorrupt / LicenseRefused."""
    name = configured_model() if name is None else name
    lcm_lora = configured_lcm_lora() if lcm_lora is None else lcm_lora
    directory = models_dir() if directory is None else directory
    _plain_name(name, "SAFEFACE_DIFFUSERS_MODEL")
    folder = directory / name
    if (folder / "model_index.json").is_file():
        form, path, config_dir = "folder", folder, folder
        architecture = _folder_architecture(folder)
    else:
        single = folder if name.endswith(".safetensors") else directory / f"{name}.safetensors"
        if folder.is_dir():
            raise ModelMissing(
                f"Diffusion model folder {folder} has no model_index.json: copy the whole diffusers folder "
                "there (model_index.json, unet/, vae/, text_encoder/, tokenizer/, scheduler/ ...), "
                f"{SWITCH_HINT}."
            )
        if not single.is_file():
            raise ModelMissing(
                f"Diffusion model {name!r} is not in {directory}: put its diffusers folder at {folder}/ "
                f"(with model_index.json) or a single-file checkpoint at {single} plus its configs in "
                f"{single.with_suffix(CONFIG_SUFFIX)}/, choose another with SAFEFACE_DIFFUSERS_MODEL, "
                f"{SWITCH_HINT}."
            )
        form, path = "single_file", single
        config_dir = single.with_suffix(CONFIG_SUFFIX)
        architecture = checkpoint_architecture(single)
        if not (config_dir / "model_index.json").is_file():
            base = "stabilityai/stable-diffusion-xl-base-1.0" if architecture == SDXL else "stable-diffusion-v1-5"
            raise ModelMissing(
                f"Single-file checkpoint {single.name} needs its diffusers configs to load offline: put a "
                f"folder {config_dir} holding model_index.json, scheduler/scheduler_config.json, "
                "unet/config.json, vae/config.json, text_encoder*/config.json and the tokenizer*/ files "
                f"of its base model ({base}; the weight files are not needed)."
            )
        declared = _folder_architecture(config_dir)
        if declared != architecture:
            raise ModelCorrupt(
                f"{single.name} is an {architecture.upper()} checkpoint but {config_dir}/model_index.json "
                f"describes an {declared.upper()} pipeline: use the configs of the right base model."
            )
    settings = _settings(name, architecture, _sidecar(config_dir), config_dir)
    lora_path = None
    if lcm_lora:
        _plain_name(lcm_lora, "SAFEFACE_DIFFUSERS_LCM_LORA")
        lora_path = directory / lcm_lora
        if not lora_path.is_file():
            raise ModelMissing(
                f"LCM-LoRA file {lora_path} is missing: put the LCM-LoRA for this "
                f"{architecture.upper()} model there (a .safetensors file), or unset SAFEFACE_DIFFUSERS_LCM_LORA."
            )
    spec = ModelSpec(
        name=name,
        path=path,
        form=form,
        config_dir=config_dir,
        architecture=architecture,
        license=settings["license"],
        commercial_use=settings["commercial_use"],
        steps=settings["steps"],
        guidance=float(settings["guidance"]),
        clip_skip=settings["clip_skip"],
        size=settings["size"],
        lcm_lora=lora_path,
        lcm_steps=settings.get("lcm_steps", LCM_STEPS),
        lcm_guidance=float(settings.get("lcm_guidance", LCM_GUIDANCE)),
    )
    check_license(spec.label, spec.license, spec.commercial_use)
    return spec


# --------------------------------------------------------------------------------------------
# Fingerprint: what made an avatar
# --------------------------------------------------------------------------------------------

_hash_cache: dict[tuple[str, int, int], str] = {}
_hash_lock = threading.Lock()


def _file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    with _hash_lock:
        _hash_cache[key] = digest.hexdigest()
    return _hash_cache[key]


def model_fingerprint(spec: ModelSpec) -> str:
    """sha256 over every file of the model (weights, configs, tokenizers, sidecar), the LCM-LoRA
    and the schedule: two avatars with the same seed and fingerprint are the same image."""
    files: list[tuple[str, Path]] = []
    for root, label in ((spec.path, "model"), (spec.config_dir, "config")):
        if root.is_file():
            files.append((f"{label}:{root.name}", root))
        elif root.is_dir():
            files += [(f"{label}:{p.relative_to(root).as_posix()}", p) for p in sorted(root.rglob("*")) if p.is_file()]
        if spec.form == "folder":
            break  # the config folder is the model folder
    if spec.lcm_lora:
        files.append((f"lora:{spec.lcm_lora.name}", spec.lcm_lora))
    steps, guidance = spec.schedule
    lines = [f"{name}={_file_digest(path)}" for name, path in files]
    lines.append(f"schedule={steps}:{guidance}:{spec.clip_skip}:{spec.size}")
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# --------------------------------------------------------------------------------------------
# Loading (cached per model and device)
# --------------------------------------------------------------------------------------------


def _torch():
    try:
        import diffusers  # noqa: F401
        import torch
    except ImportError as error:
        raise ModelMissing(
            f"The diffusers avatar generator needs torch, diffusers and transformers ({error}): install "
            f"requirements/gpu.txt on this worker (pip install -r requirements/gpu.txt), {SWITCH_HINT}."
        ) from None
    return torch


def default_device() -> str:
    torch = _torch()
    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass
class LoadedPipeline:
    spec: ModelSpec
    device: str
    pipe: object
    lock: threading.Lock = field(default_factory=threading.Lock)


_pipelines: dict[tuple, LoadedPipeline] = {}
_pipelines_lock = threading.Lock()


def _lora_pairs(state: dict, unet) -> dict[str, tuple]:
    """module name -> (down, up, alpha or None), from a LoRA state dict in kohya form
    (``lora_unet_<module_with_underscores>.lora_down.weight``), PEFT form
    (``[unet.]<module>.lora_A.weight``) or the older diffusers form (``unet.<module>.lora.down.weight``)."""
    modules = dict(unet.named_modules())
    flat = {name.replace(".", "_"): name for name in modules if name}
    pairs: dict[str, dict] = {}
    for key, tensor in state.items():
        module = part = None
        if key.startswith("lora_unet_"):
            stem, _, suffix = key.partition(".")
            module = flat.get(stem[len("lora_unet_"):])
            part = {"lora_down.weight": "down", "lora_up.weight": "up", "alpha": "alpha"}.get(suffix)
            if module is None and stem.startswith(("lora_unet_input_blocks", "lora_unet_middle_block", "lora_unet_output_blocks")):
                raise ModelCorrupt(
                    f"LoRA tensor {key} uses the original (sgm) UNet layer names; SafeFace reads LoRAs with "
                    "diffusers layer names (kohya 'lora_unet_down_blocks_...' or PEFT), as the published LCM-LoRAs are."
                )
            if module is None:
                raise ModelCorrupt(f"LoRA tensor {key} names no module of this UNet (a LoRA for another model?).")
        elif key.startswith(("lora_te", "text_encoder")):
            raise ModelCorrupt(f"LoRA tensor {key} targets a text encoder; an LCM-LoRA changes only the UNet.")
        else:
            name = key.removeprefix("base_model.model.").removeprefix("unet.")
            for ending, which in ((".lora_A.weight", "down"), (".lora_B.weight", "up"), (".lora.down.weight", "down"),
                                  (".lora.up.weight", "up"), (".alpha", "alpha")):
                if name.endswith(ending):
                    module, part = name[: -len(ending)], which
                    break
            if module is not None and module not in modules:
                raise ModelCorrupt(f"LoRA tensor {key} names no module of this UNet (a LoRA for another model?).")
        if module is None or part is None:
            raise ModelCorrupt(f"LoRA tensor {key} is not in a LoRA format SafeFace reads (kohya, PEFT or diffusers).")
        pairs.setdefault(module, {})[part] = tensor
    out = {}
    for module, parts in pairs.items():
        if "down" not in parts or "up" not in parts:
            raise ModelCorrupt(f"LoRA for {module} lacks its {'down' if 'down' not in parts else 'up'} matrix.")
        alpha = parts.get("alpha")
        out[module] = (parts["down"], parts["up"], None if alpha is None else float(alpha))
    if not out:
        raise ModelCorrupt("The LoRA file holds no LoRA tensors.")
    return out


def fuse_lora(unet, path: Path) -> int:
    """Add the LoRA in ``path`` into the UNet's weights (W += alpha/rank * up @ down), in place.
    Returns the number of layers changed."""
    torch = _torch()
    try:
        from safetensors.torch import load_file

        state = load_file(str(path))
    except Exception as error:
        raise ModelCorrupt(f"LoRA file {path} cannot be read as safetensors ({error}). Download it again.") from None
    modules = dict(unet.named_modules())
    count = 0
    with torch.no_grad():
        for name, (down, up, alpha) in _lora_pairs(state, unet).items():
            layer = modules[name]
            weight = getattr(layer, "weight", None)
            rank = down.shape[0]
            if weight is None or up.shape[1] != rank:
                raise ModelCorrupt(f"LoRA for {name} does not fit that layer (rank {rank}, up {tuple(up.shape)}).")
            scale = (alpha / rank) if alpha is not None else 1.0
            delta = up.float().flatten(1) @ down.float().flatten(1)
            if delta.numel() != weight.numel():
                raise ModelCorrupt(
                    f"LoRA for {name} has shape {tuple(up.shape[:1]) + tuple(down.shape[1:])}, the layer {tuple(weight.shape)}."
                )
            weight.add_((scale * delta).reshape(weight.shape).to(device=weight.device, dtype=weight.dtype))
            count += 1
    return count


def _load(spec: ModelSpec, device: str):
    torch = _torch()
    from diffusers import LCMScheduler, StableDiffusionPipeline, StableDiffusionXLPipeline
    from diffusers.models.attention_processor import AttnProcessor2_0

    cls = StableDiffusionXLPipeline if spec.architecture == SDXL else StableDiffusionPipeline
    dtype = torch.float16 if device.startswith("cuda") else torch.float32
    extra = {} if spec.architecture == SDXL else {"safety_checker": None, "requires_safety_checker": False}
    try:
        if spec.form == "folder":
            fp16_files = dtype == torch.float16 and any((spec.path / "unet").glob("*.fp16.safetensors"))
            pipe = cls.from_pretrained(
                str(spec.path), torch_dtype=dtype, local_files_only=True, use_safetensors=True,
                variant="fp16" if fp16_files else None, **extra,
            )
        else:
            pipe = cls.from_single_file(
                str(spec.path), config=str(spec.config_dir), torch_dtype=dtype, local_files_only=True, **extra,
            )
    except Exception as error:  # diffusers, transformers and safetensors raise many kinds
        raise ModelCorrupt(
            f"Diffusion model {spec.name} in {spec.path.parent} cannot be loaded ({type(error).__name__}: "
            f"{str(error)[:300]}). Copy it again from its release."
        ) from None
    if spec.lcm_lora:
        fuse_lora(pipe.unet, spec.lcm_lora)
        pipe.scheduler = LCMScheduler.from_config(pipe.scheduler.config)
    pipe.unet.set_attn_processor(AttnProcessor2_0())
    pipe.vae.set_attn_processor(AttnProcessor2_0())
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def load_pipeline(spec: ModelSpec, device: str | None = None) -> LoadedPipeline:
    """The pipeline for ``spec`` on ``device`` (cuda when available, else cpu), loaded once per
    (model, LoRA, device) in this process."""
    device = device or default_device()
    key = (str(spec.path), str(spec.lcm_lora), device, spec.size, spec.schedule, spec.clip_skip)
    with _pipelines_lock:
        loaded = _pipelines.get(key)
        if loaded is None:
            loaded = _pipelines[key] = LoadedPipeline(spec=spec, device=device, pipe=_load(spec, device))
    return loaded


def clear_cache() -> None:
    with _pipelines_lock:
        _pipelines.clear()


# --------------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------------


def prepare_prompts(targets_list: Sequence[dict[str, str]]) -> tuple[list[str], list[str]]:
    """(prompts, negative prompts) for each candidate's attribute targets."""
    from engine.generate.backends import diffusion_prompt

    pairs = [diffusion_prompt(targets) for targets in targets_list]
    return [p for p, _ in pairs], [n for _, n in pairs]


def forward_diffusion(loaded: LoadedPipeline, prompts: list[str], negatives: list[str], seeds: Sequence[int]) -> np.ndarray:
    """Run the pipeline once for the whole batch: (N, size, size, 3) float32 in [0, 1]."""
    torch = _torch()
    spec = loaded.spec
    steps, guidance = spec.schedule
    # One generator per candidate, on the CPU: the same seed gives the same noise alone or in a
    # batch, on any device.
    generators = [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]
    with loaded.lock, torch.inference_mode():
        result = loaded.pipe(
            prompt=prompts,
            negative_prompt=negatives,
            num_inference_steps=steps,
            guidance_scale=guidance,
            height=spec.size,
            width=spec.size,
            generator=generators,
            clip_skip=spec.clip_skip,
            output_type="np",
        )
    images = np.asarray(result.images, dtype=np.float32)
    if images.shape != (len(seeds), spec.size, spec.size, 3):
        raise ModelCorrupt(f"Diffusion model {spec.name} returned images of shape {images.shape}.")
    return images


def normalize_images(images: np.ndarray) -> list[np.ndarray]:
    """Float [0, 1] RGB -> RGB uint8 square images (NaN from an fp16 overflow becomes black)."""
    images = np.nan_to_num(images, nan=0.0, posinf=1.0, neginf=0.0)
    return [np.ascontiguousarray(np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)) for img in images]


class DiffusionGenerator:
    """A loaded diffusion model rendering portraits from attribute targets."""

    def __init__(
        self, name: str | None = None, *, device: str | None = None, lcm_lora: str | None = None, directory: Path | None = None
    ) -> None:
        self.spec = resolve_model(name, lcm_lora, directory)
        self.loaded = load_pipeline(self.spec, device)
        self.model_hash = model_fingerprint(self.spec)

    @property
    def name(self) -> str:
        return self.spec.label

    @property
    def pipe(self):
        return self.loaded.pipe

    def render_batch(self, seeds: Sequence[int], targets_list: Sequence[dict[str, str]]) -> list[np.ndarray]:
        if len(seeds) != len(targets_list):
            raise ValueError(f"{len(seeds)} seeds for {len(targets_list)} attribute targets")
        if not seeds:
            return []
        prompts, negatives = prepare_prompts(targets_list)
        return normalize_images(forward_diffusion(self.loaded, prompts, negatives, seeds))

    def render(self, seed: int, targets: dict[str, str]) -> np.ndarray:
        return self.render_batch([seed], [targets])[0]


__all__ = [
    "DEFAULT_MODEL", "KNOWN_MODELS", "ModelSpec", "DiffusionGenerator", "resolve_model", "load_pipeline",
    "model_fingerprint", "fuse_lora", "checkpoint_architecture", "prepare_prompts", "forward_diffusion",
    "normalize_images", "clear_cache",
]
