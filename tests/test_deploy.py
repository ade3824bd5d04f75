"""The deployment files in deploy/ stay true to the code: compose services and their order, the
environment the code reads, the versions the images pin, gunicorn's settings, the entry point's
roles (run for real: gunicorn answering the image's health check, GPU slots, migrations) and the
operator guide. No Docker daemon is needed; `docker compose config` validates the compose file
when a Compose CLI is installed."""
from __future__ import annotations

import ast
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
ENTRYPOINT = DEPLOY / "entrypoint.sh"
VENV_BIN = Path(sys.executable).parent

LONG_RUNNING = {"postgres", "redis", "minio", "web", "worker", "gpu-worker"}
ONE_SHOTS = {"createbucket", "migrate", "fetch-models"}
APP_SERVICES = {"migrate", "fetch-models", "web", "worker", "gpu-worker"}


# --- helpers --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _services(compose: dict) -> dict:
    return compose["services"]


def _requirement_pins(name: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / name).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            package, version = line.split("==", 1)
            pins[package.split("[")[0].strip().lower()] = version.strip()
    return pins


def _env_example() -> tuple[dict[str, str], set[str]]:
    """(set variables, names shown only as commented-out `# NAME=value` lines)."""
    values, optional = {}, set()
    for line in (DEPLOY / "env.example").read_text().splitlines():
        if match := re.match(r"^([A-Z][A-Z0-9_]*)=(.*)$", line):
            values[match[1]] = match[2]
        elif match := re.match(r"^#\s*([A-Z][A-Z0-9_]*)=", line):
            optional.add(match[1])
    return values, optional


def _names_read_by_code() -> set[str]:
    """Environment variable names the project's code reads: every upper-case string literal with
    an underscore in safeface/, engine/ and the gunicorn config (env helpers, os.environ and
    constants such as PROVIDERS_ENV = "..."), and every $NAME the entry point expands."""
    names: set[str] = set()
    sources = [*ROOT.glob("safeface/**/*.py"), *ROOT.glob("engine/**/*.py"), DEPLOY / "gunicorn.conf.py"]
    for path in sources:
        names |= set(re.findall(r"""["']([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)["']""", path.read_text()))
        names |= set(re.findall(r"""env\.\w+\(\s*["']([A-Z][A-Z0-9]+)["']""", path.read_text()))
    names |= set(re.findall(r"\$\{?([A-Z][A-Z0-9_]+)", ENTRYPOINT.read_text()))
    return names


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _production_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """env.example with each CHANGE_ME token replaced (consistently) by a random value, SQLite
    instead of the compose PostgreSQL, and nothing else from the caller's environment."""
    values, _ = _env_example()
    tokens: dict[str, str] = {}

    def fill(value: str) -> str:
        return re.sub(r"CHANGE_ME\w*", lambda m: tokens.setdefault(m[0], secrets.token_urlsafe(48)), value)

    env = {name: fill(value) for name, value in values.items()}
    env.update(
        PATH=f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        HOME=str(tmp_path),
        LANG="C.UTF-8",
        DATABASE_URL=f"sqlite:///{tmp_path / 'db.sqlite3'}",
        SAFEFACE_VAR_DIR=str(tmp_path / "var"),
        DJANGO_SETTINGS_MODULE="safeface.settings",
    )
    env.update(extra)
    return env


# --- compose.yaml ---------------------------------------------------------------------------------
def test_compose_has_the_services_each_with_a_health_check_or_a_one_shot_policy(compose):
    services = _services(compose)
    assert set(services) == LONG_RUNNING | ONE_SHOTS
    for name in LONG_RUNNING:
        check = services[name].get("healthcheck", {})
        assert check.get("test"), f"{name} has no healthcheck"
        assert services[name].get("restart") == "unless-stopped", name
    for name in ONE_SHOTS:
        assert services[name].get("restart") == "no", f"one-shot {name} must not restart"
    for name in ONE_SHOTS & APP_SERVICES:  # the images' own checks are for the long-running roles
        assert services[name]["healthcheck"] == {"disable": True}, name
    assert services["postgres"]["image"] == "postgres:16"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["redis"]["image"] == "redis:7"
    assert services["redis"]["command"][:3] == ["redis-server", "--appendonly", "yes"]
    assert services["redis"]["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    for name in ("minio", "createbucket"):
        assert re.fullmatch(r"minio/(minio|mc):RELEASE\.\d{4}-\d\d-\d\dT[\d-]+Z", services[name]["image"]), name
    assert services["web"]["healthcheck"]["test"] == ["CMD", "/app/deploy/entrypoint.sh", "healthz"]
    assert services["worker"]["healthcheck"]["test"] == ["CMD", "python", "manage.py", "healthcheck"]
    assert services["gpu-worker"]["healthcheck"]["test"] == ["CMD", "python", "manage.py", "healthcheck", "--worker"]
    script = services["createbucket"]["command"][0]
    for step in ("mc mb --ignore-existing", "mc anonymous set none", "mc version enable", "mc admin user add",
                 "mc admin policy attach"):
        assert step in script, step


def test_compose_start_order_uses_health_and_completion_conditions(compose):
    services = _services(compose)
    for name, service in services.items():
        for target, rule in (service.get("depends_on") or {}).items():
            assert isinstance(rule, dict) and "condition" in rule, f"{name} -> {target}: long syntax with a condition"
            if rule["condition"] == "service_healthy":
                assert services[target].get("healthcheck"), f"{name} waits for {target}'s health, which has no check"
            else:
                assert rule["condition"] == "service_completed_successfully", (name, target, rule)
                assert target in ONE_SHOTS, f"{name} waits for {target} to complete, but it never exits"
    for name in ("web", "worker", "gpu-worker"):
        depends = services[name]["depends_on"]
        for one_shot in ("migrate", "createbucket"):
            assert depends[one_shot]["condition"] == "service_completed_successfully", (name, one_shot)
        for backing in ("postgres", "redis", "minio"):
            assert depends[backing]["condition"] == "service_healthy", (name, backing)
    assert services["gpu-worker"]["depends_on"]["fetch-models"]["condition"] == "service_completed_successfully"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["createbucket"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_compose_roles_images_env_file_and_commands(compose):
    services = _services(compose)
    for name in APP_SERVICES:
        service = services[name]
        assert service["env_file"] == ".env", name
        assert service["build"]["context"] == "..", name
        dockerfile = service["build"]["dockerfile"]
        assert (ROOT / dockerfile).is_file(), dockerfile
    web_image = {n: services[n]["build"]["dockerfile"] for n in ("migrate", "web", "worker")}
    assert set(web_image.values()) == {"deploy/Dockerfile.web"}
    assert {services[n]["build"]["dockerfile"] for n in ("fetch-models", "gpu-worker")} == {"deploy/Dockerfile.gpu"}
    roles = {name: services[name]["command"] for name in APP_SERVICES}
    assert roles == {
        "migrate": ["migrate"], "fetch-models": ["fetch-models"], "web": ["web"],
        "worker": ["worker"], "gpu-worker": ["gpu-worker"],
    }
    for role in {command[0] for command in roles.values()}:
        assert re.search(rf"^\s+{re.escape(role)}\)", ENTRYPOINT.read_text(), re.M), f"entrypoint has no {role} role"
    assert services["gpu-worker"]["environment"]["Q_CLUSTER_NAME"] == "gpu"
    assert "Q_CLUSTER_NAME" not in (services["worker"].get("environment") or {})


def test_compose_gpu_reservation_and_volumes(compose):
    services = _services(compose)
    devices = services["gpu-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert len(devices) == 1
    assert devices[0]["driver"] == "nvidia"
    assert devices[0]["capabilities"] == ["gpu"]
    # Every GPU of the host: the entry point gives each replica its own (see the GPU slot test).
    assert devices[0]["count"] == "all"
    for name in ("gpu-worker", "fetch-models"):
        assert "models:/models" in services[name]["volumes"], name
        assert services[name]["environment"]["SAFEFACE_MODELS_DIR"] == "/models", name
    assert "postgres-data:/var/lib/postgresql/data" in services["postgres"]["volumes"]
    assert "redis-data:/data" in services["redis"]["volumes"]
    assert "minio-data:/data" in services["minio"]["volumes"]
    assert set(compose["volumes"]) == {"postgres-data", "redis-data", "minio-data", "models"}
    assert services["web"]["ports"] == ["127.0.0.1:8000:8000"]


def test_compose_workers_can_be_scaled(compose):
    for name, service in _services(compose).items():
        assert "container_name" not in service, f"{name}: a fixed name stops --scale"
    for name in ("worker", "gpu-worker"):
        assert "ports" not in _services(compose)[name], f"{name}: a fixed port stops --scale"


def test_docker_compose_config_accepts_the_file(tmp_path):
    """With a Compose CLI installed (v2 plugin or docker-compose), the file validates against
    the Compose specification with env.example as its .env."""
    for candidate in (["docker", "compose"], ["docker-compose"]):
        if shutil.which(candidate[0]) and subprocess.run(
            [*candidate, "version"], capture_output=True, timeout=30
        ).returncode == 0:
            cli = candidate
            break
    else:
        pytest.skip("no Docker Compose CLI here (the structural tests above still ran)")
    copy = tmp_path / "deploy"
    copy.mkdir()
    text = (DEPLOY / "compose.yaml").read_text()
    if cli == ["docker-compose"]:  # Compose v1 predates the specification's top-level `name`
        text = re.sub(r"^name: .*\n", "", text, flags=re.M)
    (copy / "compose.yaml").write_text(text)
    shutil.copy(DEPLOY / "env.example", copy / ".env")
    result = subprocess.run([*cli, "-f", str(copy / "compose.yaml"), "config"], capture_output=True, text=True,
                            timeout=60, cwd=copy)
    assert result.returncode == 0, result.stderr
    rendered = yaml.safe_load(result.stdout)
    assert set(rendered["services"]) == LONG_RUNNING | ONE_SHOTS
    # env_file and interpolation both read the .env: the services get env.example's values.
    assert rendered["services"]["web"]["environment"]["REDIS_URL"] == "redis://redis:6379/0"
    assert rendered["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "CHANGE_ME_DB_PASSWORD"
    assert rendered["services"]["gpu-worker"]["environment"]["Q_CLUSTER_NAME"] == "gpu"


# --- environment ------------------------------------------------------------------------------
# Read by something other than our code, and where to see that it is.
def _external_reader(name: str, compose_text: str) -> bool:
    if name == "Q_CLUSTER_NAME":  # django-q picks the cluster from it
        import django_q.conf

        return "Q_CLUSTER_NAME" in Path(django_q.conf.__file__).read_text()
    if name in {"POSTGRES_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"}:  # the images', via compose
        return "${" + name + ":?" in compose_text
    return False


def test_every_variable_in_env_example_and_compose_is_read(compose):
    values, optional = _env_example()
    compose_text = (DEPLOY / "compose.yaml").read_text()
    named = set(values) | optional
    for service in _services(compose).values():
        environment = service.get("environment") or {}
        named |= set(environment)
    named |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]*)", compose_text))
    # The compose-only names given to the MinIO and PostgreSQL images by their own names.
    named -= {"POSTGRES_DB", "POSTGRES_USER"}
    code = _names_read_by_code()
    unread = sorted(n for n in named if n not in code and not _external_reader(n, compose_text))
    assert unread == []
    assert len(named) > 35


def test_env_example_holds_every_required_production_variable_and_only_placeholders():
    values, _ = _env_example()
    settings_text = (ROOT / "safeface" / "settings.py").read_text()
    required = set(re.findall(r"([A-Z][A-Z_]+) must be set when SAFEFACE_ENV=production", settings_text))
    assert {"SECRET_KEY", "ALLOWED_HOSTS"} <= required
    assert required <= set(values)
    assert values["SAFEFACE_ENV"] == "production"
    for name in ("SECRET_KEY", "POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "SAFEFACE_S3_SECRET_ACCESS_KEY",
                 "METRICS_TOKEN", "EMAIL_HOST_PASSWORD", "STRIPE_SECRET_KEY", "STRIPE_WEBHOOK_SECRET"):
        assert values[name].startswith("CHANGE_ME"), f"{name} must be a placeholder"
    assert all("$" not in value for value in values.values()), "compose would interpolate a $"
    database = urlparse(values["DATABASE_URL"])
    assert (database.hostname, database.username, database.password, database.path) == (
        "postgres", "safeface", values["POSTGRES_PASSWORD"], "/safeface"
    )
    assert urlparse(values["REDIS_URL"]).hostname == "redis"
    assert urlparse(values["SAFEFACE_S3_ENDPOINT_URL"]).hostname == "minio"


def test_env_example_passes_the_production_checks_once_filled_and_migrate_role_runs(tmp_path):
    """entrypoint.sh migrate (migrations, then check --deploy) with env.example's values: exit 0,
    tables made; with the placeholders left in, the site refuses to start on SECRET_KEY."""
    env = _production_env(tmp_path)
    result = subprocess.run([str(ENTRYPOINT), "migrate"], env=env, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout + result.stderr
    import sqlite3

    with sqlite3.connect(tmp_path / "db.sqlite3") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type='table'")}
        sweeper = db.execute("select func from django_q_schedule").fetchall()
    assert {"django_migrations", "accounts_user", "django_q_schedule"} <= tables
    assert sweeper == [("safeface.jobs.sweep_jobs",)]

    raw = dict(env, SECRET_KEY=_env_example()[0]["SECRET_KEY"])
    refused = subprocess.run([sys.executable, "manage.py", "check", "--deploy"], env=raw, cwd=ROOT,
                             capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0
    assert "SECRET_KEY must be at least 50" in refused.stderr


# --- Dockerfiles --------------------------------------------------------------------------------
def _arg(text: str, name: str) -> str:
    match = re.search(rf'^ARG {name}=(?:"([^"]*)"|(\S*))', text, re.M)
    assert match, f"no ARG {name}"
    return match[1] if match[1] is not None else match[2]


def test_dockerfiles_pin_the_versions_of_the_requirements():
    base = _requirement_pins("base.txt")
    web = (DEPLOY / "Dockerfile.web").read_text()
    gpu = (DEPLOY / "Dockerfile.gpu").read_text()
    assert _arg(web, "PYTHON_IMAGE") == "python:3.11-slim-bookworm"
    assert _arg(gpu, "TORCH_VERSION") == base["torch"] == "2.13.0"
    assert _arg(gpu, "ONNXRUNTIME_GPU_VERSION") == base["onnxruntime"]
    cuda_image = _arg(gpu, "CUDA_IMAGE")
    cuda = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu\d\d\.\d\d", cuda_image)
    assert cuda, cuda_image
    # torch's CUDA build, TensorRT's and the base image's CUDA must agree (onnxruntime-gpu 1.31 is
    # built for CUDA 13: libcudart.so.13, libcublas.so.13, cuDNN 9, TensorRT 10).
    assert _arg(gpu, "TORCH_INDEX_URL") == f"https://download.pytorch.org/whl/cu{cuda[1]}{cuda[2]}"
    assert re.fullmatch(rf"tensorrt-cu{cuda[1]}-libs==10\.[\d.]+", _arg(gpu, "TENSORRT"))
    assert "python3.11" in gpu and "python3.11 -m venv /opt/venv" in gpu
    assert "-r requirements/gpu.txt" in gpu
    assert "pip uninstall -y onnxruntime" in gpu
    assert '"onnxruntime-gpu==${ONNXRUNTIME_GPU_VERSION}"' in gpu
    assert '"torch==${TORCH_VERSION}"' in gpu
    for text in (web, gpu):
        assert "PIP_CONSTRAINT=/src/requirements/constraints.txt" in text  # building pyworld
        assert "PIP_CONSTRAINT=/app/requirements/constraints.txt" in text  # model fetches at run time
        assert "--no-deps -r requirements/nodeps.txt" in text
        assert re.search(r"^USER safeface$", text, re.M)
        assert 'ENTRYPOINT ["/app/deploy/entrypoint.sh"]' in text
        assert "manage.py collectstatic --noinput" in text
        assert text.count("FROM ") >= 2, "multi-stage: compilers stay in the build stage"
    assert 'CMD ["/app/deploy/entrypoint.sh", "healthz"]' in web
    assert 'CMD ["web"]' in web
    assert 'CMD ["python", "manage.py", "healthcheck", "--worker"]' in gpu
    assert 'CMD ["gpu-worker"]' in gpu
    assert 'VOLUME ["/models"]' in gpu and "SAFEFACE_MODELS_DIR=/models" in gpu
    assert "Q_CLUSTER_NAME=gpu" in gpu


def _web_without() -> list[str]:
    return _arg((DEPLOY / "Dockerfile.web").read_text(), "WEB_WITHOUT").split()


# Imports of the web process and the default cluster: every module of the apps except the GPU
# job bodies (processing.py, and run() of job models whose CLUSTER is "gpu").
def _web_side_imports() -> set[str]:
    modules: set[str] = set()
    files = [p for app in ("safeface", "accounts", "avatars", "swaps", "voice") for p in (ROOT / app).rglob("*.py")]
    for path in files:
        if path.name == "processing.py":
            continue
        tree = ast.parse(path.read_text())
        skip: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef):
                gpu = any(
                    isinstance(item, ast.Assign)
                    and any(isinstance(t, ast.Name) and t.id == "CLUSTER" for t in item.targets)
                    and isinstance(item.value, ast.Constant) and item.value.value == "gpu"
                    for item in node.body
                )
                if gpu:
                    for item in node.body:
                        if isinstance(item, ast.FunctionDef) and item.name == "run":
                            skip |= {id(n) for n in ast.walk(item)}
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        modules.add(package.removesuffix(".__init__"))
        for node in ast.walk(tree):
            if id(node) in skip:
                continue
            if isinstance(node, ast.Import):
                modules |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                modules.add(node.module)
                modules |= {f"{node.module}.{alias.name}" for alias in node.names}
    return modules


def test_web_image_leaves_out_only_packages_the_web_process_never_imports(tmp_path):
    """Dockerfile.web drops WEB_WITHOUT (and what only they pull in). Import everything the web
    process, the default cluster and migrations reach; no module may come from a dropped package."""
    without = _web_without()
    base = _requirement_pins("base.txt")
    assert without and all(name.lower() in base for name in without), without
    probe = r"""
import importlib, importlib.util, json, re, sys
from importlib import metadata
from packaging.requirements import Requirement
without, roots, wanted = json.loads(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
import django
django.setup()
from django.urls import get_resolver
get_resolver().url_patterns
for name in wanted:
    try:
        importlib.import_module(name)
    except ImportError:
        parent, _, attr = name.rpartition(".")  # "from x import y" where y is not a module
        if not parent or importlib.util.find_spec(parent) is None:
            raise
        importlib.import_module(parent)
def norm(n): return re.sub(r"[-_.]+", "-", n).lower()
dists = {norm(d.metadata["Name"]): d for d in metadata.distributions()}
def closure(names):
    seen, stack = set(), [norm(n) for n in names]
    while stack:
        n = stack.pop()
        if n in seen or n not in dists: continue
        seen.add(n)
        for r in dists[n].requires or []:
            req = Requirement(r)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                stack.append(norm(req.name))
    return seen
dropped = closure(roots) - closure([r for r in roots if norm(r) not in {norm(w) for w in without}])
files = {}
for name in dropped:
    for f in dists[name].files or []:
        files[str(f.locate().resolve())] = name
hits = sorted({(files[p], m) for m, mod in list(sys.modules.items())
               if (p := getattr(mod, "__file__", None)) and (p := str(__import__("pathlib").Path(p).resolve())) in files})
print(json.dumps({"dropped": sorted(dropped), "hits": hits}))
"""
    roots = list(base)
    wanted = sorted(m for m in _web_side_imports() if not m.startswith(("tests", "__future__")))
    env = _production_env(tmp_path)
    result = subprocess.run([sys.executable, "-c", probe, json.dumps(without), json.dumps(roots), json.dumps(wanted)],
                            env=env, cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert {"torch", "openvino", "onnxruntime", "librosa", "resemblyzer"} <= set(report["dropped"])
    assert report["hits"] == [], "the web side imports packages Dockerfile.web leaves out"
    assert len(wanted) > 100


# --- gunicorn ------------------------------------------------------------------------------------
def _gunicorn_config(monkeypatch, **env: str):
    from gunicorn.config import Config

    for name in ("WEB_CONCURRENCY", "GUNICORN_THREADS", "GUNICORN_TIMEOUT", "FORWARDED_ALLOW_IPS", "LOG_FORMAT",
                 "SAFEFACE_HOST", "SAFEFACE_PORT", "SAFEFACE_ENV", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    import runpy

    namespace = runpy.run_path(str(DEPLOY / "gunicorn.conf.py"))
    config = Config()
    for key, value in namespace.items():
        if key in config.settings:
            config.set(key, value)
    return config, namespace


def test_gunicorn_config_values(monkeypatch):
    config, namespace = _gunicorn_config(monkeypatch)
    assert config.worker_class_str == "gthread"
    assert 2 <= config.workers <= 12
    assert config.threads == 2
    assert config.timeout == 60 and config.graceful_timeout == 30
    assert config.bind == ["127.0.0.1:8000"]
    assert config.forwarded_allow_ips == ["127.0.0.1", "::1"]
    assert config.accesslog == "-" and config.errorlog == "-"
    assert config.max_requests == 20000 and config.max_requests_jitter == 2000
    assert config.logger_class.__name__ == "Logger"  # plain outside production

    config, namespace = _gunicorn_config(
        monkeypatch, WEB_CONCURRENCY="3", GUNICORN_THREADS="8", GUNICORN_TIMEOUT="120", SAFEFACE_HOST="0.0.0.0",
        SAFEFACE_PORT="9000", FORWARDED_ALLOW_IPS="10.0.0.5", SAFEFACE_ENV="production",
    )
    assert (config.workers, config.threads, config.timeout) == (3, 8, 120)
    assert config.bind == ["0.0.0.0:9000"]
    assert config.forwarded_allow_ips == ["10.0.0.5"]
    assert config.logger_class is namespace["JsonLogger"]  # production default: JSON

    for name, value, message in (
        ("WEB_CONCURRENCY", "many", "WEB_CONCURRENCY='many' is not a whole number"),
        ("GUNICORN_THREADS", "0", "GUNICORN_THREADS=0 must be between 1 and 64"),
        ("LOG_FORMAT", "xml", "LOG_FORMAT='xml' must be json or plain"),
    ):
        with pytest.raises(SystemExit, match=re.escape(message)):
            _gunicorn_config(monkeypatch, **{name: value})


def test_gunicorn_json_access_log_is_one_valid_json_object(monkeypatch, capsys):
    from datetime import timedelta
    from types import SimpleNamespace

    config, namespace = _gunicorn_config(monkeypatch, LOG_FORMAT="json")
    logger = namespace["JsonLogger"](config)
    response = SimpleNamespace(status="200 OK", headers=[("Content-Type", "text/html"), ("X-Request-ID", "abc-123")],
                               sent=512)
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/swaps/7/", "QUERY_STRING": "", "REMOTE_ADDR": "10.1.2.3",
               "HTTP_USER_AGENT": 'evil "agent"\n{"level": "fake"}', "RAW_URI": "/swaps/7/",
               "SERVER_PROTOCOL": "HTTP/1.1"}
    logger.access(response, SimpleNamespace(headers=[]), environ, timedelta(milliseconds=42))
    for handler in logger.access_log.handlers:
        handler.flush()
    lines = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["request_id"] == "abc-123" and record["status"] == 200 and record["duration_ms"] == 42.0
    assert record["path"] == "/swaps/7/" and record["bytes"] == 512 and record["logger"] == "gunicorn.access"
    assert record["user_agent"] == environ["HTTP_USER_AGENT"]


def test_web_role_serves_and_the_image_health_check_passes(tmp_path):
    """entrypoint.sh web (gunicorn with the config, production settings from env.example): the
    HEALTHCHECK command (entrypoint.sh healthz) exits 0; the access log is JSON with the request
    id; with no server listening the check exits 1."""
    port = _free_port()
    env = _production_env(tmp_path, SAFEFACE_HOST="127.0.0.1", SAFEFACE_PORT=str(port), WEB_CONCURRENCY="1",
                          GUNICORN_THREADS="2", PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prometheus"),
                          STATIC_MANIFEST="false")
    log = (tmp_path / "gunicorn.log").open("w+")
    server = subprocess.Popen([str(ENTRYPOINT), "web"], env=env, stdout=log, stderr=subprocess.STDOUT,
                              start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        check = None
        while time.monotonic() < deadline:
            check = subprocess.run([str(ENTRYPOINT), "healthz"], env=env, capture_output=True, text=True, timeout=30)
            if check.returncode == 0 or server.poll() is not None:
                break
            time.sleep(0.5)
        log.seek(0)
        output = log.read()
        assert server.poll() is None, output
        assert check is not None and check.returncode == 0, check.stderr + output
        time.sleep(0.3)
        log.seek(0)
        access = [json.loads(line) for line in log.read().splitlines() if '"gunicorn.access"' in line]
        assert access and access[-1]["path"] == "/healthz" and access[-1]["status"] == 200
        assert re.fullmatch(r"[0-9a-f]{32}", access[-1]["request_id"] or ""), access[-1]
        assert (tmp_path / "prometheus").is_dir()
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
    down = subprocess.run([str(ENTRYPOINT), "healthz"], env=env, capture_output=True, text=True, timeout=30)
    assert down.returncode == 1
    assert f"no answer on 127.0.0.1:{port}" in down.stderr


# --- GPU slots ---------------------------------------------------------------------------------
def _fake_nvidia_smi(folder: Path, gpus: int) -> None:
    folder.mkdir(exist_ok=True)
    script = folder / "nvidia-smi"
    lines = "\n".join(f"echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i:08d})'" for i in range(gpus))
    script.write_text(f"#!/bin/sh\n{lines}\n")
    script.chmod(0o755)


# A stand-in for the qcluster: prints the GPU it was given, then holds its slot for a while.
GPU_WORKER = [str(ENTRYPOINT), "gpu-worker", sys.executable, "-c",
              "import os, time; print(os.environ['CUDA_VISIBLE_DEVICES'], os.environ['Q_CLUSTER_NAME'], flush=True);"
              " time.sleep(60)"]


def _start_gpu_worker(env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen(GPU_WORKER, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_gpu_workers_claim_one_gpu_each_and_free_it_when_they_stop(tmp_path):
    if not shutil.which("flock"):
        pytest.skip("util-linux flock is not installed (the GPU image has it)")
    _fake_nvidia_smi(tmp_path / "bin", gpus=2)
    env = {"PATH": f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}", "SAFEFACE_MODELS_DIR": str(tmp_path / "models")}
    workers = []
    try:
        for _ in range(2):
            workers.append(_start_gpu_worker(env))
        first, second = (worker.stdout.readline().split() for worker in workers)
        assert sorted([first, second]) == [["0", "gpu"], ["1", "gpu"]]

        third = subprocess.run(GPU_WORKER, env=env, capture_output=True, text=True, timeout=30)
        assert third.returncode == 1
        assert "all 2 GPU slot(s) of this host are taken" in third.stderr

        workers[0].kill()  # its lock goes with the process, however it ends
        workers[0].wait()
        workers.append(_start_gpu_worker(env))
        assert workers[-1].stdout.readline().split() == first

        workers.append(_start_gpu_worker(dict(env, SAFEFACE_WORKERS_PER_GPU="2")))
        assert workers[-1].stdout.readline().split() == ["0", "gpu"]  # slot 2 of 4: GPU 0 again

        bad = subprocess.run(GPU_WORKER, env=dict(env, SAFEFACE_WORKERS_PER_GPU="0"), capture_output=True, text=True,
                             timeout=30)
        assert bad.returncode == 1 and "SAFEFACE_WORKERS_PER_GPU=0 is not a whole number" in bad.stderr
        bare = tmp_path / "bare"
        bare.mkdir()
        for tool in ("bash", "dirname"):
            (bare / tool).symlink_to(shutil.which(tool))
        no_gpu = subprocess.run([str(ENTRYPOINT), "gpu-worker", "true"], capture_output=True, text=True, timeout=30,
                                env={"PATH": str(bare), "SAFEFACE_MODELS_DIR": str(tmp_path / "models")})
        assert no_gpu.returncode == 1 and "found no nvidia-smi" in no_gpu.stderr
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.kill()
            worker.wait()
            worker.stdout.close()
            worker.stderr.close()


def test_fetch_models_role_refuses_an_unknown_group_before_downloading(tmp_path):
    env = {"PATH": f"{VENV_BIN}{os.pathsep}/usr/bin:/bin", "SAFEFACE_MODELS_DIR": str(tmp_path / "models"),
           "SAFEFACE_FETCH_GROUPS": "swap,colour"}
    result = subprocess.run([str(ENTRYPOINT), "fetch-models"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "invalid choice: 'colour'" in result.stderr
    assert not (tmp_path / "models").exists() or not any((tmp_path / "models").iterdir())


# --- the operator guide ----------------------------------------------------------------------------
def test_operator_guide_covers_each_step(compose):
    guide = (DEPLOY / "README.md").read_text()
    for phrase in (
        "cp deploy/env.example deploy/.env", "docker compose -f deploy/compose.yaml", "up -d --build",
        "createsuperuser", "## Migrations", "dc run --rm migrate", "check --deploy",
        "## Model files on workers", "SAFEFACE_FETCH_GROUPS", "HEALTH_MODEL_GROUPS", "SAFEFACE_MODELS_DIR",
        "FaceFusion", "SAFEFACE_DIFFUSERS_MODEL", "SAFEFACE_COMMERCIAL", ".trt_cache",
        "## Scaling workers", "--scale gpu-worker=4", "Q_GPU_WORKERS", "SAFEFACE_WORKERS_PER_GPU", "Q_WORKERS",
        "WEB_CONCURRENCY", "sweeper", "JOB_STALE_SECONDS",
        "## Backups", "pg_dump", "pg_restore", "mc mirror", "versioning", "models", "Redis",
        "## Upgrades", "dc build", "## Health, readiness and metrics", "/healthz", "/readyz", "/metrics",
        "METRICS_TOKEN", "healthcheck --worker", "## Logs", "LOG_FORMAT", "request_id", "job_id",
    ):
        assert phrase in guide, phrase
    for service in _services(compose):
        assert f"`{service}`" in guide, f"the guide never names the {service} service"
    for path in set(re.findall(r"`(deploy/[\w./-]+)`", guide)) - {"deploy/.env"}:  # .env: the operator's copy
        assert (ROOT / path).exists(), path
