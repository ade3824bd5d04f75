"""gunicorn settings for the SafeFace web process (``gunicorn -c deploy/gunicorn.conf.py
safeface.wsgi:application``; the web image's entry point runs exactly that).

Everything comes from the environment, with defaults that suit one container:

* ``SAFEFACE_HOST`` / ``SAFEFACE_PORT``: the address to bind (``127.0.0.1:8000``; the image sets
  ``SAFEFACE_HOST=0.0.0.0`` so the port can be published).
* ``WEB_CONCURRENCY``: worker processes (default: twice the CPUs this process may use, 2 to 12).
  ``GUNICORN_THREADS``: threads per worker (default 2). Workers are ``gthread``: a slow upload or
  download holds a thread, not a whole process. More processes with fewer threads, because the
  site's requests are short and CPU-bound (threads queue behind the GIL): on 2 cores, 100 polling
  users gave p99 166 ms with 2 workers x 4 threads and 55 ms with 4 x 2 (bench/load.py).
* ``GUNICORN_TIMEOUT``: seconds before a silent worker is killed and replaced (default 60).
* ``FORWARDED_ALLOW_IPS``: proxies whose ``X-Forwarded-*`` headers gunicorn believes (default
  loopback only). Django itself trusts ``X-Forwarded-Proto`` only with
  ``TRUST_X_FORWARDED_PROTO=true``.
* ``PROMETHEUS_MULTIPROC_DIR``: when set (the image's ``web`` command sets it), the workers'
  HTTP metrics are kept there so that /metrics sums them over all workers; the folder is emptied
  at start and a dead worker's files are marked, as prometheus_client's multiprocess mode needs.
* ``LOG_FORMAT``: ``json`` (the production default, like Django's logs) writes one JSON object per
  access-log line with the request id the site put on the response; ``plain`` writes the Apache
  combined format.

Any other gunicorn setting can still be given in ``GUNICORN_CMD_ARGS``.
"""
from __future__ import annotations

import json
import logging
import os
import time
import traceback

from gunicorn.glogging import Logger


def _int(name: str, default: int, low: int, high: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a whole number.") from None
    if not low <= value <= high:
        raise SystemExit(f"{name}={value} must be between {low} and {high}.")
    return value


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _log_format() -> str:
    raw = os.environ.get("LOG_FORMAT", "").strip().lower()
    if raw in ("json", "plain"):
        return raw
    if raw:
        raise SystemExit(f"LOG_FORMAT={raw!r} must be json or plain.")
    production = os.environ.get("SAFEFACE_ENV", "").strip().lower() == "production"
    return "json" if production else "plain"


bind = [f"{os.environ.get('SAFEFACE_HOST', '').strip() or '127.0.0.1'}:{_int('SAFEFACE_PORT', 8000, 1, 65535)}"]
worker_class = "gthread"
workers = _int("WEB_CONCURRENCY", min(max(2 * _usable_cpus(), 2), 12), 1, 64)
threads = _int("GUNICORN_THREADS", 2, 1, 64)
timeout = _int("GUNICORN_TIMEOUT", 60, 10, 3600)
graceful_timeout = 30
keepalive = 5  # behind a reverse proxy that reuses connections
# Replace each worker now and then (jittered so they do not restart together): bounds slow leaks.
# High enough that a busy worker restarts every few minutes, not every few seconds (a restart
# shows up as a latency spike in the load test).
max_requests = 20000
max_requests_jitter = 2000
forwarded_allow_ips = os.environ.get("FORWARDED_ALLOW_IPS", "").strip() or "127.0.0.1,::1"
# The heartbeat file on tmpfs: on a container's overlay filesystem it can stall a worker.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None
accesslog = "-"
errorlog = "-"
loglevel = "info"
access_log_format = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(b)s "%(f)s" "%(a)s" %(M)sms'
_LOG_FORMAT = _log_format()


class JsonLogger(Logger):
    """gunicorn's logger, writing JSON lines with the keys of the site's own JSON logs (time,
    level, logger, message, request_id) plus the request's fields. Built with ``json.dumps``, so a
    quote or newline in a header cannot break a line."""

    def access(self, resp, req, environ, request_time) -> None:
        if not self.access_log_enabled:
            return
        status = resp.status
        if isinstance(status, str):
            status = status.split(None, 1)[0]
        request_id = None
        for name, value in resp.headers or ():
            if name.lower() == "x-request-id":
                request_id = value
        duration_ms = round(request_time.total_seconds() * 1000, 1)
        method = environ.get("REQUEST_METHOD")
        path = environ.get("PATH_INFO")
        document = {
            "time": _utc_now(),
            "level": "INFO",
            "logger": "gunicorn.access",
            "message": f"{method} {path} {status} {duration_ms}ms",
            "request_id": request_id,
            "remote_addr": environ.get("REMOTE_ADDR"),
            "method": method,
            "path": path,
            "query": environ.get("QUERY_STRING") or None,
            "status": int(status) if str(status).isdigit() else status,
            "bytes": getattr(resp, "sent", None),
            "duration_ms": duration_ms,
            "user_agent": environ.get("HTTP_USER_AGENT"),
            "referer": environ.get("HTTP_REFERER"),
        }
        self.access_log.info(json.dumps(document, ensure_ascii=False))

    def setup(self, cfg) -> None:
        super().setup(cfg)
        # gunicorn's own messages (worker boot, timeouts) as JSON lines too.
        formatter = _JsonErrorFormatter()
        for handler in self.error_log.handlers:
            handler.setFormatter(formatter)


class _JsonErrorFormatter(logging.Formatter):
    """gunicorn.error records as JSON lines."""

    def format(self, record) -> str:
        document = {
            "time": _utc_now(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
        }
        if record.exc_info:
            document["exception"] = "".join(traceback.format_exception(*record.exc_info)).rstrip()
        return json.dumps(document, ensure_ascii=False)


def _utc_now(timestamp: float | None = None) -> str:
    moment = time.time() if timestamp is None else timestamp
    millis = int(moment * 1000) % 1000
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(moment)) + f".{millis:03d}+00:00"


if _LOG_FORMAT == "json":
    logger_class = JsonLogger

_METRICS_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "").strip()


def on_starting(server) -> None:
    """Before the first worker: an empty metrics folder (files of an earlier run would count)."""
    if not _METRICS_DIR:
        return
    os.makedirs(_METRICS_DIR, exist_ok=True)
    for name in os.listdir(_METRICS_DIR):
        if name.endswith(".db"):
            os.remove(os.path.join(_METRICS_DIR, name))


def child_exit(server, worker) -> None:
    """A worker ended: its live gauges stop counting (prometheus_client multiprocess mode)."""
    if not _METRICS_DIR:
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
