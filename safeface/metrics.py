"""Prometheus metrics for ``/metrics``.

Job metrics are computed at scrape time from the database by :class:`JobsCollector`, so every
web process reports the same numbers whichever host or worker ran the jobs (in-process counters
would only know about one process). Per job kind (``app_label.ModelName``, as in the logs):

* ``safeface_jobs{kind,cluster,state}`` (gauge): rows in each state now.
* ``safeface_job_failures_total{kind}`` (counter): jobs that ended FAILED.
* ``safeface_job_run_seconds{kind,outcome}`` (histogram): started -> finished, for every job that
  finished after starting; ``safeface_job_queue_wait_seconds{kind}`` (histogram): queued ->
  started of the latest attempt, for every job that started. Buckets are counted in SQL over all
  rows, so they only grow and ``rate()`` / ``histogram_quantile()`` work as usual (deleting an
  account removes its rows, which Prometheus sees as a counter reset).
* ``safeface_job_oldest_queued_seconds{kind}`` (gauge): age of the oldest queued job (0 if none).
* ``safeface_queue_depth{cluster,queue}`` (gauge): tickets waiting in django-q's broker, and
  ``safeface_broker_up`` (gauge) 1 when the broker answered.

Process-local HTTP metrics (``safeface_http_requests_total``,
``safeface_http_request_duration_seconds``) come from :class:`RequestMetricsMiddleware`; with
several gunicorn workers set ``PROMETHEUS_MULTIPROC_DIR`` (prometheus_client's multiprocess
mode) so one scrape sums them over all workers.

Who may read: with ``METRICS_TOKEN`` set, only requests with ``Authorization: Bearer <token>``;
without it, only clients on loopback or private networks (the client address honours
``TRUSTED_PROXY_COUNT``; a request that came through an untrusted proxy is refused).
"""
from __future__ import annotations

import hmac
import ipaddress
import os
import time
from collections.abc import Callable, Iterator
from datetime import timedelta

from django.conf import settings
from django.db.models import Case, Count, DurationField, ExpressionWrapper, F, IntegerField, Min, Sum, Value, When
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from prometheus_client import CollectorRegistry, Counter, Histogram, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from safeface.ratelimit import client_ip

# Job durations: seconds-long avatar checks up to hour-long video swaps.
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MULTIPROCESS = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))

# --- process-local HTTP metrics -------------------------------------------------------------
LOCAL_REGISTRY = CollectorRegistry(auto_describe=True)
if not MULTIPROCESS:
    ProcessCollector(registry=LOCAL_REGISTRY)
HTTP_REQUESTS = Counter(
    "safeface_http_requests",
    "HTTP requests answered, by route (URL name), method and status.",
    ("route", "method", "status"),
    registry=LOCAL_REGISTRY,
)
HTTP_DURATION = Histogram(
    "safeface_http_request_duration_seconds",
    "Time to answer an HTTP request (middleware and view), by route.",
    ("route",),
    buckets=HTTP_BUCKETS,
    registry=LOCAL_REGISTRY,
)


def _route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is not None and match.view_name:
        return match.view_name
    if request.path.startswith(settings.STATIC_URL):
        return "static"
    return "unmatched"  # 404s for arbitrary paths share one label (bounded cardinality)


class RequestMetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        route = _route(request)
        method = request.method if request.method in _METHODS else "other"
        HTTP_REQUESTS.labels(route, method, str(response.status_code)).inc()
        HTTP_DURATION.labels(route).observe(time.perf_counter() - started)
        return response


# --- job metrics from the database ----------------------------------------------------------
def _seconds(value: timedelta | float | None) -> float:
    if value is None:
        return 0.0
    if isinstance(value, timedelta):
        return value.total_seconds()
    return float(value) / 1_000_000  # a backend that hands durations back as microseconds


def _duration(start: str, end: str) -> ExpressionWrapper:
    return ExpressionWrapper(F(end) - F(start), output_field=DurationField())


def _bucket_index(duration: str) -> Case:
    """SQL: index of the first bound ``duration`` fits under; len(bounds) above them all; -1
    when there is no duration (a job that has not finished)."""
    whens = [When(**{f"{duration}__isnull": True}, then=Value(-1))]
    whens += [
        When(**{f"{duration}__lte": timedelta(seconds=bound)}, then=Value(i)) for i, bound in enumerate(DURATION_BUCKETS)
    ]
    return Case(*whens, default=Value(len(DURATION_BUCKETS)), output_field=IntegerField())


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    """Per-slot counts -> Prometheus' cumulative buckets (the last slot only counts in +Inf)."""
    cumulative, running = [], 0
    for bound, n in zip(DURATION_BUCKETS, counts):
        running += n
        cumulative.append((floatToGoString(bound), float(running)))
    return cumulative + [("+Inf", float(sum(counts)))]


class JobsCollector(Collector):
    """Job states, failures, durations and queue depth, read at scrape time."""

    def collect(self) -> Iterator[Metric]:
        from safeface.jobs import JobStatus, job_models

        now = timezone.now()
        jobs = GaugeMetricFamily("safeface_jobs", "Jobs in each state now, by kind.", labels=("kind", "cluster", "state"))
        failures = CounterMetricFamily("safeface_job_failures", "Jobs that ended failed, by kind.", labels=("kind",))
        oldest = GaugeMetricFamily(
            "safeface_job_oldest_queued_seconds", "Age of the oldest queued job, by kind (0 when none).", labels=("kind",)
        )
        run = HistogramMetricFamily(
            "safeface_job_run_seconds", "Run time of finished jobs (started to finished), by kind and outcome.",
            labels=("kind", "outcome"),
        )
        wait = HistogramMetricFamily(
            "safeface_job_queue_wait_seconds", "Queue wait of started jobs (queued to started), by kind.", labels=("kind",)
        )
        finished_states = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)
        for model in sorted(job_models(), key=lambda m: m._meta.label):
            kind = model._meta.label
            states = {
                row["status"]: row
                for row in model.objects.order_by().values("status").annotate(n=Count("pk"), oldest=Min("queued_at"))
            }
            for state in JobStatus.values:
                jobs.add_metric([kind, model.CLUSTER, state], states.get(state, {}).get("n", 0))
            failures.add_metric([kind], states.get(JobStatus.FAILED, {}).get("n", 0))
            queued_since = states.get(JobStatus.QUEUED, {}).get("oldest")
            oldest.add_metric([kind], max(0.0, (now - queued_since).total_seconds()) if queued_since else 0.0)

            # One pass over the started jobs, grouped by (status, run bucket, wait bucket): each
            # row is compared against the bounds once, cumulative counts are summed here.
            rows = (
                model.objects.order_by()
                .filter(started_at__isnull=False)
                .exclude(status=JobStatus.QUEUED)  # a re-queued job's last wait is not over yet
                .alias(run=_duration("started_at", "finished_at"), wait=_duration("queued_at", "started_at"))
                .annotate(run_bucket=_bucket_index("run"), wait_bucket=_bucket_index("wait"))
                .values("status", "run_bucket", "wait_bucket")
                .annotate(n=Count("pk"), run_sum=Sum("run"), wait_sum=Sum("wait"))
            )
            slots = len(DURATION_BUCKETS) + 1  # the last slot is "above every bound"
            run_counts = {outcome: [0] * slots for outcome in finished_states}
            run_sums = dict.fromkeys(finished_states, 0.0)
            wait_counts, wait_sum = [0] * slots, 0.0
            for row in rows:
                if row["status"] in run_counts and row["run_bucket"] >= 0:
                    run_counts[row["status"]][row["run_bucket"]] += row["n"]
                    run_sums[row["status"]] += _seconds(row["run_sum"])
                if row["wait_bucket"] >= 0:
                    wait_counts[row["wait_bucket"]] += row["n"]
                    wait_sum += _seconds(row["wait_sum"])
            for outcome in finished_states:
                run.add_metric([kind, outcome], _buckets(run_counts[outcome]), run_sums[outcome])
            wait.add_metric([kind], _buckets(wait_counts), wait_sum)
        yield from (jobs, failures, oldest, run, wait)
        yield from self._queues()

    def _queues(self) -> Iterator[Metric]:
        from safeface.health import broker_kind, redis_client

        depth = GaugeMetricFamily(
            "safeface_queue_depth", "Tickets waiting in the django-q broker, by cluster.", labels=("cluster", "queue")
        )
        up = GaugeMetricFamily("safeface_broker_up", "1 when the django-q broker answered this scrape.", labels=("broker",))
        queues = {"default": settings.Q_CLUSTER["name"], **{name: name for name in settings.Q_CLUSTER.get("ALT_CLUSTERS", {})}}
        kind = broker_kind()
        try:
            if kind == "redis":
                client = redis_client()
                try:
                    sizes = {cluster: client.llen(f"django_q:{key}:q") for cluster, key in queues.items()}
                finally:
                    client.close()
            else:
                from django_q.models import OrmQ

                orm = OrmQ.objects.using(settings.Q_CLUSTER["orm"])
                now = timezone.now()
                sizes = {cluster: orm.filter(key=key, lock__lte=now).count() for cluster, key in queues.items()}
        except Exception:
            up.add_metric([kind], 0)
            yield up
            return
        up.add_metric([kind], 1)
        for cluster, key in queues.items():
            depth.add_metric([cluster, key], sizes[cluster])
        yield depth
        yield up


class _Forward(Collector):
    """Exposes another registry's metrics inside the scrape registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        return self.registry.collect()


def render() -> bytes:
    """The /metrics body in Prometheus text format."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROCESS:
        from prometheus_client import multiprocess

        multiprocess.MultiProcessCollector(registry)
    else:
        registry.register(_Forward(LOCAL_REGISTRY))
    registry.register(JobsCollector())
    return generate_latest(registry)


# --- access ---------------------------------------------------------------------------------
_PROXY_HEADERS = ("HTTP_X_FORWARDED_FOR", "HTTP_FORWARDED", "HTTP_X_REAL_IP")


def internal_access(request: HttpRequest) -> tuple[bool, str]:
    """Whether ``request`` may read metrics and readiness details, and why not."""
    token = settings.METRICS_TOKEN
    if token:
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() == "bearer" and given and hmac.compare_digest(given.strip().encode(), token.encode()):
            return True, ""
        return False, "a valid 'Authorization: Bearer <METRICS_TOKEN>' header is required"
    if not settings.TRUSTED_PROXY_COUNT and any(request.META.get(h) for h in _PROXY_HEADERS):
        # A proxy forwarded this request but is not trusted to name the client: the peer address
        # is the proxy's (often private), so it proves nothing about who is asking.
        return False, "forwarded requests need METRICS_TOKEN (or TRUSTED_PROXY_COUNT for the proxy)"
    address = client_ip(request)
    try:
        ip = ipaddress.ip_address(address.split("%")[0])
    except ValueError:
        return False, f"client address {address!r} is not an IP address"
    if getattr(ip, "ipv4_mapped", None):
        ip = ip.ipv4_mapped
    if ip.is_loopback or ip.is_private:
        return True, ""
    return False, "only loopback and private networks may read this without METRICS_TOKEN"
