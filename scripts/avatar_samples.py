"""Render and measure StyleGAN samples: the labelled data that scripts/learn_directions.py fits
the attribute directions on.

    .venv/bin/python scripts/avatar_samples.py --count 3000 --out var/avatar_samples.npz

Each sample keeps its seed, its truncation, the style the synthesis network saw (the mapped style
pulled toward the average by that truncation), the raw measurements of engine.generate.measure
and a 128 px thumbnail (for contact sheets). Truncations are drawn from ``--truncation`` (a
range): the wider spread of styles puts more samples at the ends of each attribute (older faces,
glasses, red hair) than the generator's own 0.7 would, which the fit and the calibration of each
direction need. The file is rewritten every 200 samples, so an interrupted run keeps what it made
and ``--resume`` continues it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.faces.analyzer import FaceAnalyzer  # noqa: E402
from engine.generate import stylegan  # noqa: E402
from engine.generate.measure import measure_face  # noqa: E402


def sample_style(seed: int, truncation_range: tuple[float, float]) -> tuple[float, np.ndarray]:
    """(truncation, synthesis input) of sample ``seed``; the truncation is drawn from the seed."""
    lo, hi = truncation_range
    truncation = float(np.random.default_rng([seed, 3]).uniform(lo, hi))
    options = stylegan.GeneratorOptions(truncation=truncation)
    return truncation, stylegan.style_for_seed(seed, options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3000)
    parser.add_argument("--first-seed", type=int, default=1_000_000)
    parser.add_argument("--truncation", type=float, nargs=2, default=(0.6, 1.0), metavar=("LO", "HI"))
    parser.add_argument("--out", type=Path, default=Path("var/avatar_samples.npz"))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    analyzer = FaceAnalyzer.default()
    seeds, truncations, styles, raws, thumbs = [], [], [], [], []
    if args.resume and args.out.exists():
        data = np.load(args.out, allow_pickle=False)
        seeds, truncations, styles = list(data["seeds"]), list(data["truncations"]), list(data["styles"])
        thumbs, raws = list(data["thumbs"]), json.loads(str(data["raw"]))

    def render(seed: int):
        truncation, style = sample_style(seed, tuple(args.truncation))
        return seed, truncation, style, stylegan.normalize_image(stylegan.forward_synthesis(style))

    todo = list(range(args.first_seed + len(seeds), args.first_seed + args.count))
    start = time.perf_counter()
    # The next sample renders on a second thread (OpenVINO releases the GIL) while this one is measured.
    with ThreadPoolExecutor(max_workers=1) as pool:
        pending = pool.submit(render, todo[0]) if todo else None
        for position in range(len(todo)):
            seed, truncation, style, image = pending.result()
            if position + 1 < len(todo):
                pending = pool.submit(render, todo[position + 1])
            m = measure_face(image, analyzer, embed=False)
            seeds.append(seed)
            truncations.append(truncation)
            styles.append(style[0])
            raws.append(m.raw if m.faces else {})
            thumbs.append(cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA))
            if len(seeds) % 200 == 0 or len(seeds) == args.count:
                args.out.parent.mkdir(parents=True, exist_ok=True)
                tmp = args.out.with_suffix(".tmp.npz")
                np.savez(tmp, seeds=np.array(seeds), truncations=np.array(truncations, np.float32),
                         styles=np.array(styles, np.float32), thumbs=np.array(thumbs), raw=json.dumps(raws))
                tmp.replace(args.out)
                rate = (time.perf_counter() - start) / max(position + 1, 1)
                print(f"{len(seeds)} samples, {rate:.2f} s each", flush=True)


if __name__ == "__main__":
    main()
