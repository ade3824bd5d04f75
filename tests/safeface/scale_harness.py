"""Scale and fault harness: several real qcluster processes on the Redis broker, jobs submitted
through the service layer (``job_submit``), executions counted from what actually ran.

Shared by tests/safeface/test_scale.py (small) and bench/scale.py (200 jobs). It configures
Django itself from the environment it is given, so it always runs in a process of its own:

    python -m tests.safeface.scale_harness --database-url URL --redis-url URL --out result.json

What it does:
1. migrates the (fresh, empty) database it is given and starts one default cluster (light work
   and the scheduler, which runs the sweeper from its django-q schedule, as deployed) and
   ``--gpu-clusters`` gpu clusters (``Q_CLUSTER_NAME=gpu``, one worker each, like one GPU
   machine each), every cluster in its own process group;
2. phase "scale": submits ``--jobs`` mixed jobs through ``job_submit`` from several users on
   both plans (gpu echo jobs with a quota reservation, light echo jobs, failing jobs of both
   kinds, and real data exports) and waits until every job has reached its final state;
3. phase "fault": submits ``--slow-jobs`` gpu jobs of ``--slow-seconds`` each, waits until one
   is mid-run, finds the gpu cluster whose worker holds it (the claim token names the worker's
   pid, whose process group is the cluster) and SIGKILLs that whole cluster; then measures the
   time until the sweeper re-queues the job and a surviving worker finishes it.

Definitions used in the figures:
- an *execution* is one call of the job's ``run``; echo jobs record each in ``EchoRun``
  (``ended_at`` stays empty when the worker died during it); data exports are counted from the
  results django-q stored for the ``run_next_job`` tickets that ran them;
- a job is *duplicated* when more than one of its executions ran to completion (two completed
  runs, two recorded outcomes) or it is left with more than one output. A run killed mid-way
  and re-run from the start is *recovered*, not duplicated;
- a job is *lost* when it did not reach the final state its behaviour dictates (still queued or
  running at the deadline, gone, or another outcome);
- ``recovery_s`` is the time from the SIGKILL to the killed job's successful completion on
  another worker; it includes ``JOB_STALE_SECONDS`` (how old a heartbeat must be before the
  sweeper gives the job up) and the wait for the next sweep.

``--sweep`` chooses when the sweeper runs: ``schedule`` leaves it to its every-minute django-q
schedule (the bench); ``prompt`` moves that schedule's ``next_run`` to the moment the killed job's
heartbeat has gone stale, so the default cluster's scheduler (which looks every 30 s) dispatches
it at its next look (the test, which must stay short). Either way the sweep is a real
django-q task on the default cluster.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SWEEPER_SCHEDULE = "safeface: sweep jobs"  # safeface/migrations/0001_schedule_sweeper.py
RESULT = re.compile(r"^(?P<label>[\w.]+)#(?P<pk>\d+): (?P<outcome>\w+)$")
FINAL = ("succeeded", "failed", "cancelled")


class HarnessError(Exception):
    """The run could not be carried out (a cluster did not start, a phase timed out)."""


# --- databases ---------------------------------------------------------------------------------
def fresh_postgres_database(admin_url: str, *, prefix: str = "safeface_scale") -> tuple[str, callable]:
    """Creates an empty PostgreSQL database next to ``admin_url``'s; returns its URL and a drop()."""
    import psycopg
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(admin_url)
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return urlunsplit(parts._replace(path=f"/{name}")), drop


# --- the mix of jobs ---------------------------------------------------------------------------
# (kind, behaviour, seconds of work, quota reserved, expected final status), cycled over the jobs.
MIX = [
    *[("gpu", "sleep", 0.1 + 0.05 * i, 1, "succeeded") for i in range(7)],
    ("gpu", "ok", 0, 1, "succeeded"),
    ("gpu", "our-error", 0, 1, "failed"),  # refunded
    ("gpu", "user-error", 0, 1, "failed"),  # not refunded
    *[("light", "sleep", 0.05, 0, "succeeded") for _ in range(4)],
    ("light", "ok", 0, 0, "succeeded"),
    ("light", "user-error", 0, 0, "failed"),
    ("light", "our-error", 0, 0, "failed"),
    ("export", "", 0, 0, "succeeded"),
    ("export", "", 0, 0, "succeeded"),
    ("gpu", "sleep", 0.2, 1, "succeeded"),
]


def mix_counts(jobs: int) -> dict[str, int]:
    return dict(Counter(f"{MIX[i % len(MIX)][0]}:{MIX[i % len(MIX)][1]}" for i in range(jobs)))


# --- the run -------------------------------------------------------------------------------------
class Harness:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(args.workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.prefix = f"safeface-scale-{uuid.uuid4().hex[:8]}"
        self.env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "tests.safeface.scale_settings",
            "DATABASE_URL": args.database_url,
            "REDIS_URL": args.redis_url,
            "Q_PREFIX": self.prefix,
            "Q_WORKERS": str(args.default_workers),
            "Q_GPU_WORKERS": "1",
            "SAFEFACE_VAR_DIR": str(self.workdir / "var"),
            "JOB_HEARTBEAT_SECONDS": str(args.heartbeat_seconds),
            "JOB_STALE_SECONDS": str(args.stale_seconds),
            "JOB_RENUDGE_SECONDS": str(args.renudge_seconds),
            "PYTHONPATH": str(ROOT),
        }
        self.env.pop("Q_CLUSTER_NAME", None)
        self.clusters: dict[str, subprocess.Popen] = {}
        self.jobs: list[tuple[type, int, str]] = []  # (model, pk, expected status)
        self.killed: set[str] = set()  # clusters this run killed on purpose

    # --- setup -----------------------------------------------------------------------------
    def setup_django(self) -> None:
        os.environ.update(self.env)
        import django

        django.setup()
        import logging

        from django.core.management import call_command

        logging.getLogger("django-q").setLevel(logging.WARNING)  # one line per enqueued ticket

        call_command("migrate", verbosity=0, interactive=False)

    def start_clusters(self) -> None:
        names = ["default", *[f"gpu-{i + 1}" for i in range(self.args.gpu_clusters)]]
        for name in names:
            env = {**self.env, **({} if name == "default" else {"Q_CLUSTER_NAME": "gpu"})}
            log = open(self.workdir / f"qcluster-{name}.log", "w")
            self.clusters[name] = subprocess.Popen(
                [sys.executable, "manage.py", "qcluster"], cwd=ROOT, env=env, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + 90
        waiting = set(names)
        while waiting and time.monotonic() < deadline:
            for name in list(waiting):
                if self.clusters[name].poll() is not None:
                    raise HarnessError(f"qcluster {name} exited at start:\n{self.log_tail(name)}")
                if "running." in (self.workdir / f"qcluster-{name}.log").read_text():
                    waiting.discard(name)
            time.sleep(0.2)
        if waiting:
            raise HarnessError(f"qcluster(s) {sorted(waiting)} did not report running within 90 s")

    def log_tail(self, name: str, size: int = 3000) -> str:
        path = self.workdir / f"qcluster-{name}.log"
        return path.read_text()[-size:] if path.exists() else ""

    def stop_clusters(self) -> None:
        for proc in self.clusters.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        for proc in self.clusters.values():
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            # Workers left behind by a killed sentinel are in the same process group.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def make_users(self) -> list:
        from accounts.models import Plan, User

        # A throw-away database: the limits are raised so that hundreds of jobs can be queued
        # at once (the concurrency and quota checks still run on every submission).
        Plan.objects.update(concurrent_jobs=10_000, avatars_per_period=1_000_000)
        users = []
        for i in range(self.args.users):
            user = User.objects.create_user(email=f"scale{i}@example.com", password=uuid.uuid4().hex)
            user.plan = Plan.objects.get(slug="pro" if i % 2 else "free")  # both queue priorities
            user.save(update_fields=["plan"])
            users.append(user)
        return users

    # --- submission ------------------------------------------------------------------------
    def submit(self, user, kind: str, behaviour: str, seconds: float, quota: int, expected: str):
        from accounts.models import DataExport
        from safeface.jobs import job_submit
        from tests.jobapp.models import EchoJob, GpuEchoJob

        if kind == "export":
            job = job_submit(DataExport(user=user))
        else:
            model = GpuEchoJob if kind == "gpu" else EchoJob
            job = model(user=user, behaviour=behaviour, seconds=seconds, text=f"{kind} {behaviour} {uuid.uuid4().hex[:6]}")
            job = job_submit(job, quota_metric="avatars" if quota else "", quota_amount=quota)
        self.jobs.append((type(job), job.pk, expected))
        return job

    def wait_finished(self, jobs: list[tuple[type, int, str]], timeout: float) -> float:
        from safeface.jobs import ACTIVE_STATUSES

        started = time.monotonic()
        by_model: dict[type, list[int]] = {}
        for model, pk, _ in jobs:
            by_model.setdefault(model, []).append(pk)
        while time.monotonic() - started < timeout:
            active = sum(m.objects.filter(pk__in=pks, status__in=ACTIVE_STATUSES).count() for m, pks in by_model.items())
            if not active:
                return time.monotonic() - started
            for name, proc in self.clusters.items():
                if proc.poll() is not None and name not in self.killed:
                    raise HarnessError(f"qcluster {name} died:\n{self.log_tail(name)}")
            time.sleep(0.25)
        return time.monotonic() - started

    # --- phases ----------------------------------------------------------------------------
    def phase_scale(self, users: list) -> dict:
        count = self.args.jobs
        began = time.monotonic()
        batch = []
        for i in range(count):
            kind, behaviour, seconds, quota, expected = MIX[i % len(MIX)]
            self.submit(users[i % len(users)], kind, behaviour, seconds, quota, expected)
            batch.append(self.jobs[-1])
        submitted_s = time.monotonic() - began
        self.wait_finished(batch, self.args.timeout)
        wall = time.monotonic() - began
        return {
            "jobs": count,
            "mix": mix_counts(count),
            "submit_s": round(submitted_s, 2),
            "wall_s": round(wall, 2),
            "jobs_per_s": round(count / wall, 2),
            "_batch": batch,
        }

    def phase_fault(self, users: list) -> dict:
        from django.db.models import Q
        from django.utils import timezone
        from django_q.models import Schedule

        from safeface.jobs import JobStatus
        from tests.jobapp.models import EchoRun, GpuEchoJob

        batch = []
        for i in range(self.args.slow_jobs):
            self.submit(users[i % len(users)], "gpu", "sleep", self.args.slow_seconds, 1, "succeeded")
            batch.append(self.jobs[-1])
        pks = [pk for _, pk, _ in batch]
        # Wait until a job is well into its run, then kill the whole cluster that runs it.
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline:
            for job in GpuEchoJob.objects.filter(pk__in=pks, status=JobStatus.RUNNING, progress__gte=30):
                victim = job
                break
            else:
                time.sleep(0.05)
        if victim is None:
            raise HarnessError("no slow job reached 30% within 120 s")
        token = victim.worker
        worker_pid = int(token.rsplit(":", 2)[1])  # "host:pid:nonce" (safeface.jobs._claim_token)
        group = os.getpgid(worker_pid)
        name = next((n for n, p in self.clusters.items() if p.pid == group), None)
        if name is None or not name.startswith("gpu"):
            raise HarnessError(f"worker pid {worker_pid} (group {group}) is not in a gpu cluster")
        killed_at = time.monotonic()
        killed_wall = timezone.now()
        os.killpg(group, signal.SIGKILL)
        self.killed.add(name)
        self.clusters[name].wait(timeout=10)
        progress_at_kill = GpuEchoJob.objects.get(pk=victim.pk).progress
        # Tickets the killed cluster had already taken from Redis (django-q prefetches one per
        # worker) died with it: their jobs stay QUEUED until the sweeper re-issues tickets for
        # jobs waiting longer than JOB_RENUDGE_SECONDS.

        marks: dict[str, float] = {}
        stale, renudge = self.args.stale_seconds, self.args.renudge_seconds
        while time.monotonic() - killed_at < self.args.timeout:
            now, wall = time.monotonic(), timezone.now()
            job = GpuEchoJob.objects.get(pk=victim.pk)
            if "stale" not in marks and job.status == JobStatus.RUNNING and job.worker == token:
                if (wall - job.heartbeat_at).total_seconds() > stale:
                    marks["stale"] = now
            if "requeued" not in marks and (job.worker != token or job.status != JobStatus.RUNNING):
                marks["requeued"] = now
            if "reclaimed" not in marks and job.status == JobStatus.RUNNING and job.worker and job.worker != token:
                marks["reclaimed"] = now
            if "finished" not in marks and job.status in FINAL:
                marks["finished"] = now
            waiting = GpuEchoJob.objects.filter(pk__in=pks, status=JobStatus.QUEUED)
            if not GpuEchoJob.objects.filter(pk__in=pks, status__in=(JobStatus.QUEUED, JobStatus.RUNNING)).exists():
                marks["batch"] = now
                break
            if self.args.sweep == "prompt":
                # Something for the sweeper to do: the dead worker's job is stale, or a job
                # whose ticket died with the cluster is due for a new one.
                due = wall - timedelta(seconds=renudge)
                stranded = waiting.filter(queued_at__lt=due).filter(Q(nudged_at__isnull=True) | Q(nudged_at__lt=due))
                if ("stale" in marks and job.status == JobStatus.RUNNING and job.worker == token) or stranded.exists():
                    Schedule.objects.filter(name=SWEEPER_SCHEDULE, next_run__gt=wall).update(next_run=wall)
            time.sleep(0.1)
        victim.refresh_from_db()
        stranded_count = GpuEchoJob.objects.filter(pk__in=pks, nudged_at__isnull=False).count()
        runs = list(EchoRun.objects.filter(job_label=victim._meta.label, job_id=victim.pk).order_by("started_at"))

        def since(mark: str) -> float | None:
            return round(marks[mark] - killed_at, 2) if mark in marks else None

        return {
            "jobs": len(batch),
            "seconds_each": self.args.slow_seconds,
            "killed_cluster": name,
            "killed_group": group,
            "killed_job": f"{victim._meta.label}#{victim.pk}",
            "killed_at": killed_wall.isoformat(),
            "progress_at_kill": progress_at_kill,
            "final_status": victim.status,
            "attempts": victim.attempts,
            "executions": [{"worker": r.worker, "completed": r.ended_at is not None, "outcome": r.outcome} for r in runs],
            "requeued_after_s": since("requeued"),
            "stale_seen_after_s": since("stale"),
            "reclaimed_after_s": since("reclaimed"),
            "recovery_s": since("finished") if victim.status == JobStatus.SUCCEEDED else None,
            "all_recovered_s": since("batch"),
            "stranded_jobs": stranded_count,
            "sweeper": self.args.sweep,
            "_batch": batch,
        }

    # --- accounting ------------------------------------------------------------------------
    def account(self, jobs: list[tuple[type, int, str]]) -> dict:
        """Lost and duplicated jobs, counted from executions, ticket results and stored files."""
        from django_q.models import Task

        from accounts.models import DataExport, UsageCounter
        from tests.jobapp.models import EchoRun

        # django-q stores ticket results asynchronously (its monitor): give it a moment.
        wanted = len(jobs)
        for _ in range(60):
            results = [RESULT.match(str(t.result or "")) for t in Task.objects.filter(func="safeface.jobs.run_next_job")]
            finals = [m for m in results if m and m["outcome"] in FINAL]
            if len(finals) >= wanted:
                break
            time.sleep(0.25)
        outcomes = Counter((m["label"], int(m["pk"])) for m in finals)
        completed = Counter(
            (r.job_label, r.job_id) for r in EchoRun.objects.filter(ended_at__isnull=False)
        )
        lost, duplicated, statuses, problems = 0, 0, Counter(), []
        expected_charge = 0
        referenced: set[str] = set()
        for model, pk, expected in jobs:
            key = (model._meta.label, pk)
            job = model.objects.filter(pk=pk).first()
            status = job.status if job else "missing"
            statuses[status] += 1
            if status != expected:
                lost += 1
                problems.append(f"{key}: {status}, expected {expected}")
            if job and job.quota_amount and not job.quota_refunded:
                expected_charge += job.quota_amount
            runs = outcomes[key] if model is DataExport else completed[key]
            output = job and (job.archive if model is DataExport else job.output)
            if output:
                referenced.add(output.name)
            if runs > 1 or outcomes[key] > 1:
                duplicated += 1
                problems.append(f"{key}: {runs} completed executions, {outcomes[key]} recorded outcomes")
            elif job and job.status in FINAL and runs != 1:
                lost += 1  # finished without an execution on record
                problems.append(f"{key}: final status {status} but {runs} completed executions")
        media = Path(self.env["SAFEFACE_VAR_DIR"]) / "media"
        stored = {str(p.relative_to(media)) for p in media.glob("users/*/*/*") if p.is_file()}
        orphans = sorted(stored - referenced)
        missing = sorted(referenced - stored)
        charged = sum(UsageCounter.objects.filter(metric="avatars").values_list("used", flat=True))
        return {
            "lost": lost,
            "duplicated": duplicated,
            "statuses": dict(statuses),
            "outputs_stored": len(stored),
            "orphan_outputs": len(orphans),
            "missing_outputs": len(missing),
            "quota_charged": charged,
            "quota_expected": expected_charge,
            "ticket_results": len(finals),
            "unfinished_runs": EchoRun.objects.filter(ended_at__isnull=True).count(),
            "problems": problems[:20] + orphans[:5] + missing[:5],
        }

    # --- everything ------------------------------------------------------------------------
    def run(self) -> dict:
        started = time.monotonic()
        self.setup_django()
        try:
            self.start_clusters()
            users = self.make_users()
            scale = self.phase_scale(users)
            fault = self.phase_fault(users) if self.args.slow_jobs else None
            figures = self.account(self.jobs)
            scale_jobs = scale.pop("_batch")
            fault_jobs = fault.pop("_batch") if fault else []
            scale.update({k: v for k, v in self.account(scale_jobs).items() if k in ("lost", "duplicated", "statuses")})
            if fault:
                fault.update({k: v for k, v in self.account(fault_jobs).items() if k in ("lost", "duplicated", "statuses")})
            sweeps = self.sweeps()
        finally:
            self.stop_clusters()
            self.flush_redis()
        from django.db import connection

        return {
            "jobs": len(self.jobs),
            "lost": figures["lost"],
            "duplicated": figures["duplicated"],
            "recovery_s": fault["recovery_s"] if fault else None,
            **{k: v for k, v in figures.items() if k not in ("lost", "duplicated")},
            "scale": scale,
            "fault": fault,
            "sweeps": sweeps,
            "clusters": {"default": {"workers": self.args.default_workers, "runs": "light jobs, exports, scheduler/sweeper"},
                         "gpu": {"processes": self.args.gpu_clusters, "workers_each": 1}},
            "settings": {
                "JOB_STALE_SECONDS": self.args.stale_seconds,
                "JOB_HEARTBEAT_SECONDS": self.args.heartbeat_seconds,
                "JOB_RENUDGE_SECONDS": self.args.renudge_seconds,
                "sweeper_schedule": "every minute (django-q schedule); the scheduler looks every 30 s",
                "sweep": self.args.sweep,
                "users": self.args.users,
            },
            "database": connection.vendor,
            "broker": "redis",
            "harness_wall_s": round(time.monotonic() - started, 1),
        }

    def sweeps(self) -> list[dict]:
        from django_q.models import Task

        rows = Task.objects.filter(func="safeface.jobs.sweep_jobs").order_by("started")
        return [{"at": t.started.isoformat(), "cluster": t.cluster, "result": t.result} for t in rows]

    def flush_redis(self) -> None:
        import redis

        redis.Redis.from_url(self.args.redis_url).flushdb()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True, help="an empty database the run may migrate")
    parser.add_argument("--redis-url", required=True, help="a Redis database of its own: it is flushed at the end")
    parser.add_argument("--workdir", required=True, help="folder for media and cluster logs")
    parser.add_argument("--out", required=True, help="where to write the figures (JSON)")
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--users", type=int, default=10)
    parser.add_argument("--gpu-clusters", type=int, default=2)
    parser.add_argument("--default-workers", type=int, default=2)
    parser.add_argument("--slow-jobs", type=int, default=4, help="0 skips the fault phase")
    parser.add_argument("--slow-seconds", type=float, default=5.0)
    parser.add_argument("--stale-seconds", type=int, default=10)
    parser.add_argument("--heartbeat-seconds", type=int, default=2)
    parser.add_argument("--renudge-seconds", type=int, default=30, help="JOB_RENUDGE_SECONDS (at least 30)")
    parser.add_argument("--sweep", choices=("schedule", "prompt"), default="schedule")
    parser.add_argument("--timeout", type=float, default=300, help="seconds each phase may take")
    args = parser.parse_args(argv)
    if args.gpu_clusters < 2 and args.slow_jobs:
        parser.error("the fault phase needs at least 2 gpu clusters (one is killed)")
    if args.jobs < 1 or args.users < 1:
        parser.error("--jobs and --users must be at least 1")
    if args.stale_seconds < 10:
        parser.error("--stale-seconds must be at least 10 (JOB_STALE_SECONDS's minimum)")
    if args.renudge_seconds < 30:
        parser.error("--renudge-seconds must be at least 30 (JOB_RENUDGE_SECONDS's minimum)")
    if args.heartbeat_seconds < 1 or args.heartbeat_seconds * 2 > args.stale_seconds:
        parser.error("--heartbeat-seconds must be at least 1 and at most half of --stale-seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = Harness(args).run()
    except HarnessError as exc:
        print(f"scale harness: {exc}", file=sys.stderr)
        return 1
    Path(args.out).write_text(json.dumps(result, indent=2, default=str) + "\n")
    print(json.dumps({k: result[k] for k in ("jobs", "lost", "duplicated", "recovery_s")}))
    return 0


def machine() -> dict:
    """What the benches record about the machine they ran on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "load_at_start": load}


if __name__ == "__main__":
    sys.exit(main())
