"""The persona voice page: the sliders (saved, validated), Randomise, and the preview job that
makes the persona speak the sample sentence or the first seconds of the owner's own clip."""
from __future__ import annotations

import re
from html import unescape

import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django_q.models import OrmQ

from safeface.jobs import JobStatus
from tests.swaps.conftest import fake_persona, run_job, stored_files
from tests.voice.conftest import decoded, recording, tone_wav
from voice import services
from voice.models import PersonaVoice, PreviewJob

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


def html(response) -> str:
    return unescape(response.content.decode())


def sliders(voice: PersonaVoice, **changes) -> dict:
    values = {k: voice.settings[k] for k in ("method", "pitch_hz", "intonation", "formant", "alpha")}
    return {**values, **changes}


def url(avatar) -> str:
    return reverse("voice-persona", args=[avatar.pk])


# --- the page ----------------------------------------------------------------------------------
def test_the_page_shows_the_voice_its_sliders_and_the_way_to_a_preview(owner_client, owner, sample_sentence):
    avatar = fake_persona(owner, "Nova", seed=5)
    page = html(owner_client.get(url(avatar)))
    voice = PersonaVoice.objects.get(avatar=avatar)  # made on the first visit
    assert f'data-testid="voice-description">{voice.describe()}<' in page
    for name, label in (("pitch_hz", "Pitch"), ("intonation", "Intonation"), ("formant", "Vocal tract"), ("alpha", "McAdams coefficient")):
        assert re.search(rf'<input type="range" name="{name}" value="{voice.settings[name]}"[^>]*min="[\d.]+" max="[\d.]+" step="[\d.]+"', page), name
        assert f">{label}</label>" in page and f'data-testid="value-{name}">{voice.settings[name]}<' in page
    assert "The persona's typical speaking pitch, in Hz." in page
    assert 'value="persona"' in page and 'value="mcadams"' in page
    assert 'data-testid="no-preview"' in page and "read a sample sentence" in page
    assert reverse("voice-new") + f"?persona={avatar.pk}" in page


def test_the_persona_page_links_to_its_voice(owner_client, owner):
    avatar = fake_persona(owner, "Nova", seed=5)
    page = html(owner_client.get(reverse("avatars-detail", args=[avatar.pk])))
    assert 'data-testid="voice-link"' in page and url(avatar) in page
    assert services.voice_description(avatar) in page


def test_saving_new_values(owner_client, owner):
    avatar = fake_persona(owner, "Nova", seed=5)
    voice = services.voice_for(avatar)
    response = owner_client.post(url(avatar), {**sliders(voice, pitch_hz="180", method="mcadams", alpha="0.7"), "action": "save"}, follow=True)
    voice.refresh_from_db()
    assert voice.settings["pitch_hz"] == 180.0 and voice.settings["method"] == "mcadams" and voice.settings["alpha"] == 0.7
    assert "Voice saved." in html(response) and not PreviewJob.objects.exists()


@pytest.mark.parametrize(("changes", "message"), [
    ({"pitch_hz": "999"}, "Pitch must be between 70 and 300."),
    ({"formant": "abc"}, "Vocal tract must be a number."),
    ({"method": "robot"}, "Choose one of the two methods."),
    ({"intonation": ""}, "Set the intonation."),
])
def test_an_invalid_value_is_refused_and_nothing_changes(owner_client, owner, changes, message):
    avatar = fake_persona(owner, "Nova", seed=5)
    voice = services.voice_for(avatar)
    before = dict(voice.settings)
    response = owner_client.post(url(avatar), {**sliders(voice, **changes), "action": "preview"}, **HTMX)
    page = html(response)
    assert response.status_code == 200 and page.lstrip().startswith('<form id="voice-form"')
    assert message in page and "Check the settings below." in page
    voice.refresh_from_db()
    assert voice.settings == before and not PreviewJob.objects.exists()


def test_randomise_gives_a_new_voice(owner_client, owner):
    avatar = fake_persona(owner, "Nova", seed=5)
    voice = services.voice_for(avatar)
    before = dict(voice.settings)
    response = owner_client.post(url(avatar), {"action": "randomise"}, **HTMX)
    assert response["HX-Redirect"] == url(avatar)
    voice.refresh_from_db()
    assert voice.settings["seed"] != before["seed"] and voice.settings != before
    assert f"“Nova” has a new voice: {voice.describe()}." in html(owner_client.get(url(avatar)))


# --- previews ----------------------------------------------------------------------------------
def test_a_preview_of_the_sample_sentence(owner_client, owner, sample_sentence, django_capture_on_commit_callbacks):
    avatar = fake_persona(owner, "Nova", seed=5)
    voice = services.voice_for(avatar)
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(url(avatar), {**sliders(voice, pitch_hz="190"), "action": "preview"}, **HTMX)
    assert response["HX-Redirect"] == url(avatar)
    job = PreviewJob.objects.get()
    assert (job.source, job.status, job.settings["pitch_hz"]) == ("sample", JobStatus.QUEUED, 190.0)
    assert OrmQ.objects.count() == 1
    waiting = html(owner_client.get(url(avatar), **HTMX))
    assert waiting.lstrip().startswith('<section id="voice-preview"') and 'hx-trigger="every 1s"' in waiting
    assert "Waiting for a worker…" in waiting
    run_job("voice.PreviewJob")
    voice.refresh_from_db()
    assert voice.preview.name.startswith(f"users/{owner.pk}/voice/previews/") and voice.preview.name.endswith(".mp3")
    assert (voice.preview_source, voice.preview_settings, voice.preview_is_current) == ("sample", voice.settings, True)
    seconds, _, _, codec = decoded(default_storage.path(voice.preview.name))
    assert codec == "mp3float" and seconds == pytest.approx(decoded(sample_sentence)[0], abs=0.01)
    done = owner_client.get(url(avatar), **HTMX)
    assert done.status_code == 286 and 'data-testid="preview-audio"' in html(done)
    assert "The sample sentence, with the settings shown." in html(done)
    served = owner_client.get(reverse("voice-persona-preview", args=[avatar.pk]))
    assert served["Content-Type"] == "audio/mpeg" and b"".join(served.streaming_content) == voice.preview.read()
    # the settings move on: the preview says it is from earlier settings
    owner_client.post(url(avatar), {**sliders(voice, pitch_hz="150"), "action": "save"})
    assert "with earlier settings: preview again" in html(owner_client.get(url(avatar)))


def test_a_preview_of_the_owners_clip_uses_its_first_15_seconds_then_deletes_it(owner_client, owner, django_capture_on_commit_callbacks):
    avatar = fake_persona(owner, "Nova", seed=5)
    voice = services.voice_for(avatar)
    clip = SimpleUploadedFile("me talking.flac", recording("flac", seconds=20.0))
    response = owner_client.post(url(avatar), {**sliders(voice), "action": "preview", "clip": clip})
    assert response.status_code == 302
    job = PreviewJob.objects.get()
    assert job.source == "upload" and job.clip_name == "me talking.flac"
    assert decoded(default_storage.path(job.clip.name))[0] == pytest.approx(15.0, abs=0.001)  # cut in the web process
    clip_name = job.clip.name
    with django_capture_on_commit_callbacks(execute=True):
        run_job("voice.PreviewJob")
    voice.refresh_from_db()
    job.refresh_from_db()
    assert voice.preview_source == "upload" and decoded(default_storage.path(voice.preview.name))[0] == pytest.approx(15.0, abs=0.01)
    assert not job.clip and clip_name not in stored_files()  # the owner's own voice is not kept
    assert "Your own clip, with the settings shown." in html(owner_client.get(url(avatar)))


def test_a_new_preview_replaces_the_old_file(owner, sample_sentence, django_capture_on_commit_callbacks):
    voice = services.voice_for(fake_persona(owner, "Nova", seed=5))
    services.preview_start(user=owner, voice=voice)
    run_job("voice.PreviewJob")
    voice.refresh_from_db()
    first = voice.preview.name
    services.voice_update(voice=voice, values={"pitch_hz": 200.0})
    services.preview_start(user=owner, voice=voice)
    with django_capture_on_commit_callbacks(execute=True):
        run_job("voice.PreviewJob")
    voice.refresh_from_db()
    assert voice.preview.name != first and first not in stored_files() and voice.preview.name in stored_files()
    assert voice.preview_settings["pitch_hz"] == 200.0


def test_a_second_preview_replaces_the_one_still_waiting(owner, sample_sentence):
    voice = services.voice_for(fake_persona(owner, "Nova", seed=5))
    first = services.preview_start(user=owner, voice=voice)
    second = services.preview_start(user=owner, voice=voice)
    first.refresh_from_db()
    assert first.status == JobStatus.CANCELLED and second.status == JobStatus.QUEUED


def test_at_most_three_previews_wait_at_once(owner, sample_sentence):
    voices = [services.voice_for(fake_persona(owner, f"P{i}", seed=i + 1)) for i in range(4)]
    for voice in voices[:3]:
        services.preview_start(user=owner, voice=voice)
    with pytest.raises(services.LimitReached, match="You have 3 previews waiting for a worker"):
        services.preview_start(user=owner, voice=voices[3])


def test_without_the_sample_sentence_the_page_says_to_use_a_clip(owner_client, owner, no_sample_sentence):
    avatar = fake_persona(owner, "Nova", seed=5)
    voice = services.voice_for(avatar)
    assert "Choose a clip of your own, then press" in html(owner_client.get(url(avatar)))
    response = owner_client.post(url(avatar), {**sliders(voice), "action": "preview"})
    assert "The sample sentence is not available on this server. Preview with a clip of your own." in html(response)
    assert not PreviewJob.objects.exists()


def test_a_preview_job_without_its_sample_fails_with_a_clear_message(owner_client, owner, no_sample_sentence):
    avatar = fake_persona(owner, "Nova", seed=5)
    voice = services.voice_for(avatar)
    job = PreviewJob.objects.create(user=owner, voice=voice, settings=voice.settings)  # queued while it was there
    run_job("voice.PreviewJob", "failed")
    job.refresh_from_db()
    assert job.error.startswith("The sample sentence is not available on this server right now.")
    page = html(owner_client.get(url(avatar)))
    assert 'data-testid="preview-error"' in page and job.error in page


@pytest.mark.parametrize(("data", "name", "message"), [
    (b"not sound at all" * 40, "clip.mp3", "SafeFace cannot read this file as sound"),
    (tone_wav(0.0), "empty.wav", "This recording is empty: it holds no sound at all."),
])
def test_an_unusable_clip_is_refused_and_nothing_is_queued(owner_client, owner, data, name, message):
    avatar = fake_persona(owner, "Nova", seed=5)
    voice = services.voice_for(avatar)
    response = owner_client.post(url(avatar), {**sliders(voice), "action": "preview", "clip": SimpleUploadedFile(name, data)})
    assert message in html(response) and not PreviewJob.objects.exists()
    assert not [f for f in stored_files() if "/voice/" in f]


def test_deleting_the_persona_deletes_its_voice_preview_and_waiting_clip(owner_client, owner, sample_sentence, django_capture_on_commit_callbacks):
    avatar = fake_persona(owner, "Nova", seed=5)
    voice = services.voice_for(avatar)
    services.preview_start(user=owner, voice=voice)
    run_job("voice.PreviewJob")
    services.preview_start(user=owner, voice=voice, clip=SimpleUploadedFile("c.wav", tone_wav(3)))
    assert len([f for f in stored_files() if "/voice/" in f]) == 2  # the preview and the waiting clip
    with django_capture_on_commit_callbacks(execute=True):
        owner_client.post(reverse("avatars-delete", args=[avatar.pk]))
    assert not PersonaVoice.objects.exists() and not PreviewJob.objects.exists()
    assert stored_files() == []
