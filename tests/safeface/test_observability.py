"""Health and readiness, the healthcheck command, Prometheus metrics and structured logs."""
from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path

import pytest
from django.core.management import call_command
from django.db import connection
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from engine import models as manifest
from safeface import views
from safeface.jobs import JobStatus, job_submit, run_next_job
from safeface.logs import ContextFilter, JsonFormatter
from tests.conftest import require_service
from tests.jobapp.models import EchoJob, GpuEchoJob

ROOT = Path(__file__).resolve().parents[2]
PUBLIC_IP = "81.2.69.160"  # a public internet address


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(autouse=True)
def _fresh_public_readyz():
    views._public_readyz = None
    yield
    views._public_readyz = None


@pytest.fixture
def models_folder(tmp_path, monkeypatch, settings):
    """A models folder holding every embedded file at its manifest size (sparse files: the
    readiness check looks at presence and size, never at the bytes)."""
    folder = tmp_path / "models"
    folder.mkdir()
    for entry in manifest.entries(groups=manifest.EMBEDDED_GROUPS):
        with open(folder / entry.name, "wb") as handle:
            handle.truncate(entry.size)
    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(folder))
    monkeypatch.delenv("SAFEFACE_VOICE_MODEL", raising=False)
    settings.HEALTH_MODEL_GROUPS = list(manifest.EMBEDDED_GROUPS)
    settings.READYZ_CHECK_MODELS = True
    return folder


@pytest.fixture
def orm_broker(settings):
    q = {k: v for k, v in settings.Q_CLUSTER.items() if k != "redis"}
    settings.Q_CLUSTER = {**q, "orm": "default"}


@pytest.fixture
def json_logs():
    """Log lines as the production JSON handler writes them."""
    lines: list[dict] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(json.loads(self.format(record)))

    handler = Collect(level=logging.DEBUG)
    handler.addFilter(ContextFilter())
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield lines
    root.removeHandler(handler)
    root.setLevel(old_level)


# --- liveness and readiness ---------------------------------------------------------------
def test_healthz_is_liveness_only_and_touches_no_database(client):
    # No django_db mark: any query would fail the test.
    response = client.get(reverse("healthz"))
    assert response.status_code == 200 and response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_readyz_all_fine(client, models_folder, orm_broker, _isolated_media):
    response = client.get(reverse("readyz"))
    body = response.json()
    assert response.status_code == 200, body
    assert body["status"] == "ok" and body["failing"] == []
    assert set(body["checks"]) == {"database", "broker", "storage", "models"}
    assert all(c["ok"] and c["ms"] >= 0 for c in body["checks"].values())
    assert "ORM broker" in body["checks"]["broker"]["detail"]
    assert f"{len(manifest.entries(groups=manifest.EMBEDDED_GROUPS))} model files present" in body["checks"]["models"]["detail"]
    # The storage probe cleaned up after itself.
    probes = _isolated_media / "health"
    assert not probes.exists() or list(probes.iterdir()) == []


@pytest.mark.django_db
def test_readyz_without_models_check_in_production_shape(client, orm_broker, settings):
    settings.READYZ_CHECK_MODELS = False
    body = client.get(reverse("readyz")).json()
    assert set(body["checks"]) == {"database", "broker", "storage"}


@pytest.mark.django_db(transaction=True)
def test_readyz_503_names_the_database_when_it_is_down(client, orm_broker, tmp_path):
    saved = dict(connection.settings_dict)
    connection.close()
    if connection.vendor == "sqlite":
        connection.settings_dict["NAME"] = str(tmp_path / "no-such-folder" / "db.sqlite3")
    else:
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed_port()))
    try:
        response = client.get(reverse("readyz"))
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(saved)
    body = response.json()
    assert response.status_code == 503
    assert body["status"] == "unavailable" and "database" in body["failing"]
    assert body["checks"]["database"]["ok"] is False
    assert "OperationalError" in body["checks"]["database"]["detail"]
    assert body["checks"]["storage"]["ok"] is True  # the others still ran


@pytest.mark.django_db
def test_readyz_503_names_the_broker_when_redis_is_unreachable(client, settings):
    port = closed_port()
    settings.Q_CLUSTER = {**{k: v for k, v in settings.Q_CLUSTER.items() if k != "orm"}, "redis": f"redis://127.0.0.1:{port}/0"}
    settings.HEALTH_TIMEOUT_SECONDS = 1
    settings.READYZ_CHECK_MODELS = False
    response = client.get(reverse("readyz"))
    body = response.json()
    assert response.status_code == 503
    assert body["failing"] == ["broker"]
    assert "ConnectionError" in body["checks"]["broker"]["detail"] and str(port) in body["checks"]["broker"]["detail"]
    assert body["checks"]["broker"]["ms"] < 2000


@pytest.mark.redis
@pytest.mark.django_db
def test_readyz_and_queue_depth_on_a_real_redis(client, settings):
    require_service("Redis", "127.0.0.1", 6379)
    import redis

    url = os.environ.get("SAFEFACE_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
    name = f"safeface-obs-{uuid.uuid4().hex[:8]}"
    settings.Q_CLUSTER = {
        **{k: v for k, v in settings.Q_CLUSTER.items() if k != "orm"}, "redis": url, "name": name,
        "ALT_CLUSTERS": {f"gpu-{name}": {}},
    }
    settings.READYZ_CHECK_MODELS = False
    r = redis.Redis.from_url(url)
    try:
        r.rpush(f"django_q:{name}:q", b"t1", b"t2", b"t3")
        r.rpush(f"django_q:gpu-{name}:q", b"t4")
        body = client.get(reverse("readyz")).json()
        assert body["status"] == "ok" and "answered PING" in body["checks"]["broker"]["detail"]
        text = client.get(reverse("metrics")).content.decode()
    finally:
        r.delete(f"django_q:{name}:q", f"django_q:gpu-{name}:q")
        r.close()
    assert sample(text, "safeface_queue_depth", cluster="default", queue=name) == 3
    assert sample(text, "safeface_queue_depth", cluster=f"gpu-{name}", queue=f"gpu-{name}") == 1
    assert sample(text, "safeface_broker_up", broker="redis") == 1


@pytest.mark.django_db
def test_readyz_503_names_storage_when_it_cannot_write(client, orm_broker, settings, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(blocker / "media")}},
    }
    settings.READYZ_CHECK_MODELS = False
    response = client.get(reverse("readyz"))
    body = response.json()
    assert response.status_code == 503 and body["failing"] == ["storage"]
    assert "Error" in body["checks"]["storage"]["detail"]


@pytest.mark.django_db
def test_readyz_503_names_models_when_the_folder_is_empty(client, orm_broker, models_folder, tmp_path, monkeypatch):
    empty = tmp_path / "empty-models"
    empty.mkdir()
    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(empty))
    response = client.get(reverse("readyz"))
    body = response.json()
    total = len(manifest.entries(groups=manifest.EMBEDDED_GROUPS))
    assert response.status_code == 503 and body["failing"] == ["models"]
    detail = body["checks"]["models"]["detail"]
    assert f"{total} of {total} model files missing" in detail and str(empty) in detail
    assert "python -m engine models fetch" in detail


@pytest.mark.django_db
def test_models_check_counts_a_truncated_file_and_the_voice_model(client, orm_broker, models_folder, monkeypatch):
    entry = manifest.entries(groups=["safety"])[0]
    with open(models_folder / entry.name, "r+b") as handle:
        handle.truncate(entry.size - 1)
    monkeypatch.setenv("SAFEFACE_VOICE_MODEL", "my-voice.onnx")
    detail = client.get(reverse("readyz")).json()["checks"]["models"]["detail"]
    assert detail.startswith("2 of ") and entry.name in detail and "my-voice.onnx (SAFEFACE_VOICE_MODEL)" in detail


@pytest.mark.django_db
def test_readyz_hides_details_from_outsiders_and_caches_their_answer(client, orm_broker, settings, tmp_path):
    settings.READYZ_CHECK_MODELS = False
    outsider = client.get(reverse("readyz"), REMOTE_ADDR=PUBLIC_IP)
    assert outsider.status_code == 200
    assert all(set(c) == {"ok", "ms"} for c in outsider.json()["checks"].values())
    # Breaking storage now: an outsider still gets the recent answer, an insider a fresh one.
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": "/dev/null/x"}},
    }
    assert client.get(reverse("readyz"), REMOTE_ADDR=PUBLIC_IP).status_code == 200
    assert client.get(reverse("readyz")).status_code == 503
    views._public_readyz = None
    again = client.get(reverse("readyz"), REMOTE_ADDR=PUBLIC_IP)
    assert again.status_code == 503 and again.json()["failing"] == ["storage"]


# --- the healthcheck command ----------------------------------------------------------------
@pytest.mark.django_db
def test_healthcheck_command_exit_codes(orm_broker, models_folder, tmp_path, monkeypatch):
    out = io.StringIO()
    call_command("healthcheck", "--worker", stdout=out)  # returns: exit status 0
    lines = out.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["database", "broker", "storage", "models"]
    assert all(line.startswith("ok") for line in lines)

    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(tmp_path / "nothing-here"))
    out = io.StringIO()
    call_command("healthcheck", stdout=out)  # without --worker the models are not checked
    assert "models" not in out.getvalue()
    out, err = io.StringIO(), io.StringIO()
    with pytest.raises(SystemExit) as exited:
        call_command("healthcheck", "--worker", "--json", stdout=out, stderr=err)
    assert exited.value.code == 1
    document = json.loads(out.getvalue())
    assert document["status"] == "unavailable" and document["failing"] == ["models"]
    assert document["checks"]["database"]["ok"] is True


# --- metrics ------------------------------------------------------------------------------
def sample(text: str, name: str, **labels) -> float | None:
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    return None


@pytest.mark.django_db
def test_metrics_match_the_job_rows(client, owner, orm_broker, django_capture_on_commit_callbacks):
    now = timezone.now()

    def at(seconds_ago: float):
        return now - timedelta(seconds=seconds_ago)

    def make(model=EchoJob, *, status, queued, started=None, finished=None):
        return model.objects.create(
            user=owner, status=status, queued_at=at(queued),
            started_at=at(started) if started is not None else None,
            finished_at=at(finished) if finished is not None else None,
        )

    with django_capture_on_commit_callbacks(execute=True):
        job_submit(GpuEchoJob(user=owner))  # a real submission puts a ticket on the gpu queue
    make(status=JobStatus.QUEUED, queued=30)
    make(status=JobStatus.QUEUED, queued=10)
    make(status=JobStatus.RUNNING, queued=60, started=56)                    # waited 4 s
    make(status=JobStatus.SUCCEEDED, queued=200, started=199.8, finished=198.3)  # wait 0.2, run 1.5
    make(status=JobStatus.SUCCEEDED, queued=200, started=197, finished=190)      # wait 3, run 7
    make(status=JobStatus.SUCCEEDED, queued=300, started=260, finished=160)      # wait 40, run 100
    make(status=JobStatus.FAILED, queued=50, started=49, finished=48.6)          # wait 1, run 0.4
    make(status=JobStatus.CANCELLED, queued=20, finished=15)                     # never started
    make(GpuEchoJob, status=JobStatus.SUCCEEDED, queued=100, started=90, finished=60)

    response = client.get(reverse("metrics"))
    assert response.status_code == 200 and response["Content-Type"].startswith("text/plain")
    text = response.content.decode()
    echo = {"kind": "jobapp.EchoJob"}
    assert sample(text, "safeface_jobs", **echo, cluster="default", state="queued") == 2
    assert sample(text, "safeface_jobs", **echo, state="running") == 1
    assert sample(text, "safeface_jobs", **echo, state="succeeded") == 3
    assert sample(text, "safeface_jobs", **echo, state="failed") == 1
    assert sample(text, "safeface_jobs", **echo, state="cancelled") == 1
    assert sample(text, "safeface_jobs", kind="jobapp.GpuEchoJob", cluster="gpu", state="queued") == 1
    assert sample(text, "safeface_jobs", kind="jobapp.GpuEchoJob", state="succeeded") == 1
    assert sample(text, "safeface_job_failures_total", **echo) == 1
    assert sample(text, "safeface_job_failures_total", kind="jobapp.GpuEchoJob") == 0
    assert 30 <= sample(text, "safeface_job_oldest_queued_seconds", **echo) < 40

    ok = {**echo, "outcome": "succeeded"}
    assert sample(text, "safeface_job_run_seconds_bucket", **ok, le="1.0") == 0
    assert sample(text, "safeface_job_run_seconds_bucket", **ok, le="2.0") == 1
    assert sample(text, "safeface_job_run_seconds_bucket", **ok, le="10.0") == 2
    assert sample(text, "safeface_job_run_seconds_bucket", **ok, le="60.0") == 2
    assert sample(text, "safeface_job_run_seconds_bucket", **ok, le="120.0") == 3
    assert sample(text, "safeface_job_run_seconds_count", **ok) == 3
    assert sample(text, "safeface_job_run_seconds_sum", **ok) == pytest.approx(108.5, abs=0.01)
    assert sample(text, "safeface_job_run_seconds_count", **echo, outcome="failed") == 1
    assert sample(text, "safeface_job_run_seconds_bucket", **echo, outcome="failed", le="0.5") == 1
    assert sample(text, "safeface_job_run_seconds_count", **echo, outcome="cancelled") == 0  # never ran

    # Queue wait of every job that started: 4 (running), 0.2, 3, 40, 1.
    assert sample(text, "safeface_job_queue_wait_seconds_count", **echo) == 5
    assert sample(text, "safeface_job_queue_wait_seconds_sum", **echo) == pytest.approx(48.2, abs=0.01)
    assert sample(text, "safeface_job_queue_wait_seconds_bucket", **echo, le="1.0") == 2
    assert sample(text, "safeface_job_queue_wait_seconds_bucket", **echo, le="5.0") == 4

    assert sample(text, "safeface_broker_up", broker="orm") == 1
    assert sample(text, "safeface_queue_depth", cluster="gpu", queue="gpu") == 1
    assert sample(text, "safeface_queue_depth", cluster="default") == 0

    # A job run through the real path shows up at once.
    assert run_next_job("jobapp.GpuEchoJob").endswith("succeeded")
    text = client.get(reverse("metrics")).content.decode()
    assert sample(text, "safeface_jobs", kind="jobapp.GpuEchoJob", state="succeeded") == 2
    assert sample(text, "safeface_jobs", kind="jobapp.GpuEchoJob", state="queued") == 0


@pytest.mark.django_db
def test_http_request_metrics_count_requests_by_route(client, orm_broker):
    def count(text):
        return sample(text, "safeface_http_requests_total", route="home", method="GET", status="200") or 0

    before = count(client.get(reverse("metrics")).content.decode())
    client.get(reverse("home"))
    client.get(reverse("home"))
    client.get("/no-such-page/")
    text = client.get(reverse("metrics")).content.decode()
    assert count(text) == before + 2
    assert sample(text, "safeface_http_requests_total", route="unmatched", method="GET", status="404") >= 1
    assert sample(text, "safeface_http_request_duration_seconds_count", route="home") >= 2


@pytest.mark.django_db
def test_metrics_access_without_a_token(client, orm_broker, settings):
    settings.METRICS_TOKEN = ""
    get = lambda **meta: client.get(reverse("metrics"), **meta)  # noqa: E731
    assert get().status_code == 200  # loopback
    assert get(REMOTE_ADDR="10.1.2.3").status_code == 200
    assert get(REMOTE_ADDR="192.168.4.5").status_code == 200
    assert get(REMOTE_ADDR="::1").status_code == 200
    outsider = get(REMOTE_ADDR=PUBLIC_IP)
    assert outsider.status_code == 403 and b"METRICS_TOKEN" in outsider.content
    assert b"safeface_jobs" not in outsider.content
    # Through an untrusted proxy the private peer address proves nothing.
    assert get(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=PUBLIC_IP).status_code == 403
    settings.TRUSTED_PROXY_COUNT = 1
    assert get(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=PUBLIC_IP).status_code == 403
    assert get(REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=f"{PUBLIC_IP}, 10.9.8.7").status_code == 200


@pytest.mark.django_db
def test_metrics_access_with_a_token(client, orm_broker, settings):
    settings.METRICS_TOKEN = "s3cret-scrape-token"
    anonymous = client.get(reverse("metrics"))
    assert anonymous.status_code == 401 and anonymous["WWW-Authenticate"].startswith("Bearer")
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer wrong").status_code == 401
    assert client.get(reverse("metrics"), HTTP_AUTHORIZATION="Basic s3cret-scrape-token").status_code == 401
    scraped = client.get(reverse("metrics"), HTTP_AUTHORIZATION="Bearer s3cret-scrape-token", REMOTE_ADDR=PUBLIC_IP)
    assert scraped.status_code == 200 and b"safeface_jobs" in scraped.content
    # readiness details follow the same rule
    body = client.get(reverse("readyz"), HTTP_AUTHORIZATION="Bearer s3cret-scrape-token").json()
    assert "detail" in body["checks"]["database"]
    assert "detail" not in client.get(reverse("readyz")).json()["checks"]["database"]


# --- request ids and structured logs ------------------------------------------------------
def test_request_id_is_generated_or_taken_when_sane(client):
    generated = client.get(reverse("healthz"))["X-Request-ID"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    assert client.get(reverse("healthz"))["X-Request-ID"] != generated
    assert client.get(reverse("healthz"), HTTP_X_REQUEST_ID="lb-7f3a:42")["X-Request-ID"] == "lb-7f3a:42"
    for insane in ("has space", "x" * 200, 'quote"s', "-leading-dash", "new\nline"):
        replaced = client.get(reverse("healthz"), HTTP_X_REQUEST_ID=insane)["X-Request-ID"]
        assert replaced != insane and len(replaced) == 32


@pytest.mark.django_db
def test_request_logs_are_json_with_request_and_user_ids(owner_client, owner, json_logs):
    response = owner_client.get(reverse("swaps-job", args=[987654]), HTTP_X_REQUEST_ID="trace-0042")
    assert response.status_code == 404 and response["X-Request-ID"] == "trace-0042"
    lines = [line for line in json_logs if line["logger"] == "django.request"]
    assert lines, json_logs
    line = lines[-1]
    assert line["level"] == "WARNING" and "/swaps/987654/" in line["message"]
    assert line["request_id"] == "trace-0042" and line["user_id"] == owner.pk
    assert line["job_id"] is None and line["time"].endswith("+00:00")
    # Outside a request the context is empty again.
    logging.getLogger("safeface.test").info("after")
    assert json_logs[-1]["request_id"] is None and json_logs[-1]["user_id"] is None


@pytest.mark.django_db
def test_job_logs_carry_the_job_id_and_exception_text(owner, json_logs):
    job = job_submit(EchoJob(user=owner, behaviour="crash"))
    run_next_job("jobapp.EchoJob")
    crashed = [line for line in json_logs if line["logger"] == "safeface.jobs" and "crashed" in line["message"]]
    assert len(crashed) == 1
    assert crashed[0]["job_id"] == job.pk and crashed[0]["job_kind"] == "jobapp.EchoJob"
    assert crashed[0]["level"] == "ERROR"
    assert "RuntimeError: boom" in crashed[0]["exception"]
    logging.getLogger("safeface.test").info("after the job")
    assert json_logs[-1]["job_id"] is None and json_logs[-1]["job_kind"] is None


def test_extra_values_become_json_fields():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "sent %s", ("mail",), None)
    record.recipient_count = 3
    record.path = Path("/tmp/a")
    ContextFilter().filter(record)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "sent mail" and line["recipient_count"] == 3 and line["path"] == "/tmp/a"
    assert line["request_id"] is None and "exception" not in line


def _run_settings(env: dict, code: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY", "DEBUG", "REDIS_URL", "SAFEFACE_ENV", "ALLOWED_HOSTS", "LOG_FORMAT")}
    clean.update({"DJANGO_SETTINGS_MODULE": "safeface.settings", **env})
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=clean, capture_output=True, text=True, timeout=60)


def test_log_format_defaults_to_json_in_production_and_plain_in_development(tmp_path):
    code = "import django, logging; django.setup(); logging.getLogger('safeface.probe').warning('hello %s', 'world')"
    production = {
        "SAFEFACE_ENV": "production", "SECRET_KEY": "k" * 30 + "abcdefghijklmnopqrstuvwxyz",
        "ALLOWED_HOSTS": "safeface.example", "SAFEFACE_VAR_DIR": str(tmp_path),
    }
    result = _run_settings(production, code)
    assert result.returncode == 0, result.stderr
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert line["message"] == "hello world" and line["logger"] == "safeface.probe" and line["level"] == "WARNING"

    result = _run_settings({"SAFEFACE_VAR_DIR": str(tmp_path)}, code)
    assert result.returncode == 0, result.stderr
    assert result.stderr.strip().endswith("WARNING safeface.probe [-]: hello world")

    bad = _run_settings({"SAFEFACE_VAR_DIR": str(tmp_path), "LOG_FORMAT": "xml", "HEALTH_MODEL_GROUPS": "faces"}, code)
    assert bad.returncode != 0 and "LOG_FORMAT='xml' is not one of: json, plain" in bad.stderr
    bad = _run_settings({"SAFEFACE_VAR_DIR": str(tmp_path), "HEALTH_MODEL_GROUPS": "faces,swapz"}, code)
    assert bad.returncode != 0 and "HEALTH_MODEL_GROUPS names unknown model group(s) swapz" in bad.stderr


@pytest.mark.django_db
def test_probes_are_not_redirected_to_https(client, orm_broker, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.READYZ_CHECK_MODELS = False
    assert client.get(reverse("home")).status_code == 301
    for name in ("healthz", "readyz", "metrics"):
        assert client.get(reverse(name)).status_code == 200, name


@pytest.mark.django_db
def test_http_metrics_are_summed_over_processes_in_multiprocess_mode(client, orm_broker, tmp_path, monkeypatch):
    from safeface import metrics

    folder = tmp_path / "prometheus"
    folder.mkdir()
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(folder), "DJANGO_SETTINGS_MODULE": "tests.settings"}
    code = "import django; django.setup(); from safeface import metrics; metrics.HTTP_REQUESTS.labels('home', 'GET', '200').inc(2)"
    for _ in range(2):  # two gunicorn workers, say
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, check=True, timeout=60)
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(folder))
    monkeypatch.setattr(metrics, "MULTIPROCESS", True)
    text = client.get(reverse("metrics")).content.decode()
    assert sample(text, "safeface_http_requests_total", route="home", method="GET", status="200") == 4
    assert sample(text, "safeface_jobs", kind="jobapp.EchoJob", state="queued") == 0  # job metrics still there
