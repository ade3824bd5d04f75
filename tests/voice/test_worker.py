"""Masking on the worker with the real engine: a recording in, the same length out in the format
asked for, in the persona's voice, with the speaker check in words; and everything that can go
wrong on the way (a persona deleted meanwhile, a file longer than it said, the check failing, a
cancel, a crash) ends cleanly, with the minutes refunded when it was not the user's doing."""
from __future__ import annotations

import io
import uuid
from html import unescape

import av
import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse

from safeface.jobs import JobStatus, job_cancel
from tests.swaps.conftest import corpus_dir, fake_persona, run_job, stored_files
from tests.voice.conftest import SPEECH, aiff, decoded, recording, tone_wav, video_with_sound, voice_seconds_used
from voice import processing, services
from voice.models import MaskJob

pytestmark = pytest.mark.django_db


def masked(user, persona, data: bytes, name: str, output_format: str = "mp3", expect: str = "succeeded") -> MaskJob:
    job = services.mask_start(
        user=user, persona=persona.pk, file=SimpleUploadedFile(name, data), output_format=output_format,
        submission=uuid.uuid4(),
    )
    run_job("voice.MaskJob", expect)
    job.refresh_from_db()
    return job


def page(client, job) -> str:
    return unescape(client.get(reverse("voice-job", args=[job.pk])).content.decode())


def spectrum_peak(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[int(np.argmax(spectrum[20:])) + 20])


# --- end to end --------------------------------------------------------------------------------
@pytest.mark.parametrize("output_format", ["mp3", "aac", "flac", "wav"])
def test_a_recording_is_masked_to_the_same_length_in_the_format_asked_for(owner, owner_client, output_format, similarity):
    similarity(0.41)
    persona = fake_persona(owner, "Nova", seed=5)
    data = recording("flac", seconds=2.5, rate=22050, channels=2)
    job = masked(owner, persona, data, "talk.flac", output_format)
    assert (job.status, job.progress, job.error) == (JobStatus.SUCCEEDED, 100, "")
    suffix = {"aac": "m4a"}.get(output_format, output_format)
    assert job.result.name.startswith(f"users/{owner.pk}/voice/masked/") and job.result.name.endswith(f".{suffix}")
    seconds, rate, channels, codec = decoded(default_storage.path(job.result.name))
    # AAC decodes with the encoder's priming and padding (under two frames of 1024 samples) on top
    slack = 2048 / 22050 if output_format == "aac" else 0.001
    assert seconds == pytest.approx(2.5, abs=slack) and rate == 22050 and channels == 2
    assert codec == {"mp3": "mp3float", "aac": "aac", "flac": "flac", "wav": "pcm_s16le"}[output_format]
    assert job.report["duration"] == pytest.approx(2.5, abs=0.001) and job.report["format"] == output_format
    assert job.report["voice_similarity"] == 0.41 and job.report["voice"] == persona.voice.describe()
    assert not job.original_preview  # browsers play FLAC as it is
    assert not job.quota_refunded and voice_seconds_used(owner) == 3
    assert job.source.read() == data  # the original stays for the "before" player


def test_the_voice_is_changed_not_just_copied(owner, similarity):
    similarity(0.3)
    persona = fake_persona(owner, "Nova", seed=5)
    services.voice_update(voice=services.voice_for(persona), values={"pitch_hz": 220.0})
    job = masked(owner, persona, recording("wav", seconds=3.0, pitch=110.0), "low.wav", "wav")
    with av.open(default_storage.path(job.result.name)) as container:
        out = np.concatenate([f.to_ndarray().reshape(-1) for f in container.decode(audio=0)]).astype(np.float64) / 32768
    from tests.voice.conftest import voiced

    original = voiced(3.0, 16000, 110.0).astype(np.float64)
    assert len(out) == len(original)
    assert np.abs(out - original).mean() > 0.01
    assert np.sqrt(np.mean(out ** 2)) > 0.01  # not silence


def test_a_plain_tone_and_a_video_sound_track_are_masked_too(owner, tmp_path, similarity):
    similarity(0.5)
    persona = fake_persona(owner, "Nova", seed=5)
    tone = masked(owner, persona, tone_wav(2.0, rate=8000), "tone.wav", "wav")
    assert decoded(default_storage.path(tone.result.name))[:3] == (2.0, 8000, 1)
    video = masked(owner, persona, video_with_sound(tmp_path / "v.mp4"), "clip.mp4", "aac")
    seconds, rate, channels, _ = decoded(default_storage.path(video.result.name))
    assert seconds == pytest.approx(video.duration, abs=2048 / 44100) and (rate, channels) == (44100, 2)
    with av.open(default_storage.path(video.result.name)) as container:
        assert not container.streams.video  # the result is sound only


@pytest.mark.corpus
def test_real_speech_from_the_corpus_is_masked_and_checked(owner, owner_client):
    speech = corpus_dir() / SPEECH
    persona = fake_persona(owner, "Nova", seed=5)
    job = masked(owner, persona, speech.read_bytes(), speech.name, "mp3")
    assert decoded(default_storage.path(job.result.name))[:3] == (pytest.approx(15.0, abs=0.01), 16000, 1)
    value = job.report["voice_similarity"]
    assert value is not None and value < processing.SAME_SPEAKER, value
    assert "speaker similarity" in page(owner_client, job)


def test_a_format_browsers_cannot_play_gets_an_mp3_for_the_before_player(owner, owner_client, similarity):
    similarity(0.5)
    job = masked(owner, fake_persona(owner, "Nova"), aiff(2.0), "talk.aiff", "wav")
    assert job.container == "aiff" and not job.source_playable
    assert job.original_preview.name.endswith(".mp3")
    assert decoded(default_storage.path(job.original_preview.name))[0] == pytest.approx(2.0, abs=0.05)
    response = owner_client.get(reverse("voice-original", args=[job.pk]))
    assert response["Content-Type"] == "audio/mpeg" and response["Content-Disposition"] == 'inline; filename="talk-original.mp3"'


# --- the speaker check in words ----------------------------------------------------------------
@pytest.mark.parametrize(("value", "level", "headline"), [
    (0.42, "protected", "Original voice no longer recognisable."),
    (0.8, "partial", "Voice masked, with some likeness left."),
    (0.91, "exposed", "The masked voice may still be recognisable as yours."),
])
def test_the_result_page_says_what_the_speaker_check_measured(owner, owner_client, similarity, value, level, headline):
    similarity(value)
    job = masked(owner, fake_persona(owner, "Nova"), tone_wav(1.5), "t.wav")
    html = page(owner_client, job)
    assert f'data-level="{level}"' in html and headline in html and f"speaker similarity {value:.2f}" in html
    assert 'data-testid="audio-original"' in html and 'data-testid="audio-masked"' in html
    assert "Download MP3" in html and 'data-testid="job-progress"' not in html


def test_when_the_speaker_check_fails_the_job_still_succeeds(owner, owner_client, similarity, caplog):
    similarity(RuntimeError("resemblyzer weights are missing"))
    job = masked(owner, fake_persona(owner, "Nova"), tone_wav(1.5), "t.wav")
    assert job.status == JobStatus.SUCCEEDED and job.report["voice_similarity"] is None and job.result
    html = page(owner_client, job)
    assert 'data-level="unchecked"' in html and "the speaker check could not measure it" in html
    assert any("speaker check failed" in r.getMessage() for r in caplog.records)


# --- what goes wrong ---------------------------------------------------------------------------
def test_a_persona_deleted_meanwhile_fails_the_job_refunded(owner, owner_client, django_capture_on_commit_callbacks):
    persona = fake_persona(owner, "Nova")
    job = services.mask_start(user=owner, persona=persona.pk, file=SimpleUploadedFile("t.wav", tone_wav(3)))
    assert voice_seconds_used(owner) == 3
    with django_capture_on_commit_callbacks(execute=True):
        persona.delete_with_files()
    run_job("voice.MaskJob", "failed")
    job.refresh_from_db()
    assert job.error.startswith("The persona “Nova” is no longer in your library, so its voice was not used")
    assert job.quota_refunded and voice_seconds_used(owner) == 0 and not job.result
    assert "is no longer in your library" in page(owner_client, job)
    assert job.avatar_name == "Nova"


def test_a_recording_longer_than_its_header_said_is_stopped_and_refunded(owner):
    job = services.mask_start(user=owner, persona=fake_persona(owner, "Nova").pk, file=SimpleUploadedFile("t.wav", tone_wav(12)))
    MaskJob.objects.filter(pk=job.pk).update(duration=2.0)  # what a lying header would have said
    run_job("voice.MaskJob", "failed")
    job.refresh_from_db()
    assert job.error.startswith("This recording is longer than its file says")
    assert job.quota_refunded and voice_seconds_used(owner) == 0
    assert not [f for f in stored_files() if "/voice/masked/" in f]


def test_a_recording_deleted_from_storage_fails_refunded(owner):
    job = services.mask_start(user=owner, persona=fake_persona(owner, "Nova").pk, file=SimpleUploadedFile("t.wav", tone_wav(2)))
    default_storage.delete(job.source.name)
    run_job("voice.MaskJob", "failed")
    job.refresh_from_db()
    assert job.error == "The uploaded recording is no longer stored. Upload it again." and job.quota_refunded


def test_a_job_cancelled_while_queued_stops_at_once_and_is_refunded(owner_client, owner):
    job = services.mask_start(user=owner, persona=fake_persona(owner, "Nova").pk, file=SimpleUploadedFile("t.wav", tone_wav(2)))
    response = owner_client.post(reverse("voice-job-cancel", args=[job.pk]), follow=True)
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.quota_refunded and voice_seconds_used(owner) == 0
    assert "not counted against your minutes" in unescape(response.content.decode())
    assert run_job("voice.MaskJob", "idle")


def test_a_job_cancelled_while_running_leaves_no_result(owner, monkeypatch):
    job = services.mask_start(user=owner, persona=fake_persona(owner, "Nova").pk, file=SimpleUploadedFile("t.wav", tone_wav(3)))
    real_store = processing._store_result

    def cancelled_meanwhile(job, *args, **kwargs):
        job_cancel(job)  # the owner pressed Cancel just before the result was saved
        return real_store(job, *args, **kwargs)

    monkeypatch.setattr(processing, "_store_result", cancelled_meanwhile)
    before = stored_files()
    run_job("voice.MaskJob", "cancelled")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and not job.result and job.report == {}
    assert stored_files() == before and job.quota_refunded and voice_seconds_used(owner) == 0


def test_the_cancel_reaches_the_engine_between_chunks(owner, monkeypatch):
    job = services.mask_start(user=owner, persona=fake_persona(owner, "Nova").pk, file=SimpleUploadedFile("t.wav", tone_wav(12)))
    calls = []
    real_stage = processing._stage

    def cancelling_stage(progress, start, span, stage=None):
        report = real_stage(progress, start, span, stage)

        def wrapped(percent, engine_stage):
            calls.append(percent)
            if len(calls) == 3:
                MaskJob.objects.filter(pk=job.pk).update(cancel_requested=True)
            progress.min_interval = 0  # every report checks
            report(percent, engine_stage)

        return wrapped

    monkeypatch.setattr(processing, "_stage", cancelling_stage)
    run_job("voice.MaskJob", "cancelled")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and len(calls) == 3 and not job.result
    assert not [f for f in stored_files() if "/voice/masked/" in f]


def test_a_crash_is_retried_and_then_succeeds(owner, monkeypatch, similarity):
    similarity(0.5)
    job = services.mask_start(user=owner, persona=fake_persona(owner, "Nova").pk, file=SimpleUploadedFile("t.wav", tone_wav(2)))
    from engine.voice import mask_file

    crashes = []

    def flaky(*args, **kwargs):
        if not crashes:
            crashes.append(1)
            raise MemoryError("the worker ran out of memory")
        return mask_file(*args, **kwargs)

    monkeypatch.setattr("engine.voice.mask_file", flaky)
    run_job("voice.MaskJob", "queued")
    job.refresh_from_db()
    assert job.status == JobStatus.QUEUED and job.source and voice_seconds_used(owner) == 2
    run_job("voice.MaskJob")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED and job.attempts == 2 and job.result


def test_the_progress_and_eta_show_while_it_runs(owner, owner_client):
    job = services.mask_start(user=owner, persona=fake_persona(owner, "Nova").pk, file=SimpleUploadedFile("t.wav", tone_wav(2)))
    html = page(owner_client, job)
    assert "Waiting for a worker…" in html and 'hx-trigger="every 1s"' in html and 'data-testid="job-cancel"' in html
    from datetime import timedelta

    from django.utils import timezone

    MaskJob.objects.filter(pk=job.pk).update(
        status=JobStatus.RUNNING, progress=40, stage="Masking the voice", started_at=timezone.now() - timedelta(seconds=8)
    )
    partial = owner_client.get(reverse("voice-job", args=[job.pk]), HTTP_HX_REQUEST="true")
    text = unescape(partial.content.decode())
    assert partial.status_code == 200 and text.lstrip().startswith('<section id="job-status"')
    assert "Masking the voice</span> · 40%" in text and 'data-testid="job-eta">12 s<' in text
    MaskJob.objects.filter(pk=job.pk).update(status=JobStatus.FAILED, error="Stopped.")
    done = owner_client.get(reverse("voice-job", args=[job.pk]), HTTP_HX_REQUEST="true")
    assert done.status_code == 286 and "Stopped." in done.content.decode()


def test_the_result_keeps_the_input_rate_and_length_exactly(owner, similarity):
    similarity(0.5)
    data = recording("wav", seconds=1.337, rate=44100)
    job = masked(owner, fake_persona(owner, "Nova"), data, "odd.wav", "wav")
    with av.open(io.BytesIO(job.result.read())) as container:
        samples = sum(f.samples for f in container.decode(audio=0))
    from tests.voice.conftest import voiced

    assert samples == len(voiced(1.337, 44100))
