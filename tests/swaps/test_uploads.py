"""The upload form: files are judged by decoding them, never by their name, against the server's
and the plan's limits. A refused file leaves nothing behind: no row, no queued task, no stored
file, no quota used."""
from __future__ import annotations

import struct
import uuid
import zlib
from pathlib import Path

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.template.defaultfilters import filesizeformat
from django.urls import reverse
from django.utils.html import escape
from django_q.models import OrmQ

from accounts.models import UsageCounter
from accounts.quotas import current_period
from swaps.models import Upload
from tests.swaps.conftest import encode, stored_files, upload_bytes_used, write_video

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}
MB = 1024 * 1024


def noise_jpeg(width: int = 96, height: int = 96, seed: int = 0) -> bytes:
    return encode(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8), quality=90)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A 100-byte PNG whose header claims 10 gigapixels: decoding it would need ~30 GB."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")


def post(client, data: bytes, name: str, *, htmx: bool = False, submission: str | None = None):
    form = {"file": SimpleUploadedFile(name, data)}
    if submission:
        form["submission"] = submission
    return client.post(reverse("swaps-new"), form, **(HTMX if htmx else {}))


def assert_refused(response, message: str, *, htmx: bool) -> None:
    """The page (or, for htmx, the form partial) says why, and nothing was kept or queued."""
    assert response.status_code == 200
    page = response.content.decode()
    assert escape(message) in page, page
    if htmx:
        assert page.lstrip().startswith('<form id="upload-form"') and "<html" not in page
    else:
        assert "<html" in page and 'id="upload-form"' in page
    assert not Upload.objects.exists()
    assert OrmQ.objects.count() == 0
    assert stored_files() == []


# --- refused, each with its own message --------------------------------------------------------
def long_video(tmp_path: Path) -> bytes:
    frames = [np.full((32, 32, 3), (i * 8) % 256, np.uint8) for i in range(31)]
    return write_video(tmp_path / "long.mp4", frames, 1).read_bytes()  # 31 s at 1 frame per second


def audio_only(tmp_path: Path) -> bytes:
    import av

    path = tmp_path / "song.m4a"
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("aac", rate=44100)
        stream.layout = "mono"
        for start in range(0, 44100, 1024):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate, frame.pts = 44100, start
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path.read_bytes()


CASES = {
    "text named .jpg": (
        lambda tmp: b"Dear diary, today I renamed a text file to .jpg.\n" * 20, "notes.jpg",
        "SafeFace cannot read this file. Upload a JPEG, PNG, WebP or HEIC photo",
    ),
    "truncated jpeg": (
        lambda tmp: noise_jpeg(256, 256)[:4000], "cut.jpg",
        "The image file is damaged or incomplete and cannot be opened. Export it again and re-upload it.",
    ),
    "decompression bomb": (
        lambda tmp: bomb_png(), "bomb.png",
        # refused from its header, by the plan's resolution limit, before anything is decoded
        "This image is 100000×100000 px; your Free plan accepts images up to 4096 px on the longest side.",
    ),
    "wider than the plan": (
        lambda tmp: noise_jpeg(4200, 16), "panorama.jpg",
        "This image is 4200×16 px; your Free plan accepts images up to 4096 px on the longest side.",
    ),
    "longer than the plan": (
        long_video, "long.mp4",
        "This video lasts 31 s; your Free plan accepts videos up to 30 s.",
    ),
    "audio only": (
        lambda tmp: audio_only(tmp), "song.mp4",
        "This file has no video track (it is an audio file). Upload a JPEG, PNG, WebP or HEIC photo",
    ),
}


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
@pytest.mark.parametrize("case", list(CASES))
def test_a_bad_file_is_refused_with_its_reason(owner_client, owner, tmp_path, django_capture_on_commit_callbacks, case, htmx):
    make, name, message = CASES[case]
    with django_capture_on_commit_callbacks(execute=True):
        response = post(owner_client, make(tmp_path), name, htmx=htmx)
    assert_refused(response, message, htmx=htmx)
    assert upload_bytes_used(owner) == 0


def test_a_large_text_file_named_jpg_is_judged_by_its_content_too(owner_client, settings):
    settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000  # streamed to a temporary file named *.upload.jpg
    response = post(owner_client, b"Dear diary, today I renamed a text file to .jpg.\n" * 100, "notes.jpg")
    assert_refused(response, "SafeFace cannot read this file. Upload a JPEG, PNG, WebP or HEIC photo, or an MP4, MOV, WebM or GIF video.", htmx=False)
    assert "still image" not in response.content.decode()


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_an_empty_file_is_refused(owner_client, django_capture_on_commit_callbacks, htmx):
    with django_capture_on_commit_callbacks(execute=True):
        response = post(owner_client, b"", "empty.jpg", htmx=htmx)
    assert_refused(response, "This file is empty. Choose a photo or a video.", htmx=htmx)


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_no_file_at_all_is_refused(owner_client, htmx):
    response = owner_client.post(reverse("swaps-new"), {"submission": str(uuid.uuid4())}, **(HTMX if htmx else {}))
    assert response.status_code == 200 and "Choose a photo or a video to upload." in response.content.decode()
    assert not Upload.objects.exists()


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_a_file_over_the_server_limit_is_refused_before_decoding(owner_client, settings, django_capture_on_commit_callbacks, htmx):
    settings.MAX_UPLOAD_BYTES = 1000
    with django_capture_on_commit_callbacks(execute=True):
        response = post(owner_client, b"x" * 3072, "big.jpg", htmx=htmx)
    assert_refused(response, "This file is 3.0\xa0KB; the largest file accepted is 1000\xa0bytes.", htmx=htmx)
    assert 'data-max-bytes="1000"' in response.content.decode()  # the browser checks it first


@pytest.mark.parametrize("htmx", [False, True], ids=["page", "htmx"])
def test_a_file_over_the_monthly_volume_is_refused(owner_client, owner, django_capture_on_commit_callbacks, htmx):
    UsageCounter.objects.create(user=owner, period=current_period(), metric="upload_bytes", used=500 * MB - 1000)
    data = noise_jpeg()
    with django_capture_on_commit_callbacks(execute=True):
        response = post(owner_client, data, "one-too-many.jpg", htmx=htmx)
    assert_refused(
        response,
        f"monthly upload volume on the Free plan; this needs {filesizeformat(len(data))} more.",
        htmx=htmx,
    )
    assert upload_bytes_used(owner) == 500 * MB - 1000


# --- accepted ------------------------------------------------------------------------------------
def test_a_photo_is_accepted_by_its_content_whatever_its_name(owner_client, owner, django_capture_on_commit_callbacks):
    data = encode(np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8), "PNG")
    with django_capture_on_commit_callbacks(execute=True):
        response = post(owner_client, data, "holiday.jpg")
    upload = Upload.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse("swaps-upload", args=[upload.pk])
    assert (upload.kind, upload.format, upload.width, upload.height) == ("image", "png", 80, 60)
    assert (upload.status, upload.original_name, upload.size_bytes) == ("queued", "holiday.jpg", len(data))
    assert upload.file.name.startswith(f"users/{owner.pk}/uploads/") and upload.file.name.endswith(".png")
    assert stored_files() == [upload.file.name] and upload.file.read() == data
    assert upload_bytes_used(owner) == len(data) and upload.quota_amount == len(data)
    assert OrmQ.objects.count() == 1


@pytest.mark.parametrize("streamed", [False, True], ids=["in memory", "streamed to disk"])
def test_a_video_is_accepted_with_what_it_holds(owner_client, owner, tmp_path, settings, streamed):
    if streamed:
        settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1000
    frames = [np.full((48, 64, 3), (i * 10) % 256, np.uint8) for i in range(20)]
    data = write_video(tmp_path / "clip.mp4", frames, 10, audio=True).read_bytes()
    response = post(owner_client, data, "clip.bin", htmx=True)
    upload = Upload.objects.get()
    assert response.status_code == 200 and response["HX-Redirect"] == reverse("swaps-upload", args=[upload.pk])
    assert (upload.kind, upload.format, upload.width, upload.height, upload.frame_count) == ("video", "mp4", 64, 48, 20)
    assert upload.duration == pytest.approx(2.0, abs=0.1) and upload.fps == pytest.approx(10.0) and upload.has_audio
    assert upload.file.name.endswith(".mp4") and upload.file.read() == data


def test_an_animated_gif_is_accepted_as_a_video(owner_client, owner):
    import io

    from PIL import Image

    frames = [Image.fromarray(np.full((40, 40, 3), i * 20, np.uint8)) for i in range(10)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=200, loop=0)
    response = post(owner_client, buffer.getvalue(), "dance.gif")
    assert response.status_code == 302, response.content.decode()
    upload = Upload.objects.get()
    assert (upload.kind, upload.format, upload.frame_count) == ("video", "gif", 10)
    assert upload.duration == pytest.approx(2.0, abs=0.1) and upload.file.name.endswith(".gif")


def test_submitting_the_upload_form_twice_makes_one_upload(owner_client, owner, django_capture_on_commit_callbacks):
    data, submission = noise_jpeg(), str(uuid.uuid4())
    with django_capture_on_commit_callbacks(execute=True):
        first = post(owner_client, data, "a.jpg", submission=submission)
        second = post(owner_client, data, "a.jpg", submission=submission)
    upload = Upload.objects.get()
    assert first["Location"] == second["Location"] == reverse("swaps-upload", args=[upload.pk])
    assert len(stored_files()) == 1 and upload_bytes_used(owner) == len(data) and OrmQ.objects.count() == 1
    post(owner_client, data, "a.jpg", submission=str(uuid.uuid4()))
    assert Upload.objects.count() == 2


def test_the_form_page_shows_the_plan_limits(owner_client, owner):
    UsageCounter.objects.create(user=owner, period=current_period(), metric="upload_bytes", used=100 * MB)
    page = owner_client.get(reverse("swaps-new")).content.decode()
    assert "Photos up to 4096 px on the longest side" in page and "Videos up to 30 s and 1280 px" in page
    assert "100.0\xa0MB of 500.0\xa0MB uploaded this month" in page
    assert 'data-testid="no-personas"' in page
    assert 'name="submission"' in page
