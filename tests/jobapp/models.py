"""Concrete jobs used to exercise safeface.jobs: they write a file, can fail in chosen ways and
run on either cluster. ``behaviour`` tells the run what to do."""
from __future__ import annotations

import time
import uuid

from django.core.files.base import ContentFile
from django.db import models

from safeface.jobs import Job, JobError, Progress


def _path(instance, filename: str) -> str:
    return f"users/{instance.user_id}/echo/{uuid.uuid4().hex}.txt"


class _EchoBase(Job):
    behaviour = models.CharField(max_length=20, default="ok")  # ok | user-error | our-error | crash | slow | delete-owner
    text = models.CharField(max_length=100, default="hello")
    output = models.FileField(upload_to=_path, null=True, blank=True)
    runs = models.PositiveIntegerField(default=0)

    def run(self, progress: Progress) -> None:
        type(self).objects.filter(pk=self.pk).update(runs=models.F("runs") + 1)
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
