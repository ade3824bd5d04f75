"""Learn the attribute directions of engine/generate/directions.npz from labelled samples.

    .venv/bin/python scripts/avatar_samples.py --count 2500      # render + measure (~20 min)
    .venv/bin/python scripts/learn_directions.py                  # fit, write directions.npz

For every measure (skin ITA, estimated age, gender logit, smile score, glasses edge energy,
facial-hair share, long-hair share, background lightness, hair lightness/redness/greyness, head
yaw and pitch, cheek light difference, texture beside the face, forehead skin share) a ridge
regression on the truncated style gives a unit direction; a straight line through the samples'
projections on that direction calibrates measure units to projections. Each attribute value and
each always-on constraint is a range in measure units (below), stored as a projection range.
The fit (R^2 per measure, the sample count) is printed and written to bench/results.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.generate import stylegan  # noqa: E402
from engine.generate.directions import DIRECTIONS_FILE  # noqa: E402

RIDGE = 30.0


def _logit(p: float) -> float:
    p = min(max(p, 0.02), 0.98)
    return math.log(p / (1 - p))


def _hair(raw: dict, index: int) -> float:
    lab = raw.get("hair_lab") or [float("nan")] * 3
    if raw.get("hair_coverage", 0) <= 0.25 or not np.isfinite(lab[0]):
        return float("nan")
    if index == 3:
        return math.hypot(lab[1], lab[2])
    return lab[index]


# measure name -> how to read it from a sample's raw measurements
MEASURES = {
    "ita": lambda r: r["ita"],
    "age": lambda r: r["age"],
    "gender_logit": lambda r: _logit(r["feminine"]),
    "smile": lambda r: r["smile"],
    "glasses": lambda r: r["glasses"],
    "facial_hair": lambda r: r["facial_hair"],
    "hair_long_share": lambda r: r["hair_long_share"],
    "background_l": lambda r: r["background_l"],
    "hair_l": lambda r: _hair(r, 0),
    "hair_a": lambda r: _hair(r, 1),
    "hair_chroma": lambda r: _hair(r, 3),
    "yaw": lambda r: r["yaw"],
    "pitch": lambda r: r["pitch"],
    "cheek_l_difference": lambda r: r["cheek_l_difference"],
    "beside_face_texture": lambda r: r["beside_face_texture"],
    "forehead_skin": lambda r: r["forehead_skin"],
}

# attribute -> value -> [(measure, lo, hi)] in measure units
TARGETS = {
    "skin_tone": {"light": [("ita", 74, 86)], "medium": [("ita", 30, 58)], "deep": [("ita", -35, -15)]},
    "age_band": {"young": [("age", 23, 28)], "adult": [("age", 38, 46)], "middle": [("age", 56, 66)], "senior": [("age", 78, 95)]},
    "gender": {"feminine": [("gender_logit", 2.5, 4.0)], "masculine": [("gender_logit", -4.0, -2.5)]},
    "expression": {"smile": [("smile", 0.24, 0.32)], "neutral": [("smile", -0.02, 0.07)]},
    "glasses": {"yes": [("glasses", 1.1, 1.5)], "no": [("glasses", 0.15, 0.3)]},
    "facial_hair": {"yes": [("facial_hair", 0.75, 0.95)], "no": [("facial_hair", 0.02, 0.25)]},
    "hair_length": {"long": [("hair_long_share", 0.7, 0.95)], "short": [("hair_long_share", 0.0, 0.05)]},
    "background": {"light": [("background_l", 72, 90)], "dark": [("background_l", 12, 32)]},
    "hair_colour": {
        "black": [("hair_l", 10, 17)],
        "brown": [("hair_l", 27, 38), ("hair_a", 6, 11)],
        "blonde": [("hair_l", 60, 70), ("hair_chroma", 18, 26)],
        "red": [("hair_a", 17, 24), ("hair_l", 35, 50)],
        "grey": [("hair_chroma", 2, 6), ("hair_l", 55, 70)],
    },
}

# directions kept in place when an attribute is edited (what the attribute's own direction drags
# along in FFHQ: darker skin comes with darker, warmer exposures)
HOLDS = {"skin_tone": ["background_l"], "hair_colour": ["background_l"]}

# always on: what makes a face fit to be a swap source
CONSTRAINTS = {
    "frontal_yaw": ("yaw", -3.0, 3.0),
    "frontal_pitch": ("pitch", -5.0, 2.0),
    "even_light": ("cheek_l_difference", 0.0, 5.0),
    "plain_beside_face": ("beside_face_texture", 15.0, 45.0),
    "forehead_free": ("forehead_skin", 0.95, 1.0),
    "adult": ("age", 22.0, 80.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=ROOT / "var/avatar_samples.npz")
    parser.add_argument("--out", type=Path, default=DIRECTIONS_FILE)
    parser.add_argument("--report", type=Path, default=ROOT / "bench/results/avatar_directions.json")
    args = parser.parse_args()
    data = np.load(args.samples, allow_pickle=False)
    raws = json.loads(str(data["raw"]))
    keep = [i for i, r in enumerate(raws) if r]
    options = stylegan.GeneratorOptions()
    average = stylegan._average_style(options.average_samples)[0]
    styles = average + options.truncation * (data["styles"][keep] - average)  # what synthesis sees
    raws = [raws[i] for i in keep]
    names = list(MEASURES)
    vectors, calibration, report = [], {}, {"samples": len(raws), "ridge": RIDGE, "measures": {}}
    rng = np.random.default_rng(0)
    held_out = rng.random(len(raws)) < 0.2  # R^2 is reported on samples the fit did not see

    def fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        xc = x - x.mean(axis=0)
        coef = np.linalg.solve(xc.T @ xc + RIDGE * np.eye(xc.shape[1]), xc.T @ (y - y.mean()))
        return coef / np.linalg.norm(coef)

    for name in names:
        y = np.array([MEASURES[name](r) for r in raws], np.float64)
        ok = np.isfinite(y)
        train, test = ok & ~held_out, ok & held_out
        probe = fit(styles[train].astype(np.float64), y[train])
        slope, intercept = np.polyfit(styles[train] @ probe, y[train], 1)
        residual = y[test] - (slope * (styles[test] @ probe) + intercept)
        r2 = 1 - np.var(residual) / np.var(y[test])
        direction = fit(styles[ok].astype(np.float64), y[ok])  # final: every sample
        p = styles[ok] @ direction
        slope, intercept = np.polyfit(p, y[ok], 1)
        vectors.append(direction.astype(np.float32))
        calibration[name] = (slope, intercept)
        report["measures"][name] = {"held_out_r2": round(float(r2), 3), "samples": int(ok.sum()),
                                    "projection_sd": round(float(np.std(p)), 3)}
        print(f"{name:22s} held-out R2 {r2:.2f}  n={ok.sum()}")

    def projection_range(measure: str, lo: float, hi: float) -> list:
        slope, intercept = calibration[measure]
        a, b = (lo - intercept) / slope, (hi - intercept) / slope
        return [names.index(measure), float(min(a, b)), float(max(a, b))]

    targets = {
        attribute: {value: [projection_range(*spec) for spec in specs] for value, specs in values.items()}
        for attribute, values in TARGETS.items()
    }
    constraints = {name: projection_range(*spec) for name, spec in CONSTRAINTS.items()}
    meta = {"names": names, "targets": targets, "constraints": constraints, "holds": HOLDS, "samples": len(raws),
            "truncation": options.truncation}
    np.savez_compressed(args.out, vectors=np.stack(vectors), meta=json.dumps(meta))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) and {args.report}")


if __name__ == "__main__":
    main()
