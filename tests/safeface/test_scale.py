"""Scale and fault test: two gpu qclusters and a default one on the Redis broker run 40 mixed
jobs submitted through job_submit exactly once; then one gpu cluster is SIGKILLed mid-job and the
sweeper (a django-q scheduled task on the default cluster) gives its job to the other one.

The harness is shared with bench/scale.py (200 jobs): tests/safeface/scale_harness.py, whose
docstring defines "lost", "duplicated" and "recovery". It runs in a process of its own against a
fresh database (PostgreSQL in the PostgreSQL pass) and a Redis database of its own
($SAFEFACE_TEST_SCALE_REDIS_URL, flushed at the end)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import require_service
from tests.safeface.scale_harness import MIX
from tests.safeface.test_qcluster_redis import _fresh_database

ROOT = Path(__file__).resolve().parents[2]
JOBS, SLOW_JOBS, STALE_SECONDS = 40, 2, 10


@pytest.mark.redis
@pytest.mark.postgres
def test_jobs_run_exactly_once_and_a_killed_worker_is_recovered(tmp_path):
    require_service("Redis", "127.0.0.1", 6379)
    redis_url = os.environ.get("SAFEFACE_TEST_SCALE_REDIS_URL", "redis://127.0.0.1:6379/13")
    database_url, drop_database = _fresh_database(tmp_path)
    out = tmp_path / "scale.json"
    command = [
        sys.executable, "-m", "tests.safeface.scale_harness", "--database-url", database_url,
        "--redis-url", redis_url, "--workdir", str(tmp_path / "run"), "--out", str(out),
        "--jobs", str(JOBS), "--users", "6", "--gpu-clusters", "2", "--slow-jobs", str(SLOW_JOBS),
        "--slow-seconds", "3", "--stale-seconds", str(STALE_SECONDS), "--heartbeat-seconds", "2",
        "--sweep", "prompt", "--timeout", "120",
    ]
    try:
        run = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    finally:
        drop_database()
    logs = "\n".join(p.read_text()[-2000:] for p in sorted((tmp_path / "run").glob("qcluster-*.log")))
    assert run.returncode == 0, f"{run.stderr[-3000:]}\n{logs}"
    result = json.loads(out.read_text())

    # Every job reached the state its behaviour dictates, with exactly one completed execution.
    assert result["jobs"] == JOBS + SLOW_JOBS
    assert result["lost"] == 0 and result["duplicated"] == 0, (result["problems"], logs)
    expected_failed = sum(MIX[i % len(MIX)][4] == "failed" for i in range(JOBS))
    assert result["statuses"] == {"succeeded": JOBS + SLOW_JOBS - expected_failed, "failed": expected_failed}
    assert result["scale"]["lost"] == 0 and result["scale"]["duplicated"] == 0
    # One stored output per successful job, nothing left over by failed or killed runs, and the
    # quota charged once per job (the retried one included), refunds applied.
    assert result["outputs_stored"] == result["statuses"]["succeeded"]
    assert result["orphan_outputs"] == 0 and result["missing_outputs"] == 0
    assert result["quota_charged"] == result["quota_expected"] > 0
    # Every finished job has its ticket's outcome on record in django-q.
    assert result["ticket_results"] >= JOBS + SLOW_JOBS

    # The fault: a gpu cluster was killed while its worker was mid-job; the job was re-queued by
    # the sweeper and completed once, on the other cluster.
    fault = result["fault"]
    assert fault["killed_cluster"] in ("gpu-1", "gpu-2")
    assert 30 <= fault["progress_at_kill"] < 100
    assert fault["final_status"] == "succeeded" and fault["attempts"] == 2
    assert [e["completed"] for e in fault["executions"]] == [False, True]
    assert fault["executions"][0]["worker"].rsplit(":", 2)[1] != fault["executions"][1]["worker"].rsplit(":", 2)[1]
    assert result["unfinished_runs"] == 1  # the killed run, and only it
    assert fault["lost"] == 0 and fault["duplicated"] == 0
    # Not before the heartbeat went stale (its last write may precede the kill by a moment).
    assert fault["requeued_after_s"] >= STALE_SECONDS - 1
    assert fault["requeued_after_s"] <= fault["recovery_s"] <= 120
    assert any(s["result"]["requeued"] == 1 for s in result["sweeps"]), result["sweeps"]
