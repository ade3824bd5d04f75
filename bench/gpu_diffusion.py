"""GPU benchmark of the diffusers avatar generator: an SDXL-size UNet at 1024 px.

    .venv/bin/python bench/gpu_diffusion.py [--batches 1,4] [--steps 4,30] [--repeats 3]

Mobius and the other SDXL weights cannot be fetched here, and the time of a step does not depend
on the weight values, so the script builds the SDXL base 1.0 UNet (its config is written below:
block_out_channels 320/640/1280, transformer layers 1/2/10, cross-attention 2048, the text_time
addition embedding; 2.57 B parameters) and the SDXL VAE decoder with random weights, and times
what one avatar costs in ``engine.generate.diffusion``:

* ``steps`` denoising steps of the UNet at 128x128 latents (1024 px), with classifier-free
  guidance (UNet batch 2 per avatar per step), stepping a real scheduler (Euler for the full
  schedule, LCM for the few-step one), then the VAE decode to 1024x1024 pixels;
* ``lcm_no_cfg``: the LCM few-step schedule as the engine runs it with an LCM-LoRA (guidance 1,
  so no negative-prompt pass: UNet batch 1 per avatar per step).

The text encoders (one pass of 77 tokens per prompt) are left out: a few milliseconds.

On CUDA: fp16 UNet weights (the VAE decodes in fp32, as the SDXL pipeline upcasts it), PyTorch 2 scaled-dot-product attention (AttnProcessor2_0), warm-up once,
then the median of ``--repeats`` runs; ``seconds_per_avatar`` is a run's wall time over the batch
size. Peak memory is ``torch.cuda.max_memory_allocated``. Target: <= 0.5 s per 1024 px avatar with
the few-step schedule.

Without CUDA it records ``{"device": "cpu", "gpu": null, "reason": ...}`` plus a bounded CPU
measurement: one step of the same SDXL-size UNet (bf16 weights, ~5 GB) at a small latent.

Writes bench/results/gpu_diffusion.json.
"""
from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results" / "gpu_diffusion.json"

# stabilityai/stable-diffusion-xl-base-1.0 unet/config.json (the architecture Mobius fine-tunes).
SDXL_UNET = dict(
    sample_size=128,
    in_channels=4,
    out_channels=4,
    layers_per_block=2,
    block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10),
    use_linear_projection=True,
    cross_attention_dim=2048,
    addition_embed_type="text_time",
    addition_time_embed_dim=256,
    projection_class_embeddings_input_dim=2816,  # 6 size/crop ids x 256 + 1280 pooled text embedding
    norm_num_groups=32,
)
# The SDXL VAE (decoder used; 8x upsampling, 4 latent channels).
SDXL_VAE = dict(
    in_channels=3,
    out_channels=3,
    latent_channels=4,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4,
    up_block_types=("UpDecoderBlock2D",) * 4,
    layers_per_block=2,
    sample_size=1024,
    scaling_factor=0.13025,
)
TEXT_TOKENS = 77
POOLED = 1280
SCHEDULER = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", timestep_spacing="leading", steps_offset=1)


def random_model(cls, config: dict, device: str, dtype: torch.dtype):
    """The model with random weights, allocated straight in ``dtype`` on ``device`` (no fp32
    copy first: the SDXL UNet is 10 GB in fp32)."""
    from diffusers.models.attention_processor import AttnProcessor2_0

    with torch.device("meta"):
        model = cls(**config)
    model = model.to(dtype=dtype).to_empty(device=device)
    generator = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
            if name.endswith("bias") or tensor.ndim < 2:
                tensor.zero_() if name.endswith("bias") else tensor.fill_(1.0)
            else:
                tensor.normal_(0.0, 0.02, generator=generator)
    model.set_attn_processor(AttnProcessor2_0())
    return model.eval()


def conditioning(batch: int, device: str, dtype: torch.dtype, size: int) -> dict:
    ids = torch.tensor([size, size, 0, 0, size, size], device=device, dtype=dtype)
    return dict(
        encoder_hidden_states=torch.randn(batch, TEXT_TOKENS, 2048, device=device, dtype=dtype),
        added_cond_kwargs={"text_embeds": torch.randn(batch, POOLED, device=device, dtype=dtype), "time_ids": ids.repeat(batch, 1)},
    )


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def render(unet, vae, scheduler, *, avatars: int, steps: int, cfg: bool, device: str, dtype: torch.dtype, latent: int) -> float:
    """One batch of ``avatars`` through the full schedule and the VAE decode; returns seconds."""
    synchronize(device)
    started = time.perf_counter()
    unet_batch = avatars * (2 if cfg else 1)
    cond = conditioning(unet_batch, device, dtype, latent * 8)
    latents = torch.randn(avatars, 4, latent, latent, device=device, dtype=dtype) * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps, device=device)
    with torch.inference_mode():
        for t in scheduler.timesteps:
            model_in = torch.cat([latents] * 2) if cfg else latents
            model_in = scheduler.scale_model_input(model_in, t)
            noise = unet(model_in, t, **cond).sample
            if cfg:
                uncond, text = noise.chunk(2)
                noise = uncond + 5.0 * (text - uncond)
            latents = scheduler.step(noise, t, latents).prev_sample
        if vae is not None:
            vae.decode(latents.to(next(vae.parameters()).dtype) / SDXL_VAE["scaling_factor"]).sample
    synchronize(device)
    return time.perf_counter() - started


def bench_cuda(args) -> dict:
    from diffusers import AutoencoderKL, EulerDiscreteScheduler, LCMScheduler, UNet2DConditionModel

    device, dtype = "cuda", torch.float16
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    unet = random_model(UNet2DConditionModel, SDXL_UNET, device, dtype)
    vae = random_model(AutoencoderKL, SDXL_VAE, device, torch.float32)  # SDXL VAE: force_upcast
    schedulers = {"euler": EulerDiscreteScheduler(**SCHEDULER), "lcm": LCMScheduler(**SCHEDULER)}
    runs = []
    for avatars in args.batches:
        cases = [(steps, True, "lcm" if steps <= 8 else "euler") for steps in args.steps]
        cases += [(min(args.steps), False, "lcm")]  # LCM-LoRA as the engine runs it: guidance 1
        for steps, cfg, kind in cases:
            scheduler = schedulers[kind]
            torch.cuda.reset_peak_memory_stats()
            render(unet, vae, scheduler, avatars=avatars, steps=steps, cfg=cfg, device=device, dtype=dtype, latent=128)
            times = [render(unet, vae, scheduler, avatars=avatars, steps=steps, cfg=cfg, device=device, dtype=dtype, latent=128)
                     for _ in range(args.repeats)]
            seconds = statistics.median(times)
            runs.append({
                "avatars_per_call": avatars,
                "steps": steps,
                "scheduler": kind,
                "cfg": cfg,
                "unet_batch": avatars * (2 if cfg else 1),
                "seconds_per_call": round(seconds, 4),
                "seconds_per_avatar": round(seconds / avatars, 4),
                "seconds_per_unet_step": round(seconds / steps, 4),
                "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
                "runs_s": [round(t, 4) for t in times],
            })
            print(json.dumps(runs[-1]), flush=True)
    few = [r["seconds_per_avatar"] for r in runs if r["steps"] <= 8]
    return {
        "device": "cuda",
        "gpu": torch.cuda.get_device_name(0),
        "gpu_memory_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
        "dtype": "float16 UNet; float32 VAE decode (the SDXL VAE's force_upcast, as the pipeline runs it)",
        "attention": "AttnProcessor2_0 (torch scaled_dot_product_attention)",
        "resolution": 1024,
        "unet_parameters": sum(p.numel() for p in unet.parameters()),
        "runs": runs,
        "target_seconds_per_avatar_few_step": 0.5,
        "best_few_step_seconds_per_avatar": min(few) if few else None,
        "meets_target": bool(few) and min(few) <= 0.5,
    }


def bench_cpu(args) -> dict:
    """Bounded CPU figure: one SDXL-size UNet step (CFG batch 2) at a small latent, bf16."""
    from diffusers import UNet2DConditionModel

    device, dtype = "cpu", torch.bfloat16
    started = time.perf_counter()
    unet = random_model(UNet2DConditionModel, SDXL_UNET, device, dtype)
    built = time.perf_counter() - started
    latent = args.cpu_latent
    cond = conditioning(2, device, dtype, latent * 8)
    sample = torch.randn(2, 4, latent, latent, dtype=dtype)
    times = []
    with torch.inference_mode():
        unet(sample, 500, **cond)  # warm-up
        for _ in range(args.cpu_repeats):
            t0 = time.perf_counter()
            unet(sample, 500, **cond)
            times.append(time.perf_counter() - t0)
    return {
        "device": "cpu",
        "gpu": None,
        "reason": "no GPU lent to this session",
        "cpu": platform.processor() or platform.machine(),
        "cpu_threads": torch.get_num_threads(),
        "cpu_measurement": {
            "what": f"one SDXL-size UNet step (random weights, bf16), CFG batch 2, {latent}x{latent} latent ({latent * 8} px)",
            "unet_parameters": sum(p.numel() for p in unet.parameters()),
            "build_seconds": round(built, 1),
            "seconds_per_step": round(statistics.median(times), 3),
            "runs_s": [round(t, 3) for t in times],
            "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 2),
        },
        "note": "Run this script on a CUDA machine for the 1024 px figures (4 and 30 steps).",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", default="1,4", help="avatars per pipeline call (CUDA)")
    parser.add_argument("--steps", default="4,30", help="denoising steps (CUDA)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cpu-latent", type=int, default=32, help="latent side of the CPU measurement")
    parser.add_argument("--cpu-repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    args.batches = [int(v) for v in args.batches.split(",")]
    args.steps = [int(v) for v in args.steps.split(",")]
    import diffusers

    result = bench_cuda(args) if torch.cuda.is_available() else bench_cpu(args)
    result.update({
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "python": platform.python_version(),
        "date": time.strftime("%Y-%m-%d"),
        "command": "python bench/gpu_diffusion.py " + " ".join(sys.argv[1:] if argv is None else argv),
    })
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
