"""Job-queue overhead: what the job machinery itself costs per job, before any real work.

Measures, on a migrated throw-away database (SQLite, and PostgreSQL when reachable, side by
side in one run):
- submit: job_submit (plan checks, quota reservation under a row lock, insert, ticket)
- claim+run: run_next_job on a no-op job (atomic claim, progress, finish)
- quota: quota_reserve alone
- pages: median server time of the landing and usage pages (Django test client)

Usage: .venv/bin/python bench/queue_overhead.py [--jobs 300]
Writes bench/results/queue_overhead.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"

CHILD = r'''
import json, os, statistics, sys, time
import django
os.environ["DJANGO_SETTINGS_MODULE"] = "tests.settings"
django.setup()
from django.core.management import call_command
from django.test import Client
from django.test.utils import setup_test_environment
call_command("migrate", verbosity=0)
setup_test_environment()
from accounts.models import Plan, User
from accounts.quotas import quota_reserve
from safeface.jobs import job_submit, run_next_job
from tests.jobapp.models import EchoJob

n = int(sys.argv[1])
Plan.objects.filter(slug="pro").update(concurrent_jobs=30000, avatars_per_period=10**9)
user = User.objects.create_user(email="bench@example.com", password="x" * 20)
user.plan = Plan.objects.get(slug="pro"); user.save()

def timed(fn, count):
    samples = []
    for _ in range(count):
        t = time.perf_counter(); fn(); samples.append((time.perf_counter() - t) * 1000)
    return {"median_ms": round(statistics.median(samples), 3), "p95_ms": round(sorted(samples)[int(0.95 * len(samples)) - 1], 3), "per_s": round(1000 / statistics.mean(samples), 1)}

out = {}
out["submit"] = timed(lambda: job_submit(EchoJob(user=user, text="x")), n)
out["claim_run"] = timed(lambda: run_next_job("jobapp.EchoJob"), n)
out["quota_reserve"] = timed(lambda: quota_reserve(user=user, metric="avatars", amount=1), n)
client = Client(); client.force_login(user)
out["page_landing"] = timed(lambda: client.get("/"), 50)
out["page_usage"] = timed(lambda: client.get("/accounts/usage/"), 50)
print(json.dumps(out))
'''


def run_backend(name: str, database_url: str, jobs: int, workdir: Path) -> dict:
    env = {**os.environ, "DATABASE_URL": database_url, "SAFEFACE_VAR_DIR": str(workdir / name), "JOB_HEARTBEAT_SECONDS": "0"}
    env.pop("REDIS_URL", None)
    result = subprocess.run([sys.executable, "-c", CHILD, str(jobs)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise SystemExit(f"{name} run failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def postgres_database() -> tuple[str, callable] | None:
    try:
        import psycopg

        name = f"safeface_bench_{os.getpid()}"
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001 - reported, not fatal
        print(f"PostgreSQL not measured: {exc}", file=sys.stderr)
        return None

    def drop():
        with psycopg.connect("postgresql://postgres@127.0.0.1:5432/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"postgres://postgres@127.0.0.1:5432/{name}", drop


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300)
    args = parser.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        results["sqlite"] = run_backend("sqlite", f"sqlite:///{workdir / 'bench.sqlite3'}", args.jobs, workdir)
        pg = postgres_database()
        if pg:
            url, drop = pg
            try:
                results["postgresql"] = run_backend("postgresql", url, args.jobs, workdir)
            finally:
                drop()
    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "jobs": args.jobs,
        "date": time.strftime("%Y-%m-%d"),
        "results": results,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "queue_overhead.json").write_text(json.dumps(report, indent=2) + "\n")
    rows = ["| step | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for step in ("submit", "claim_run", "quota_reserve", "page_landing", "page_usage"):
        cells = [f"{r[step]['median_ms']} ms median, {r[step]['p95_ms']} ms p95" for r in results.values()]
        rows.append(f"| {step} | " + " | ".join(cells) + " |")
    text = f"# Job-queue overhead ({report['date']}, {report['machine']}, {args.jobs} jobs)\n\n" + "\n".join(rows) + "\n"
    (RESULTS / "queue_overhead.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
