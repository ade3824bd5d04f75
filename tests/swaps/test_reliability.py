"""When things go wrong on the worker side: a worker that dies mid-job, a cancel that arrives while
a swap runs, a ticket delivered twice. No half-written result is ever shown, and what the user
was not at fault for is refunded."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.base import ContentFile
from django.urls import reverse
from django.utils import timezone

from safeface import jobs
from safeface.jobs import JobCancelled, JobStatus, claim_next, execute, job_cancel, run_next_job, sweep_jobs
from swaps import processing, services
from swaps.models import SwapJob, Upload
from tests.swaps.conftest import fake_persona, ready_upload, stored_files, swaps_used, tiny_jpeg, upload_bytes_used

pytestmark = pytest.mark.django_db


def queued_swap(owner) -> SwapJob:
    job = services.swap_start(user=owner, upload=ready_upload(owner), assignments={0: fake_persona(owner, "Nova").pk})
    assert swaps_used(owner) == 1
    return job


def worker_dies(job_model, *, attempts: int | None = None):
    """A worker claims the next job, then stops sending heartbeats."""
    claimed = claim_next(job_model)
    values = {"heartbeat_at": timezone.now() - timedelta(hours=1)}
    if attempts is not None:
        values["attempts"] = attempts
    job_model.objects.filter(pk=claimed.pk).update(**values)
    claimed.refresh_from_db()
    return claimed


def half_written(job: SwapJob) -> list[str]:
    """What a worker killed between saving the result and finishing leaves recorded."""
    job.result.save("result.jpg", ContentFile(tiny_jpeg(1)), save=False)
    job.result_thumbnail.save("thumb.jpg", ContentFile(tiny_jpeg(2)), save=False)
    job.save(update_fields=["result", "result_thumbnail"])
    return [job.result.name, job.result_thumbnail.name]


def test_a_swap_whose_worker_died_is_requeued_and_runs_again(owner):
    job = queued_swap(owner)
    claimed = worker_dies(SwapJob)
    files = half_written(claimed)
    assert sweep_jobs()["requeued"] == 1
    job.refresh_from_db()
    assert (job.status, job.worker, job.attempts) == (JobStatus.QUEUED, "", 1)
    assert job.stage == "Restarting: the previous worker stopped" and swaps_used(owner) == 1
    again = claim_next(SwapJob)
    assert again.pk == job.pk and again.attempts == 2
    # the next run starts by deleting what the dead one wrote
    again.delete_outputs()
    assert not set(files) & set(stored_files())


def test_a_swap_whose_worker_died_twice_fails_refunded_with_nothing_shown(owner_client, owner):
    job = queued_swap(owner)
    claimed = worker_dies(SwapJob, attempts=SwapJob.MAX_ATTEMPTS)
    files = half_written(claimed)
    assert sweep_jobs()["failed"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error == jobs.WORKER_DIED
    assert job.quota_refunded and swaps_used(owner) == 0
    assert not job.result and not job.result_thumbnail and not set(files) & set(stored_files())
    page = owner_client.get(reverse("swaps-job", args=[job.pk])).content.decode()
    assert "stopped unexpectedly" in page and 'data-testid="download"' not in page
    assert owner_client.get(reverse("swaps-result", args=[job.pk])).status_code == 404
    assert owner_client.get(reverse("swaps-result-thumbnail", args=[job.pk])).status_code == 404
    history = owner_client.get(reverse("swaps-history")).content.decode()
    assert reverse("swaps-result-thumbnail", args=[job.pk]) not in history and 'data-status="failed"' in history
    # the dead worker waking up cannot save a result any more, nor leave its files behind
    remaining = stored_files()
    with pytest.raises(JobCancelled):
        processing._store_result(claimed, tiny_jpeg(3), "jpg", {"kind": "image", "faces": []}, tiny_jpeg(4))
    assert stored_files() == remaining
    job.refresh_from_db()
    assert not job.result and job.report == {}
    assert not jobs._finish(claimed, JobStatus.SUCCEEDED)


def test_a_dead_worker_of_a_cancelled_swap_ends_it_cancelled(owner):
    job = queued_swap(owner)
    worker_dies(SwapJob)
    job_cancel(job)
    assert job.cancel_requested and job.status == JobStatus.RUNNING
    assert sweep_jobs()["cancelled"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and swaps_used(owner) == 0


def test_an_upload_check_whose_worker_died_twice_is_failed_and_refunded(owner):
    from django.core.files.uploadedfile import SimpleUploadedFile

    data = tiny_jpeg()
    upload = services.upload_create(user=owner, file=SimpleUploadedFile("a.jpg", data))
    worker_dies(Upload)
    assert sweep_jobs()["requeued"] == 1
    worker_dies(Upload)
    assert sweep_jobs()["failed"] == 1
    upload.refresh_from_db()
    assert upload.status == JobStatus.FAILED and upload.error == jobs.WORKER_DIED
    assert upload_bytes_used(owner) == 0


def test_a_ticket_delivered_twice_runs_the_job_once(owner):
    job = queued_swap(owner)
    first, second = claim_next(SwapJob), claim_next(SwapJob)
    assert first.pk == job.pk and second is None
    assert run_next_job("swaps.SwapJob") == "idle"
    job.refresh_from_db()
    assert job.attempts == 1 and job.worker == first.worker


def test_a_swap_cancelled_before_its_first_step_stops_without_a_result(owner):
    job = queued_swap(owner)
    claimed = claim_next(SwapJob)
    assert job_cancel(job) and job.status == JobStatus.RUNNING  # asked to stop
    assert execute(claimed) == JobStatus.CANCELLED  # its first progress step raises
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and not job.result and swaps_used(owner) == 0
    assert not any("/swaps/" in name for name in stored_files())


def test_a_swap_whose_upload_was_purged_meanwhile_fails_refunded(owner):
    job = queued_swap(owner)
    Upload.objects.filter(pk=job.upload_id).update(purged_at=timezone.now(), file="")
    run_next_job("swaps.SwapJob")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and "no longer stored" in job.error and swaps_used(owner) == 0
