"""Explicit-content gate on the media corpus: false positives, speed and margin.

    SAFEFACE_CORPUS=../shared/corpus .venv/bin/python bench/content_gate.py [--min-score 0.5] [--max-share 0.1]

The corpus holds no explicit material, so every flag is a false positive.

* images: every picture in ``$SAFEFACE_CORPUS/faces`` checked once; ``image_fp_rate`` is the share
  flagged.
* videos: every video in ``$SAFEFACE_CORPUS/videos`` sampled at one frame per second (every
  round(fps)-th frame); ``sample_fp_rate`` is the share of samples flagged, and a video is
  refused when its flagged share is above ``--max-share`` (the site's rule).
* ``ms_per_check``: wall time of :meth:`ContentChecker.check` (letterbox + model + decoding,
  decoding of the media excluded), mean and p95 over every image and sample, model loaded.
* margin: ``max_explicit_score`` is the highest explicit-class score the model gives anywhere on
  the corpus (every anchor, no floor); ``margin_to_threshold`` = min_score minus that.

Writes bench/results/content_gate.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.media import iter_frames, load_image, probe_video  # noqa: E402
from engine.safety.content import (  # noqa: E402
    DEFAULT_MIN_SCORE,
    MAX_FLAGGED_SHARE,
    ContentChecker,
    flagged_share,
    normalize_content,
    peak_explicit_score,
)

CORPUS = Path(os.environ.get("SAFEFACE_CORPUS", ROOT.parent / "shared" / "corpus"))
RESULTS = ROOT / "bench" / "results" / "content_gate.json"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".gif")


def check(checker: ContentChecker, rgb: np.ndarray, timings: list[float]):
    """The verdict, the floor-free explicit peak, and the check's time (the same work as
    ``checker.check``: prepare -> forward -> normalize)."""
    started = time.perf_counter()
    raw, letterbox = checker.raw(rgb)
    verdict = normalize_content(raw, letterbox, checker.options)
    timings.append((time.perf_counter() - started) * 1000)
    return verdict, peak_explicit_score(raw)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE)
    parser.add_argument("--max-share", type=float, default=MAX_FLAGGED_SHARE)
    args = parser.parse_args()
    if not (CORPUS / "MANIFEST.md").is_file():
        sys.exit(f"SAFEFACE_CORPUS={CORPUS} does not hold the media corpus")

    checker = ContentChecker(min_score=args.min_score)
    checker.check(np.zeros((320, 320, 3), np.uint8))  # warm-up: first-run allocations
    timings: list[float] = []

    images = sorted(p for p in (CORPUS / "faces").iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    per_image = {}
    for path in images:
        verdict, peak = check(checker, load_image(path).pixels, timings)
        per_image[path.name] = {
            "flagged": verdict.flagged,
            "max_explicit_score": round(peak, 4),
            "findings": [f"{f.label} {f.score:.2f}" for f in verdict.findings],
        }

    videos = sorted(p for p in (CORPUS / "videos").iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    per_video = {}
    for path in videos:
        info = probe_video(path)
        every = max(1, round(float(info.fps)))
        verdicts, peaks = [], []
        for frame in iter_frames(path, every=every):
            verdict, peak = check(checker, frame.rgb, timings)
            verdicts.append(verdict)
            peaks.append(peak)
        share = flagged_share(verdicts)
        per_video[path.name] = {
            "samples": len(verdicts),
            "every": every,
            "flagged": sum(v.flagged for v in verdicts),
            "flagged_share": round(share, 3),
            "refused": share > args.max_share,
            "max_explicit_score": round(max(peaks, default=0.0), 4),
        }

    image_flags = sum(v["flagged"] for v in per_image.values())
    samples = sum(v["samples"] for v in per_video.values())
    sample_flags = sum(v["flagged"] for v in per_video.values())
    peaks = [v["max_explicit_score"] for v in (*per_image.values(), *per_video.values())]
    top = max(peaks, default=0.0)
    top_file = max((*per_image.items(), *per_video.items()), key=lambda kv: kv[1]["max_explicit_score"])[0]
    results = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "model": checker.model_path.name,
        "providers": list(checker.session.get_providers()),
        "min_score": args.min_score,
        "max_share": args.max_share,
        "images_checked": len(per_image),
        "images_flagged": image_flags,
        "image_fp_rate": round(image_flags / max(1, len(per_image)), 4),
        "videos_checked": len(per_video),
        "video_samples_checked": samples,
        "video_samples_flagged": sample_flags,
        "sample_fp_rate": round(sample_flags / max(1, samples), 4),
        "videos_refused": sum(v["refused"] for v in per_video.values()),
        "ms_per_check_mean": round(float(np.mean(timings)), 2),
        "ms_per_check_p95": round(float(np.percentile(timings, 95)), 2),
        "checks_timed": len(timings),
        "max_explicit_score": round(top, 4),
        "max_explicit_score_file": top_file,
        "margin_to_threshold": round(args.min_score - top, 4),
        "per_image": per_image,
        "per_video": per_video,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")

    print(f"{'file':44} {'checks':>6} {'flagged':>7} {'max explicit':>12}")
    for name, row in per_image.items():
        print(f"{name[:44]:44} {1:>6} {int(row['flagged']):>7} {row['max_explicit_score']:>12.4f}")
    for name, row in per_video.items():
        refused = "  REFUSED" if row["refused"] else ""
        print(f"{name[:44]:44} {row['samples']:>6} {row['flagged']:>7} {row['max_explicit_score']:>12.4f}{refused}")
    print()
    print(
        f"images: {image_flags}/{len(per_image)} flagged (FP rate {results['image_fp_rate']:.3f}); "
        f"video samples: {sample_flags}/{samples} flagged (FP rate {results['sample_fp_rate']:.3f}); "
        f"videos refused: {results['videos_refused']}/{len(per_video)}"
    )
    print(
        f"ms per check: mean {results['ms_per_check_mean']}, p95 {results['ms_per_check_p95']} "
        f"({results['providers'][0]}); max explicit score {top:.4f} ({top_file}), "
        f"margin to {args.min_score}: {results['margin_to_threshold']:.4f}"
    )
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
