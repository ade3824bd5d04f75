"""Structured logs: every log line carries the request and job it belongs to.

* :class:`RequestIdMiddleware` takes a sane incoming ``X-Request-ID`` (set by a proxy or load
  balancer) or makes one, returns it on the response and keeps it in a context variable for the
  rest of the request.
* :func:`log_context` sets the job context around a job's run (``safeface.jobs.execute``).
* :class:`ContextFilter` (attached to the handlers in ``settings.LOGGING``) copies the context
  onto every record: ``request_id``, ``user_id`` (once the request's user is known), ``job_id``
  and ``job_kind``; absent values are ``None``.
* :class:`JsonFormatter` writes one JSON object per line (``LOG_FORMAT=json``, the production
  default): time, level, logger, message, the context ids, the exception text, and any ``extra``
  values the call passed.

Module name ``logs`` rather than ``logging`` so that it never shadows the standard library.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from typing import Any

from django.core.signals import request_finished
from django.http import HttpRequest, HttpResponse
from django.utils.functional import LazyObject, empty

REQUEST_ID_HEADER = "X-Request-ID"
# What an incoming request id may look like: ids from proxies (uuids, hex, "abc-123", nginx's
# $request_id, AWS's "Root=1-5759e988-bd862e3fe1be46a994272793") pass; anything long or with
# spaces, quotes or control characters (log injection) is replaced by a fresh id.
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:;=+/-]{0,127}$")

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("safeface_request_id", default=None)
_request: contextvars.ContextVar[HttpRequest | None] = contextvars.ContextVar("safeface_request", default=None)
_job_id: contextvars.ContextVar[int | None] = contextvars.ContextVar("safeface_job_id", default=None)
_job_kind: contextvars.ContextVar[str | None] = contextvars.ContextVar("safeface_job_kind", default=None)

CONTEXT_FIELDS = ("request_id", "user_id", "job_id", "job_kind")


def new_request_id() -> str:
    return uuid.uuid4().hex


def sane_request_id(value: str | None) -> str | None:
    """The incoming id when it is safe to log and echo, else None."""
    if value and _SANE_REQUEST_ID.match(value):
        return value
    return None


@contextlib.contextmanager
def log_context(*, request_id: str | None = None, job_id: int | None = None, job_kind: str | None = None) -> Iterator[None]:
    """Sets the given ids for the log records written inside the block (None leaves one as it is)."""
    tokens: list[tuple[contextvars.ContextVar, contextvars.Token]] = []
    for var, value in ((_request_id, request_id), (_job_id, job_id), (_job_kind, job_kind)):
        if value is not None:
            tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


def job_log_context(job) -> contextlib.AbstractContextManager[None]:
    """The context of one job run: its primary key and its kind (``app_label.ModelName``)."""
    return log_context(job_id=job.pk, job_kind=job._meta.label)


def _user_id(request: HttpRequest | None) -> int | str | None:
    """The request's user id, only if something already loaded the user: a log call must never
    trigger a session or user query (which could itself log, or fail)."""
    if request is None:
        return None
    user = request.__dict__.get("user")
    if user is None:
        return None
    if isinstance(user, LazyObject):
        wrapped = user._wrapped  # the documented state holder of Django's lazy objects
        if wrapped is empty:
            return None
        user = wrapped
    if getattr(user, "is_authenticated", False):
        return user.pk
    return None


class ContextFilter(logging.Filter):
    """Adds request_id, user_id, job_id and job_kind to every record (never drops one)."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = _request_id.get()
        record.user_id = _user_id(_request.get())
        record.job_id = _job_id.get()
        record.job_kind = _job_kind.get()
        parts = []
        if record.request_id:
            parts.append(f"request={record.request_id}")
        if record.user_id is not None:
            parts.append(f"user={record.user_id}")
        if record.job_id is not None:
            parts.append(f"job={record.job_kind}#{record.job_id}")
        record.context = " ".join(parts) or "-"
        return True


# Attributes every LogRecord has; anything else on a record came from ``extra=`` (or a filter).
_RECORD_ATTRIBUTES = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "context", *CONTEXT_FIELDS}


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line; exceptions and stacks are fields, never extra lines."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            document[name] = getattr(record, name, None)
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            document["exception"] = record.exc_text
        if record.stack_info:
            document["stack"] = self.formatStack(record.stack_info)
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRIBUTES and not key.startswith("_") and key not in document:
                document[key] = _jsonable(value)
        return json.dumps(document, ensure_ascii=False, default=str)


class RequestIdMiddleware:
    """First in MIDDLEWARE: every response (redirects and errors included) carries X-Request-ID,
    and every log line written while the request is handled carries its id."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request_id = sane_request_id(request.headers.get(REQUEST_ID_HEADER)) or new_request_id()
        request.request_id = request_id
        # Cleared on request_finished rather than here: Django logs 4xx/5xx responses
        # ("Service Unavailable: /readyz") after the middleware chain has returned.
        _request_id.set(request_id)
        _request.set(request)
        response = self.get_response(request)
        response[REQUEST_ID_HEADER] = request_id
        return response


def _clear_request_context(**kwargs) -> None:
    _request_id.set(None)
    _request.set(None)


request_finished.connect(_clear_request_context, dispatch_uid="safeface.logs.clear_request_context")
