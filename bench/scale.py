"""Scale and fault bench (issue 8): real qcluster processes on the Redis broker with PostgreSQL.

1. 200 mixed jobs (gpu echo jobs with quota, light echo jobs, failing jobs of both kinds, real
   data exports) submitted through ``job_submit`` by 10 users on both plans, run by two gpu
   clusters (one worker each, like two GPU machines) and the default cluster; every job must
   finish exactly once.
2. Slow gpu jobs; one gpu cluster's whole process tree is SIGKILLed while its worker is mid-job;
   the sweeper, run by django-q's every-minute schedule on the default cluster exactly as
   deployed, re-queues the job and the surviving cluster finishes it.

The harness (and the definitions of lost, duplicated and recovery_s) is
tests/safeface/scale_harness.py, shared with tests/safeface/test_scale.py. This script creates
a fresh PostgreSQL database and drops it afterwards, and uses a Redis database of its own
(flushed at the end).

Usage: .venv/bin/python bench/scale.py [--jobs 200] [--gpu-clusters 2]
       [--postgres postgresql://postgres@127.0.0.1:5432/postgres] [--redis redis://127.0.0.1:6379/12]
Writes bench/results/scale.json and prints a summary.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
sys.path.insert(0, str(ROOT))

from tests.safeface.scale_harness import fresh_postgres_database, machine  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description="Scale and fault bench on Redis + PostgreSQL")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--gpu-clusters", type=int, default=2)
    parser.add_argument("--slow-jobs", type=int, default=4)
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--stale-seconds", type=int, default=10)
    parser.add_argument("--heartbeat-seconds", type=int, default=2)
    parser.add_argument("--postgres", default="postgresql://postgres@127.0.0.1:5432/postgres",
                        help="a PostgreSQL database to connect to while creating the throw-away one")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/12", help="a Redis database the run may flush")
    parser.add_argument("--out", default=str(RESULTS / "scale.json"))
    args = parser.parse_args()

    started = datetime.now(timezone.utc)
    facts = machine()
    database_url, drop = fresh_postgres_database(args.postgres, prefix="safeface_bench_scale")
    with tempfile.TemporaryDirectory(prefix="safeface-scale-") as workdir:
        raw = Path(workdir) / "result.json"
        command = [
            sys.executable, "-m", "tests.safeface.scale_harness", "--database-url", database_url,
            "--redis-url", args.redis, "--workdir", workdir, "--out", str(raw), "--jobs", str(args.jobs),
            "--gpu-clusters", str(args.gpu_clusters), "--slow-jobs", str(args.slow_jobs),
            "--slow-seconds", str(args.slow_seconds), "--stale-seconds", str(args.stale_seconds),
            "--heartbeat-seconds", str(args.heartbeat_seconds), "--sweep", "schedule", "--timeout", "600",
        ]
        began = time.monotonic()
        try:
            run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=1800)
        finally:
            drop()
        if run.returncode != 0 or not raw.exists():
            logs = "\n".join(p.read_text()[-2000:] for p in sorted(Path(workdir).glob("qcluster-*.log")))
            print(run.stdout[-2000:], run.stderr[-4000:], logs, sep="\n", file=sys.stderr)
            return 1
        result = json.loads(raw.read_text())
    result["wall_s"] = round(time.monotonic() - began, 1)
    result["date"] = started.isoformat(timespec="seconds")
    result["machine"] = facts
    result["note"] = (
        "Everything shares this machine's cores: the harness, PostgreSQL, Redis and every qcluster "
        "process. duplicated = jobs with more than one completed execution or more than one output; "
        "lost = jobs not in the final state their behaviour dictates. recovery_s = SIGKILL to the "
        "killed job's success on another worker, with the sweeper on its real every-minute schedule "
        "(the scheduler looks every 30 s), so it is JOB_STALE_SECONDS plus up to ~90 s of waiting "
        "for the next sweep. Tickets the killed cluster had already taken from Redis die with it; "
        "their jobs are re-issued by the sweeper once they have waited JOB_RENUDGE_SECONDS "
        "(fault.stranded_jobs, fault.all_recovered_s)."
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")

    scale, fault = result["scale"], result["fault"] or {}
    print(f"scale: {scale['jobs']} jobs in {scale['wall_s']} s ({scale['jobs_per_s']} jobs/s), "
          f"lost {scale['lost']}, duplicated {scale['duplicated']}, statuses {scale['statuses']}")
    if fault:
        print(f"fault: killed {fault['killed_cluster']} at {fault['progress_at_kill']}% of {fault['killed_job']}; "
              f"re-queued after {fault['requeued_after_s']} s, finished after {fault['recovery_s']} s; "
              f"all {fault['jobs']} slow jobs done after {fault['all_recovered_s']} s "
              f"({fault['stranded_jobs']} stranded ticket(s) re-issued)")
    print(f"total: jobs {result['jobs']}, lost {result['lost']}, duplicated {result['duplicated']}, "
          f"recovery_s {result['recovery_s']}, orphan outputs {result['orphan_outputs']}, "
          f"quota charged {result['quota_charged']} (expected {result['quota_expected']})")
    print(f"wrote {args.out}")
    return 0 if result["lost"] == 0 and result["duplicated"] == 0 and result["recovery_s"] is not None else 1


if __name__ == "__main__":
    sys.exit(main())
