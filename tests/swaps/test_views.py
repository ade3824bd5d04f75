"""Swap pages, each for its owner, another user and an anonymous visitor; the face picker, the
progress polling, the history, deletion and retention. Rows are made without the engine
(tests/swaps/test_worker.py and test_swap_run.py run it)."""
from __future__ import annotations

import re
from datetime import timedelta

import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from django.utils import timezone

from accounts.models import UsageCounter
from accounts.quotas import quota_reserve
from safeface.jobs import JobStatus, claim_next, sweep_jobs
from swaps import services
from swaps.models import SwapAssignment, SwapJob, Upload, UploadFace
from tests.swaps.conftest import (
    fake_persona,
    finished_swap,
    ready_upload,
    stored_files,
    swaps_used,
    upload_bytes_used,
)

pytestmark = pytest.mark.django_db
LOGIN = "/accounts/login/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def picked(**fields) -> dict:
    """The picker form as the page posts it: the given fields over the default options."""
    return {"others": "keep", "audio": "keep", "quality": "standard", **fields}


def html(response) -> str:
    return response.content.decode()


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def option_values(page: str, key: int = 0) -> list[str]:
    """The persona ids offered for a face, in the order of the select."""
    select = re.search(rf'<select id="face-{key}"[^>]*>(.*?)</select>', page, re.S)
    assert select, page
    return re.findall(r'<option value="(\d+)"', select.group(1))


def selected_value(page: str, key: int = 0) -> str | None:
    select = re.search(rf'<select id="face-{key}"[^>]*>(.*?)</select>', page, re.S).group(1)
    found = re.search(r'<option value="(\d*)" selected', select)
    return found.group(1) if found else None


@pytest.fixture
def world(owner, other_user):
    """The owner's persona, ready upload and finished swap; the other user has the same."""
    persona = fake_persona(owner, "Nova")
    upload = ready_upload(owner)
    job = finished_swap(owner, upload, persona)
    theirs = fake_persona(other_user, "Theirs")
    their_upload = ready_upload(other_user, name="their.jpg")
    their_job = finished_swap(other_user, their_upload, theirs)
    return {"persona": persona, "upload": upload, "job": job, "theirs": theirs, "their_upload": their_upload, "their_job": their_job}


def gets(upload_pk: int, job_pk: int) -> list[tuple[str, str]]:
    """(url, expected content type prefix or "html") for every GET view."""
    return [
        (reverse("swaps-history"), "html"),
        (reverse("swaps-new"), "html"),
        (reverse("swaps-upload", args=[upload_pk]), "html"),
        (reverse("swaps-upload-media", args=[upload_pk, "original"]), "image/jpeg"),
        (reverse("swaps-upload-media", args=[upload_pk, "preview"]), "image/jpeg"),
        (reverse("swaps-upload-media", args=[upload_pk, "video"]), "image/jpeg"),
        (reverse("swaps-face", args=[upload_pk, 0]), "image/jpeg"),
        (reverse("swaps-job", args=[job_pk]), "html"),
        (reverse("swaps-result", args=[job_pk]), "image/jpeg"),
        (reverse("swaps-result-thumbnail", args=[job_pk]), "image/jpeg"),
    ]


# --- who may see what --------------------------------------------------------------------------
def test_owner_gets_every_page_and_file(client, owner, world):
    client.force_login(owner)
    for url, kind in gets(world["upload"].pk, world["job"].pk):
        response = client.get(url)
        assert response.status_code == 200, url
        if kind == "html":
            assert response["Content-Type"].startswith("text/html"), url
        else:
            assert response["Content-Type"] == kind, url
            assert body(response).startswith(b"\xff\xd8\xff"), url
            assert response["Cache-Control"] == "private, no-store", url


def test_another_user_gets_404_for_every_object_of_mine(client, other_user, world):
    client.force_login(other_user)
    for url, _ in gets(world["upload"].pk, world["job"].pk)[2:]:
        assert client.get(url).status_code == 404, url
    upload, job, persona = world["upload"], world["job"], world["persona"]
    before = stored_files()
    posts = [
        (reverse("swaps-upload", args=[upload.pk]), {"face_0": str(world["theirs"].pk)}),
        (reverse("swaps-upload-delete", args=[upload.pk]), {}),
        (reverse("swaps-job-cancel", args=[job.pk]), {}),
        (reverse("swaps-job-delete", args=[job.pk]), {}),
    ]
    for url, data in posts:
        assert client.post(url, data).status_code == 404, url
    assert Upload.objects.filter(pk=upload.pk).exists() and SwapJob.objects.filter(pk=job.pk, status="succeeded").exists()
    assert SwapJob.objects.filter(user=other_user).count() == 1  # only their own, no new one
    assert stored_files() == before
    # and their own pages never list mine
    page = html(client.get(reverse("swaps-history")))
    assert "their.jpg" in page and "beach.jpg" not in page
    assert persona.name not in html(client.get(reverse("swaps-upload", args=[world["their_upload"].pk])))


def test_anonymous_visitors_are_sent_to_log_in(client, world):
    upload, job = world["upload"], world["job"]
    for url, _ in gets(upload.pk, job.pk):
        response = client.get(url)
        assert response.status_code == 302 and response["Location"].startswith(LOGIN), url
    for url in (
        reverse("swaps-new"),
        reverse("swaps-upload", args=[upload.pk]),
        reverse("swaps-upload-delete", args=[upload.pk]),
        reverse("swaps-job-cancel", args=[job.pk]),
        reverse("swaps-job-delete", args=[job.pk]),
    ):
        response = client.post(url, {"face_0": str(world["persona"].pk)})
        assert response.status_code == 302 and response["Location"].startswith(LOGIN), url
    assert Upload.objects.count() == 2 and SwapJob.objects.count() == 2


def test_wrong_http_methods_get_405(client, owner, world):
    client.force_login(owner)
    upload, job = world["upload"], world["job"]
    post_only = [
        reverse("swaps-upload-delete", args=[upload.pk]),
        reverse("swaps-job-cancel", args=[job.pk]),
        reverse("swaps-job-delete", args=[job.pk]),
    ]
    for url in post_only:
        assert client.get(url).status_code == 405, url
    get_only = [url for url, _ in gets(upload.pk, job.pk) if "/new/" not in url and url != reverse("swaps-upload", args=[upload.pk])]
    for url in get_only:
        assert client.post(url).status_code == 405, url
    for url in (reverse("swaps-new"), reverse("swaps-upload", args=[upload.pk])):
        assert client.put(url).status_code == 405, url
        assert client.delete(url).status_code == 405, url
    assert Upload.objects.filter(pk=upload.pk).exists() and SwapJob.objects.get(pk=job.pk).status == "succeeded"


def test_unknown_media_face_and_missing_files_are_404(owner_client, owner, world):
    upload = world["upload"]
    assert owner_client.get(reverse("swaps-upload-media", args=[upload.pk, "secrets"])).status_code == 404
    assert owner_client.get(reverse("swaps-face", args=[upload.pk, 5])).status_code == 404
    failed = finished_swap(owner, upload, world["persona"], status="failed")
    assert owner_client.get(reverse("swaps-result", args=[failed.pk])).status_code == 404
    assert owner_client.get(reverse("swaps-result-thumbnail", args=[failed.pk])).status_code == 404


def test_result_download_is_an_attachment_and_players_get_ranges(owner_client, world):
    job = world["job"]
    inline = owner_client.get(reverse("swaps-result", args=[job.pk]))
    assert inline["Content-Disposition"].startswith("inline") and "beach-protected.jpg" in inline["Content-Disposition"]
    download = owner_client.get(reverse("swaps-result", args=[job.pk]), {"download": "1"})
    assert download.status_code == 200
    assert download["Content-Disposition"] == 'attachment; filename="beach-protected.jpg"'
    assert body(download) == default_storage.open(job.result.name).read()
    ranged = owner_client.get(reverse("swaps-result", args=[job.pk]), HTTP_RANGE="bytes=0-9")
    assert ranged.status_code == 206 and len(body(ranged)) == 10


# --- the face picker ------------------------------------------------------------------------------
def around(embedding: np.ndarray, distance: float, seed: int) -> np.ndarray:
    """An embedding exactly ``distance`` away from ``embedding``."""
    direction = np.random.default_rng(seed).standard_normal(128)
    return (embedding + distance * direction / np.linalg.norm(direction)).astype(np.float32)


@pytest.fixture
def picker(owner, other_user):
    face = np.random.default_rng(3).standard_normal(128).astype(np.float32) * 0.05
    second = np.random.default_rng(4).standard_normal(128).astype(np.float32) * 0.05
    upload = ready_upload(owner, embeddings=[face, second])
    near = fake_persona(owner, "Twin", embedding=around(face, 0.3, 1))
    middle = fake_persona(owner, "Middle", embedding=around(face, 0.7, 2))
    far = fake_persona(owner, "Far", embedding=around(face, 1.1, 3))
    candidate = fake_persona(owner, "Candidate", status="candidate")
    foreign = fake_persona(other_user, "Foreign")
    return {"upload": upload, "near": near, "middle": middle, "far": far, "candidate": candidate, "foreign": foreign}


def test_the_picker_lists_each_face_with_only_my_ready_personas_best_first(owner_client, picker):
    upload = picker["upload"]
    page = html(owner_client.get(reverse("swaps-upload", args=[upload.pk])))
    rows = re.findall(r'data-testid="face-row" data-face="(\d+)"', page)
    assert rows == ["0", "1"]
    for key in (0, 1):
        assert f'src="{reverse("swaps-face", args=[upload.pk, key])}"' in page
    far, middle, near = picker["far"], picker["middle"], picker["near"]
    assert option_values(page, 0) == [str(far.pk), str(middle.pk), str(near.pk)]
    assert set(option_values(page, 1)) == {str(far.pk), str(middle.pk), str(near.pk)}
    assert "Candidate" not in page and "Foreign" not in page
    # the largest face (the first here, equal boxes) starts with its best protector
    assert selected_value(page, 0) == str(far.pk) and selected_value(page, 1) is None
    assert 'data-testid="resemblance-warning"' not in page
    for face in UploadFace.objects.filter(upload=upload):
        assert owner_client.get(reverse("swaps-face", args=[upload.pk, face.key])).status_code == 200


def test_a_persona_that_resembles_the_face_is_warned_about_with_the_best_suggested(owner_client, picker):
    upload, near, far = picker["upload"], picker["near"], picker["far"]
    response = owner_client.get(reverse("swaps-upload", args=[upload.pk]), picked(picker="1", face_0=near.pk), **HTMX)
    assert response.status_code == 200
    partial = html(response)
    assert partial.lstrip().startswith('<form id="face-picker"') and "<html" not in partial
    assert selected_value(partial, 0) == str(near.pk)
    warning = re.search(r'data-testid="resemblance-warning">(.*?)</p>', partial, re.S).group(1)
    assert "Twin" in warning and "0.30" in warning
    assert "Use “Far” instead" in warning and f'"face_0": "{far.pk}"' in warning
    # choosing a far persona: no warning
    calm = html(owner_client.get(reverse("swaps-upload", args=[upload.pk]), {"picker": "1", "face_0": far.pk}, **HTMX))
    assert 'data-testid="resemblance-warning"' not in calm and selected_value(calm, 0) == str(far.pk)


def test_a_resembling_only_persona_is_warned_about_without_a_suggestion(owner, owner_client, monkeypatch):
    upload = ready_upload(owner)
    twin = fake_persona(owner, "Twin")
    monkeypatch.setattr(services, "persona_distances", lambda upload, avatars: {0: {a.pk: 0.2 for a in avatars}})
    page = html(owner_client.get(reverse("swaps-upload", args=[upload.pk])))
    assert selected_value(page, 0) == str(twin.pk)
    assert 'data-testid="resemblance-warning"' in page and "0.20" in page
    assert 'data-testid="use-suggestion"' not in page


def test_the_picker_without_personas_sends_to_persona_creation(owner_client, owner):
    upload = ready_upload(owner)
    page = html(owner_client.get(reverse("swaps-upload", args=[upload.pk])))
    assert 'data-testid="no-personas"' in page and reverse("avatars-create") in page
    assert re.search(r'data-testid="start-swap"', page) and "disabled data-testid=\"start-swap\"" in page


def test_starting_a_swap_from_the_picker(owner_client, owner, picker, django_capture_on_commit_callbacks):
    from django_q.models import OrmQ

    upload, far, middle = picker["upload"], picker["far"], picker["middle"]
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("swaps-upload", args=[upload.pk]), {
            "face_0": far.pk, "face_1": middle.pk, "others": "blur", "audio": "keep", "quality": "high",
        })
    job = SwapJob.objects.get(user=owner)
    assert response.status_code == 302 and response["Location"] == reverse("swaps-job", args=[job.pk])
    assert (job.status, job.others, job.quality, job.upload_id) == ("queued", "blur", "high", upload.pk)
    assigned = list(job.assignments.values_list("face_key", "avatar_id", "avatar_name"))
    assert assigned == [(0, far.pk, "Far"), (1, middle.pk, "Middle")]
    first = job.assignments.get(face_key=0)
    assert first.distance == pytest.approx(1.1, abs=1e-4)
    assert swaps_used(owner) == 1 and OrmQ.objects.count() == 1
    htmx = owner_client.post(reverse("swaps-upload", args=[upload.pk]), picked(face_0=far.pk), **HTMX)
    # the Free plan runs one job at a time: the second is refused in the picker partial
    assert htmx.status_code == 200 and 'data-testid="swap-error"' in html(htmx) and "1 job at a time" in html(htmx)
    assert SwapJob.objects.count() == 1 and swaps_used(owner) == 1


def test_a_swap_needs_a_persona_for_some_face(owner_client, owner, picker):
    response = owner_client.post(reverse("swaps-upload", args=[picker["upload"].pk]), picked())
    assert response.status_code == 200 and "Choose a persona for at least one face." in html(response)
    bad = owner_client.post(reverse("swaps-upload", args=[picker["upload"].pk]), picked(face_0=picker["far"].pk, others="everyone"))
    assert bad.status_code == 200 and "Check the options below." in html(bad)
    assert not SwapJob.objects.exists() and swaps_used(owner) == 0


def test_htmx_post_redirects_with_hx_redirect(owner_client, owner, picker):
    response = owner_client.post(reverse("swaps-upload", args=[picker["upload"].pk]), picked(face_0=picker["far"].pk), **HTMX)
    job = SwapJob.objects.get(user=owner)
    assert response.status_code == 200 and response["HX-Redirect"] == reverse("swaps-job", args=[job.pk])


def test_double_submitting_the_swap_form_makes_one_job(owner_client, owner, picker):
    data = picked(face_0=picker["far"].pk, submission="6f1c7a52-4b8e-4d0a-9c1e-2f4b7c9d1e00")
    first = owner_client.post(reverse("swaps-upload", args=[picker["upload"].pk]), data)
    second = owner_client.post(reverse("swaps-upload", args=[picker["upload"].pk]), data)
    job = SwapJob.objects.get()
    assert first["Location"] == second["Location"] == reverse("swaps-job", args=[job.pk])
    assert SwapAssignment.objects.count() == 1 and swaps_used(owner) == 1


# --- upload status polling ------------------------------------------------------------------------
def test_the_upload_page_polls_while_checking_and_stops_when_done(owner_client, owner):
    upload = ready_upload(owner)
    Upload.objects.filter(pk=upload.pk).update(status=JobStatus.RUNNING, progress=40, stage="Finding faces", finished_at=None)
    running = owner_client.get(reverse("swaps-upload", args=[upload.pk]), **HTMX)
    assert running.status_code == 200
    fragment = html(running)
    assert fragment.lstrip().startswith('<section id="upload-status"') and 'hx-trigger="every 1s"' in fragment
    assert "Finding faces" in fragment and "40%" in fragment
    Upload.objects.filter(pk=upload.pk).update(status=JobStatus.FAILED, error="We found no face in this photo.")
    done = owner_client.get(reverse("swaps-upload", args=[upload.pk]), **HTMX)
    assert done.status_code == 286 and "We found no face in this photo." in html(done)
    assert 'hx-trigger' not in html(done).split("</section>")[0].split(">")[0]


# --- a swap's page: progress, cancel -------------------------------------------------------------
def queued_swap(user, upload=None, persona=None):
    upload = upload or ready_upload(user)
    persona = persona or fake_persona(user, "Nova")
    return services.swap_start(user=user, upload=upload, assignments={0: persona.pk})


def test_the_job_page_shows_progress_and_eta_and_polls_until_finished(owner_client, owner):
    job = queued_swap(owner)
    queued = owner_client.get(reverse("swaps-job", args=[job.pk]), **HTMX)
    assert queued.status_code == 200 and "Waiting for a worker" in html(queued)
    SwapJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, progress=50, stage="Frame 60 of 120", started_at=timezone.now() - timedelta(seconds=20)
    )
    page = html(owner_client.get(reverse("swaps-job", args=[job.pk])))
    assert 'data-testid="job-progress"' in page and 'value="50"' in page
    assert '<span data-testid="job-stage">Frame 60 of 120</span>' in page
    eta = int(re.search(r'data-testid="job-eta">(\d+) s<', page).group(1))
    assert 19 <= eta <= 22  # half done in 20 s: about 20 s left
    polling = owner_client.get(reverse("swaps-job", args=[job.pk]), **HTMX)
    assert polling.status_code == 200 and html(polling).lstrip().startswith('<section id="job-status"')
    assert 'hx-trigger="every 1s"' in html(polling)
    SwapJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, error="The persona failed its check.")
    finished = owner_client.get(reverse("swaps-job", args=[job.pk]), **HTMX)
    assert finished.status_code == 286 and "The persona failed its check." in html(finished)
    assert "every 1s" not in html(finished)


def test_cancelling_a_queued_swap_refunds_it(owner_client, owner):
    job = queued_swap(owner)
    assert swaps_used(owner) == 1
    response = owner_client.post(reverse("swaps-job-cancel", args=[job.pk]), follow=True)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.quota_refunded and swaps_used(owner) == 1 - 1
    page = html(response)
    assert "Swap cancelled; it was not counted against your quota." in page and 'data-testid="job-cancelled"' in page
    assert claim_next(SwapJob) is None  # no worker will pick it up


def test_cancelling_a_running_swap_asks_the_worker_to_stop(owner_client, owner):
    job = queued_swap(owner)
    claimed = claim_next(SwapJob)
    assert claimed.pk == job.pk
    response = owner_client.post(reverse("swaps-job-cancel", args=[job.pk]), **HTMX)
    assert response.status_code == 200 and response["HX-Redirect"] == reverse("swaps-job", args=[job.pk])
    job.refresh_from_db()
    assert job.status == JobStatus.RUNNING and job.cancel_requested and swaps_used(owner) == 1


def test_cancelling_a_finished_swap_changes_nothing(owner_client, owner):
    job = finished_swap(owner, ready_upload(owner), fake_persona(owner))
    response = owner_client.post(reverse("swaps-job-cancel", args=[job.pk]))
    assert response.status_code == 302
    job.refresh_from_db()
    assert job.status == "succeeded" and job.result and not job.cancel_requested


def test_the_result_page_says_how_well_the_face_is_protected(owner_client, owner):
    job = finished_swap(owner, ready_upload(owner), fake_persona(owner, "Nova"))
    page = html(owner_client.get(reverse("swaps-job", args=[job.pk])))
    assert 'data-level="protected"' in page and "Original person no longer recognisable." in page
    assert "Face 1: original person no longer recognisable (identity distance 0.81" in page
    assert f'href="{reverse("swaps-result", args=[job.pk])}?download=1"' in page
    assert "Face 1 → <strong>Nova</strong>" in page
    SwapJob.objects.filter(pk=job.pk).update(report={"kind": "image", "faces": [
        {"index": 0, "action": "swapped", "protected": False, "distance_to_original": 0.41}]})
    partial = html(owner_client.get(reverse("swaps-job", args=[job.pk])))
    assert 'data-level="partial"' in partial and "may still be recognisable (identity distance 0.41" in partial


# --- history -------------------------------------------------------------------------------------
def test_history_is_empty_at_first(owner_client):
    page = html(owner_client.get(reverse("swaps-history")))
    assert 'data-testid="empty-state"' in page and 'data-testid="swap-item"' not in page


def test_history_lists_my_swaps_with_status_and_thumbnails_not_others(owner_client, owner, other_user):
    persona = fake_persona(owner, "Nova")
    done = finished_swap(owner, ready_upload(owner, name="done.jpg"), persona)
    failed = finished_swap(owner, ready_upload(owner, name="failed.jpg"), persona, status="failed")
    waiting = ready_upload(owner, name="waiting.jpg")
    finished_swap(other_user, ready_upload(other_user, name="someone-else.jpg"), fake_persona(other_user, "Other"))
    page = html(owner_client.get(reverse("swaps-history")))
    items = re.findall(r'data-testid="swap-item" data-status="(\w+)"', page)
    assert sorted(items) == ["failed", "succeeded"]
    assert f'src="{reverse("swaps-result-thumbnail", args=[done.pk])}"' in page
    assert f'src="{reverse("swaps-upload-media", args=[failed.upload_id, "preview"])}"' in page
    assert "done.jpg" in page and "failed.jpg" in page and "someone-else.jpg" not in page
    assert 'data-testid="waiting-upload"' in page and reverse("swaps-upload", args=[waiting.pk]) in page
    assert "1 face found" in page  # the waiting upload's face count
    assert 'data-testid="empty-state"' not in page
    assert re.search(r'data-testid="swap-status">Succeeded<', page) and re.search(r'data-testid="swap-status">Failed<', page)


# --- deleting ------------------------------------------------------------------------------------
def test_deleting_the_only_swap_of_an_upload_deletes_both_with_their_files(owner_client, owner, django_capture_on_commit_callbacks):
    upload = ready_upload(owner)
    job = finished_swap(owner, upload, fake_persona(owner))
    files = [job.result.name, job.result_thumbnail.name, upload.file.name, upload.preview.name, upload.faces.get().thumbnail.name]
    assert all(name in stored_files() for name in files)
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("swaps-job-delete", args=[job.pk]), follow=True)
    assert response.redirect_chain[-1][0] == reverse("swaps-history")
    assert "The swap and its files were deleted." in html(response)
    assert not SwapJob.objects.exists() and not Upload.objects.exists() and not UploadFace.objects.exists()
    assert not set(files) & set(stored_files())


def test_deleting_one_of_two_swaps_keeps_the_upload(owner_client, owner, django_capture_on_commit_callbacks):
    upload = ready_upload(owner)
    persona = fake_persona(owner)
    first, second = finished_swap(owner, upload, persona), finished_swap(owner, upload, persona)
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(reverse("swaps-job-delete", args=[first.pk]))
    assert list(SwapJob.objects.values_list("pk", flat=True)) == [second.pk]
    files = stored_files()
    assert first.result.name not in files and second.result.name in files and upload.file.name in files


def test_deleting_an_upload_deletes_its_swaps_and_every_file(owner_client, owner, django_capture_on_commit_callbacks):
    upload = ready_upload(owner)
    persona = fake_persona(owner)
    finished_swap(owner, upload, persona)
    finished_swap(owner, upload, persona, status="failed")
    persona_files = [persona.image.name, persona.thumbnail.name]
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("swaps-upload-delete", args=[upload.pk]), **HTMX)
    assert response["HX-Redirect"] == reverse("swaps-history")
    assert not Upload.objects.exists() and not SwapJob.objects.exists() and not UploadFace.objects.exists()
    assert stored_files() == sorted(persona_files)  # the persona stays in the library


def test_deleting_an_upload_still_queued_for_its_check_refunds_its_volume(owner_client, owner, django_capture_on_commit_callbacks):
    upload = ready_upload(owner)
    reservation = quota_reserve(user=owner, metric="upload_bytes", amount=upload.size_bytes)
    Upload.objects.filter(pk=upload.pk).update(
        status=JobStatus.QUEUED, finished_at=None, quota_metric="upload_bytes", quota_period=reservation.period,
        quota_amount=upload.size_bytes,
    )
    assert upload_bytes_used(owner) == 2048
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(reverse("swaps-upload-delete", args=[upload.pk]))
    assert not Upload.objects.exists() and stored_files() == [] and upload_bytes_used(owner) == 0
    assert claim_next(Upload) is None


# --- retention -----------------------------------------------------------------------------------
def test_files_past_the_plan_retention_are_deleted_and_the_pages_say_so(owner_client, owner):
    upload = ready_upload(owner)
    persona = fake_persona(owner)
    old = finished_swap(owner, upload, persona)
    long_ago = timezone.now() - timedelta(days=8)  # Free plan: 7 days
    SwapJob.objects.filter(pk=old.pk).update(finished_at=long_ago)
    Upload.objects.filter(pk=upload.pk).update(finished_at=long_ago)
    counts = sweep_jobs()
    assert counts["purged"] == 2
    old.refresh_from_db()
    upload.refresh_from_db()
    assert old.purged_at and not old.result and not old.result_thumbnail and old.status == "succeeded"
    assert upload.purged_at and not upload.file and not upload.preview and not upload.is_ready
    assert stored_files() == sorted([persona.image.name, persona.thumbnail.name])
    job_page = html(owner_client.get(reverse("swaps-job", args=[old.pk])))
    assert 'data-testid="job-purged"' in job_page and "passed its retention period" in job_page
    assert 'data-testid="download"' not in job_page
    upload_page = html(owner_client.get(reverse("swaps-upload", args=[upload.pk])))
    assert 'data-testid="upload-purged"' in upload_page and 'id="face-picker"' not in upload_page
    assert re.search(r'data-testid="swap-status">Expired<', html(owner_client.get(reverse("swaps-history"))))
    assert owner_client.get(reverse("swaps-result", args=[old.pk])).status_code == 404
    assert owner_client.get(reverse("swaps-upload-media", args=[upload.pk, "original"])).status_code == 404
    # a swap can no longer be started from it
    response = owner_client.post(reverse("swaps-upload", args=[upload.pk]), picked(face_0=persona.pk))
    assert response.status_code == 200 and SwapJob.objects.count() == 1


def test_recent_files_are_kept_by_the_sweep(owner):
    upload = ready_upload(owner)
    job = finished_swap(owner, upload, fake_persona(owner))
    SwapJob.objects.filter(pk=job.pk).update(finished_at=timezone.now() - timedelta(days=6))
    before = stored_files()
    assert sweep_jobs()["purged"] == 0 and stored_files() == before


# --- the account goes, the files go -------------------------------------------------------------
def test_deleting_the_account_deletes_every_swap_file(client, owner, other_user):
    from tests.conftest import PASSWORD

    upload = ready_upload(owner)
    finished_swap(owner, upload, fake_persona(owner))
    theirs = finished_swap(other_user, ready_upload(other_user), fake_persona(other_user, "Other"))
    assert any(name.startswith(f"users/{owner.pk}/") for name in stored_files())
    client.force_login(owner)
    response = client.post(reverse("accounts-delete"), {"password": PASSWORD, "confirm": "DELETE"})
    assert response.status_code == 302
    assert not any(name.startswith(f"users/{owner.pk}/") for name in stored_files())
    assert not Upload.objects.filter(user_id=owner.pk).exists() and not UploadFace.objects.filter(upload__user_id=owner.pk).exists()
    assert theirs.result.name in stored_files()  # nobody else's
    assert UsageCounter.objects.filter(user_id=owner.pk).count() == 0
