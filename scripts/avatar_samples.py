"""Render and measure StyleGAN samples: the labelled data that scripts/learn_directions.py fits
the attribute directions on.

    .venv/bin/python scripts/avatar_samples.py --count 2500 --out var/avatar_samples.npz

Each sample keeps its seed, its mapped style (before truncation), the raw measurements of
engine.generate.measure and a 128 px thumbnail (for contact sheets). The file is rewritten every
50 samples, so an interrupted run keeps what it made and ``--resume`` continues it.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.faces.analyzer import FaceAnalyzer  # noqa: E402
from engine.generate import stylegan  # noqa: E402
from engine.generate.measure import measure_face  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2500)
    parser.add_argument("--first-seed", type=int, default=1_000_000)
    parser.add_argument("--out", type=Path, default=Path("var/avatar_samples.npz"))
    parser.add_argument("--resume", action="store_true")
    args = parser.parse_args()
    analyzer = FaceAnalyzer.default()
    options = stylegan.GeneratorOptions()
    seeds, styles, raws, thumbs = [], [], [], []
    if args.resume and args.out.exists():
        data = np.load(args.out, allow_pickle=False)
        seeds, styles, thumbs = list(data["seeds"]), list(data["styles"]), list(data["thumbs"])
        raws = json.loads(str(data["raw"]))
    start = time.perf_counter()
    for seed in range(args.first_seed + len(seeds), args.first_seed + args.count):
        w = stylegan.forward_mapping(stylegan.prepare_latent(seed))
        average = stylegan._average_style(options.average_samples)
        style = average + options.truncation * (w - average)
        image = stylegan.normalize_image(stylegan.forward_synthesis(style))
        m = measure_face(image, analyzer, embed=False)
        seeds.append(seed)
        styles.append(w[0])
        raws.append(m.raw if m.faces else {})
        thumbs.append(cv2.resize(image, (128, 128), interpolation=cv2.INTER_AREA))
        if len(seeds) % 50 == 0 or len(seeds) == args.count:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.out.with_suffix(".tmp.npz")
            np.savez(tmp, seeds=np.array(seeds), styles=np.array(styles, np.float32), thumbs=np.array(thumbs),
                     raw=json.dumps(raws))
            tmp.replace(args.out)
            rate = (time.perf_counter() - start) / max(len(seeds), 1)
            print(f"{len(seeds)} samples, {rate:.2f} s each", flush=True)


if __name__ == "__main__":
    main()
