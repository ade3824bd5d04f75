import logging
import threading
import time

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe
from prometheus_client import CONTENT_TYPE_LATEST

from safeface import health, metrics

logger = logging.getLogger(__name__)

# Outsiders (not allowed to see details) share one recent readiness result, so that hammering
# /readyz from the internet cannot turn into a stream of storage writes and broker pings.
PUBLIC_READYZ_TTL = 5.0
_public_readyz: tuple[float, dict[str, health.Check]] | None = None
_public_readyz_lock = threading.Lock()


@require_safe
def home(request: HttpRequest) -> HttpResponse:
    return render(request, "home.html")


@never_cache
@require_safe
def healthz(request: HttpRequest) -> JsonResponse:
    """Liveness: the process answers requests. It checks no dependency on purpose: an outage of
    the database must not make the orchestrator restart every healthy web process (that is what
    /readyz reports)."""
    return JsonResponse({"status": "ok"})


def _readiness(request: HttpRequest, internal: bool) -> dict[str, health.Check]:
    global _public_readyz
    names = health.readiness_names()
    if internal:
        return health.run_checks(names)
    with _public_readyz_lock:
        now = time.monotonic()
        if _public_readyz is None or now - _public_readyz[0] > PUBLIC_READYZ_TTL or set(_public_readyz[1]) != set(names):
            _public_readyz = (now, health.run_checks(names))
        return _public_readyz[1]


@never_cache
@require_safe
def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness: 200 when the database, the broker and storage (and the model files, where
    READYZ_CHECK_MODELS) all work, else 503 naming what fails. Details (error messages, hosts)
    only for clients allowed to read /metrics."""
    internal, _ = metrics.internal_access(request)
    results = _readiness(request, internal)
    document = health.as_document(results, details=internal)
    if document["failing"]:
        logger.warning(
            "readiness failed: %s",
            "; ".join(f"{name}: {results[name].detail}" for name in document["failing"]),
        )
        return JsonResponse(document, status=503)
    return JsonResponse(document)


@never_cache
@require_safe
def metrics_view(request: HttpRequest) -> HttpResponse:
    """Prometheus metrics; see safeface/metrics.py for who may read them."""
    allowed, why = metrics.internal_access(request)
    if not allowed:
        status = 401 if settings.METRICS_TOKEN else 403
        response = HttpResponse(f"Metrics are not available to this client: {why}.\n", status=status, content_type="text/plain")
        if status == 401:
            response["WWW-Authenticate"] = 'Bearer realm="metrics"'
        return response
    try:
        body = metrics.render()
    except Exception:
        logger.exception("metrics collection failed")
        return HttpResponse("Metrics collection failed; see the server log.\n", status=503, content_type="text/plain")
    return HttpResponse(body, content_type=CONTENT_TYPE_LATEST)
