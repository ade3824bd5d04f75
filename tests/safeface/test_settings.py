"""Settings come from the environment through typed helpers that reject bad values."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured

from safeface.env import Env

ROOT = Path(__file__).resolve().parents[2]


def test_bool_accepts_common_spellings_and_rejects_others():
    env = Env({"A": "yes", "B": "0", "C": "maybe"})
    assert env.bool("A") is True and env.bool("B") is False and env.bool("MISSING", True) is True
    with pytest.raises(ImproperlyConfigured, match=r"C='maybe' is not a boolean"):
        env.bool("C")


def test_int_checks_type_and_range():
    env = Env({"N": "12", "BAD": "twelve", "LOW": "-1"})
    assert env.int("N", 0) == 12 and env.int("MISSING", 7) == 7
    with pytest.raises(ImproperlyConfigured, match="is not a whole number"):
        env.int("BAD", 0)
    with pytest.raises(ImproperlyConfigured, match="below the minimum of 0"):
        env.int("LOW", 0, min_value=0)


def test_choice_list_and_url():
    env = Env({"MODE": "nginx", "HOSTS": "a.example, b.example,", "DB": "mysql://x", "R": "redis://h:1/0"})
    assert env.choice("MODE", ("django", "nginx"), "django") == "nginx"
    assert env.list("HOSTS") == ["a.example", "b.example"]
    assert env.url("R", schemes=("redis",)) == "redis://h:1/0"
    with pytest.raises(ImproperlyConfigured, match="must be a URL starting with one of: postgres://"):
        env.url("DB", schemes=("postgres",))
    with pytest.raises(ImproperlyConfigured, match="is not one of: django, apache"):
        env.choice("MODE", ("django", "apache"), "django")


def _settings_run(extra_env: dict, code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "SECRET_KEY", "DEBUG", "REDIS_URL", "SAFEFACE_ENV", "ALLOWED_HOSTS")}
    env.update({"DJANGO_SETTINGS_MODULE": "safeface.settings", **extra_env})
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


def test_embedded_default_generates_and_keeps_a_secret_key(tmp_path):
    code = "from django.conf import settings as s; print(s.SECRET_KEY, s.DEBUG, s.DATABASES['default']['ENGINE'], s.Q_CLUSTER.get('orm'))"
    first = _settings_run({"SAFEFACE_VAR_DIR": str(tmp_path)}, code)
    second = _settings_run({"SAFEFACE_VAR_DIR": str(tmp_path)}, code)
    assert first.returncode == 0, first.stderr
    key, debug, engine, broker = first.stdout.split()
    assert len(key) >= 50 and debug == "False" and engine.endswith("sqlite3") and broker == "default"
    assert second.stdout.split()[0] == key
    assert oct((tmp_path / "secret_key").stat().st_mode & 0o777) == "0o600"


def test_production_requires_secret_key_and_hosts(tmp_path):
    result = _settings_run({"SAFEFACE_ENV": "production", "SAFEFACE_VAR_DIR": str(tmp_path)}, "import django.conf; django.conf.settings.DEBUG")
    assert result.returncode != 0 and "SECRET_KEY must be set when SAFEFACE_ENV=production" in result.stderr
    key = "k" * 30 + "abcdefghijklmnopqrstuvwxyz"
    result = _settings_run({"SAFEFACE_ENV": "production", "SECRET_KEY": key, "SAFEFACE_VAR_DIR": str(tmp_path)}, "import django.conf; django.conf.settings.DEBUG")
    assert "ALLOWED_HOSTS must be set" in result.stderr


def test_urls_select_postgres_and_redis(tmp_path):
    code = "from django.conf import settings as s; print(s.DATABASES['default']['ENGINE'], s.Q_CLUSTER.get('redis'), s.CACHES['default']['BACKEND'])"
    result = _settings_run({"SAFEFACE_VAR_DIR": str(tmp_path), "DATABASE_URL": "postgres://u@db:5432/sf", "REDIS_URL": "redis://cache:6379/1"}, code)
    assert result.stdout.split() == ["django.db.backends.postgresql", "redis://cache:6379/1", "django.core.cache.backends.redis.RedisCache"]


def test_bad_value_stops_startup_with_the_variable_named(tmp_path):
    result = _settings_run({"SAFEFACE_VAR_DIR": str(tmp_path), "DEBUG": "perhaps"}, "import django.conf; django.conf.settings.DEBUG")
    assert result.returncode != 0 and "DEBUG='perhaps' is not a boolean" in result.stderr


def test_check_deploy_is_clean_with_production_settings(tmp_path):
    env = {
        "SAFEFACE_ENV": "production",
        "SECRET_KEY": "p" * 20 + "0123456789abcdefghijklmnopqrstuvwxyz",
        "ALLOWED_HOSTS": "safeface.example",
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        "SAFEFACE_VAR_DIR": str(tmp_path),
    }
    result = _settings_run(env, "import sys; from django.core.management import execute_from_command_line as m; m(['manage.py', 'check', '--deploy', '--fail-level', 'WARNING'])")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "no issues" in result.stdout
