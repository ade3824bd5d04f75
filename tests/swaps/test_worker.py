"""The upload check on the worker, with the real engine: faces found and stored for the picker,
photos without a face refused and refunded, explicit material refused (not refunded), videos
sampled once a second, GIFs given a browser-playable preview."""
from __future__ import annotations

import io
import re

import av
import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import Image

from engine.faces import embedding_distance
from engine.safety.content import ContentVerdict
from safeface.jobs import JobStatus
from swaps import processing, services
from swaps.models import Upload
from tests.swaps.conftest import (
    corpus_dir,
    encode,
    face_clip,
    faces_picture,
    generated_face,
    run_job,
    stored_files,
    upload_bytes_used,
    uploaded,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("swap_models")]


def checked(user, data: bytes, name: str, expect: str = "succeeded") -> Upload:
    upload = services.upload_create(user=user, file=SimpleUploadedFile(name, data))
    assert upload_bytes_used(user) == len(data)
    run_job("swaps.Upload", expect)
    upload.refresh_from_db()
    return upload


def jpeg_side(name: str) -> tuple[int, int]:
    with default_storage.open(name) as handle, Image.open(handle) as im:
        assert im.format == "JPEG"
        return im.size


# --- photos ----------------------------------------------------------------------------------
def test_a_photo_check_stores_each_face_for_the_picker(owner, owner_client):
    data = encode(faces_picture((14, 15)), quality=92)
    upload = checked(owner, data, "two.jpg")
    assert (upload.status, upload.progress, upload.error) == (JobStatus.SUCCEEDED, 100, "")
    assert (upload.samples, upload.content_flagged, upload.browser_playable) == (1, 0, True)
    assert upload.content_score is not None and upload.content_score < 0.5
    faces = list(upload.faces.all())
    assert [f.key for f in faces] == [0, 1]
    assert faces[0].box[0] < 384 <= faces[1].box[0]  # left to right
    for face, seed in zip(faces, (14, 15)):
        assert jpeg_side(face.thumbnail.name) == (160, 160)
        assert face.embedding_array.shape == (128,) and face.quality > 0
        assert embedding_distance(face.embedding_array, generated_face(seed)[1]) < 0.35  # that person
    assert embedding_distance(faces[0].embedding_array, faces[1].embedding_array) > 0.5  # two people
    assert jpeg_side(upload.preview.name) == (768, 384)
    assert upload.file and upload_bytes_used(owner) == len(data) and not upload.quota_refunded
    page = owner_client.get(reverse("swaps-upload", args=[upload.pk])).content.decode()
    assert len(re.findall(r'data-testid="face-row"', page)) == 2 and "2 faces found" in page


def blank_photo() -> bytes:
    ramp = np.linspace(0, 255, 320, dtype=np.uint8)
    return encode(np.dstack([np.tile(ramp, (240, 1))] * 3))


NO_FACE = [
    pytest.param(lambda: blank_photo(), id="blank"),
    pytest.param(lambda: (corpus_dir() / "faces/noface_grass.jpg").read_bytes(), id="grass", marks=pytest.mark.corpus),
]


@pytest.mark.parametrize("make", NO_FACE)
def test_a_photo_without_a_face_is_refused_refunded_and_deleted(owner, owner_client, make):
    upload = checked(owner, make(), "landscape.jpg", "failed")
    assert upload.status == JobStatus.FAILED
    assert upload.error.startswith("We found no face in this photo, so there is nothing to protect.")
    assert "Your upload volume for it was refunded." in upload.error
    assert upload.quota_refunded and upload_bytes_used(owner) == 0
    assert not upload.file and not upload.faces.exists() and stored_files() == []
    page = owner_client.get(reverse("swaps-upload", args=[upload.pk])).content.decode()
    assert 'data-testid="upload-error"' in page and "We found no face in this photo" in page


class FlaggingChecker:
    """The content gate, made to flag chosen samples (the real detector never sees these)."""

    def __init__(self, flag: set[int]) -> None:
        self.flag, self.seen = flag, 0

    def check(self, rgb):
        index, self.seen = self.seen, self.seen + 1
        flagged = index in self.flag
        return ContentVerdict(flagged=flagged, score=0.93 if flagged else 0.02, findings=())


def test_an_explicit_photo_is_refused_deleted_and_not_refunded(owner, monkeypatch):
    checker = FlaggingChecker({0})
    monkeypatch.setattr(processing, "_content_checker", lambda: checker)
    data = encode(faces_picture((14,)))
    upload = checked(owner, data, "photo.jpg", "failed")
    assert upload.error.startswith("This photo was not accepted: it looks like explicit material")
    assert "The file has been deleted." in upload.error
    assert (upload.samples, upload.content_flagged, upload.content_score) == (1, 1, pytest.approx(0.93))
    assert not upload.file and stored_files() == [] and not upload.faces.exists()
    assert not upload.quota_refunded and upload_bytes_used(owner) == len(data)


def test_an_explicit_video_is_refused_early(owner, monkeypatch, tmp_path):
    checker = FlaggingChecker({1})
    monkeypatch.setattr(processing, "_content_checker", lambda: checker)
    data = face_clip(tmp_path / "clip.mp4", seconds=4, fps=5).read_bytes()
    upload = checked(owner, data, "clip.mp4", "failed")
    assert re.match(r"This video was not accepted: 1 of the 2 moments we checked look like explicit material", upload.error)
    assert checker.seen == 2  # one flagged second out of four is already too many: it stopped there
    assert not upload.file and stored_files() == [] and upload_bytes_used(owner) == len(data)


def test_a_photo_within_the_share_of_flagged_samples_is_accepted(owner, monkeypatch, settings):
    settings.CONTENT_MAX_SHARE = 1.0  # a moderator's setting: never refuse
    monkeypatch.setattr(processing, "_content_checker", lambda: FlaggingChecker({0}))
    upload = checked(owner, encode(faces_picture((14,))), "photo.jpg")
    assert upload.content_flagged == 1 and upload.faces.count() == 1


# --- videos ----------------------------------------------------------------------------------
def test_a_video_check_samples_one_frame_a_second_and_finds_the_person(owner, owner_client, tmp_path):
    data = face_clip(tmp_path / "clip.mp4", seconds=3, fps=8).read_bytes()
    upload = checked(owner, data, "clip.mp4")
    assert (upload.kind, upload.samples, upload.has_audio, upload.frame_count) == ("video", 3, True, 24)
    (person,) = upload.faces.all()
    assert person.appearances == 3 and 0.0 <= person.time < 3.0
    assert embedding_distance(person.embedding_array, generated_face(13)[1]) < 0.35
    assert upload.browser_playable and not upload.preview_video
    assert jpeg_side(upload.preview.name) == (256, 256)
    page = owner_client.get(reverse("swaps-upload", args=[upload.pk])).content.decode()
    assert "We looked at one frame per second (3 in all) and found 1 person." in page
    assert "seen in 3 of 3 s" in page


@pytest.mark.corpus
def test_a_real_talking_head_video_is_one_person_seen_every_second(owner):
    upload = checked(owner, (corpus_dir() / "videos/video_aoc_talking_5s.mp4").read_bytes(), "talk.mp4")
    assert upload.samples == 5 and upload.has_audio
    (person,) = upload.faces.all()
    assert person.appearances >= 4


def gif_of_a_face() -> bytes:
    still = faces_picture((13,), 256)
    frames = [Image.fromarray(np.roll(still, i * 2, axis=1)) for i in range(10)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    return buffer.getvalue()


GIFS = [
    pytest.param(gif_of_a_face, id="generated"),
    pytest.param(lambda: (corpus_dir() / "videos/video_elon_smoke_2s.gif").read_bytes(), id="corpus", marks=pytest.mark.corpus),
]


@pytest.mark.parametrize("make", GIFS)
def test_a_gif_gets_a_browser_playable_preview(owner, owner_client, make):
    upload = checked(owner, make(), "loop.gif")
    assert (upload.kind, upload.format, upload.browser_playable) == ("video", "gif", False)
    assert upload.faces.exists() and upload.samples == 2
    assert upload.preview_video.name.endswith(".mp4")
    with av.open(default_storage.path(upload.preview_video.name)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264" and (stream.width, stream.height) == (upload.width, upload.height)
        assert sum(1 for _ in container.decode(stream)) == upload.frame_count
    response = owner_client.get(reverse("swaps-upload-media", args=[upload.pk, "video"]))
    assert response.status_code == 200 and response["Content-Type"] == "video/mp4"
    original = owner_client.get(reverse("swaps-upload-media", args=[upload.pk, "original"]))
    assert original["Content-Type"] == "image/gif"


def test_a_retried_check_starts_clean(owner, monkeypatch):
    """A worker that crashed once mid-check (after writing thumbnails) leaves nothing twice."""
    calls = {"n": 0}
    real_store = processing._store_survey

    def crash_once(upload, survey, poster, preview_video):
        real_store(upload, survey, poster, preview_video)
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("the worker fell over")

    monkeypatch.setattr(processing, "_store_survey", crash_once)
    data = encode(faces_picture((14, 15)))
    upload = services.upload_create(user=owner, file=SimpleUploadedFile("two.jpg", data))
    run_job("swaps.Upload", "queued")  # retried
    run_job("swaps.Upload", "succeeded")
    upload.refresh_from_db()
    assert upload.attempts == 2 and upload.faces.count() == 2
    expected = {upload.file.name, upload.preview.name, *(f.thumbnail.name for f in upload.faces.all())}
    assert set(stored_files()) == expected


@pytest.mark.corpus
def test_a_corpus_photo_of_two_people(owner):
    upload = checked(owner, uploaded(corpus_dir() / "faces/group_obama_biden_2faces.jpg").read(), "two.jpg")
    assert upload.faces.count() == 2 and (upload.width, upload.height) == (1126, 661)


def test_a_heic_phone_photo_is_checked_and_swapped_into_a_jpeg(owner):
    from pillow_heif import from_bytes

    from tests.swaps.conftest import real_persona

    rgb = np.ascontiguousarray(faces_picture((14,)))
    heif = from_bytes(mode="RGB", size=(rgb.shape[1], rgb.shape[0]), data=rgb.tobytes())
    buffer = io.BytesIO()
    heif.save(buffer, quality=92)
    upload = checked(owner, buffer.getvalue(), "IMG_0042.HEIC")
    assert (upload.kind, upload.format, upload.faces.count()) == ("image", "heic", 1)
    persona = real_persona(owner, seed=1)
    job = services.swap_start(user=owner, upload=upload, assignments={0: persona.pk})
    run_job("swaps.SwapJob")
    job.refresh_from_db()
    assert job.result.name.endswith(".jpg") and job.protection()["level"] == "protected"
    with default_storage.open(job.result.name) as handle, Image.open(handle) as im:
        assert im.format == "JPEG" and im.size == (rgb.shape[1], rgb.shape[0]) and not im.getexif()
