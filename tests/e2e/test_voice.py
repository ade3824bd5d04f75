"""The voice journeys in a real browser, with the jobs run by real ``manage.py qcluster`` processes
(see tests/e2e/test_swaps.py for the workers).

Mask: log in, find the empty voice page, upload a speech recording (the upload progress bar
shows), choose a persona, wait while a worker masks it, play the "before" and "after" players
(each really plays; starting one pauses the other, which carries on from the same moment), read
the speaker check, download the masked MP3 and decode it.

Persona voice: open a persona's voice from its page, move a slider (its value follows), save and
preview: the worker makes the preview and its player plays."""
from __future__ import annotations

import io
import re
from pathlib import Path

import av
import pytest
from playwright.sync_api import Page, expect

from tests.conftest import make_user
from tests.e2e.test_account_journey import nav, path_is
from tests.e2e.test_swaps import JOB_WAIT_MS, log_in, qclusters, slow_upload  # noqa: F401  (qclusters: a fixture)
from tests.swaps.conftest import fake_persona
from voice.models import MaskJob, PersonaVoice

pytestmark = pytest.mark.corpus

SPEECH = "speech/speech_libri1688_male_15s.flac"
MEDIA_ERROR = "el => el.error ? el.error.code : null"


def loaded(page: Page, player) -> None:
    """Waits until an <audio> element knows its duration and fails on a media error."""
    page.wait_for_function("el => el.readyState >= 1 || el.error", arg=player.element_handle(), timeout=20_000)
    assert player.evaluate(MEDIA_ERROR) is None


def plays(page: Page, player, *, past: float = 0.5) -> None:
    """Starts a player and waits until its time really moves on."""
    player.evaluate("el => el.play()")
    page.wait_for_function(
        f"el => !el.paused && el.currentTime > {past} || el.error", arg=player.element_handle(), timeout=20_000
    )
    assert player.evaluate(MEDIA_ERROR) is None and player.evaluate("el => !el.paused")


def test_mask_a_speech_recording_with_a_persona_voice(page: Page, screenshot, qclusters, corpus) -> None:
    user = make_user("voice-masker@example.com")
    fake_persona(user, "Rio", seed=7)
    nova = fake_persona(user, "Nova", seed=5)
    speech = corpus / SPEECH
    log_in(page, user.email)

    # The voice page starts empty and leads to the upload page.
    nav(page).get_by_role("link", name="Voice", exact=True).click()
    expect(page).to_have_url(path_is("/voice/"))
    expect(page.get_by_test_id("empty-state")).to_be_visible()
    expect(page.get_by_test_id("persona-voices")).to_contain_text("Nova")
    page.get_by_test_id("new-mask").click()
    expect(page).to_have_url(path_is("/voice/new/"))
    expect(page.get_by_test_id("upload-progress")).to_be_hidden()

    # Choose the recording, the persona and the format (MP3 is the default).
    page.get_by_label("Recording or video").set_input_files(speech)
    expect(page.get_by_test_id("chosen-file")).to_have_text(f"{speech.name} (0.2 MB)")
    page.get_by_label("Persona's voice").select_option(str(nova.pk))
    expect(page.get_by_label("MP3 (small, plays everywhere)")).to_be_checked()
    expect(page.get_by_test_id("voice-left")).to_contain_text("0 s of 10 min")
    screenshot("upload-chosen")

    # Upload over a slow line: the progress bar fills, then the job page takes over.
    with slow_upload(page, 64 * 1024):
        page.get_by_role("button", name="Upload and mask the voice").click()
        progress = page.get_by_test_id("upload-progress")
        expect(progress).to_be_visible()
        page.wait_for_function("bar => bar.value > 0", arg=progress.element_handle())
        expect(page).to_have_url(re.compile(r"/voice/\d+/$"), timeout=30_000)
    job = MaskJob.objects.get(user=user)
    assert (job.avatar_id, job.original_name, job.output_format) == (nova.pk, speech.name, "mp3")
    assert job.duration == pytest.approx(15.0, abs=0.01)
    expect(page.get_by_test_id("job-summary")).to_contain_text("Nova")

    # The worker masks it while the page polls; then the speaker check and the two players.
    headline = page.get_by_test_id("voice-check-headline")
    expect(headline).to_be_visible(timeout=JOB_WAIT_MS)
    job.refresh_from_db()
    assert job.status == "succeeded", job.error
    assert job.report["voice_similarity"] is not None, job.report
    expect(page.get_by_test_id("job-progress")).to_have_count(0)
    expect(page.get_by_test_id("voice-check")).to_contain_text(f"speaker similarity {job.report['voice_similarity']:.2f}")
    before, after = page.get_by_test_id("audio-original"), page.get_by_test_id("audio-masked")
    for player in (before, after):
        loaded(page, player)
        assert player.evaluate("el => Math.round(el.duration)") == 15
    screenshot("result")

    # Both really play. Starting one pauses the other, which hands over its moment.
    page.get_by_test_id("compare-audio").click(position={"x": 5, "y": 5})  # a user gesture on the page
    plays(page, after, past=1.0)
    moment = after.evaluate("el => el.currentTime")
    plays(page, before, past=moment)
    page.wait_for_function("el => el.paused", arg=after.element_handle())
    assert before.evaluate("el => el.currentTime") >= moment - 0.1
    before.evaluate("el => el.pause()")

    # The download: an MP3 attachment that decodes to the recording's length.
    download_link = page.get_by_test_id("download")
    expect(download_link).to_contain_text("Download MP3")
    with page.expect_download() as download_info:
        download_link.click()
    download = download_info.value
    assert download.suggested_filename == "speech_libri1688_male_15s-masked.mp3"
    data = Path(download.path()).read_bytes()
    with job.result.open("rb") as stored:
        assert data == stored.read()
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        assert stream.codec_context.name.startswith("mp3") and stream.codec_context.sample_rate == 16000
        assert samples / 16000 == pytest.approx(15.0, abs=0.01)

    # The history lists it and the meter counts its 15 seconds.
    nav(page).get_by_role("link", name="Voice", exact=True).click()
    items = page.get_by_test_id("mask-item")
    expect(items).to_have_count(1)
    expect(items.first).to_have_attribute("data-status", "succeeded")
    expect(items.first).to_contain_text(speech.name)
    expect(page.get_by_test_id("voice-meter")).to_contain_text("15 s of 10 min")
    screenshot("history")
    qclusters.assert_running()


def test_tune_and_preview_a_persona_voice(page: Page, screenshot, qclusters) -> None:
    user = make_user("voice-tuner@example.com")
    nova = fake_persona(user, "Nova", seed=5)
    log_in(page, user.email)

    # From the persona's page to its voice.
    page.goto(f"/personas/{nova.pk}/")
    expect(page.get_by_test_id("persona-voice")).to_contain_text("Persona voice")
    page.get_by_test_id("voice-link").click()
    expect(page).to_have_url(path_is(f"/voice/personas/{nova.pk}/"))
    expect(page.get_by_test_id("no-preview")).to_be_visible()

    # A slider shows its value as it moves.
    pitch = page.get_by_label("Pitch", exact=True)
    pitch.fill("230")
    expect(page.get_by_test_id("value-pitch_hz")).to_have_text("230")
    screenshot("voice")

    # Save and preview: the worker makes the preview, whose player plays.
    page.get_by_test_id("preview-button").click()
    player = page.get_by_test_id("preview-audio")
    expect(player).to_be_visible(timeout=JOB_WAIT_MS)
    voice = PersonaVoice.objects.get(avatar=nova)
    assert voice.settings["pitch_hz"] == 230.0 and voice.preview_settings == voice.settings
    expect(page.get_by_test_id("voice-description")).to_contain_text("230 Hz")
    expect(page.get_by_test_id("preview-note")).to_contain_text("The sample sentence, with the settings shown.")
    loaded(page, player)
    player.click(position={"x": 5, "y": 5})
    plays(page, player, past=0.3)
    screenshot("preview")
    qclusters.assert_running()
