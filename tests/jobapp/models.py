"""Concrete jobs used to exercise safeface.jobs: they write a file, can fail in chosen ways and
run on either cluster. ``behaviour`` tells the run what to do.

Every run of an echo job is recorded in ``EchoRun`` (when it started, which claim ran it, when
and how it ended), so a test can count real executions rather than infer them from the final
status: a run killed with its worker has ``ended_at`` empty, a run that reached its end has it
set. The scale test (tests/safeface/scale_harness.py) counts duplicates from these rows."""
from __future__ import annotations

import time
import uuid

from django.core.files.base import ContentFile
from django.db import models
from django.utils import timezone

from safeface.jobs import Job, JobError, Progress


def _path(instance, filename: str) -> str:
    return f"users/{instance.user_id}/echo/{uuid.uuid4().hex}.txt"


class EchoRun(models.Model):
    """One execution of an echo job: written when the run starts, completed when it ends."""

    job_label = models.CharField(max_length=60)
    job_id = models.BigIntegerField()
    worker = models.CharField(max_length=120, help_text="The claim token the run held.")
    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=40, blank=True, help_text="'returned' or the exception raised.")

    class Meta:
        indexes = [models.Index(fields=["job_label", "job_id"], name="jobapp_echorun_job")]


class _EchoBase(Job):
    # ok | user-error | our-error | crash | slow | delete-owner | sleep (``seconds`` of work,
    # reporting progress as it goes; the Progress throttle writes it twice a second)
    behaviour = models.CharField(max_length=20, default="ok")
    text = models.CharField(max_length=100, default="hello")
    output = models.FileField(upload_to=_path, null=True, blank=True)
    runs = models.PositiveIntegerField(default=0)
    seconds = models.FloatField(default=0)

    def run(self, progress: Progress) -> None:
        record = EchoRun.objects.create(
            job_label=self._meta.label, job_id=self.pk, worker=self.worker, started_at=timezone.now()
        )
        outcome = "returned"
        try:
            self._run(progress)
        except BaseException as exc:
            outcome = type(exc).__name__
            raise
        finally:
            EchoRun.objects.filter(pk=record.pk).update(ended_at=timezone.now(), outcome=outcome)

    def _run(self, progress: Progress) -> None:
        type(self).objects.filter(pk=self.pk).update(runs=models.F("runs") + 1)
        self.delete_outputs()  # a retried run starts clean, as the real jobs do
        progress(10, "Starting", force=True)
        self.output.save("out.txt", ContentFile(self.text.encode()), save=False)
        type(self).objects.filter(pk=self.pk).update(output=self.output.name)
        if self.behaviour == "user-error":
            raise JobError("Your file has no face in it.")
        if self.behaviour == "our-error":
            raise JobError("The model is unavailable.", refund=True)
        if self.behaviour == "crash":
            raise RuntimeError("boom")
        if self.behaviour == "slow":
            for step in range(50):
                time.sleep(0.1)
                progress(step * 2, "Working", force=True)
        if self.behaviour == "sleep":
            end = time.monotonic() + self.seconds
            while (left := end - time.monotonic()) > 0:
                time.sleep(min(0.1, left))
                progress(100 * (1 - left / self.seconds), "Working")
        if self.behaviour == "delete-owner":
            self.user.delete()
        progress(90, "Finishing", force=True)

    class Meta(Job.Meta):
        abstract = True


class EchoJob(_EchoBase):
    KIND_NAME = "echo"


class GpuEchoJob(_EchoBase):
    CLUSTER = "gpu"
    KIND_NAME = "gpu echo"
