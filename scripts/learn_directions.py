"""Learn the attribute directions of engine/generate/directions.npz from labelled samples.

    .venv/bin/python scripts/avatar_samples.py --count 3000      # render + measure (~25 min)
    .venv/bin/python scripts/learn_directions.py                 # fit, write directions.npz

For every measure of ``engine.generate.directions.MEASURES`` (skin ITA, estimated age, gender
logit, smile score, glasses edge energy, facial-hair share, long-hair share, background
lightness, hair lightness/redness/chroma, head yaw and pitch, cheek light difference, texture
beside the face, forehead skin share) a ridge regression on the style the synthesis network saw
(its strength chosen per measure on held-out samples) gives a unit direction; a straight line through the samples' projections on that direction
calibrates measure units to projections. Each attribute value and each always-on constraint is a
range in measure units (below), stored both as a projection range (for the edit) and in measure
units with the calibration (for the closed-loop refinement of a candidate that missed a value or
failed a check).
The fit (R^2 per measure on held-out samples, the sample count) and, per attribute value, the
share of samples inside the value's projection range that measured that value are printed and
written to bench/results/avatar_directions.json.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from engine.generate.directions import DIRECTIONS_FILE, MEASURES, measure_value  # noqa: E402
from engine.generate.measure import labels_from_raw  # noqa: E402

RIDGES = (10.0, 30.0, 100.0, 300.0, 1000.0, 3000.0)  # per measure, the one with the best held-out R^2

# attribute -> value -> [(measure, lo, hi)] in measure units: well inside the value's band of the
# measure (engine.generate.measure), so that a face the direction moves there mostly reads as the
# value despite what the direction does not explain.
TARGETS = {
    "skin_tone": {"light": [("ita", 74, 86)], "medium": [("ita", 30, 58)], "deep": [("ita", -55, -30)]},
    "age_band": {"young": [("age", 22, 27)], "adult": [("age", 35, 40)], "middle": [("age", 50, 55)], "senior": [("age", 66, 76)]},
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


def load_samples(path: Path) -> tuple[np.ndarray, list[dict]]:
    """(styles the synthesis network saw, raw measurements) of the samples that had a face."""
    data = np.load(path, allow_pickle=False)
    raws = json.loads(str(data["raw"]))
    keep = [i for i, r in enumerate(raws) if r]
    return data["styles"][keep].astype(np.float64), [raws[i] for i in keep]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=Path, default=ROOT / "var/avatar_samples.npz")
    parser.add_argument("--out", type=Path, default=DIRECTIONS_FILE)
    parser.add_argument("--report", type=Path, default=ROOT / "bench/results/avatar_directions.json")
    args = parser.parse_args()
    styles, raws = load_samples(args.samples)
    names = list(MEASURES)
    vectors, calibration, report = [], {}, {"samples": len(raws), "measures": {}, "values": {}}
    rng = np.random.default_rng(0)
    held_out = rng.random(len(raws)) < 0.2  # R^2 is reported on samples the fit did not see

    def fit(x: np.ndarray, y: np.ndarray, ridge: float) -> np.ndarray:
        xc = x - x.mean(axis=0)
        coef = np.linalg.solve(xc.T @ xc + ridge * np.eye(xc.shape[1]), xc.T @ (y - y.mean()))
        return coef / np.linalg.norm(coef)

    def held_out_r2(y: np.ndarray, train: np.ndarray, test: np.ndarray, ridge: float) -> float:
        probe = fit(styles[train], y[train], ridge)
        slope, intercept = np.polyfit(styles[train] @ probe, y[train], 1)
        residual = y[test] - (slope * (styles[test] @ probe) + intercept)
        return float(1 - np.var(residual) / np.var(y[test]))

    projections = {}
    for name in names:
        y = np.array([measure_value(name, r) for r in raws], np.float64)
        ok = np.isfinite(y)
        train, test = ok & ~held_out, ok & held_out
        r2, ridge = max((held_out_r2(y, train, test, ridge), ridge) for ridge in RIDGES)
        direction = fit(styles[ok], y[ok], ridge)  # final: every sample
        p = styles[ok] @ direction
        slope, intercept = np.polyfit(p, y[ok], 1)
        vectors.append(direction.astype(np.float32))
        calibration[name] = [float(slope), float(intercept)]
        projections[name] = styles @ direction
        report["measures"][name] = {"held_out_r2": round(float(r2), 3), "ridge": ridge, "samples": int(ok.sum()),
                                    "projection_sd": round(float(np.std(p)), 3),
                                    "residual_sd": round(float(np.std(y[ok] - (slope * p + intercept))), 3)}
        print(f"{name:22s} held-out R2 {r2:.2f}  ridge {ridge:g}  n={ok.sum()}")

    def projection_range(measure: str, lo: float, hi: float) -> list:
        slope, intercept = calibration[measure]
        a, b = (lo - intercept) / slope, (hi - intercept) / slope
        return [names.index(measure), float(min(a, b)), float(max(a, b))]

    targets = {
        attribute: {value: [projection_range(*spec) for spec in specs] for value, specs in values.items()}
        for attribute, values in TARGETS.items()
    }
    constraints = {name: projection_range(*spec) for name, spec in CONSTRAINTS.items()}
    # How often samples already inside a value's projection range(s) measure that value: what an
    # edit that only moves the projection can hope for.
    labels = [labels_from_raw(r) for r in raws]
    for attribute, values in targets.items():
        for value, ranges in values.items():
            inside = np.ones(len(raws), bool)
            for index, lo, hi in ranges:
                inside &= (projections[names[index]] >= lo) & (projections[names[index]] <= hi)
            hits = [labels[i].get(attribute) == value for i in np.flatnonzero(inside)]
            report["values"][f"{attribute}={value}"] = {"samples_in_range": int(inside.sum()),
                                                       "measured_value_share": round(float(np.mean(hits)), 3) if hits else None}
    meta = {"names": names, "targets": targets, "constraints": constraints, "holds": HOLDS, "samples": len(raws),
            "calibration": calibration,
            "target_measures": {a: {v: [list(spec) for spec in specs] for v, specs in values.items()}
                                for a, values in TARGETS.items()},
            "constraint_measures": {name: list(spec) for name, spec in CONSTRAINTS.items()}}
    np.savez_compressed(args.out, vectors=np.stack(vectors), meta=json.dumps(meta))
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    for key, figures in report["values"].items():
        print(f"{key:24s} {figures}")
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes) and {args.report}")


if __name__ == "__main__":
    main()
