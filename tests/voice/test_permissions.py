"""Everything of the voice pages is private to its owner: another user's persona, job or file is a
404 (a forged persona on the mask form is also logged, and stores, queues and meters nothing);
anonymous visitors are sent to log in. The owner's files come with the right names and types."""
from __future__ import annotations

import logging
import uuid

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django_q.models import OrmQ

from accounts.models import UsageCounter
from accounts.quotas import current_period
from avatars.models import Avatar
from safeface.jobs import JobStatus
from tests.swaps.conftest import fake_persona, stored_files
from tests.voice.conftest import finished_mask, tone_wav, voice_seconds_used
from voice.models import MaskJob, PersonaVoice, PreviewJob
from voice.services import voice_for

pytestmark = pytest.mark.django_db
SECURITY = "safeface.security"
HTMX = {"HTTP_HX_REQUEST": "true"}


def security_events(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == SECURITY and r.levelno >= logging.WARNING]


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
    if kind == "no persona":
        return ""
    raise AssertionError(kind)


FORGERIES = ["another user's persona", "a deleted persona", "a candidate", "an invented id", "not a number", "no persona"]


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
@pytest.mark.parametrize("kind", FORGERIES)
def test_a_forged_persona_is_a_logged_404_and_nothing_is_stored_queued_or_metered(
    owner_client, owner, other_user, caplog, django_capture_on_commit_callbacks, kind, htmx,
):
    fake_persona(owner, "Mine")
    UsageCounter.objects.create(user=owner, period=current_period(), metric="voice_seconds", used=30)
    value = forged_value(kind, owner, other_user)
    before = stored_files()
    caplog.set_level(logging.WARNING, logger=SECURITY)
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        response = owner_client.post(reverse("voice-new"), {
            "persona": value, "output_format": "mp3", "file": SimpleUploadedFile("talk.wav", tone_wav(2)),
            "submission": str(uuid.uuid4()),
        }, **(HTMX if htmx else {}))
    assert response.status_code == 404
    events = security_events(caplog)
    assert len(events) == 1 and f"user {owner.pk}" in events[0] and "mask a recording" in events[0]
    if value.isdigit():
        assert value in events[0]
    assert not MaskJob.objects.exists() and stored_files() == before
    assert callbacks == [] and OrmQ.objects.count() == 0
    assert voice_seconds_used(owner) == 30
    assert not PersonaVoice.objects.filter(user=other_user).exists()  # not even their voice was made


# --- pages and files of someone else -------------------------------------------------------------
def owner_things(owner):
    persona = fake_persona(owner, "Mine")
    voice = voice_for(persona)
    from django.core.files.base import ContentFile

    voice.preview.save("preview.mp3", ContentFile(b"ID3fake"), save=True)
    job = finished_mask(owner, persona)
    return persona, job


def urls(persona, job) -> dict[str, tuple[str, str]]:
    return {
        "persona voice": ("get", reverse("voice-persona", args=[persona.pk])),
        "persona voice (save)": ("post", reverse("voice-persona", args=[persona.pk])),
        "persona preview": ("get", reverse("voice-persona-preview", args=[persona.pk])),
        "job": ("get", reverse("voice-job", args=[job.pk])),
        "original": ("get", reverse("voice-original", args=[job.pk])),
        "result": ("get", reverse("voice-result", args=[job.pk])),
        "cancel": ("post", reverse("voice-job-cancel", args=[job.pk])),
        "delete": ("post", reverse("voice-job-delete", args=[job.pk])),
    }


def test_another_user_gets_404_everywhere_and_nothing_changes(client, owner, other_user):
    persona, job = owner_things(owner)
    client.force_login(other_user)
    settings_before = dict(persona.voice.settings)
    for label, (method, url) in urls(persona, job).items():
        data = {"action": "randomise"} if "save" in label else {}
        response = getattr(client, method)(url, data)
        assert response.status_code == 404, label
    assert MaskJob.objects.filter(pk=job.pk, status=JobStatus.SUCCEEDED).exists()
    persona.voice.refresh_from_db()
    assert persona.voice.settings == settings_before and not PreviewJob.objects.exists()
    assert job.result.name in stored_files() and job.source.name in stored_files()


def test_anonymous_visitors_are_sent_to_log_in(client, owner):
    persona, job = owner_things(owner)
    pages = {**urls(persona, job), "history": ("get", reverse("voice-history")), "new": ("get", reverse("voice-new"))}
    for label, (method, url) in pages.items():
        response = getattr(client, method)(url)
        assert response.status_code == 302 and response["Location"].startswith(reverse("accounts-login")), label


def test_a_candidate_has_no_voice_page(owner_client, owner):
    candidate = fake_persona(owner, "Not kept", status=Avatar.Status.CANDIDATE)
    assert owner_client.get(reverse("voice-persona", args=[candidate.pk])).status_code == 404
    assert not PersonaVoice.objects.exists()


def test_the_history_lists_only_the_owners_jobs(owner_client, owner, other_user):
    mine = finished_mask(owner, fake_persona(owner, "Mine"), name="mine.wav")
    finished_mask(other_user, fake_persona(other_user, "Theirs"), name="theirs.wav")
    page = owner_client.get(reverse("voice-history")).content.decode()
    assert "mine.wav" in page and "theirs.wav" not in page and reverse("voice-job", args=[mine.pk]) in page
    assert page.count('data-testid="mask-item"') == 1


# --- the owner's files ---------------------------------------------------------------------------
def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def test_the_owner_gets_both_players_files_and_the_download(owner_client, owner):
    persona, job = owner_things(owner)
    page = owner_client.get(reverse("voice-job", args=[job.pk])).content.decode()
    assert f'src="{reverse("voice-original", args=[job.pk])}"' in page and f'src="{reverse("voice-result", args=[job.pk])}"' in page
    original = owner_client.get(reverse("voice-original", args=[job.pk]))
    assert original.status_code == 200 and original["Content-Type"] == "audio/x-wav"
    assert original["Content-Disposition"] == 'inline; filename="talk.wav"' and body(original) == job.source.read()
    inline = owner_client.get(reverse("voice-result", args=[job.pk]))
    assert inline["Content-Type"] == "audio/mpeg" and inline["Content-Disposition"] == 'inline; filename="talk-masked.mp3"'
    assert inline["Cache-Control"] == "private, no-store" and inline["Accept-Ranges"] == "bytes"
    download = owner_client.get(reverse("voice-result", args=[job.pk]), {"download": "1"})
    assert download["Content-Disposition"] == 'attachment; filename="talk-masked.mp3"'
    assert body(download) == job.result.read()
    ranged = owner_client.get(reverse("voice-result", args=[job.pk]), HTTP_RANGE="bytes=0-9")
    assert ranged.status_code == 206 and len(body(ranged)) == 10
    preview = owner_client.get(reverse("voice-persona-preview", args=[persona.pk]))
    assert preview.status_code == 200 and preview["Content-Type"] == "audio/mpeg" and body(preview) == b"ID3fake"


def test_a_job_without_a_result_serves_no_result(owner_client, owner):
    job = finished_mask(owner, fake_persona(owner, "Mine"), status=JobStatus.FAILED)
    assert owner_client.get(reverse("voice-result", args=[job.pk])).status_code == 404
    page = owner_client.get(reverse("voice-job", args=[job.pk])).content.decode()
    assert 'data-testid="job-error"' in page and "It broke." in page and 'data-testid="download"' not in page


def test_a_persona_without_a_preview_serves_none(owner_client, owner):
    persona = fake_persona(owner, "Mine")
    assert owner_client.get(reverse("voice-persona-preview", args=[persona.pk])).status_code == 404
