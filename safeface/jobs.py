"""The generic background job that avatar generation, swaps, voice masking and data exports
build on.

How a job runs:
- ``job_submit`` checks the owner's plan (concurrent jobs, quota) under a row lock, saves the
  job as QUEUED with the plan's priority and, once the transaction commits, puts a *ticket* on
  the job's django-q cluster ("gpu" for heavy work).
- A ticket runs ``run_next_job(label)``: it atomically claims the highest-priority queued job
  of that kind (one UPDATE ... WHERE status=QUEUED, so a ticket delivered twice can never run a
  job twice), runs it with a heartbeat and a progress callback, and records the outcome.
  Tickets are interchangeable, which is what gives Pro plans real queue priority.
- ``sweep_jobs`` (scheduled every minute) re-queues or fails jobs whose worker died (stale
  heartbeat), re-issues tickets for jobs waiting suspiciously long, deletes results past the
  owner's retention period and removes files of deleted accounts.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from datetime import timedelta
from typing import ClassVar

from django.apps import apps
from django.contrib.auth import get_user_model
from django.conf import settings
from django.db import connection, models, transaction
from django.db.models import F, Q
from django.db.models.fields.files import FieldFile
from django.utils import timezone
from django_q.tasks import async_task

from safeface.logs import job_log_context

logger = logging.getLogger(__name__)

GENERIC_FAILURE = (
    "Something went wrong on our side while processing this job. It has been stopped and "
    "anything it used from your quota has been refunded. Please try again."
)
WORKER_DIED = (
    "The machine processing this job stopped unexpectedly and it could not be retried. "
    "Anything it used from your quota has been refunded. Please try again."
)


class JobStatus(models.TextChoices):
    QUEUED = "queued", "Queued"
    RUNNING = "running", "Running"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"
    CANCELLED = "cancelled", "Cancelled"


ACTIVE_STATUSES = (JobStatus.QUEUED, JobStatus.RUNNING)


class JobError(Exception):
    """A failure explained to the user. ``refund`` says whether the user was not at fault."""

    def __init__(self, message: str, *, refund: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.refund = refund


class JobCancelled(Exception):
    """Raised inside a running job once its owner cancelled it (or the job row disappeared)."""


class Job(models.Model):
    CLUSTER: ClassVar[str] = "default"  # "gpu" for generation, swap and voice work
    MAX_ATTEMPTS: ClassVar[int] = 2  # runs in total when a worker crashes or dies
    COUNTS_TOWARD_CONCURRENCY: ClassVar[bool] = True
    KIND_NAME: ClassVar[str] = "job"
    # File fields the job reads rather than writes (an upload's original): a failed or retried
    # run keeps them; retention and deletion remove them with the outputs.
    INPUT_FILE_FIELDS: ClassVar[tuple[str, ...]] = ()

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="%(app_label)s_%(class)ss"
    )
    status = models.CharField(max_length=16, choices=JobStatus.choices, default=JobStatus.QUEUED)
    progress = models.PositiveSmallIntegerField(default=0)
    stage = models.CharField(max_length=120, blank=True)
    error = models.TextField(blank=True, help_text="Shown to the user when the job failed.")
    priority = models.SmallIntegerField(default=0)
    attempts = models.PositiveSmallIntegerField(default=0)
    cancel_requested = models.BooleanField(default=False)
    worker = models.CharField(max_length=120, blank=True, help_text="Claim token of the run.")
    created_at = models.DateTimeField(auto_now_add=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    nudged_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    purged_at = models.DateTimeField(null=True, blank=True)
    quota_metric = models.CharField(max_length=32, blank=True)
    quota_period = models.CharField(max_length=7, blank=True)
    quota_amount = models.BigIntegerField(default=0)
    quota_refunded = models.BooleanField(default=False)

    class Meta:
        abstract = True
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["status", "-priority", "created_at"], name="%(app_label)s_%(class)s_q"),
            models.Index(fields=["user", "status"], name="%(app_label)s_%(class)s_us"),
        ]

    # --- to implement ----------------------------------------------------------------------
    def run(self, progress: Progress) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- derived values --------------------------------------------------------------------
    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def is_finished(self) -> bool:
        return not self.is_active

    @property
    def queue_seconds(self) -> float | None:
        if self.queued_at and self.started_at:
            return (self.started_at - self.queued_at).total_seconds()
        return None

    @property
    def run_seconds(self) -> float | None:
        if self.started_at and self.finished_at:
            return (self.finished_at - self.started_at).total_seconds()
        return None

    @property
    def eta_seconds(self) -> int | None:
        """Seconds left, from the pace so far (None until there is a pace to go by)."""
        if self.status != JobStatus.RUNNING or not self.started_at or self.progress < 3:
            return None
        elapsed = (timezone.now() - self.started_at).total_seconds()
        return max(1, round(elapsed * (100 - self.progress) / self.progress))

    def output_files(self) -> list[FieldFile]:
        return [getattr(self, name) for name in _file_field_names(type(self), outputs_only=True) if getattr(self, name)]

    def delete_outputs(self) -> None:
        """Deletes the files this job wrote (the row keeps its history)."""
        for file in self.output_files():
            file.storage.delete(file.name)
            setattr(self, file.field.name, None)

    def delete_files(self) -> None:
        """Deletes every stored file of the job, inputs included (retention, deletion)."""
        self.delete_outputs()
        for name in self.INPUT_FILE_FIELDS:
            file = getattr(self, name)
            if file:
                file.storage.delete(file.name)
                setattr(self, name, None)


# --- discovery ------------------------------------------------------------------------------
def job_models() -> list[type[Job]]:
    return [m for m in apps.get_models() if issubclass(m, Job)]


def jobs_active_count(user) -> int:
    return sum(
        m.objects.filter(user=user, status__in=ACTIVE_STATUSES).count()
        for m in job_models()
        if m.COUNTS_TOWARD_CONCURRENCY
    )


# --- submission -----------------------------------------------------------------------------
def enqueue_ticket(model: type[Job]) -> None:
    cluster = None if model.CLUSTER == "default" else model.CLUSTER
    async_task(
        "safeface.jobs.run_next_job",
        model._meta.label,
        cluster=cluster,
        group=model._meta.label,
        task_name=f"{model._meta.label} ticket {uuid.uuid4().hex[:8]}",
    )


def job_submit(job: Job, *, quota_metric: str = "", quota_amount: int = 0) -> Job:
    """Saves a new job as QUEUED after the plan's checks pass, and queues it on commit.

    Raises ``accounts.quotas.LimitReached`` with a message for the user when a limit is hit.
    """
    from accounts import quotas  # accounts depends on this module, not the other way round

    with transaction.atomic():
        owner = get_user_model().objects.select_for_update().get(pk=job.user_id)
        job.user = owner
        plan = quotas.plan_for(owner)
        if type(job).COUNTS_TOWARD_CONCURRENCY:
            quotas.check_concurrency(owner, plan, jobs_active_count(owner))
        if quota_metric:
            reservation = quotas.quota_reserve(user=owner, metric=quota_metric, amount=quota_amount)
            job.quota_metric = quota_metric
            job.quota_period = reservation.period
            job.quota_amount = quota_amount
        job.priority = plan.queue_priority
        job.status = JobStatus.QUEUED
        job.queued_at = timezone.now()
        job.full_clean()
        job.save()
        model = type(job)
        transaction.on_commit(lambda: enqueue_ticket(model))
    return job


def job_cancel(job: Job) -> bool:
    """Cancels a queued job at once, or asks a running one to stop at its next progress step."""
    model = type(job)
    with transaction.atomic():
        if model.objects.filter(pk=job.pk, status=JobStatus.QUEUED).update(
            status=JobStatus.CANCELLED, finished_at=timezone.now(), stage=""
        ):
            _refund(job)
            job.refresh_from_db()
            return True
        requested = bool(
            model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(cancel_requested=True)
        )
    job.refresh_from_db()
    return requested


def job_cancel_for_user(request, job: Job, *, cancelled: str, stopping: str) -> None:
    """A cancel button's action: cancels an active job and tells the user which way it went
    (``cancelled`` when it ended at once, ``stopping`` when a running job was asked to stop)."""
    from django.contrib import messages

    if job.is_active:
        job_cancel(job)  # refreshes ``job``
        messages.info(request, cancelled if job.status == JobStatus.CANCELLED else stopping)


def _refund(job: Job) -> None:
    if not job.quota_metric or job.quota_amount <= 0:
        return
    from accounts import quotas

    if type(job).objects.filter(pk=job.pk, quota_refunded=False).update(quota_refunded=True):
        quotas.quota_release(
            user_id=job.user_id, metric=job.quota_metric, period=job.quota_period, amount=job.quota_amount
        )


# --- running --------------------------------------------------------------------------------
class Progress:
    """Callable handed to ``Job.run``: ``progress(40, "Detecting faces")``.

    Each call records progress and checks for cancellation; writes are throttled.
    """

    def __init__(self, job: Job, *, min_interval: float = 0.5) -> None:
        self.job = job
        self.min_interval = min_interval
        self._last_write = 0.0

    def __call__(self, percent: float, stage: str | None = None, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_write < self.min_interval:
            return
        self._last_write = now
        values = {"progress": max(0, min(99, int(percent))), "heartbeat_at": timezone.now()}
        if stage is not None:
            values["stage"] = stage[:120]
        updated = type(self.job).objects.filter(
            pk=self.job.pk, status=JobStatus.RUNNING, worker=self.job.worker, cancel_requested=False
        ).update(**values)
        if not updated:
            raise JobCancelled()
        for name, value in values.items():
            setattr(self.job, name, value)


class _Heartbeat(threading.Thread):
    """Keeps ``heartbeat_at`` fresh while the job runs, even through long silent steps."""

    def __init__(self, job: Job, interval: int) -> None:
        super().__init__(daemon=True, name=f"heartbeat-{job._meta.label}-{job.pk}")
        self.job = job
        self.interval = interval
        self.stopped = threading.Event()

    def run(self) -> None:
        try:
            while not self.stopped.wait(self.interval):
                type(self.job).objects.filter(
                    pk=self.job.pk, status=JobStatus.RUNNING, worker=self.job.worker
                ).update(heartbeat_at=timezone.now())
        except Exception:  # the job itself reports real failures
            logger.exception("heartbeat for %s %s failed", self.job._meta.label, self.job.pk)
        finally:
            connection.close()

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=self.interval + 5)


def job_still_claimed(job: Job) -> bool:
    """Whether this run still owns ``job``: not cancelled, deleted or handed to another worker.
    A run checks it inside the transaction that saves its results."""
    return type(job).objects.filter(
        pk=job.pk, status=JobStatus.RUNNING, worker=job.worker, cancel_requested=False
    ).exists()


def _claim_token() -> str:
    return f"{socket.gethostname()[:60]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def claim_next(model: type[Job]) -> Job | None:
    """Atomically takes the highest-priority queued job of ``model``; None when there is none."""
    for _ in range(20):
        candidate = (
            model.objects.filter(status=JobStatus.QUEUED)
            .order_by("-priority", "queued_at", "pk")
            .values_list("pk", flat=True)
            .first()
        )
        if candidate is None:
            return None
        now = timezone.now()
        token = _claim_token()
        claimed = model.objects.filter(pk=candidate, status=JobStatus.QUEUED).update(
            status=JobStatus.RUNNING,
            worker=token,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
            progress=0,
            stage="Starting",
        )
        if claimed:
            return model.objects.get(pk=candidate)
    return None


def _finish(job: Job, status: str, *, error: str = "", refund: bool = False) -> bool:
    model = type(job)
    values = {"status": status, "finished_at": timezone.now(), "error": error, "stage": ""}
    if status == JobStatus.SUCCEEDED:
        values["progress"] = 100
    with transaction.atomic():
        done = model.objects.filter(pk=job.pk, status=JobStatus.RUNNING, worker=job.worker).update(**values)
        if done and refund:
            _refund(job)
    return bool(done)


def _requeue(job: Job, stage: str) -> bool:
    model = type(job)
    requeued = model.objects.filter(pk=job.pk, status=JobStatus.RUNNING, worker=job.worker).update(
        status=JobStatus.QUEUED, worker="", queued_at=timezone.now(), stage=stage[:120]
    )
    if requeued:
        transaction.on_commit(lambda: enqueue_ticket(model))
    return bool(requeued)


def _file_field_names(model: type[Job], *, outputs_only: bool = False) -> list[str]:
    return [
        f.name for f in model._meta.get_fields()
        if isinstance(f, models.FileField) and not (outputs_only and f.name in model.INPUT_FILE_FIELDS)
    ]


def _drop_outputs(job: Job) -> None:
    """A run that did not succeed (or lost its claim) must leave none of its files behind."""
    job.delete_outputs()
    names = _file_field_names(type(job), outputs_only=True)
    if names:
        # "" is an empty FileField (None breaks the NOT NULL file columns of most jobs).
        type(job).objects.filter(pk=job.pk, worker=job.worker).update(**{n: "" for n in names})


def execute(job: Job) -> str:
    """Runs a claimed job and records how it ended. Returns the final status.
    Every log line written meanwhile carries the job's id and kind (safeface.logs)."""
    with job_log_context(job):
        return _execute(job)


def _execute(job: Job) -> str:
    interval = settings.JOB_HEARTBEAT_SECONDS
    heartbeat = _Heartbeat(job, interval) if interval else None
    if heartbeat:
        heartbeat.start()
    outcome = JobStatus.FAILED
    try:
        job.run(Progress(job))
    except JobCancelled:
        outcome = JobStatus.CANCELLED
        _finish(job, JobStatus.CANCELLED, refund=True)
        _drop_outputs(job)
    except JobError as exc:
        outcome = JobStatus.FAILED
        _finish(job, JobStatus.FAILED, error=exc.message, refund=exc.refund)
        _drop_outputs(job)
    except Exception:
        logger.exception("%s %s crashed (attempt %s)", job._meta.label, job.pk, job.attempts)
        _drop_outputs(job)
        if job.attempts < type(job).MAX_ATTEMPTS and _requeue(job, "Retrying after an error"):
            outcome = JobStatus.QUEUED
        else:
            outcome = JobStatus.FAILED
            _finish(job, JobStatus.FAILED, error=GENERIC_FAILURE, refund=True)
    else:
        if _finish(job, JobStatus.SUCCEEDED):
            outcome = JobStatus.SUCCEEDED
        else:
            # The claim was lost meanwhile: the account was deleted, or the sweeper gave the job
            # to another worker. This run's files must not linger.
            outcome = JobStatus.CANCELLED
            _drop_outputs(job)
    finally:
        if heartbeat:
            heartbeat.stop()
    return outcome


def run_next_job(label: str) -> str:
    """django-q entry point for a ticket: claim one job of this kind and run it.
    (django-q's worker closes stale database connections before each task.)"""
    model = apps.get_model(label)
    job = claim_next(model)
    if job is None:
        return "idle"
    return f"{label}#{job.pk}: {execute(job)}"


# --- sweeping -------------------------------------------------------------------------------
DEAD_WORKER_TICKETS = 50


def sweep_jobs() -> dict[str, int]:
    """Scheduled every minute: recover from dead workers, re-issue lost tickets, purge old
    results and files of deleted accounts."""
    from accounts import quotas

    counts = {"requeued": 0, "failed": 0, "cancelled": 0, "nudged": 0, "purged": 0, "orphans": 0}
    now = timezone.now()
    stale_before = now - timedelta(seconds=settings.JOB_STALE_SECONDS)
    renudge_before = now - timedelta(seconds=settings.JOB_RENUDGE_SECONDS)
    for model in job_models():
        dead_worker = False
        for job in model.objects.filter(status=JobStatus.RUNNING, heartbeat_at__lt=stale_before):
            dead_worker = True
            if job.cancel_requested:
                ended = _finish(job, JobStatus.CANCELLED, refund=True)
                counts["cancelled"] += ended
            elif job.attempts < model.MAX_ATTEMPTS:
                with transaction.atomic():
                    counts["requeued"] += _requeue(job, "Restarting: the previous worker stopped")
                continue  # the next run starts by deleting this one's outputs
            else:
                ended = _finish(job, JobStatus.FAILED, error=WORKER_DIED, refund=True)
                counts["failed"] += ended
            if ended:
                _drop_outputs(job)  # what the dead worker managed to record must not be shown
        waiting = model.objects.filter(status=JobStatus.QUEUED, queued_at__lt=renudge_before).filter(
            Q(nudged_at__isnull=True) | Q(nudged_at__lt=renudge_before)
        ).values_list("pk", flat=True)
        if dead_worker:
            # A worker that died (SIGKILL, lost machine) took the tickets its cluster had already
            # fetched from the broker with it: re-issue tickets for the queued jobs of this kind
            # now instead of after JOB_RENUDGE_SECONDS (a surplus ticket just finds nothing to do).
            # A cluster prefetches a few tickets per worker, hence the bound.
            queued = model.objects.filter(status=JobStatus.QUEUED).order_by("queued_at")
            waiting = queued.values_list("pk", flat=True)[:DEAD_WORKER_TICKETS]
        for pk in waiting:
            if model.objects.filter(pk=pk, status=JobStatus.QUEUED).update(nudged_at=now):
                enqueue_ticket(model)
                counts["nudged"] += 1
        for job in quotas.jobs_past_retention(model, now=now):
            job.delete_files()
            model.objects.filter(pk=job.pk).update(
                purged_at=now, **{name: "" for name in _file_field_names(model)}
            )
            counts["purged"] += 1
    counts["orphans"] = purge_orphan_user_files()
    if any(counts.values()):
        logger.info("sweep_jobs: %s", counts)
    return counts


def purge_orphan_user_files() -> int:
    """Removes storage folders of accounts that no longer exist (e.g. a worker wrote a file
    after its owner deleted the account)."""
    from django.core.files.storage import default_storage

    from safeface.private_media import storage_delete_tree, user_prefix

    try:
        directories, _ = default_storage.listdir("users/")
    except FileNotFoundError:
        return 0
    ids = {int(d) for d in directories if d.isdigit()}
    existing = set(get_user_model().objects.filter(pk__in=ids).values_list("pk", flat=True))
    removed = 0
    for user_id in sorted(ids - existing):
        removed += storage_delete_tree(user_prefix(user_id))
    return removed
