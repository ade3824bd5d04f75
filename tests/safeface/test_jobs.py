"""The generic job base: claiming, outcomes, refunds, retries, cancellation, sweeping, routing."""
from __future__ import annotations

from datetime import timedelta

import pytest
from django.core.files.storage import default_storage
from django.utils import timezone
from django_q.models import OrmQ

from accounts.models import UsageCounter
from accounts.quotas import LimitReached, current_period
from safeface import jobs
from safeface.jobs import JobStatus, claim_next, execute, job_cancel, job_submit, run_next_job, sweep_jobs
from tests.conftest import make_user
from tests.jobapp.models import EchoJob, GpuEchoJob


def submit(user, *, behaviour="ok", model=EchoJob, quota=1):
    return job_submit(model(user=user, behaviour=behaviour), quota_metric="avatars", quota_amount=quota)


def used(user) -> int:
    row = UsageCounter.objects.filter(user=user, period=current_period(), metric="avatars").first()
    return row.used if row else 0


@pytest.mark.django_db
def test_submit_queues_with_plan_priority_and_reserves_quota(owner):
    pro = make_user("pro@example.com", plan="pro")
    free_job = submit(owner)
    pro_job = submit(pro)
    assert free_job.status == pro_job.status == JobStatus.QUEUED
    assert (free_job.priority, pro_job.priority) == (0, 10)
    assert used(owner) == 1 and used(pro) == 1
    assert free_job.queued_at is not None


@pytest.mark.django_db(transaction=True)
def test_ticket_lands_on_the_jobs_cluster():
    user = make_user("t@example.com", plan="pro")
    submit(user)  # default cluster
    submit(user, model=GpuEchoJob)
    keys = sorted(OrmQ.objects.values_list("key", flat=True))
    assert keys == ["gpu", "safeface"]


@pytest.mark.django_db
def test_claim_takes_highest_priority_first(owner):
    pro = make_user("pro@example.com", plan="pro")
    first = submit(owner)
    second = submit(pro)
    claimed = claim_next(EchoJob)
    assert claimed.pk == second.pk  # Pro outranks an older Free job
    assert claimed.status == JobStatus.RUNNING and claimed.attempts == 1 and claimed.worker
    assert claim_next(EchoJob).pk == first.pk
    assert claim_next(EchoJob) is None


@pytest.mark.django_db
def test_ticket_delivered_twice_runs_the_job_once(owner):
    job = submit(owner)
    assert run_next_job("jobapp.EchoJob").endswith("succeeded")
    assert run_next_job("jobapp.EchoJob") == "idle"
    job.refresh_from_db()
    assert job.runs == 1
    assert job.status == JobStatus.SUCCEEDED and job.progress == 100
    assert job.finished_at >= job.started_at
    assert default_storage.open(job.output.name).read() == b"hello"


@pytest.mark.django_db
def test_user_error_fails_without_refund_and_leaves_no_file(owner):
    job = submit(owner, behaviour="user-error")
    run_next_job("jobapp.EchoJob")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED
    assert job.error == "Your file has no face in it."
    assert used(owner) == 1 and not job.quota_refunded
    assert not job.output
    assert not default_storage.exists(f"users/{owner.pk}/echo")  or default_storage.listdir(f"users/{owner.pk}/echo")[1] == []


@pytest.mark.django_db
def test_failure_not_the_users_fault_is_refunded_once(owner):
    job = submit(owner, behaviour="our-error")
    run_next_job("jobapp.EchoJob")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.quota_refunded
    assert used(owner) == 0
    jobs._refund(job)  # a second refund must not give quota twice
    assert used(owner) == 0


@pytest.mark.django_db
def test_crash_retries_then_fails_with_refund(owner):
    job = submit(owner, behaviour="crash")
    assert run_next_job("jobapp.EchoJob").endswith("queued")
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.attempts == 1
    assert run_next_job("jobapp.EchoJob").endswith("failed")
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.attempts == 2 == EchoJob.MAX_ATTEMPTS
    assert job.error == jobs.GENERIC_FAILURE
    assert used(owner) == 0
    assert not job.output


@pytest.mark.django_db
def test_cancel_queued_job_refunds_and_is_never_run(owner):
    job = submit(owner)
    assert job_cancel(job)
    assert job.status == JobStatus.CANCELLED and used(owner) == 0
    assert run_next_job("jobapp.EchoJob") == "idle"


@pytest.mark.django_db
def test_cancel_running_job_stops_it_at_next_progress_step(owner):
    job = submit(owner)
    claimed = claim_next(EchoJob)
    job_cancel(claimed)
    assert EchoJob.objects.get(pk=job.pk).cancel_requested
    assert execute(claimed) == JobStatus.CANCELLED
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and used(owner) == 0 and not job.output


@pytest.mark.django_db
def test_owner_deleted_mid_run_leaves_no_file(owner):
    submit(owner, behaviour="delete-owner")
    run_next_job("jobapp.EchoJob")
    assert not EchoJob.objects.exists()
    leftovers = []
    if default_storage.exists(f"users/{owner.pk}/echo"):
        leftovers = default_storage.listdir(f"users/{owner.pk}/echo")[1]
    assert leftovers == []


@pytest.mark.django_db
def test_concurrency_limit_blocks_extra_jobs_with_a_clear_message(owner):
    submit(owner)
    with pytest.raises(LimitReached, match="runs 1 job at a time"):
        submit(owner)
    assert EchoJob.objects.count() == 1 and used(owner) == 1


@pytest.mark.django_db
def test_quota_exhausted_blocks_submission(owner):
    pro = make_user("pro@example.com", plan="pro")
    with pytest.raises(LimitReached, match="more than your Pro plan's monthly 200"):
        submit(pro, quota=201)
    submit(pro, quota=200)
    with pytest.raises(LimitReached, match="You have used 200 of your 200"):
        submit(pro, quota=1)
    assert EchoJob.objects.count() == 1


def _stale(job, seconds=3600):
    EchoJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=seconds))


@pytest.mark.django_db
def test_sweeper_requeues_a_job_whose_worker_died_then_fails_it(owner):
    job = submit(owner)
    claimed = claim_next(EchoJob)
    _stale(claimed)
    assert sweep_jobs()["requeued"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.worker == ""
    second = claim_next(EchoJob)
    assert second.attempts == 2
    _stale(second)
    assert sweep_jobs()["failed"] == 1
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and job.error == jobs.WORKER_DIED
    assert used(owner) == 0
    # the dead worker's late finish must not overwrite the verdict
    assert not jobs._finish(claimed, JobStatus.SUCCEEDED)


@pytest.mark.django_db
def test_sweeper_leaves_healthy_running_jobs_alone(owner):
    submit(owner)
    claim_next(EchoJob)
    counts = sweep_jobs()
    assert counts["requeued"] == counts["failed"] == 0
    assert EchoJob.objects.get().status == JobStatus.RUNNING


@pytest.mark.django_db(transaction=True)
def test_sweeper_reissues_tickets_for_jobs_waiting_too_long():
    user = make_user("w@example.com")
    job = submit(user)
    OrmQ.objects.all().delete()  # the ticket was lost
    EchoJob.objects.filter(pk=job.pk).update(queued_at=timezone.now() - timedelta(hours=1))
    assert sweep_jobs()["nudged"] == 1
    assert OrmQ.objects.count() == 1
    assert sweep_jobs()["nudged"] == 0  # not again until the renudge interval passes


@pytest.mark.django_db(transaction=True)
def test_a_dead_worker_gets_the_tickets_its_cluster_took_reissued_at_once():
    """A SIGKILLed cluster loses the tickets it had fetched from the broker: the jobs they were
    for must not wait JOB_RENUDGE_SECONDS once the sweeper has seen that a worker died."""
    user = make_user("d@example.com", plan="pro")
    dying = submit(user)
    stranded = [submit(user), submit(user)]
    claimed = claim_next(EchoJob)
    assert claimed.pk == dying.pk
    OrmQ.objects.all().delete()  # the dead cluster had taken every ticket
    _stale(claimed)
    counts = sweep_jobs()
    assert counts["requeued"] == 1
    # the re-queued job and both stranded ones each have a ticket again, now
    assert counts["nudged"] == 3
    assert OrmQ.objects.count() >= 3
    assert set(EchoJob.objects.filter(status=JobStatus.QUEUED).values_list("pk", flat=True)) == {
        dying.pk, *(j.pk for j in stranded)
    }
    # with no dead worker, recently queued jobs are left to their tickets
    assert sweep_jobs()["nudged"] == 0


@pytest.mark.django_db
def test_sweeper_purges_results_past_the_plan_retention(owner):
    pro = make_user("pro@example.com", plan="pro")
    old_free = submit(owner)
    run_next_job("jobapp.EchoJob")
    old_pro = submit(pro)
    run_next_job("jobapp.EchoJob")
    eight_days_ago = timezone.now() - timedelta(days=8)
    EchoJob.objects.update(finished_at=eight_days_ago)
    old_free.refresh_from_db()
    old_pro.refresh_from_db()
    free_file, pro_file = old_free.output.name, old_pro.output.name
    assert sweep_jobs()["purged"] == 1  # Free keeps 7 days, Pro 30
    old_free.refresh_from_db()
    assert old_free.purged_at and not old_free.output and not default_storage.exists(free_file)
    assert default_storage.exists(pro_file)


@pytest.mark.django_db
def test_sweeper_removes_files_of_deleted_accounts():
    default_storage.save("users/999999/echo/leftover.txt", __import__("io").BytesIO(b"x"))
    assert sweep_jobs()["orphans"] == 1
    assert not default_storage.exists("users/999999/echo/leftover.txt")


@pytest.mark.django_db(transaction=True)
def test_heartbeat_thread_keeps_a_long_silent_job_fresh(settings):
    settings.JOB_HEARTBEAT_SECONDS = 1
    user = make_user("hb@example.com")
    job = submit(user)
    claimed = claim_next(EchoJob)
    EchoJob.objects.filter(pk=job.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    original_run = claimed.run

    def silent_run(progress):
        import time

        time.sleep(2.5)  # no progress calls at all
        return original_run(progress)

    claimed.run = silent_run
    beats = []
    import threading

    def watch():
        import time

        from django.db import connection

        time.sleep(1.8)
        beats.append(EchoJob.objects.get(pk=job.pk).heartbeat_at)
        connection.close()

    watcher = threading.Thread(target=watch)
    watcher.start()
    assert execute(claimed) == JobStatus.SUCCEEDED
    watcher.join()
    assert beats and beats[0] > timezone.now() - timedelta(seconds=30)
