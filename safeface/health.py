"""Readiness checks: database, broker, storage and the model files a worker needs.

Each check returns a :class:`Check` ``(ok, detail, ms)`` and never raises: a failure is reported
with the exception's type and message. They are cheap enough for a probe every few seconds:

* ``database`` runs ``SELECT 1`` on the default database.
* ``broker`` pings Redis (``REDIS_URL``) with ``HEALTH_TIMEOUT_SECONDS`` connect and read
  timeouts, or, with the ORM broker, reads django-q's queue table (the broker is the database).
* ``storage`` writes a tiny probe object under ``health/`` through ``default_storage``, reads it
  back, compares and deletes it: the same calls the site and workers make, so it works for the
  local disk and for S3 alike.
* ``models`` checks that every file of the groups in ``HEALTH_MODEL_GROUPS`` is present with the
  size the manifest gives (no hashing; ``python -m engine models verify`` does that), and the
  neural voice model when ``SAFEFACE_VOICE_MODEL`` names one.

``/readyz`` runs :data:`WEB_CHECKS` (plus ``models`` when ``READYZ_CHECK_MODELS``); the
``healthcheck`` management command runs them in worker containers, ``--worker`` adding ``models``.
"""
from __future__ import annotations

import os
import secrets
import socket
import time
from collections.abc import Callable, Iterable
from typing import NamedTuple

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage, storages
from django.db import connections

PROBE_PREFIX = "health/"
MAX_DETAIL = 500


class Check(NamedTuple):
    ok: bool
    detail: str
    ms: float


class CheckFailed(Exception):
    """A failure a check diagnosed itself: its message is the whole detail."""


def _failure(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, CheckFailed) else f"{type(exc).__name__}: {exc}".strip()
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def _timed(probe: Callable[[], str]) -> Check:
    """Runs ``probe`` (which returns a detail or raises) and measures it."""
    started = time.perf_counter()
    try:
        detail = probe()
        ok = True
    except Exception as exc:  # a readiness check reports every failure, it never raises
        detail = _failure(exc)
        ok = False
    return Check(ok, detail, round((time.perf_counter() - started) * 1000, 2))


# --- checks ---------------------------------------------------------------------------------
def check_database(alias: str = "default") -> Check:
    def probe() -> str:
        with connections[alias].cursor() as cursor:
            cursor.execute("SELECT 1")
            row = cursor.fetchone()
        if not row or row[0] != 1:
            raise CheckFailed(f"SELECT 1 returned {row!r}")
        return f"{connections[alias].vendor} answered SELECT 1"

    return _timed(probe)


def broker_kind() -> str:
    """"redis" or "orm", as settings.Q_CLUSTER configures django-q's broker."""
    if settings.Q_CLUSTER.get("redis"):
        return "redis"
    if settings.Q_CLUSTER.get("orm"):
        return "orm"
    raise RuntimeError("Q_CLUSTER configures neither a Redis nor an ORM broker")


def redis_client():
    """A Redis client for the broker URL with short timeouts (health checks and metrics)."""
    import redis

    timeout = settings.HEALTH_TIMEOUT_SECONDS
    return redis.Redis.from_url(
        settings.Q_CLUSTER["redis"], socket_connect_timeout=timeout, socket_timeout=timeout
    )


def check_broker() -> Check:
    def probe() -> str:
        kind = broker_kind()
        if kind == "redis":
            client = redis_client()
            try:
                if client.ping() is not True:
                    raise CheckFailed("Redis did not answer PING")
                version = client.info("server").get("redis_version", "?")
            finally:
                client.close()
            return f"Redis {version} answered PING"
        from django_q.models import OrmQ

        alias = settings.Q_CLUSTER["orm"]
        waiting = OrmQ.objects.using(alias).count()
        return f"ORM broker on database {alias!r} ({waiting} task(s) in the queue table)"

    return _timed(probe)


def check_storage() -> Check:
    def probe() -> str:
        payload = secrets.token_bytes(16)
        name = f"{PROBE_PREFIX}{socket.gethostname()[:40]}-{os.getpid()}-{secrets.token_hex(6)}.probe"
        saved = default_storage.save(name, ContentFile(payload))
        try:
            with default_storage.open(saved, "rb") as handle:
                read = handle.read()
            if read != payload:
                raise CheckFailed(f"read back {len(read)} bytes that differ from the {len(payload)} written")
        finally:
            default_storage.delete(saved)
        if default_storage.exists(saved):
            raise CheckFailed(f"probe {saved} is still there after delete")
        return f"{type(storages['default']).__name__}: wrote, read back and deleted {saved}"

    return _timed(probe)


def check_models(groups: Iterable[str] | None = None) -> Check:
    """Presence and size of the model files a worker needs (no hashing)."""
    from engine import models as manifest

    def probe() -> str:
        wanted = list(settings.HEALTH_MODEL_GROUPS if groups is None else groups)
        directory = manifest.models_dir()
        empty = [g for g in wanted if not manifest.entries(groups=[g])]
        if empty:
            raise CheckFailed(f"model group(s) {', '.join(empty)} list no files in this manifest")
        selected = manifest.entries(groups=wanted)
        missing = [e.name for e in selected if not manifest.is_present(e)]
        voice = os.environ.get("SAFEFACE_VOICE_MODEL", "").strip()
        if voice and not (directory / voice).is_file():
            missing.append(f"{voice} (SAFEFACE_VOICE_MODEL)")
        total = len(selected) + bool(voice)
        if missing:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            groups_arg = "".join(f" --group {g}" for g in wanted)
            raise CheckFailed(
                f"{len(missing)} of {total} model files missing or incomplete in {directory} "
                f"(fetch them with: {manifest.FETCH_HINT}{groups_arg}): {shown}"
            )
        return f"{total} model files present in {directory} (groups: {', '.join(wanted)})"

    return _timed(probe)


CHECKS: dict[str, Callable[[], Check]] = {
    "database": check_database,
    "broker": check_broker,
    "storage": check_storage,
    "models": check_models,
}
WEB_CHECKS = ("database", "broker", "storage")
WORKER_CHECKS = (*WEB_CHECKS, "models")


def run_checks(names: Iterable[str]) -> dict[str, Check]:
    """Runs the named checks in order (each is independent: one failing does not skip the rest)."""
    return {name: CHECKS[name]() for name in names}


def readiness_names() -> tuple[str, ...]:
    return WORKER_CHECKS if settings.READYZ_CHECK_MODELS else WEB_CHECKS


def as_document(results: dict[str, Check], *, details: bool = True) -> dict:
    """The JSON body of /readyz and ``healthcheck --json``."""
    checks = {}
    for name, result in results.items():
        entry = {"ok": result.ok, "ms": result.ms}
        if details:
            entry["detail"] = result.detail
        checks[name] = entry
    ok = all(r.ok for r in results.values())
    return {
        "status": "ok" if ok else "unavailable",
        "failing": [name for name, r in results.items() if not r.ok],
        "checks": checks,
    }
