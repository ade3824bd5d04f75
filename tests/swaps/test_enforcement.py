"""The rule, in depth: a swap's source is always one of the requesting user's own kept personas,
never an upload. The form offers only those; the job stores a foreign key to one; a forged
request is a 404, logged, with nothing queued and no quota used; and the worker checks each
persona again (its signature over the file on disk, and the identity in that file) before it
swaps a pixel."""
from __future__ import annotations

import logging

import numpy as np
import pytest
from django import forms
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import models
from django.urls import reverse
from django_q.models import OrmQ

from accounts.models import UsageCounter
from accounts.quotas import current_period
from avatars.models import Avatar, provenance_keys
from safeface.jobs import JobStatus
from swaps import services
from swaps.forms import SwapForm, UploadForm
from swaps.models import SwapAssignment, SwapJob
from tests.swaps.conftest import (
    corpus_dir,
    encode,
    fake_persona,
    faces_picture,
    ready_upload,
    real_persona,
    run_job,
    stored_files,
    swaps_used,
    tiny_jpeg,
)

pytestmark = pytest.mark.django_db
SECURITY = "safeface.security"


def security_events(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SECURITY and r.levelno >= logging.WARNING]


def choice(**faces) -> dict:
    return {**faces, "others": "keep", "audio": "keep", "quality": "standard"}


# --- the request side ---------------------------------------------------------------------------
def forged_value(kind: str, owner, other_user) -> str:
    if kind == "another user's persona":
        return str(fake_persona(other_user, "Theirs").pk)
    if kind == "a deleted persona":
        gone = fake_persona(owner, "Gone")
        pk = gone.pk
        gone.delete()
        return str(pk)
    if kind == "a candidate":
        return str(fake_persona(owner, "Not kept", status=Avatar.Status.CANDIDATE).pk)
    if kind == "an invented id":
        return "987654"
    if kind == "not a number":
        return "1 OR 1=1"
    raise AssertionError(kind)


FORGERIES = ["another user's persona", "a deleted persona", "a candidate", "an invented id", "not a number"]


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
@pytest.mark.parametrize("kind", FORGERIES)
def test_a_forged_persona_is_a_logged_404_and_nothing_is_queued(
    owner_client, owner, other_user, caplog, django_capture_on_commit_callbacks, kind, htmx,
):
    upload = ready_upload(owner)
    fake_persona(owner, "Mine")  # the user does have a persona of their own
    UsageCounter.objects.create(user=owner, period=current_period(), metric="swaps", used=3)
    value = forged_value(kind, owner, other_user)
    caplog.set_level(logging.WARNING, logger=SECURITY)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = owner_client.post(
            reverse("swaps-upload", args=[upload.pk]), choice(face_0=value), **({"HTTP_HX_REQUEST": "true"} if htmx else {})
        )
    assert response.status_code == 404
    events = security_events(caplog)
    assert len(events) == 1 and f"user {owner.pk}" in events[0] and f"upload {upload.pk}" in events[0]
    if value.isdigit():
        assert value in events[0]
    assert not SwapJob.objects.exists() and not SwapAssignment.objects.exists()
    assert callbacks == [] and OrmQ.objects.count() == 0
    assert swaps_used(owner) == 3


def test_one_forged_persona_among_good_ones_still_queues_nothing(owner_client, owner, other_user, caplog):
    upload = ready_upload(owner, embeddings=[np.full(128, 0.01, np.float32), np.full(128, -0.01, np.float32)])
    mine, theirs = fake_persona(owner, "Mine"), fake_persona(other_user, "Theirs")
    caplog.set_level(logging.WARNING, logger=SECURITY)
    response = owner_client.post(reverse("swaps-upload", args=[upload.pk]), choice(face_0=mine.pk, face_1=theirs.pk))
    assert response.status_code == 404 and str(theirs.pk) in security_events(caplog)[0]
    assert not SwapJob.objects.exists() and swaps_used(owner) == 0


def test_the_service_refuses_the_same_forgeries(owner, other_user, caplog):
    upload = ready_upload(owner)
    theirs = fake_persona(other_user, "Theirs")
    caplog.set_level(logging.WARNING, logger=SECURITY)
    with pytest.raises(services.PersonaNotFound):
        services.swap_start(user=owner, upload=upload, assignments={0: theirs.pk})
    with pytest.raises(services.PersonaNotFound):  # someone else's upload, even with their persona
        services.swap_start(user=other_user, upload=upload, assignments={0: theirs.pk})
    assert not SwapJob.objects.exists() and len(security_events(caplog)) == 1


def test_no_form_model_or_field_takes_a_source_image():
    swap_form = SwapForm(face_keys=[0, 1])
    assert not any(isinstance(f, forms.FileField) for f in swap_form.fields.values())
    assert [name for name, f in UploadForm().fields.items() if isinstance(f, forms.FileField)] == ["file"]
    job_files = {f.name for f in SwapJob._meta.get_fields() if isinstance(f, models.FileField)}
    assert job_files == {"result", "result_thumbnail"}  # written by the worker only
    assert not any(isinstance(f, models.FileField) for f in SwapAssignment._meta.get_fields())
    source = SwapAssignment._meta.get_field("avatar")
    assert source.related_model is Avatar


def test_a_source_file_posted_with_the_swap_form_is_ignored(owner_client, owner):
    upload = ready_upload(owner)
    mine = fake_persona(owner, "Mine")
    before = stored_files()
    smuggled = {
        name: SimpleUploadedFile(f"{name}.jpg", tiny_jpeg(10 + i), content_type="image/jpeg")
        for i, name in enumerate(["source", "source_image", "face_0_file", "avatar", "persona_image", "file"])
    }
    response = owner_client.post(reverse("swaps-upload", args=[upload.pk]), {**choice(face_0=mine.pk), **smuggled})
    job = SwapJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("swaps-job", args=[job.pk])
    assert list(job.assignments.values_list("face_key", "avatar_id")) == [(0, mine.pk)]
    assert stored_files() == before  # none of the posted files was stored anywhere


def test_the_upload_form_makes_an_upload_never_a_persona(owner_client, owner):
    owner_client.post(reverse("swaps-new"), {
        "file": SimpleUploadedFile("me.jpg", tiny_jpeg()), "source": SimpleUploadedFile("face.jpg", tiny_jpeg(5)),
    })
    assert not Avatar.objects.exists() and owner.swaps_uploads.count() == 1
    assert len(stored_files()) == 1


# --- the worker checks again ---------------------------------------------------------------------
def queued_with(owner, avatar) -> SwapJob:
    job = services.swap_start(user=owner, upload=ready_upload(owner), assignments={0: avatar.pk})
    assert swaps_used(owner) == 1
    return job


def stranger_png(source: str) -> bytes:
    """A real person's photo (corpus) or another generated face, as a PNG."""
    if source == "corpus photo":
        from PIL import Image

        with Image.open(corpus_dir() / "faces/face_obama_frontal.jpg") as im:
            return encode(np.asarray(im.convert("RGB")), "PNG")
    return encode(faces_picture((12,), 512), "PNG")


SOURCES = [pytest.param("corpus photo", marks=pytest.mark.corpus), "generated stranger"]


def assert_refused(job: SwapJob, owner, message: str, caplog) -> None:
    job.refresh_from_db()
    assert job.status == JobStatus.FAILED and message in job.error
    assert "nothing was swapped" in job.error
    assert not job.result and not job.result_thumbnail
    assert not any("/swaps/" in name for name in stored_files())
    assert job.quota_refunded and swaps_used(owner) == 0
    assert security_events(caplog), "the refusal must be logged as a security event"


@pytest.mark.parametrize("source", SOURCES)
def test_a_persona_file_replaced_on_disk_fails_the_signature_check(owner, owner_client, swap_models, caplog, source):
    avatar = real_persona(owner, seed=1, name="Nova")
    job = queued_with(owner, avatar)
    with open(avatar.image.path, "wb") as handle:  # swapped on disk after the job was queued
        handle.write(stranger_png(source))
    caplog.set_level(logging.WARNING, logger=SECURITY)
    run_job("swaps.SwapJob", "failed")
    assert_refused(job, owner, "The persona “Nova” failed its authenticity check", caplog)
    assert any(f"avatar {avatar.pk}" in e and "does not match the signature" in e for e in security_events(caplog))
    page = owner_client.get(reverse("swaps-job", args=[job.pk])).content.decode()
    assert "failed its authenticity check" in page and 'data-testid="download"' not in page


@pytest.mark.parametrize("source", SOURCES)
def test_a_re_signed_stranger_fails_the_identity_check(owner, swap_models, caplog, source):
    from engine.media.provenance import sign, verify

    avatar = real_persona(owner, seed=1, name="Nova")
    job = queued_with(owner, avatar)
    data = stranger_png(source)
    with open(avatar.image.path, "wb") as handle:
        handle.write(data)
    # whoever did this also holds the server key: the signature is valid over the new picture
    Avatar.objects.filter(pk=avatar.pk).update(signature=sign(provenance_keys()[0], data, avatar.provenance_fields()))
    avatar.refresh_from_db()
    assert verify(provenance_keys()[0], data, avatar.provenance_fields(), avatar.signature)
    caplog.set_level(logging.WARNING, logger=SECURITY)
    run_job("swaps.SwapJob", "failed")
    assert_refused(job, owner, "The persona “Nova” failed its identity check", caplog)
    assert any(f"avatar {avatar.pk} shows another identity" in e for e in security_events(caplog))


def test_a_persona_file_that_vanished_fails_the_signature_check(owner, swap_models, caplog):
    avatar = real_persona(owner, seed=1, name="Nova")
    job = queued_with(owner, avatar)
    avatar.image.storage.delete(avatar.image.name)
    caplog.set_level(logging.WARNING, logger=SECURITY)
    run_job("swaps.SwapJob", "failed")
    assert_refused(job, owner, "failed its authenticity check", caplog)
    assert any("the image file is missing" in e for e in security_events(caplog))


@pytest.mark.parametrize("change", ["deleted", "made a candidate", "given to another user"])
def test_a_persona_gone_from_the_library_after_queueing_fails_the_job(owner, other_user, owner_client, swap_models, caplog, change):
    avatar = fake_persona(owner, "Nova")
    job = queued_with(owner, avatar)
    if change == "deleted":
        avatar.delete()
    elif change == "made a candidate":
        Avatar.objects.filter(pk=avatar.pk).update(status=Avatar.Status.CANDIDATE)
    else:
        Avatar.objects.filter(pk=avatar.pk).update(user=other_user)
    caplog.set_level(logging.WARNING, logger=SECURITY)
    run_job("swaps.SwapJob", "failed")
    assert_refused(job, owner, "The persona chosen for face 1 (Nova) is no longer in your library", caplog)
    assert job.assignments.get().avatar_name == "Nova"
    page = owner_client.get(reverse("swaps-job", args=[job.pk])).content.decode()
    assert "is no longer in your library" in page
