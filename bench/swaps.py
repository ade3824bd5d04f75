"""Swap jobs end to end through the job system, as a user meets them.

For corpus photos and videos: the upload's validation in the web process (decode), the upload
check job on a worker (content gate + face survey), the swap job (persona verification, swap,
watermark, encode, store), the picker page's server time, and the identity check of the result.
Runs in a child process on a throw-away SQLite database with the real embedded models.

Usage: .venv/bin/python bench/swaps.py [--corpus ../shared/corpus]
Writes bench/results/swaps.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
CASES = [
    ("faces/face_obama_frontal.jpg", "photo, 1 face, 910x1137"),
    ("faces/group_obama_biden_2faces.jpg", "photo, 2 faces, 2 personas"),
    ("faces/face_woman_blonde_4352px.jpg", "photo, 1 face, 4352x2903"),
    ("videos/video_aoc_talking_5s.mp4", "video, 5 s 590x590, sound kept"),
    ("videos/video_man_glasses_selfie_portrait_12s_noaudio.mp4", "video, 11.7 s 720x1280"),
]

CHILD = r'''
import json, os, sys, time
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
django.setup()
from django.core.management import call_command
from django.test import Client
from django.test.utils import setup_test_environment
call_command("migrate", verbosity=0)
setup_test_environment()
from pathlib import Path
from django.core.files.uploadedfile import SimpleUploadedFile
from accounts.models import Plan, User
from safeface.jobs import run_next_job
from swaps import services
from swaps.models import SwapJob, Upload
from tests.swaps.conftest import real_persona

corpus = Path(sys.argv[1]); cases = json.loads(sys.argv[2])
Plan.objects.filter(slug="pro").update(concurrent_jobs=100, swaps_per_period=10**6, upload_bytes_per_period=10**12)
user = User.objects.create_user(email="bench@example.com", password="x" * 20)
user.plan = Plan.objects.get(slug="pro"); user.save()
personas = [real_persona(user, seed=1, name="Nova"), real_persona(user, seed=2, name="Rio")]
client = Client(); client.force_login(user)

def clock(fn):
    t = time.perf_counter(); value = fn(); return value, round(time.perf_counter() - t, 3)

# Warm the models once (loading is not what a running worker pays per job).
warm = services.upload_create(user=user, file=SimpleUploadedFile("w.jpg", (corpus / "faces/face_obama_frontal.jpg").read_bytes()))
run_next_job("swaps.Upload")
results = []
for name, label in cases:
    data = (corpus / name).read_bytes()
    upload, validate_s = clock(lambda: services.upload_create(user=user, file=SimpleUploadedFile(Path(name).name, data)))
    outcome, check_s = clock(lambda: run_next_job("swaps.Upload"))
    upload.refresh_from_db()
    row = {"file": name, "case": label, "bytes": len(data), "validate_s": validate_s, "check_s": check_s,
           "check_status": upload.status, "faces_found": upload.faces.count(), "samples": upload.samples}
    if upload.status != "succeeded":
        row["error"] = upload.error; results.append(row); continue
    _, picker_s = clock(lambda: client.get(f"/swaps/uploads/{upload.pk}/"))
    faces = sorted(upload.faces.all(), key=lambda f: (-f.appearances, -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1])))
    chosen = {face.key: personas[i % 2].pk for i, face in enumerate(faces[:2])}
    job = services.swap_start(user=user, upload=upload, assignments=chosen)
    outcome, swap_s = clock(lambda: run_next_job("swaps.SwapJob"))
    job.refresh_from_db()
    protection = job.protection()
    row.update({"picker_page_s": picker_s, "swap_s": swap_s, "swap_status": job.status, "error": job.error,
                "faces_swapped": len(chosen), "protection": protection["level"], "headline": protection["headline"],
                "distances": [f.get("distance_to_original", f.get("distance_to_original_min")) for f in job.report.get("faces", []) if f.get("target") is not None],
                "result_bytes": job.result.size if job.result else 0})
    if upload.is_video:
        row["frames"] = job.report.get("frames"); row["engine_fps"] = job.report.get("fps")
        row["job_fps"] = round(job.report.get("frames", 0) / swap_s, 2) if swap_s else None
    results.append(row)
print(json.dumps(results))
'''


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=os.environ.get("SAFEFACE_CORPUS", str(ROOT.parent / "shared" / "corpus")))
    args = parser.parse_args()
    corpus = Path(args.corpus).resolve()
    with tempfile.TemporaryDirectory() as folder:
        env = {
            **os.environ,
            "SAFEFACE_VAR_DIR": folder,
            "SAFEFACE_MODELS_DIR": os.environ.get("SAFEFACE_MODELS_DIR", str(ROOT / "var" / "models")),
            "DATABASE_URL": f"sqlite:///{folder}/bench.sqlite3",
            "JOB_HEARTBEAT_SECONDS": "0",
            "LOG_LEVEL": "WARNING",
        }
        env.pop("REDIS_URL", None)
        done = subprocess.run(
            [sys.executable, "-c", CHILD, str(corpus), json.dumps([list(c) for c in CASES])],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False,
        )
    if done.returncode != 0:
        print(done.stderr[-4000:], file=sys.stderr)
        return done.returncode
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}", "cases": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "swaps.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'case':44} {'check s':>8} {'swap s':>8} {'fps':>6}  protection")
    for row in rows:
        print(f"{row['case']:44} {row['check_s']:8.2f} {row.get('swap_s', 0):8.2f} {row.get('job_fps') or '':>6}  {row.get('protection', row.get('error'))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
