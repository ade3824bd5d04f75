"""Uploading a recording to mask: checked in the web process by decoding it, before anything is
stored or queued. Every refusal says why in the page, keeps the chosen persona and format, stores
nothing and uses no minutes; what is accepted is metered by its length in seconds."""
from __future__ import annotations

import re
import uuid
from html import unescape

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django_q.models import OrmQ

from accounts.models import Plan
from accounts.quotas import current_period, quota_reserve
from safeface.jobs import JobStatus
from tests.swaps.conftest import encode, fake_persona, stored_files, tiny_jpeg
from tests.voice.conftest import (
    empty_wav,
    recording,
    silent_video,
    tone_wav,
    video_with_sound,
    voice_seconds_used,
)
from voice.models import MaskJob

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def html(response) -> str:
    return unescape(response.content.decode())


def post(client, data: bytes | None, name: str, persona, output_format: str = "flac", **extra):
    fields = {"persona": str(persona.pk), "output_format": output_format, "submission": str(uuid.uuid4()), **extra}
    if data is not None:
        fields["file"] = SimpleUploadedFile(name, data)
    return client.post(reverse("voice-new"), fields)


def assert_refused(response, message: str, persona, output_format: str = "flac") -> None:
    page = html(response)
    assert response.status_code == 200
    assert message in page, page[page.find("<main"):][:3000]
    assert not MaskJob.objects.exists() and stored_files() == [p for p in stored_files() if "/avatars/" in p]
    assert OrmQ.objects.count() == 0
    # nothing lost: the persona and format chosen are still chosen
    assert re.search(rf'<option value="{persona.pk}"\s+selected>', page)
    assert re.search(rf'value="{output_format}"[^>]*checked', page) or re.search(rf'checked[^>]*value="{output_format}"', page)


REFUSALS = {
    "zero bytes": (lambda tmp: b"", "a.wav", "The submitted file is empty"),
    "junk": (lambda tmp: b"MZ\x90\x00 this is not a recording " * 200, "song.mp3", "SafeFace cannot read this file as sound (it is damaged, or not a recording)."),
    "a photo": (lambda tmp: tiny_jpeg(), "me.jpg", "This file has no sound track, so there is no voice to mask."),
    "a PNG named .wav": (lambda tmp: encode(__import__("numpy").zeros((8, 8, 3), "uint8"), "PNG"), "talk.wav", "This file has no sound track"),
    "a silent video": (lambda tmp: silent_video(tmp / "silent.mp4"), "silent.mp4", "This file has no sound track, so there is no voice to mask."),
    "a WAV without samples": (lambda tmp: empty_wav(), "empty.wav", "This recording is empty: it holds no sound at all."),
    "a cut-off FLAC": (lambda tmp: recording("flac")[:300], "cut.flac", "SafeFace cannot read this file as sound"),
}


@pytest.mark.parametrize("kind", REFUSALS)
def test_a_file_that_is_not_usable_sound_is_refused_with_its_reason(owner_client, owner, tmp_path, kind):
    make, name, message = REFUSALS[kind]
    fake_persona(owner, "First")
    persona = fake_persona(owner, "Chosen")
    response = post(owner_client, make(tmp_path), name, persona)
    if kind == "zero bytes":
        message = "This file is empty (0 bytes). Choose a recording or a video with sound."
    assert_refused(response, message, persona)
    assert voice_seconds_used(owner) == 0


def test_a_recording_over_the_absolute_cap_is_refused(owner_client, owner, settings):
    settings.VOICE_MAX_SECONDS = 60
    persona = fake_persona(owner, "Chosen")
    response = post(owner_client, tone_wav(61), "long.wav", persona, output_format="wav")
    assert_refused(response, "This recording is longer than 1 min, the most SafeFace masks at once.", persona, "wav")


def test_a_file_over_the_size_cap_is_refused(owner_client, owner, settings):
    settings.MAX_UPLOAD_BYTES = 10_000
    persona = fake_persona(owner, "Chosen")
    response = post(owner_client, tone_wav(2), "talk.wav", persona, output_format="mp3")
    assert_refused(response, "the largest file accepted is 9.8\xa0KB.", persona, "mp3")


def test_a_recording_longer_than_the_minutes_left_is_refused(owner_client, owner):
    persona = fake_persona(owner, "Chosen")
    quota_reserve(user=owner, metric="voice_seconds", amount=590)
    response = post(owner_client, tone_wav(11), "talk.wav", persona, output_format="aac")
    assert_refused(
        response, "You have used 9 min 50 s of your 10 min monthly voice masking on the Free plan; this needs 11 s more.",
        persona, "aac",
    )
    assert voice_seconds_used(owner) == 590


def test_a_recording_longer_than_the_plan_allows_in_a_month_is_refused(owner_client, owner):
    Plan.objects.filter(slug="free").update(voice_minutes_per_period=1)
    persona = fake_persona(owner, "Chosen")
    response = post(owner_client, tone_wav(70), "talk.wav", persona)
    assert_refused(response, "This needs 1 min 10 s of voice masking, more than your Free plan's monthly 1 min.", persona)


def test_a_missing_file_is_a_form_error(owner_client, owner):
    persona = fake_persona(owner, "Chosen")
    response = post(owner_client, None, "", persona)
    assert_refused(response, "Choose a recording (or a video with sound) to upload.", persona)


def test_a_refusal_through_htmx_re_renders_the_form_only(owner_client, owner):
    persona = fake_persona(owner, "Chosen")
    fields = {"persona": str(persona.pk), "output_format": "wav", "file": SimpleUploadedFile("x.wav", b"junk" * 50)}
    response = owner_client.post(reverse("voice-new"), fields, **HTMX)
    page = html(response)
    assert response.status_code == 200 and page.lstrip().startswith('<form id="mask-form"')
    assert 'data-testid="upload-error"' in page and "<html" not in page


# --- accepted ----------------------------------------------------------------------------------
def test_a_recording_is_stored_queued_and_metered_by_its_length(owner_client, owner, django_capture_on_commit_callbacks):
    persona = fake_persona(owner, "Chosen")
    data = recording("flac", seconds=3.2, rate=22050, channels=2)
    with django_capture_on_commit_callbacks(execute=True):
        response = post(owner_client, data, "My talk.flac", persona, output_format="wav")
    job = MaskJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("voice-job", args=[job.pk])
    assert (job.status, job.avatar, job.avatar_name, job.output_format) == (JobStatus.QUEUED, persona, "Chosen", "wav")
    assert (job.original_name, job.size_bytes, job.container, job.codec) == ("My talk.flac", len(data), "flac", "flac")
    assert (job.duration, job.sample_rate, job.channels, job.has_video) == (pytest.approx(3.2, abs=0.01), 22050, 2, False)
    assert job.settings == persona.voice.settings  # a snapshot of the persona's voice
    assert job.source.name.startswith(f"users/{owner.pk}/voice/sources/") and job.source.name.endswith(".flac")
    assert job.source.read() == data
    assert (job.quota_metric, job.quota_amount) == ("voice_seconds", 4) and voice_seconds_used(owner) == 4
    assert OrmQ.objects.count() == 1


def test_a_video_with_sound_is_accepted_for_its_sound_track(owner_client, owner, tmp_path):
    persona = fake_persona(owner, "Chosen")
    response = post(owner_client, video_with_sound(tmp_path / "v.mp4"), "clip.mp4", persona)
    job = MaskJob.objects.get()
    assert response.status_code == 302
    assert job.has_video and job.source_suffix == "mp4" and job.duration == pytest.approx(2.0, abs=0.05)
    assert voice_seconds_used(owner) == 2


def test_a_double_submission_makes_one_job_and_meters_once(owner_client, owner):
    persona = fake_persona(owner, "Chosen")
    token = str(uuid.uuid4())
    for _ in range(2):
        response = post(owner_client, tone_wav(2), "talk.wav", persona, submission=token)
        assert response.status_code == 302
    assert MaskJob.objects.count() == 1 and voice_seconds_used(owner) == 2
    assert len([f for f in stored_files() if "/voice/" in f]) == 1


def test_the_htmx_upload_answers_with_a_client_redirect(owner_client, owner):
    persona = fake_persona(owner, "Chosen")
    fields = {"persona": str(persona.pk), "output_format": "mp3", "file": SimpleUploadedFile("t.wav", tone_wav(1))}
    response = owner_client.post(reverse("voice-new"), fields, **HTMX)
    assert response["HX-Redirect"] == reverse("voice-job", args=[MaskJob.objects.get().pk])


def test_the_plan_concurrency_applies(owner_client, owner):
    persona = fake_persona(owner, "Chosen")
    assert post(owner_client, tone_wav(1), "a.wav", persona).status_code == 302
    response = post(owner_client, tone_wav(1), "b.wav", persona)
    assert "Your Free plan runs 1 job at a time" in html(response) and MaskJob.objects.count() == 1
    assert voice_seconds_used(owner) == 1 and current_period()


# --- the page ----------------------------------------------------------------------------------
def test_the_page_offers_the_users_personas_and_formats(owner_client, owner, other_user):
    first, second = fake_persona(owner, "First"), fake_persona(owner, "Second")
    fake_persona(other_user, "Theirs")
    fake_persona(owner, "Candidate", status="candidate")
    page = html(owner_client.get(reverse("voice-new")))
    options = re.findall(r'<option value="(\d+)"', page)
    assert sorted(options) == sorted([str(first.pk), str(second.pk)])
    assert "Theirs" not in page and "Candidate" not in page
    assert re.search(r'value="mp3"[^>]*checked', page)  # MP3 by default
    assert 'data-testid="voice-left">0 s of 10 min of voice masking used this month' in page
    chosen = html(owner_client.get(reverse("voice-new"), {"persona": first.pk}))
    assert re.search(rf'<option value="{first.pk}"\s+selected>', chosen)


def test_without_a_persona_the_page_leads_to_making_one(owner_client, owner):
    page = html(owner_client.get(reverse("voice-new")))
    assert 'data-testid="no-personas"' in page and reverse("avatars-create") in page and 'id="mask-form"' not in page
