"""The diffusers avatar generator, on CPU, through tiny SD1.5 and SDXL pipelines this test builds
from tiny configs with random weights, saves into a temporary models folder and loads through the
real loading code (engine.generate.diffusion). Random weights draw no face: the end-to-end
generation test expects the checks to reject every candidate, after the real render path ran."""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from engine.errors import GenerationFailed, LicenseRefused, ModelCorrupt, ModelMissing  # noqa: E402
from engine.generate import diffusion  # noqa: E402
from engine.generate.attributes import AttributeRequest  # noqa: E402
from engine.generate.backends import get_backend  # noqa: E402
from engine.generate.pipeline import GenerationOptions, candidate_seed, generate_avatars, render_targets  # noqa: E402

SIZE = 32  # output pixels of the tiny pipelines
STEPS = 2
TARGETS = {"gender": "feminine", "skin_tone": "deep", "hair_colour": "red", "glasses": "yes"}


# --- tiny pipelines ---------------------------------------------------------------------------


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the bytes 0-255 (GPT-2/CLIP scheme)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = [], 0
    for b in range(256):
        if b in keep:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def _tokenizer(pad: str = "<|endoftext|>"):
    """A CLIP tokenizer over single characters plus a few merges (a real BPE, tiny vocabulary)."""
    from transformers import CLIPTokenizer

    chars = _bytes_to_unicode()
    merges = ["o r", "a i", "e n", "h ai", "r</w> ,"]
    vocab = chars + [c + "</w>" for c in chars] + [m.replace(" ", "") for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    folder = Path(tempfile.mkdtemp(prefix="tiny-clip-tokenizer-"))
    (folder / "vocab.json").write_text(json.dumps({tok: i for i, tok in enumerate(dict.fromkeys(vocab))}))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token=pad, model_max_length=77)


def _text_encoder(tokenizer, projection: bool):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    config = CLIPTextConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37, num_hidden_layers=5,
        num_attention_heads=4, max_position_embeddings=77, projection_dim=32,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(config).eval()


def _vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        block_out_channels=(16, 32), in_channels=3, out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"), latent_channels=4, norm_num_groups=8,
        sample_size=SIZE,
    ).eval()


def build_sd15(folder: Path, sidecar: dict | None = None) -> Path:
    from diffusers import DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=SIZE // 2, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=4, norm_num_groups=8,
    )
    tokenizer = _tokenizer()
    pipe = StableDiffusionPipeline(
        vae=_vae(), text_encoder=_text_encoder(tokenizer, False), tokenizer=tokenizer, unet=unet.eval(),
        scheduler=DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    _write_sidecar(folder, {"size": SIZE, "steps": STEPS, **(sidecar or {})})
    return folder


def build_sdxl(folder: Path, sidecar: dict | None = None) -> Path:
    from diffusers import EulerDiscreteScheduler, StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=SIZE // 2, in_channels=4, out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4), use_linear_projection=True, addition_embed_type="text_time",
        addition_time_embed_dim=8, transformer_layers_per_block=(1, 2),
        projection_class_embeddings_input_dim=6 * 8 + 32,  # six size/crop ids + pooled text embedding
        cross_attention_dim=64, norm_num_groups=8,
    )
    tokenizer = _tokenizer()
    tokenizer_2 = _tokenizer(pad="!")
    pipe = StableDiffusionXLPipeline(
        vae=_vae(), text_encoder=_text_encoder(tokenizer, False), text_encoder_2=_text_encoder(tokenizer_2, True),
        tokenizer=tokenizer, tokenizer_2=tokenizer_2, unet=unet.eval(),
        scheduler=EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                                         timestep_spacing="leading", steps_offset=1),
    )
    pipe.save_pretrained(str(folder), safe_serialization=True)
    _write_sidecar(folder, {"size": SIZE, "steps": STEPS, **(sidecar or {})})
    return folder


def _write_sidecar(folder: Path, values: dict) -> None:
    values = {k: v for k, v in values.items() if v is not None}
    (folder / "safeface.json").write_text(json.dumps(values))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> Path:
    """A models folder with a tiny SD1.5 and a tiny SDXL diffusers folder (built once)."""
    root = tmp_path_factory.mktemp("models")
    build_sd15(root / "tiny-sd15")
    build_sdxl(root / "tiny-sdxl", {"clip_skip": 1})
    return root


@pytest.fixture
def models_dir(tiny_models, monkeypatch) -> Path:
    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(tiny_models))
    monkeypatch.delenv("SAFEFACE_COMMERCIAL", raising=False)
    monkeypatch.delenv("SAFEFACE_DIFFUSERS_LCM_LORA", raising=False)
    monkeypatch.delenv("SAFEFACE_DIFFUSERS_MODEL", raising=False)
    get_backend.cache_clear()
    yield tiny_models
    get_backend.cache_clear()


@pytest.fixture(scope="session")
def sdxl(tiny_models):
    return diffusion.DiffusionGenerator("tiny-sdxl", device="cpu", lcm_lora="", directory=tiny_models)


@pytest.fixture(scope="session")
def sd15(tiny_models):
    return diffusion.DiffusionGenerator("tiny-sd15", device="cpu", lcm_lora="", directory=tiny_models)


def _unet_calls(pipe) -> list[int]:
    """Batch size of every UNet forward, recorded by a hook (returns the live list)."""
    calls: list[int] = []
    pipe.unet.register_forward_pre_hook(lambda module, args, kwargs: calls.append(int(args[0].shape[0])), with_kwargs=True)
    return calls


# --- loading ----------------------------------------------------------------------------------


def test_detects_sd15_and_sdxl_and_loads_the_matching_pipeline(sd15, sdxl):
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    assert sd15.spec.architecture == "sd15" and type(sd15.pipe) is StableDiffusionPipeline
    assert sdxl.spec.architecture == "sdxl" and type(sdxl.pipe) is StableDiffusionXLPipeline
    assert sdxl.pipe.text_encoder_2 is not None and sdxl.pipe.unet.config.addition_embed_type == "text_time"
    assert sd15.name == "diffusers:tiny-sd15" and sdxl.name == "diffusers:tiny-sdxl"
    assert sdxl.spec.clip_skip == 1 and sdxl.spec.size == SIZE and sdxl.spec.schedule == (STEPS, 5.0)


def test_cpu_runs_fp32_with_sdpa_attention(sdxl):
    from diffusers.models.attention_processor import AttnProcessor2_0

    assert sdxl.pipe.unet.dtype == torch.float32 and sdxl.loaded.device == "cpu"
    processors = list(sdxl.pipe.unet.attn_processors.values()) + list(sdxl.pipe.vae.attn_processors.values())
    assert processors and all(isinstance(p, AttnProcessor2_0) for p in processors)


@pytest.mark.parametrize("which", ["sd15", "sdxl"])
def test_render_gives_a_square_rgb_uint8_image_made_by_the_unet(which, request):
    generator = request.getfixturevalue(which)
    calls = _unet_calls(generator.pipe)
    image = generator.render(11, TARGETS)
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert image.std() > 1.0  # not a flat fill
    # STEPS denoising steps, each a batch of 2 (negative + positive prompt: classifier-free guidance)
    assert calls == [2] * STEPS


@pytest.mark.parametrize("which", ["sd15", "sdxl"])
def test_same_seed_same_pixels_and_different_seeds_differ(which, request):
    generator = request.getfixturevalue(which)
    first = generator.render(123, TARGETS)
    assert np.array_equal(first, generator.render(123, TARGETS))
    other = generator.render(124, TARGETS)
    assert np.abs(first.astype(int) - other.astype(int)).mean() > 5


def test_an_avatar_regenerates_exactly_after_a_fresh_load(models_dir, sdxl):
    image = sdxl.render(99, TARGETS)
    diffusion.clear_cache()
    again = diffusion.DiffusionGenerator("tiny-sdxl", device="cpu", lcm_lora="")
    assert again.loaded is not sdxl.loaded
    assert np.array_equal(image, again.render(99, TARGETS))
    assert again.model_hash == sdxl.model_hash


@pytest.mark.parametrize("which", ["sd15", "sdxl"])
def test_a_seed_renders_the_same_inside_a_batch_as_alone(which, request):
    generator = request.getfixturevalue(which)
    other_targets = {"gender": "masculine", "facial_hair": "yes", "background": "dark"}
    calls = _unet_calls(generator.pipe)
    batch = generator.render_batch([5, 6, 7], [TARGETS, other_targets, TARGETS])
    assert calls == [6] * STEPS  # one pipeline call: 3 candidates x (negative + positive)
    alone = [generator.render(5, TARGETS), generator.render(6, other_targets), generator.render(7, TARGETS)]
    for in_batch, single in zip(batch, alone):
        assert np.abs(in_batch.astype(int) - single.astype(int)).max() <= 1
    assert np.abs(batch[0].astype(int) - batch[2].astype(int)).mean() > 5  # same prompt, other seed
    with pytest.raises(ValueError, match="2 seeds for 1 attribute targets"):
        generator.render_batch([1, 2], [TARGETS])


def test_the_prompt_carries_the_targets(sdxl, monkeypatch):
    seen = {}
    original = diffusion.forward_diffusion

    def spy(loaded, prompts, negatives, seeds):
        seen.update(prompts=prompts, negatives=negatives, seeds=list(seeds))
        return original(loaded, prompts, negatives, seeds)

    monkeypatch.setattr(diffusion, "forward_diffusion", spy)
    sdxl.render_batch([3, 4], [TARGETS, {"gender": "masculine"}])
    assert "woman" in seen["prompts"][0] and "red hair" in seen["prompts"][0] and "wearing glasses" in seen["prompts"][0]
    assert "man" in seen["prompts"][1] and "woman" not in seen["prompts"][1]
    assert all("profile" in n for n in seen["negatives"]) and seen["seeds"] == [3, 4]


# --- settings, licence gate and errors ---------------------------------------------------------


def _copy_model(models: Path, source: str, name: str, sidecar: dict | None) -> Path:
    import shutil

    target = models / name
    shutil.copytree(models / source, target)
    if sidecar is None:
        (target / "safeface.json").unlink()
    else:
        (target / "safeface.json").write_text(json.dumps(sidecar))
    return target


def test_mobius_built_in_settings_and_licence_pass_a_commercial_deployment(tmp_path, tiny_models, monkeypatch):
    import shutil

    shutil.copytree(tiny_models / "tiny-sdxl", tmp_path / "mobius")
    (tmp_path / "mobius" / "safeface.json").unlink()
    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("SAFEFACE_COMMERCIAL", "1")
    monkeypatch.delenv("SAFEFACE_DIFFUSERS_MODEL", raising=False)
    spec = diffusion.resolve_model(lcm_lora="")  # the default model: mobius
    assert (spec.name, spec.architecture, spec.license, spec.commercial_use) == ("mobius", "sdxl", "Apache-2.0", True)
    assert (spec.steps, spec.guidance, spec.clip_skip, spec.size) == (50, 5.0, 3, 1024)


def test_unknown_or_non_commercial_licence_is_refused_before_loading(models_dir, monkeypatch):
    monkeypatch.setenv("SAFEFACE_COMMERCIAL", "1")
    monkeypatch.setattr(diffusion, "_load", lambda spec, device: pytest.fail("loaded a refused model"))
    with pytest.raises(LicenseRefused, match=r"diffusers:tiny-sd15 is licensed for non-commercial use only \(unknown"):
        diffusion.DiffusionGenerator("tiny-sd15", device="cpu", lcm_lora="")
    _copy_model(models_dir, "tiny-sd15", "nc-model", {"license": "CC-BY-NC-4.0", "commercial_use": False, "size": SIZE})
    try:
        monkeypatch.setenv("SAFEFACE_DIFFUSERS_MODEL", "nc-model")
        with pytest.raises(LicenseRefused, match="CC-BY-NC-4.0"):
            get_backend("diffusers")
        monkeypatch.delenv("SAFEFACE_COMMERCIAL")
        assert diffusion.resolve_model(lcm_lora="").license == "CC-BY-NC-4.0"  # fine when non-commercial
    finally:
        import shutil

        shutil.rmtree(models_dir / "nc-model")


def test_a_licence_without_a_commercial_ruling_counts_as_non_commercial(models_dir, monkeypatch):
    _copy_model(models_dir, "tiny-sd15", "ruled", {"license": "Some licence", "size": SIZE})
    try:
        monkeypatch.setenv("SAFEFACE_COMMERCIAL", "1")
        with pytest.raises(LicenseRefused, match="Some licence"):
            diffusion.resolve_model("ruled", lcm_lora="")
        (models_dir / "ruled" / "safeface.json").write_text(json.dumps({"license": "Some licence", "commercial_use": True}))
        assert diffusion.resolve_model("ruled", lcm_lora="").commercial_use is True
    finally:
        import shutil

        shutil.rmtree(models_dir / "ruled")


def test_missing_model_names_the_path_and_what_to_put_there(tmp_path, monkeypatch):
    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(tmp_path))
    monkeypatch.delenv("SAFEFACE_DIFFUSERS_MODEL", raising=False)
    get_backend.cache_clear()
    with pytest.raises(ModelMissing) as caught:
        get_backend("diffusers")
    message = str(caught.value)
    assert "'mobius'" in message and str(tmp_path / "mobius") in message and "model_index.json" in message
    assert "SAFEFACE_GENERATOR=stylegan" in message
    (tmp_path / "half").mkdir()
    with pytest.raises(ModelMissing, match="has no model_index.json"):
        diffusion.resolve_model("half", lcm_lora="")
    with pytest.raises(ModelMissing, match="plain name"):
        diffusion.resolve_model("../elsewhere", lcm_lora="")


def test_damaged_model_files_are_model_corrupt(models_dir):
    import shutil

    target = _copy_model(models_dir, "tiny-sdxl", "damaged", {"size": SIZE, "steps": STEPS})
    try:
        weights = target / "unet" / "diffusion_pytorch_model.safetensors"
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
        with pytest.raises(ModelCorrupt, match="damaged .*cannot be loaded"):
            diffusion.DiffusionGenerator("damaged", device="cpu", lcm_lora="")
        (target / "model_index.json").write_text("{not json")
        with pytest.raises(ModelCorrupt, match="cannot be read as JSON"):
            diffusion.resolve_model("damaged", lcm_lora="")
        (target / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
        with pytest.raises(ModelMissing, match="describes a FluxPipeline pipeline"):
            diffusion.resolve_model("damaged", lcm_lora="")
    finally:
        shutil.rmtree(target)


def test_bad_sidecar_settings_are_reported(models_dir):
    import shutil

    target = _copy_model(models_dir, "tiny-sd15", "badside", {"steps": "many"})
    try:
        with pytest.raises(ModelCorrupt, match="steps has the wrong type"):
            diffusion.resolve_model("badside", lcm_lora="")
        (target / "safeface.json").write_text(json.dumps({"sampler": "euler"}))
        with pytest.raises(ModelCorrupt, match="unknown setting 'sampler'"):
            diffusion.resolve_model("badside", lcm_lora="")
        (target / "safeface.json").write_text(json.dumps({"steps": 0, "size": 100}))
        with pytest.raises(ModelCorrupt, match=r"steps 0 \(1-200\), size 100"):
            diffusion.resolve_model("badside", lcm_lora="")
    finally:
        shutil.rmtree(target)


def test_without_diffusers_installed_the_error_says_how_to_fix_it(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ModelMissing, match="requirements/gpu.txt"):
        diffusion.default_device()


def test_model_hash_follows_the_model_files_and_schedule(models_dir, sd15):
    import shutil

    assert len(sd15.model_hash) == 64
    assert diffusion.model_fingerprint(diffusion.resolve_model("tiny-sd15", lcm_lora="")) == sd15.model_hash
    target = _copy_model(models_dir, "tiny-sd15", "tweaked", {"size": SIZE, "steps": STEPS})
    try:
        assert diffusion.model_fingerprint(diffusion.resolve_model("tweaked", lcm_lora="")) == sd15.model_hash
        (target / "safeface.json").write_text(json.dumps({"size": SIZE, "steps": STEPS + 1}))
        assert diffusion.model_fingerprint(diffusion.resolve_model("tweaked", lcm_lora="")) != sd15.model_hash
    finally:
        shutil.rmtree(target)


# --- single-file checkpoints ---------------------------------------------------------------------


def _checkpoint(path: Path, keys: list[str]) -> Path:
    from safetensors.torch import save_file

    save_file({k: torch.zeros(2) for k in keys}, str(path))
    return path


def test_single_file_form_is_detected_from_its_tensor_names(tmp_path):
    sdxl_file = _checkpoint(tmp_path / "xl.safetensors", ["conditioner.embedders.1.model.ln_final.weight", "model.diffusion_model.out.2.weight"])
    sd_file = _checkpoint(tmp_path / "sd.safetensors", ["cond_stage_model.transformer.text_model.final_layer_norm.weight"])
    other = _checkpoint(tmp_path / "other.safetensors", ["model.weight"])
    assert diffusion.checkpoint_architecture(sdxl_file) == "sdxl"
    assert diffusion.checkpoint_architecture(sd_file) == "sd15"
    with pytest.raises(ModelCorrupt, match="not a Stable Diffusion 1.x or SDXL checkpoint"):
        diffusion.checkpoint_architecture(other)
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"\x00\x01garbage" * 10)
    with pytest.raises(ModelCorrupt, match="cannot be read as safetensors"):
        diffusion.checkpoint_architecture(broken)


def test_single_file_without_configs_says_exactly_what_to_add(tmp_path, tiny_models, monkeypatch):
    import shutil

    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(tmp_path))
    _checkpoint(tmp_path / "myxl.safetensors", ["conditioner.embedders.1.model.ln_final.weight"])
    with pytest.raises(ModelMissing) as caught:
        diffusion.resolve_model("myxl", lcm_lora="")
    message = str(caught.value)
    assert str(tmp_path / "myxl.config") in message and "model_index.json" in message and "stable-diffusion-xl-base-1.0" in message
    # configs of the wrong base model
    shutil.copytree(tiny_models / "tiny-sd15", tmp_path / "myxl.config", ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelCorrupt, match="SDXL checkpoint but .*SD15 pipeline"):
        diffusion.resolve_model("myxl.safetensors", lcm_lora="")


# --- LCM-LoRA few-step schedule --------------------------------------------------------------------


LORA_LAYERS = {  # module -> (in features / channels, out, kernel)
    "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_q": (32, 32, None),
    "mid_block.attentions.0.transformer_blocks.0.attn2.to_k": (64, 32, None),
    "conv_in": (4, 16, 3),
}


def _lora_tensors(rank: int = 2) -> dict[str, tuple]:
    gen = torch.Generator().manual_seed(3)
    out = {}
    for name, (fan_in, fan_out, kernel) in LORA_LAYERS.items():
        down_shape = (rank, fan_in) if kernel is None else (rank, fan_in, kernel, kernel)
        up_shape = (fan_out, rank) if kernel is None else (fan_out, rank, 1, 1)
        out[name] = (torch.randn(down_shape, generator=gen) * 0.1, torch.randn(up_shape, generator=gen) * 0.1)
    return out


def _write_lora(path: Path, form: str, alpha: float = 1.0) -> dict[str, tuple]:
    from safetensors.torch import save_file

    tensors = _lora_tensors()
    state = {}
    for name, (down, up) in tensors.items():
        if form == "kohya":
            flat = "lora_unet_" + name.replace(".", "_")
            state.update({f"{flat}.lora_down.weight": down, f"{flat}.lora_up.weight": up, f"{flat}.alpha": torch.tensor(alpha)})
        else:  # PEFT names as diffusers saves them
            state.update({f"unet.{name}.lora_A.weight": down, f"unet.{name}.lora_B.weight": up})
    save_file(state, str(path))
    return tensors


@pytest.mark.parametrize("form", ["kohya", "peft"])
def test_lcm_lora_is_fused_and_switches_to_a_four_step_lcm_schedule(models_dir, sdxl, monkeypatch, form):
    from diffusers import LCMScheduler

    tensors = _write_lora(models_dir / f"lcm-{form}.safetensors", form, alpha=1.0)
    monkeypatch.setenv("SAFEFACE_DIFFUSERS_MODEL", "tiny-sdxl")
    monkeypatch.setenv("SAFEFACE_DIFFUSERS_LCM_LORA", f"lcm-{form}.safetensors")
    backend = get_backend("diffusers")
    pipe = backend.generator.pipe
    assert isinstance(pipe.scheduler, LCMScheduler) and not isinstance(sdxl.pipe.scheduler, LCMScheduler)
    assert backend.generator.spec.schedule == (4, 1.0)
    base = dict(sdxl.pipe.unet.named_modules())
    fused = dict(pipe.unet.named_modules())
    scale = 0.5 if form == "kohya" else 1.0  # kohya: alpha / rank = 1 / 2; PEFT without alpha: 1
    for name, (down, up) in tensors.items():
        delta = (up.flatten(1) @ down.flatten(1)).reshape(base[name].weight.shape) * scale
        assert torch.allclose(fused[name].weight, base[name].weight + delta, atol=1e-6)
    untouched = "down_blocks.1.attentions.0.transformer_blocks.0.attn1.to_v"
    assert torch.equal(fused[untouched].weight, base[untouched].weight)
    calls = _unet_calls(pipe)
    image = backend.render(11, TARGETS)
    assert calls == [1] * 4  # 4 LCM steps, guidance 1: no negative-prompt pass
    assert image.shape == (SIZE, SIZE, 3) and image.dtype == np.uint8
    assert np.array_equal(image, backend.render(11, TARGETS))
    assert backend.name == "diffusers:tiny-sdxl" and backend.model_hash != sdxl.model_hash


def test_lcm_lora_missing_or_foreign_is_a_clear_error(models_dir, monkeypatch):
    from safetensors.torch import save_file

    with pytest.raises(ModelMissing, match="LCM-LoRA file .*nope.safetensors is missing"):
        diffusion.resolve_model("tiny-sdxl", lcm_lora="nope.safetensors")
    foreign = models_dir / "foreign.safetensors"
    save_file({"lora_unet_not_a_layer.lora_down.weight": torch.zeros(2, 4), "lora_unet_not_a_layer.lora_up.weight": torch.zeros(4, 2)}, str(foreign))
    with pytest.raises(ModelCorrupt, match="names no module of this UNet"):
        diffusion.DiffusionGenerator("tiny-sdxl", device="cpu", lcm_lora="foreign.safetensors")
    sgm = models_dir / "sgm.safetensors"
    save_file({"lora_unet_input_blocks_4_1_proj_in.lora_down.weight": torch.zeros(2, 4), "lora_unet_input_blocks_4_1_proj_in.lora_up.weight": torch.zeros(4, 2)}, str(sgm))
    with pytest.raises(ModelCorrupt, match="original \\(sgm\\) UNet layer names"):
        diffusion.DiffusionGenerator("tiny-sdxl", device="cpu", lcm_lora="sgm.safetensors")
    garbage = models_dir / "garbage.safetensors"
    garbage.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ModelCorrupt, match="cannot be read as safetensors"):
        diffusion.DiffusionGenerator("tiny-sdxl", device="cpu", lcm_lora="garbage.safetensors")


# --- the avatar pipeline on the diffusers backend ---------------------------------------------------


def test_generate_avatars_renders_batches_through_the_diffusion_pipeline(analyzer, models_dir, monkeypatch):
    # ``analyzer`` (session scope) loads the real face models before models_dir points elsewhere
    monkeypatch.setenv("SAFEFACE_DIFFUSERS_MODEL", "tiny-sdxl")
    backend = get_backend("diffusers")
    batches = []
    original = backend.render_batch

    def spy(seeds, targets_list):
        images = original(seeds, targets_list)
        batches.append((list(seeds), list(targets_list), images))
        return images

    monkeypatch.setattr(backend, "render_batch", spy)
    request = AttributeRequest(gender="feminine", glasses="yes")
    options = GenerationOptions(count=2, max_attempts=5, backend="diffusers")
    with pytest.raises(GenerationFailed, match=r"None of the 5 faces .* \(no face found \(5\)\)"):
        generate_avatars(request, seed=7, options=options, analyzer=analyzer)
    assert [len(seeds) for seeds, _, _ in batches] == [2, 2, 1]  # count per call, capped at max_attempts
    seeds = [s for batch, _, _ in batches for s in batch]
    assert seeds == [candidate_seed(7, attempt) for attempt in range(5)]
    targets = [t for _, batch, _ in batches for t in batch]
    assert targets == [render_targets(s, request) for s in seeds]
    assert all(img.shape == (SIZE, SIZE, 3) and img.dtype == np.uint8 for _, _, images in batches for img in images)


def test_generate_avatars_keeps_batched_candidates_through_the_same_checks(models_dir, monkeypatch):
    """With measurement replaced (random weights draw no face), batched candidates are kept,
    labelled with the diffusion model, and the rejection logic is the StyleGAN one."""
    from engine.generate import pipeline
    from engine.generate.measure import Measurement

    monkeypatch.setenv("SAFEFACE_DIFFUSERS_MODEL", "tiny-sd15")
    backend = get_backend("diffusers")
    measured = []

    class Analyzer:
        def embed(self, image, face):
            return np.full(128, float(image.mean()), np.float32)  # distinct per image

    def fake_measure(image, analyzer, embed=False):
        measured.append(image)
        m = Measurement(faces=1, analysed_image=image)
        m.face = object()
        m.labels = {"gender": "feminine", "glasses": "yes"}
        m.raw = {k: 0.0 for k in ("monk", "ita", "age", "yaw", "pitch", "roll", "sharpness", "forehead_skin", "symmetry", "beside_face_texture")}
        return m

    monkeypatch.setattr(pipeline, "measure_face", fake_measure)
    monkeypatch.setattr(pipeline, "source_problems", lambda m: [])
    request = AttributeRequest(gender="feminine", glasses="yes")
    kept = generate_avatars(request, seed=3, options=GenerationOptions(count=2, max_attempts=8, backend="diffusers", uniqueness_margin=0.0), analyzer=Analyzer())
    assert [c.seed for c in kept] == [candidate_seed(3, 0), candidate_seed(3, 1)]
    assert all(c.generator == "diffusers:tiny-sd15" and c.model_hash == backend.model_hash for c in kept)
    assert np.array_equal(kept[1].image, backend.render(kept[1].seed, render_targets(kept[1].seed, request)))
