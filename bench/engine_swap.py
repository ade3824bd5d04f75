"""Engine speed and quality on this machine (issue 3's figures).

- image_ms: one-face 1080p photo end to end (decode -> analyse -> swap + verification -> encode),
  median of 7 runs, with per-stage medians and peak memory;
- video_fps: 720p talking-head video throughput including decode and encode;
- identity_protection / identity_transfer: on every corpus photo with faces, with two generated
  personas (accepted avatars, see persona_image), the share of swapped faces whose identity
  distance (dlib) to the original is >= 0.6, and the share within 0.6 of the persona;
- expression_correlation: Pearson correlation of mouth-open and eye-open ratios, output vs
  input, per frame of the corpus talking-head videos (the lower of the two);
- jitter_ratio: landmark jitter (second difference, in face sizes) of output vs input.
Contact sheets (input | output | persona) go to var/bench/contact/ (not committed: they hold
corpus pictures).

Usage: SAFEFACE_CORPUS=../shared/corpus .venv/bin/python bench/engine_swap.py
Writes bench/results/engine_swap.json.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.errors import EngineError  # noqa: E402
from engine.faces import FaceAnalyzer  # noqa: E402
from engine.generate.attributes import AttributeRequest  # noqa: E402
from engine.generate.pipeline import GenerationOptions, generate_avatars  # noqa: E402
from engine.media.image import load_image, save_image  # noqa: E402
from engine.media.video import iter_frames  # noqa: E402
from engine.swap.pipeline import prepare_persona, swap_image  # noqa: E402
from engine.swap.video import swap_video  # noqa: E402

CORPUS = Path(os.environ.get("SAFEFACE_CORPUS", ROOT.parent / "shared" / "corpus"))
CONTACT = ROOT / "var" / "bench" / "contact"
RESULTS = ROOT / "bench" / "results" / "engine_swap.json"
PERSONA_SEEDS = (1, 2)
VIDEOS = ("video_man_suit_talking_6s.mp4", "video_aoc_talking_5s.mp4", "video_woman_expressions_12s_silent.mp4")
SPEED_VIDEO = "video_man_glasses_selfie_portrait_12s_noaudio.mp4"  # 720x1280


def persona_image(seed: int, analyzer) -> np.ndarray:
    """The persona a user gets from the avatar pipeline with no attributes chosen: the first
    generated face that passes its swap-source checks (frontal, eyes open, forehead free, plain
    background...). A raw generator sample can be a face SafeFace would never offer."""
    return generate_avatars(AttributeRequest(), seed=seed, options=GenerationOptions(count=1), analyzer=analyzer)[0].image


def contact_sheet(name: str, before: np.ndarray, after: np.ndarray, persona: np.ndarray) -> None:
    height = 360

    def fit(image):
        return cv2.resize(image, (max(1, int(image.shape[1] * height / image.shape[0])), height), interpolation=cv2.INTER_AREA)

    CONTACT.mkdir(parents=True, exist_ok=True)
    sheet = np.hstack([fit(before), fit(after), fit(persona)])
    cv2.imwrite(str(CONTACT / f"{name}.jpg"), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])


def bench_image_speed(analyzer, persona) -> dict:
    face = load_image(CORPUS / "faces" / "face_obama_frontal.jpg").pixels
    canvas = np.full((1080, 1920, 3), 200, np.uint8)
    scaled = cv2.resize(face, (int(face.shape[1] * 1080 / face.shape[0]), 1080), interpolation=cv2.INTER_AREA)
    x = (1920 - scaled.shape[1]) // 2
    canvas[:, x:x + scaled.shape[1]] = scaled
    encoded = save_image(canvas, "jpeg")
    stages = {"decode": [], "analyse_swap_verify": [], "encode": [], "total": []}
    for _ in range(7):
        t0 = time.perf_counter()
        pixels = load_image(encoded).pixels
        t1 = time.perf_counter()
        out, _ = swap_image(pixels, persona, analyzer=analyzer)
        t2 = time.perf_counter()
        save_image(out, "jpeg")
        t3 = time.perf_counter()
        for key, value in (("decode", t1 - t0), ("analyse_swap_verify", t2 - t1), ("encode", t3 - t2), ("total", t3 - t0)):
            stages[key].append(value * 1000)
    return {key: round(statistics.median(values), 1) for key, values in stages.items()}


def bench_quality_images(analyzer, personas) -> dict:
    items = []
    for path in sorted((CORPUS / "faces").iterdir()):
        if path.suffix.lower() not in (".jpg", ".jpeg", ".png", ".webp") or path.name.startswith("noface"):
            continue
        try:
            rgb = load_image(path).pixels
        except EngineError as error:
            items.append({"item": path.name, "error": str(error)})
            continue
        for seed, persona in zip(PERSONA_SEEDS, personas):
            try:
                out, reports = swap_image(rgb, persona, analyzer=analyzer)
            except EngineError as error:
                items.append({"item": path.name, "persona": seed, "error": str(error)})
                continue
            contact_sheet(f"{path.stem}-persona{seed}", rgb, out, persona.image)
            for r in reports:
                items.append({
                    "item": path.name, "persona": seed, "face": r.index, "protected": r.protected,
                    "distance_to_original": None if r.distance_to_original is None else round(r.distance_to_original, 3),
                    "distance_to_persona": None if r.distance_to_persona is None else round(r.distance_to_persona, 3),
                    "shape_strength": r.shape_strength, "escalation_step": r.escalation_step,
                })
    measured = [i for i in items if i.get("distance_to_original") is not None]
    return {
        "identity_protection": round(sum(i["distance_to_original"] >= 0.6 for i in measured) / max(1, len(measured)), 3),
        "identity_transfer": round(sum(i["distance_to_persona"] < 0.6 for i in measured) / max(1, len(measured)), 3),
        "faces_measured": len(measured),
        "items": items,
    }


def _series(analyzer, path: Path):
    mouth, eyes, marks, sizes = [], [], [], []
    tracked = []
    for frame in iter_frames(path):
        rgb = frame.rgb
        faces = analyzer.track(rgb, tracked) if tracked else analyzer.analyze(rgb)
        if not faces:
            faces = analyzer.analyze(rgb)
        if not faces:
            mouth.append(np.nan); eyes.append(np.nan); marks.append(None); sizes.append(np.nan)
            tracked = []
            continue
        face = max(faces, key=lambda f: f.area)
        tracked = [face]
        mouth.append(face.mouth_open); eyes.append(float(np.mean(face.eye_open)))
        marks.append(face.landmarks[:, :2]); sizes.append(face.size)
    return np.array(mouth), np.array(eyes), marks, np.array(sizes)


def _jitter(marks, sizes) -> float:
    values = []
    for i in range(1, len(marks) - 1):
        if marks[i - 1] is None or marks[i] is None or marks[i + 1] is None:
            continue
        second = marks[i + 1] - 2 * marks[i] + marks[i - 1]
        values.append(float(np.linalg.norm(second, axis=1).mean() / sizes[i]))
    return float(np.mean(values)) if values else float("nan")


def _corr(a, b) -> float:
    ok = ~(np.isnan(a) | np.isnan(b))
    if ok.sum() < 5 or np.std(a[ok]) < 1e-6 or np.std(b[ok]) < 1e-6:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def bench_videos(analyzer, persona) -> dict:
    details = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in VIDEOS:
            src = CORPUS / "videos" / name
            dst = Path(tmp) / f"{src.stem}.mp4"
            report = swap_video(src, dst, persona, analyzer=analyzer)
            in_mouth, in_eyes, in_marks, in_sizes = _series(analyzer, src)
            out_mouth, out_eyes, out_marks, out_sizes = _series(analyzer, dst)
            details.append({
                "item": name, "frames": report.frames, "fps": round(report.fps, 1), "tracks": report.tracks,
                "mouth_correlation": round(_corr(in_mouth, out_mouth), 3),
                "eye_correlation": round(_corr(in_eyes, out_eyes), 3),
                "jitter_in": round(_jitter(in_marks, in_sizes), 5),
                "jitter_out": round(_jitter(out_marks, out_sizes), 5),
            })
        speed_dst = Path(tmp) / "speed.mp4"
        speed = swap_video(CORPUS / "videos" / SPEED_VIDEO, speed_dst, persona, analyzer=analyzer)
    correlations = [min(d["mouth_correlation"], d["eye_correlation"]) for d in details]
    ratios = [d["jitter_out"] / d["jitter_in"] for d in details if d["jitter_in"] > 0]
    return {
        "video_fps": round(speed.fps, 1),
        "video_fps_item": f"{SPEED_VIDEO} (720x1280, {speed.frames} frames, stages s: {speed.stage_seconds})",
        "expression_correlation": round(float(np.nanmin(correlations)), 3),
        "jitter_ratio": round(float(np.nanmax(ratios)), 3),
        "videos": details,
    }


def main() -> None:
    if not (CORPUS / "MANIFEST.md").exists():
        raise SystemExit(f"corpus not found at {CORPUS}: set SAFEFACE_CORPUS")
    analyzer = FaceAnalyzer.default()
    personas = [prepare_persona(persona_image(seed, analyzer), analyzer) for seed in PERSONA_SEEDS]
    image = bench_image_speed(analyzer, personas[0])
    quality = bench_quality_images(analyzer, personas)
    video = bench_videos(analyzer, personas[0])
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "image_ms": image["total"],
        "image_stages_ms": image,
        "video_fps": video["video_fps"],
        "identity_protection": quality["identity_protection"],
        "identity_transfer": quality["identity_transfer"],
        "expression_correlation": video["expression_correlation"],
        "jitter_ratio": video["jitter_ratio"],
        "peak_memory_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "video": {k: v for k, v in video.items() if k not in ("video_fps", "expression_correlation", "jitter_ratio")},
        "images": quality,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2, default=float) + "\n")
    summary = {k: report[k] for k in ("image_ms", "video_fps", "identity_protection", "identity_transfer", "expression_correlation", "jitter_ratio", "peak_memory_mb")}
    print(json.dumps(summary, indent=2))
    print(f"contact sheets: {CONTACT}")


if __name__ == "__main__":
    main()
