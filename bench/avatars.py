"""Avatar generation benchmark: speed, attribute accuracy and fairness of the embedded generator.

    .venv/bin/python bench/avatars.py [--fair 500] [--per-value 8]

* ``seconds_per_avatar``: median over generation jobs (4 candidates each, the site's setting,
  random requests, on a platform that already holds ``--library`` personas to stay unique from)
  of the job's wall time divided by the candidates it returned - rendering, measuring, checking
  and embedding included, models already loaded. A job keeps trying (up to its attempt limit)
  until 4 candidates match every requested attribute.
* ``attribute_accuracy``: for each attribute value, ``--per-value`` avatars requested with only
  that attribute (unique within their job); the share whose measured value equals the request. Per attribute, the mean over
  its values; the headline is the lowest attribute.
* fairness: ``--fair`` avatars with nothing requested; the measured Monk tone, Monk group, gender
  presentation and age band distributions. A Monk group passes when it has at least half of its
  fair share (1/3).

Writes bench/results/avatars.json and, so a person can check the measurements, one contact sheet
per attribute value plus the fairness sample under var/bench/avatars/ (generated faces only).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.faces.analyzer import FaceAnalyzer  # noqa: E402
from engine.generate.attributes import CHOICES, SKIN_TONES, AttributeRequest  # noqa: E402
from engine.errors import GenerationFailed  # noqa: E402
from engine.generate.pipeline import GenerationOptions, generate_avatars  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "avatars.json"
SHEETS = ROOT / "var" / "bench" / "avatars"


def sheet(name: str, images: list[np.ndarray], captions: list[str], columns: int = 8, side: int = 160) -> None:
    SHEETS.mkdir(parents=True, exist_ok=True)
    tiles = []
    for image, caption in zip(images, captions):
        tile = cv2.cvtColor(cv2.resize(image, (side, side), interpolation=cv2.INTER_AREA), cv2.COLOR_RGB2BGR)
        cv2.putText(tile, caption, (3, side - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 3)
        cv2.putText(tile, caption, (3, side - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1)
        tiles.append(tile)
    while len(tiles) % columns:
        tiles.append(np.zeros((side, side, 3), np.uint8))
    rows = [np.hstack(tiles[i : i + columns]) for i in range(0, len(tiles), columns)]
    cv2.imwrite(str(SHEETS / f"{name}.jpg"), np.vstack(rows), [cv2.IMWRITE_JPEG_QUALITY, 85])


def run_job(request: AttributeRequest, seed: int, analyzer: FaceAnalyzer, avoid, count: int = 4):
    started = time.perf_counter()
    candidates = generate_avatars(
        request, seed=seed, options=GenerationOptions(count=count), analyzer=analyzer,
        avoid=np.array(avoid) if avoid else None,
    )
    return candidates, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fair", type=int, default=500)
    parser.add_argument("--per-value", type=int, default=8)
    parser.add_argument("--speed-jobs", type=int, default=12)
    parser.add_argument("--library", type=int, default=200, help="personas already on the platform in the speed jobs")
    args = parser.parse_args()
    analyzer = FaceAnalyzer.default()
    run_job(AttributeRequest(), 1, analyzer, None, count=1)  # load every model once
    failures: Counter = Counter()

    def make(request: AttributeRequest, wanted: int, seed: int, avoid) -> list:
        made = []
        while len(made) < wanted:
            try:
                candidates, _ = run_job(request, seed, analyzer, avoid, count=min(4, wanted - len(made)))
                made.extend(candidates)
            except GenerationFailed:
                failures[str(request.as_dict())] += 1
            seed += 1
        return made

    # --- fairness: nothing requested --------------------------------------------------------------
    fair = make(AttributeRequest(), args.fair, 50_000, None)
    n = len(fair)
    monk = Counter(c.measured["monk"] for c in fair)
    groups = Counter(c.measured["skin_tone"] for c in fair)
    gender = Counter(c.measured["gender"] for c in fair)
    age = Counter(c.measured["age_band"] for c in fair)
    group_share = {g: round(groups.get(g, 0) / n, 3) for g in SKIN_TONES}
    sheet("fair-sample", [c.image for c in fair[:96]],
          [f"M{c.measured['monk']} {c.measured['gender'][0]} {c.measured['age_band']}" for c in fair[:96]], columns=12, side=128)
    print(f"fairness: {group_share}", flush=True)

    # --- speed: random requests on a platform that already has LIBRARY personas ------------------
    library = [c.embedding for c in fair[: args.library]]
    rng = np.random.default_rng(2026)
    per_avatar, speed_jobs = [], []
    for job in range(args.speed_jobs):
        chosen = {name: sorted(values)[rng.integers(len(values))] for name, values in CHOICES.items() if rng.random() < 0.35}
        request = AttributeRequest(**chosen)
        try:
            candidates, elapsed = run_job(request, 10_000 + job, analyzer, library)
        except GenerationFailed:
            failures[str(request.as_dict())] += 1
            continue
        per_avatar.append(elapsed / len(candidates))
        speed_jobs.append({"request": request.as_dict(), "seconds": round(elapsed, 2), "avatars": len(candidates),
                           "all_matched": sum(c.matches_all for c in candidates),
                           "refined": sum(c.refined for c in candidates)})
        print(f"speed job {job}: {elapsed:.1f} s for {len(candidates)} ({request.as_dict()})", flush=True)
    any_request = []
    for job in range(4):
        candidates, elapsed = run_job(AttributeRequest(), 30_000 + job, analyzer, library)
        any_request.append(elapsed / len(candidates))

    # --- attribute accuracy ---------------------------------------------------------------------
    per_value, per_attribute = {}, {}
    for name, values in CHOICES.items():
        shares = []
        for value in values:
            request = AttributeRequest(**{name: value})
            made = make(request, args.per_value, 20_000 + len(per_value) * 100, None)
            hits = sum(c.matched[name] for c in made)
            per_value[f"{name}={value}"] = round(hits / len(made), 3)
            shares.append(hits / len(made))
            sheet(f"{name}-{value}", [c.image for c in made],
                  [("ok " if c.matched[name] else "MISS ") + str(c.measured.get(name))
                   + (f" {c.measured['age']:.0f}y" if name == "age_band" else "") + (" r" if c.refined else "") for c in made])
            print(f"{name}={value}: {hits}/{len(made)}", flush=True)
        per_attribute[name] = round(float(np.mean(shares)), 3)

    results = {
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores, Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
        "seconds_per_avatar": round(statistics.median(per_avatar), 3),
        "seconds_per_avatar_nothing_requested": round(statistics.median(any_request), 3),
        "platform_library_for_speed": args.library,
        "uniqueness_margin": GenerationOptions().uniqueness_margin,
        "failed_jobs": dict(failures),
        "attribute_accuracy": min(per_attribute.values()),
        "attribute_accuracy_by_attribute": per_attribute,
        "attribute_accuracy_by_value": per_value,
        "avatars_per_value": args.per_value,
        "fairness": {
            "avatars": n,
            "monk_group_share": group_share,
            "monk_group_fair_share": round(1 / len(SKIN_TONES), 3),
            "monk_groups_pass": all(share >= 0.5 / len(SKIN_TONES) for share in group_share.values()),
            "monk_tone_share": {str(t): round(monk.get(t, 0) / n, 3) for t in range(1, 11)},
            "gender_share": {g: round(gender.get(g, 0) / n, 3) for g in CHOICES["gender"]},
            "age_band_share": {a: round(age.get(a, 0) / n, 3) for a in CHOICES["age_band"]},
        },
        "speed_jobs": speed_jobs,
        "contact_sheets": str(SHEETS.relative_to(ROOT)),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps({k: results[k] for k in ("seconds_per_avatar", "attribute_accuracy", "attribute_accuracy_by_attribute")}, indent=2))
    print(json.dumps(results["fairness"], indent=2))


if __name__ == "__main__":
    main()
