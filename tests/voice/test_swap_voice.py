"""Swaps: "Mask the voice" for a video with sound. The voice is one of the personas given a face in
that job (the first face's by default); anything else is refused like a forged persona. The worker
masks the sound track with that persona's voice, then swaps the faces and muxes the masked sound
into the result."""
from __future__ import annotations

import contextlib
import logging
import re
from html import unescape
from pathlib import Path

import av
import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from django_q.models import OrmQ

from safeface.jobs import JobStatus
from swaps import services as swap_services
from swaps.models import SwapJob, Upload
from tests.swaps.conftest import (
    corpus_dir,
    face_clip,
    fake_persona,
    ready_upload,
    real_persona,
    run_job,
    swaps_used,
)
from voice import processing
from voice.services import voice_for

pytestmark = pytest.mark.django_db
SECURITY = "safeface.security"


def html(response) -> str:
    return unescape(response.content.decode())


def video_upload(user, *, faces: int = 1, sound: bool = True) -> Upload:
    embeddings = [np.random.default_rng(20 + i).standard_normal(128).astype(np.float32) * 0.05 for i in range(faces)]
    upload = ready_upload(user, embeddings=embeddings, kind="video", name="clip.mp4")
    Upload.objects.filter(pk=upload.pk).update(has_audio=sound)
    upload.refresh_from_db()
    return upload


def choice(**fields) -> dict:
    return {"others": "keep", "audio": "mask", "quality": "standard", **fields}


# --- the picker and the service -------------------------------------------------------------------
def test_the_picker_offers_masking_for_a_video_with_sound(owner_client, owner):
    upload = video_upload(owner, faces=2)
    nova, rio = fake_persona(owner, "Nova"), fake_persona(owner, "Rio")
    page = html(owner_client.get(reverse("swaps-upload", args=[upload.pk])))
    radio = re.search(r'<input type="radio" name="audio" value="mask"[^>]*>', page)
    assert radio and "disabled" not in radio.group(0) and "coming soon" not in page
    assert "Mask the voice with the persona's voice" in page and 'data-testid="voice-choice"' not in page
    # choosing "mask" re-renders the picker with whose voice it will be
    one = html(owner_client.get(reverse("swaps-upload", args=[upload.pk]), {"picker": "1", **choice(face_0=nova.pk)}, HTTP_HX_REQUEST="true"))
    assert 'data-testid="voice-choice"' in one and "into <strong>Nova</strong>'s voice" in one
    assert f'<input type="hidden" name="voice" value="{nova.pk}">' in one
    two = html(owner_client.get(reverse("swaps-upload", args=[upload.pk]), {"picker": "1", **choice(face_0=nova.pk, face_1=rio.pk, voice=rio.pk)}, HTTP_HX_REQUEST="true"))
    assert 'data-testid="voice-select"' in two
    assert re.search(r'<select id="swap-voice".*?</select>', two, re.S).group(0).count("<option") == 2
    assert re.search(rf'<option value="{rio.pk}" selected>Rio</option>', two)


def test_a_silent_video_and_a_photo_offer_no_masking(owner_client, owner):
    fake_persona(owner, "Nova")
    silent = html(owner_client.get(reverse("swaps-upload", args=[video_upload(owner, sound=False).pk])))
    assert "This video has no sound." in silent and 'value="mask"' not in silent
    photo = html(owner_client.get(reverse("swaps-upload", args=[ready_upload(owner).pk])))
    assert 'value="mask"' not in photo


def test_the_voice_is_the_first_faces_persona_by_default(owner_client, owner):
    upload = video_upload(owner, faces=2)
    nova, rio = fake_persona(owner, "Nova"), fake_persona(owner, "Rio")
    response = owner_client.post(reverse("swaps-upload", args=[upload.pk]), choice(face_0=rio.pk, face_1=nova.pk))
    job = SwapJob.objects.get()
    assert response.status_code == 302 and (job.audio, job.voice_avatar) == ("mask", rio)


def test_a_chosen_voice_among_the_assigned_personas_is_kept(owner, owner_client):
    upload = video_upload(owner, faces=2)
    nova, rio = fake_persona(owner, "Nova"), fake_persona(owner, "Rio")
    owner_client.post(reverse("swaps-upload", args=[upload.pk]), choice(face_0=nova.pk, face_1=rio.pk, voice=rio.pk))
    assert SwapJob.objects.get().voice_avatar == rio


def test_a_voice_not_given_a_face_is_refused_with_a_message(owner_client, owner):
    upload = video_upload(owner)
    nova, other = fake_persona(owner, "Nova"), fake_persona(owner, "Elsewhere")
    response = owner_client.post(reverse("swaps-upload", args=[upload.pk]), choice(face_0=nova.pk, voice=other.pk))
    assert response.status_code == 200 and "The voice must be that of one of the personas you chose for a face." in html(response)
    assert not SwapJob.objects.exists() and swaps_used(owner) == 0


@pytest.mark.parametrize("kind", ["another user's persona", "a candidate", "not a number"])
def test_a_forged_voice_is_a_logged_404_and_nothing_is_queued(owner_client, owner, other_user, caplog, kind):
    upload = video_upload(owner)
    nova = fake_persona(owner, "Nova")
    value = {
        "another user's persona": lambda: str(fake_persona(other_user, "Theirs").pk),
        "a candidate": lambda: str(fake_persona(owner, "Not kept", status="candidate").pk),
        "not a number": lambda: "x",
    }[kind]()
    caplog.set_level(logging.WARNING, logger=SECURITY)
    response = owner_client.post(reverse("swaps-upload", args=[upload.pk]), choice(face_0=nova.pk, voice=value))
    assert response.status_code == 404
    events = [r.getMessage() for r in caplog.records if r.name == SECURITY]
    assert len(events) == 1 and f"user {owner.pk}" in events[0]
    assert not SwapJob.objects.exists() and OrmQ.objects.count() == 0 and swaps_used(owner) == 0


def test_masking_needs_a_video_with_sound(owner):
    nova = fake_persona(owner, "Nova")
    for upload in (ready_upload(owner), video_upload(owner, sound=False)):
        with pytest.raises(swap_services.SwapRefused, match="Only the sound of a video can be masked"):
            swap_services.swap_start(user=owner, upload=upload, assignments={0: nova.pk}, audio="mask")
    assert not SwapJob.objects.exists()


# --- the worker -------------------------------------------------------------------------------------
def decoded_sound(path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        frames = [f.to_ndarray() for f in container.decode(stream)]
        return np.concatenate(frames, axis=1).mean(axis=0), stream.codec_context.sample_rate


@pytest.mark.usefixtures("swap_models")
def test_a_video_swap_masks_the_voice_with_the_persona_voice(owner_client, owner, tmp_path, monkeypatch, similarity):
    similarity(0.37)
    nova = real_persona(owner, seed=1, name="Nova")
    clip = face_clip(tmp_path / "clip.mp4", seconds=2, fps=8)
    upload = swap_services.upload_create(user=owner, file=SimpleUploadedFile("clip.mp4", clip.read_bytes()))
    run_job("swaps.Upload")
    upload.refresh_from_db()
    assert upload.has_audio
    stages = []
    real_mask = processing.mask_sound_track

    def watched(src, avatar, folder, progress, **kwargs):
        stages.append(avatar.pk)
        return real_mask(src, avatar, folder, lambda p, s: (stages.append(s), progress(p, s)), **kwargs)

    monkeypatch.setattr(processing, "mask_sound_track", watched)
    job = swap_services.swap_start(user=owner, upload=upload, assignments={0: nova.pk}, audio="mask")
    run_job("swaps.SwapJob")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert stages[0] == nova.pk and "Masking the voice" in stages
    assert job.report["voice"] == {"persona": "Nova", "voice_similarity": 0.37}
    original, rate = decoded_sound(clip)
    result, result_rate = decoded_sound(default_storage.path(job.result.name))
    assert result_rate == rate and abs(len(result) - len(original)) <= 2048  # the same length (AAC frames aside)
    n = min(len(result), len(original)) - 4096
    assert np.abs(result[2048:n] - original[2048:n]).mean() > 0.02  # the sound was replaced, not copied
    assert np.sqrt(np.mean(result ** 2)) > 0.005  # and is not silence
    page = html(owner_client.get(reverse("swaps-job", args=[job.pk])))
    assert 'data-testid="voice-check" data-level="protected"' in page and "Nova's voice" in page and "voice masked" in page


@pytest.mark.usefixtures("swap_models")
@pytest.mark.corpus
def test_the_talking_video_of_the_corpus_comes_out_with_a_masked_voice(owner):
    video = corpus_dir() / "videos/video_aoc_talking_5s.mp4"
    nova = real_persona(owner, seed=1, name="Nova")
    upload = swap_services.upload_create(user=owner, file=SimpleUploadedFile(video.name, video.read_bytes()))
    run_job("swaps.Upload")
    upload.refresh_from_db()
    job = swap_services.swap_start(user=owner, upload=upload, assignments={0: nova.pk}, audio="mask")
    run_job("swaps.SwapJob")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    with av.open(default_storage.path(job.result.name)) as container:
        assert sorted(s.type for s in container.streams) == ["audio", "video"]
        assert 4.5 < container.duration / 1_000_000 < 5.5
    value = job.report["voice"]["voice_similarity"]
    assert value is not None and value < processing.SAME_SPEAKER, value


def test_a_voice_persona_gone_meanwhile_fails_the_swap_refunded(owner, monkeypatch):
    """The voice persona's row is gone (SET_NULL) while the faces' personas verify: nothing is
    swapped and the swap is refunded."""
    from swaps import processing as swap_processing

    upload = video_upload(owner)
    nova = fake_persona(owner, "Nova")
    job = swap_services.swap_start(user=owner, upload=upload, assignments={0: nova.pk}, audio="mask")
    SwapJob.objects.filter(pk=job.pk).update(voice_avatar=None)
    monkeypatch.setattr(swap_processing, "verified_persona", lambda job, assignment, analyzer: object())
    monkeypatch.setattr(swap_processing, "_analyzer", lambda: None)
    monkeypatch.setattr(swap_processing, "local_path", lambda file: contextlib.nullcontext(Path(default_storage.path(file.name))))
    run_job("swaps.SwapJob", "failed")
    job.refresh_from_db()
    assert job.error.startswith("The persona whose voice was chosen for the sound is no longer in your library")
    assert job.quota_refunded and swaps_used(owner) == 0 and not job.result


def test_the_voice_of_a_masked_swap_is_the_personas_saved_voice(owner, tmp_path, monkeypatch):
    """The worker masks with the persona's voice as saved on its voice page."""
    nova = fake_persona(owner, "Nova")
    voice = voice_for(nova)
    seen = []
    monkeypatch.setattr("engine.voice.mask_file", lambda src, dst, profile, **kw: seen.append(profile))
    processing.mask_sound_track(tmp_path / "in.mp4", nova, tmp_path, lambda p, s: None, max_seconds=10)
    assert seen[0].to_dict() == voice.settings
