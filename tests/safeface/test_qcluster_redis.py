"""A real qcluster on the Redis broker runs jobs end to end: the web side submits, the default
cluster runs light work, the gpu cluster runs gpu work, and files land in private storage."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[2]


def _fresh_database(tmp_path) -> tuple[str, callable]:
    """A database the subprocesses share: SQLite in the SQLite pass, a new PostgreSQL
    database in the PostgreSQL pass (so this also runs PostgreSQL + Redis together)."""
    db = settings.DATABASES["default"]
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{tmp_path / 'cluster.sqlite3'}", lambda: None
    import psycopg

    name = f"safeface_cluster_{uuid.uuid4().hex[:8]}"
    params = dict(host=db["HOST"], port=db["PORT"] or 5432, user=db["USER"], password=db["PASSWORD"] or None)
    with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop():
        with psycopg.connect(dbname="postgres", autocommit=True, **params) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT'] or 5432}/{name}", drop


@pytest.mark.redis
def test_real_qcluster_on_redis_runs_jobs_end_to_end(tmp_path):
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    redis_url = os.environ.get("SAFEFACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
    prefix = f"safeface-test-{uuid.uuid4().hex[:8]}"
    database_url, drop_database = _fresh_database(tmp_path)
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "tests.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "Q_PREFIX": prefix,
        "SAFEFACE_VAR_DIR": str(tmp_path / "var"),
        "JOB_HEARTBEAT_SECONDS": "1",
        "PYTHONPATH": str(ROOT),
    }
    python = sys.executable
    clusters: list[subprocess.Popen] = []
    try:
        subprocess.run([python, "manage.py", "migrate", "--noinput", "-v0"], cwd=ROOT, env=env, check=True, timeout=180)
        for name in (None, "gpu"):
            cluster_env = {**env, **({"Q_CLUSTER_NAME": name} if name else {})}
            log = open(tmp_path / f"qcluster-{name or 'default'}.log", "w")
            clusters.append(subprocess.Popen([python, "manage.py", "qcluster"], cwd=ROOT, env=cluster_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
        client = [python, str(ROOT / "tests/safeface/cluster_client.py")]
        ids = json.loads(subprocess.run([*client, "submit"], cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=60).stdout)
        # The tickets are in Redis, on the right queues.
        deadline = time.monotonic() + 90
        state: dict = {}
        while time.monotonic() < deadline:
            out = subprocess.run([*client, "status", json.dumps(ids)], cwd=ROOT, env=env, check=True, capture_output=True, text=True, timeout=60).stdout
            state = json.loads(out)
            if all(state[k][0] in ("succeeded", "failed", "cancelled") for k in ("export", "gpu", "light")):
                break
            time.sleep(1)
        logs = "\n".join((tmp_path / f"qcluster-{n}.log").read_text()[-3000:] for n in ("default", "gpu"))
        assert state["export"][0] == "succeeded", (state, logs)
        assert state["gpu"][:1] == ["succeeded"] and state["gpu"][3] == 1, (state, logs)
        assert state["light"][:1] == ["succeeded"] and state["light"][3] == 1, (state, logs)
        media = tmp_path / "var" / "media"
        assert (media / state["gpu"][1]).read_bytes() == b"from the gpu cluster"
        assert (media / state["light"][1]).read_bytes() == b"from the default cluster"
        assert (media / state["export"][1]).stat().st_size > 0
        assert state["clusters"]["jobapp.GpuEchoJob"] == "gpu"
        assert state["clusters"]["jobapp.EchoJob"] == prefix
        assert state["clusters"]["accounts.DataExport"] == prefix
    finally:
        for proc in clusters:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in clusters:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        redis.Redis.from_url(redis_url).flushdb()
        drop_database()
