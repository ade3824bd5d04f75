"""Every voice file is private, deletable and temporary: deleting a job removes its upload and
results, the sweeper removes them after the plan's retention period, the account's deletion
removes everything, and the data export holds the voice records and files."""
from __future__ import annotations

import io
import json
import zipfile
from datetime import timedelta
from html import unescape

import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django.utils import timezone

from accounts.models import DataExport
from safeface.jobs import JobStatus, run_next_job, sweep_jobs
from tests.conftest import PASSWORD
from tests.swaps.conftest import fake_persona, stored_files
from tests.voice.conftest import finished_mask, tone_wav, voice_seconds_used
from voice import services
from voice.models import MaskJob, PersonaVoice, PreviewJob

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def voice_files(user) -> list[str]:
    return [f for f in stored_files() if f.startswith(f"users/{user.pk}/voice/")]


def with_preview(user, name: str = "Nova"):
    avatar = fake_persona(user, name)
    voice = services.voice_for(avatar)
    voice.preview.save("preview.mp3", ContentFile(b"ID3 preview of " + name.encode()), save=True)
    clip_job = PreviewJob(user=user, voice=voice, settings=voice.settings, source="upload")
    clip_job.clip.save("clip.flac", ContentFile(b"fLaC clip"), save=True)
    return avatar, voice, clip_job


def test_deleting_a_job_deletes_its_files(owner_client, owner, django_capture_on_commit_callbacks):
    job = finished_mask(owner, fake_persona(owner))
    job.original_preview.save("original.mp3", ContentFile(b"ID3"), save=True)
    files = [job.source.name, job.result.name, job.original_preview.name]
    assert all(name in stored_files() for name in files)
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("voice-job-delete", args=[job.pk]), **HTMX)
    assert response["HX-Redirect"] == reverse("voice-history")
    assert not MaskJob.objects.exists() and not set(files) & set(stored_files())
    page = unescape(owner_client.get(reverse("voice-history")).content.decode())
    assert "The recording and its masked version were deleted." in page and 'data-testid="empty-state"' in page


def test_deleting_a_running_job_stops_it_first_and_refunds_it(owner_client, owner, django_capture_on_commit_callbacks):
    job = services.mask_start(user=owner, persona=fake_persona(owner).pk, file=SimpleUploadedFile("t.wav", tone_wav(4)))
    assert voice_seconds_used(owner) == 4
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(reverse("voice-job-delete", args=[job.pk]))
    assert not MaskJob.objects.exists() and voice_files(owner) == [] and voice_seconds_used(owner) == 0
    assert run_next_job("voice.MaskJob") == "idle"


def test_files_past_the_plan_retention_are_deleted_and_the_pages_say_so(owner_client, owner):
    persona = fake_persona(owner)
    old = finished_mask(owner, persona, name="old.wav")
    recent = finished_mask(owner, persona, name="recent.wav")
    MaskJob.objects.filter(pk=old.pk).update(finished_at=timezone.now() - timedelta(days=8))  # Free: 7 days
    MaskJob.objects.filter(pk=recent.pk).update(finished_at=timezone.now() - timedelta(days=6))
    old_files = [old.source.name, old.result.name]
    assert sweep_jobs()["purged"] == 1
    old.refresh_from_db()
    assert old.purged_at and not old.source and not old.result and old.status == JobStatus.SUCCEEDED
    assert not set(old_files) & set(stored_files()) and recent.result.name in stored_files()
    page = unescape(owner_client.get(reverse("voice-job", args=[old.pk])).content.decode())
    assert 'data-testid="job-purged"' in page and "passed its retention period" in page and 'data-testid="download"' not in page
    assert owner_client.get(reverse("voice-result", args=[old.pk])).status_code == 404
    assert owner_client.get(reverse("voice-original", args=[old.pk])).status_code == 404
    assert 'data-testid="mask-status">Expired<' in owner_client.get(reverse("voice-history")).content.decode()


def test_a_preview_clip_left_by_a_failed_run_is_purged_too(owner):
    _, _, clip_job = with_preview(owner)
    PreviewJob.objects.filter(pk=clip_job.pk).update(status=JobStatus.FAILED, finished_at=timezone.now() - timedelta(days=8))
    sweep_jobs()
    clip_job.refresh_from_db()
    assert not clip_job.clip and clip_job.purged_at


def test_deleting_the_account_deletes_every_voice_file(client, owner, other_user):
    with_preview(owner)
    finished_mask(owner, fake_persona(owner, "Other persona"))
    theirs = finished_mask(other_user, fake_persona(other_user, "Theirs"))
    assert len(voice_files(owner)) == 4  # preview, clip, upload, result
    client.force_login(owner)
    response = client.post(reverse("accounts-delete"), {"password": PASSWORD, "confirm": "DELETE"})
    assert response.status_code == 302
    assert not any(f.startswith(f"users/{owner.pk}/") for f in stored_files())
    assert not PersonaVoice.objects.filter(user_id=owner.pk).exists() and not MaskJob.objects.filter(user_id=owner.pk).exists()
    assert not PreviewJob.objects.filter(user_id=owner.pk).exists()
    assert theirs.result.name in stored_files()


def test_the_data_export_holds_the_voice_records_and_files(owner_client, owner, other_user):
    avatar, voice, _ = with_preview(owner, "Nova")
    job = finished_mask(owner, avatar, name="talk.wav")
    with_preview(other_user, "Theirs")
    owner_client.post(reverse("accounts-export-create"))
    assert run_next_job("accounts.DataExport").endswith("succeeded")
    export = DataExport.objects.get(user=owner)
    archive = zipfile.ZipFile(io.BytesIO(export.archive.read()))
    names = archive.namelist()
    voices = json.loads(archive.read("records/voice.personavoice.json"))
    assert [v["fields"]["avatar"] for v in voices] == [avatar.pk] and voices[0]["fields"]["settings"] == voice.settings
    masks = json.loads(archive.read("records/voice.maskjob.json"))
    assert [m["fields"]["original_name"] for m in masks] == ["talk.wav"]
    assert "records/voice.previewjob.json" in names
    for stored in (voice.preview.name, job.source.name, job.result.name):
        assert f"files/{stored.split('/', 2)[-1]}" in names
    assert b"ID3 preview of Nova" in archive.read(f"files/{voice.preview.name.split('/', 2)[-1]}")
    assert b"Theirs" not in b"".join(archive.read(n) for n in names)
