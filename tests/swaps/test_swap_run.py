"""Whole swaps with the real engine, driven through the pages the way a user does: upload, check,
choose personas, swap; then what the result is (each face its own persona, protected, no EXIF
or GPS, watermarked, labelled as synthetic) and what the pages and the download say."""
from __future__ import annotations

import io
import re

import av
import numpy as np
import pytest
from django.core.files.storage import default_storage
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import reverse
from PIL import ExifTags, Image

from engine.faces import FaceAnalyzer, embedding_distance
from engine.media.provenance import TRAINED_ALGORITHMIC_MEDIA, read_digital_source_type, read_xmp, watermark_detect
from engine.swap.pipeline import SAME_PERSON
from safeface.jobs import JobStatus, job_cancel
from swaps import processing, services
from swaps.models import SwapAssignment, SwapJob, Upload
from tests.swaps.conftest import (
    corpus_dir,
    encode,
    face_clip,
    faces_picture,
    generated_face,
    gps_exif,
    real_persona,
    run_job,
    stored_files,
    swaps_used,
)

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("swap_models")]
HTMX = {"HTTP_HX_REQUEST": "true"}


def html(response) -> str:
    return response.content.decode()


def body(response) -> bytes:
    return b"".join(response.streaming_content) if response.streaming else response.content


def upload_through_the_page(client, data: bytes, name: str) -> Upload:
    response = client.post(reverse("swaps-new"), {"file": SimpleUploadedFile(name, data)})
    assert response.status_code == 302, html(response)
    run_job("swaps.Upload")
    upload = Upload.objects.latest("pk")
    assert upload.status == JobStatus.SUCCEEDED, upload.error
    return upload


def swap_through_the_page(client, upload: Upload, **choices) -> SwapJob:
    data = {"others": "keep", "audio": "keep", "quality": "standard", **choices}
    response = client.post(reverse("swaps-upload", args=[upload.pk]), data)
    assert response.status_code == 302, html(response)
    job = SwapJob.objects.latest("pk")
    assert response["Location"] == reverse("swaps-job", args=[job.pk])
    run_job("swaps.SwapJob")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    return job


# --- a photo, two people, two personas ------------------------------------------------------------
def test_two_faces_two_personas_a_clean_protected_photo(owner_client, owner):
    nova, rio = real_persona(owner, seed=1, name="Nova"), real_persona(owner, seed=2, name="Rio")
    photo = encode(faces_picture((14, 15)), quality=92, exif=gps_exif())
    with Image.open(io.BytesIO(photo)) as im:  # what a phone photo carries
        assert im.getexif().get_ifd(ExifTags.IFD.GPSInfo)[ExifTags.GPS.GPSLatitude] == (48.0, 51.0, 24.0)
    upload = upload_through_the_page(owner_client, photo, "beach.jpg")

    picker = html(owner_client.get(reverse("swaps-upload", args=[upload.pk])))
    assert len(re.findall(r'data-testid="face-row"', picker)) == 2
    assert "Nova" in picker and "Rio" in picker and 'data-testid="resemblance-warning"' not in picker

    job = swap_through_the_page(owner_client, upload, face_0=nova.pk, face_1=rio.pk, quality="high")
    assert list(SwapAssignment.objects.filter(job=job).values_list("face_key", "avatar_id")) == [(0, nova.pk), (1, rio.pk)]
    assert swaps_used(owner) == 1 and not job.quota_refunded and job.progress == 100

    # the report: both faces swapped, each with its own persona, both protected
    faces = job.report["faces"]
    assert job.report["kind"] == "image" and [f["index"] for f in faces] == [0, 1]
    assert [(f["action"], f["target"], f["protected"]) for f in faces] == [("swapped", 0, True), ("swapped", 1, True)]
    assert all(f["distance_to_original"] >= SAME_PERSON for f in faces)

    data = default_storage.open(job.result.name).read()
    assert job.result.name.startswith(f"users/{owner.pk}/swaps/") and job.result.name.endswith(".jpg")
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and im.size == (768, 384)
        assert len(im.getexif()) == 0 and not im.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert "exif" not in im.info and b"GPS" not in data and b"PhoneCo" not in data
        pixels = np.asarray(im.convert("RGB"))
    assert watermark_detect(pixels)
    assert read_digital_source_type(data) == TRAINED_ALGORITHMIC_MEDIA
    xmp = read_xmp(data).decode()
    assert f"<safeface:SafeFaceJob>{job.pk}</safeface:SafeFaceJob>" in xmp and processing.GENERATOR in xmp

    # measured on the result: each face is now nearer its own persona than the other one
    analyzer = FaceAnalyzer.default()
    found = sorted(analyzer.analyze(pixels), key=lambda f: f.box[0])
    assert len(found) == 2
    personas = [generated_face(1)[1], generated_face(2)[1]]
    originals = [generated_face(14)[1], generated_face(15)[1]]
    for position, face in enumerate(found):
        embedding = analyzer.embed(pixels, face)
        own, other = embedding_distance(embedding, personas[position]), embedding_distance(embedding, personas[1 - position])
        assert own < other, (position, own, other)
        assert embedding_distance(embedding, originals[position]) >= SAME_PERSON

    # the pages and the files
    page = html(owner_client.get(reverse("swaps-job", args=[job.pk])))
    assert 'data-level="protected"' in page and "Original people no longer recognisable." in page
    assert page.count("original person no longer recognisable") == 2
    assert 'data-testid="download"' in page and 'data-testid="compare-slider"' in page
    download = owner_client.get(reverse("swaps-result", args=[job.pk]), {"download": "1"})
    assert download["Content-Disposition"] == 'attachment; filename="beach-protected.jpg"'
    assert download["Content-Type"] == "image/jpeg" and body(download) == data
    thumb = owner_client.get(reverse("swaps-result-thumbnail", args=[job.pk]))
    assert thumb.status_code == 200 and body(thumb)[:3] == b"\xff\xd8\xff"
    history = html(owner_client.get(reverse("swaps-history")))
    assert reverse("swaps-result-thumbnail", args=[job.pk]) in history and 'data-status="succeeded"' in history


@pytest.mark.corpus
def test_a_real_photo_of_two_people_is_protected(owner):
    """The corpus photo of two real people (what test_flow_smoke.py used to run)."""
    first, second = real_persona(owner, seed=1, name="Nova"), real_persona(owner, seed=2, name="Rio")
    upload = services.upload_create(
        user=owner, file=SimpleUploadedFile("two.jpg", (corpus_dir() / "faces/group_obama_biden_2faces.jpg").read_bytes())
    )
    run_job("swaps.Upload")
    upload.refresh_from_db()
    job = services.swap_start(user=owner, upload=upload, assignments={0: first.pk, 1: second.pk})
    run_job("swaps.SwapJob")
    job.refresh_from_db()
    assert job.status == JobStatus.SUCCEEDED, job.error
    assert [(f["target"], f["protected"]) for f in job.report["faces"]] == [(0, True), (1, True)]
    assert job.protection()["level"] == "protected"


def test_a_transparent_png_stays_a_transparent_png(owner):
    nova = real_persona(owner, seed=1, name="Nova")
    rgb = faces_picture((14,))
    alpha = np.full(rgb.shape[:2], 255, np.uint8)
    alpha[:, :40] = 0
    upload = services.upload_create(user=owner, file=SimpleUploadedFile("cut-out.png", encode(np.dstack([rgb, alpha]), "PNG")))
    run_job("swaps.Upload")
    upload.refresh_from_db()
    job = services.swap_start(user=owner, upload=upload, assignments={0: nova.pk})
    run_job("swaps.SwapJob")
    job.refresh_from_db()
    with default_storage.open(job.result.name) as handle, Image.open(handle) as im:
        assert job.result.name.endswith(".png") and im.format == "PNG" and im.mode == "RGBA"
        assert np.asarray(im)[:, :40, 3].max() == 0 and np.asarray(im)[:, 40:, 3].min() == 255


# --- a video ------------------------------------------------------------------------------------
def video_facts(path) -> dict:
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        frames = [f.to_ndarray(format="rgb24") for f in container.decode(video)]
        return {
            "frames": frames, "audio": len(container.streams.audio), "codec": video.codec_context.name,
            "tags": dict(container.metadata), "size": (video.width, video.height),
        }


@pytest.mark.parametrize("audio", ["keep", "drop"])
def test_a_video_swap_makes_a_labelled_mp4_with_or_without_the_sound(owner_client, owner, tmp_path, audio):
    nova = real_persona(owner, seed=1, name="Nova")
    upload = upload_through_the_page(owner_client, face_clip(tmp_path / "clip.mp4", seconds=2, fps=8).read_bytes(), "clip.mp4")
    assert upload.has_audio
    picker = html(owner_client.get(reverse("swaps-upload", args=[upload.pk])))
    assert 'name="audio" value="drop"' in picker  # the choice is offered for a video with sound
    job = swap_through_the_page(owner_client, upload, face_0=nova.pk, audio=audio)
    assert job.result.name.endswith(".mp4") and job.report["kind"] == "video" and job.report["frames"] == 16
    (track,) = [t for t in job.report["faces"] if t["selected"]]
    assert track["target"] == 0 and track["frames"] > 0
    facts = video_facts(default_storage.path(job.result.name))
    assert facts["codec"] == "h264" and len(facts["frames"]) == 16 and facts["size"] == (256, 256)
    assert facts["audio"] == (1 if audio == "keep" else 0)
    assert "Synthetic media" in facts["tags"]["comment"] and TRAINED_ALGORITHMIC_MEDIA in facts["tags"]["comment"]
    # the face in the video is no longer the person filmed
    analyzer = FaceAnalyzer.default()
    middle = facts["frames"][8]
    (face,) = analyzer.analyze(middle)
    assert embedding_distance(analyzer.embed(middle, face), generated_face(13)[1]) >= SAME_PERSON
    page = html(owner_client.get(reverse("swaps-job", args=[job.pk])))
    assert 'data-testid="compare-videos"' in page and "Download video" in page
    download = owner_client.get(reverse("swaps-result", args=[job.pk]), {"download": "1"})
    assert download["Content-Type"] == "video/mp4" and download["Content-Disposition"] == 'attachment; filename="clip-protected.mp4"'


# --- cancelled while it runs ----------------------------------------------------------------------
def test_a_swap_cancelled_while_running_leaves_no_result(owner, monkeypatch):
    nova = real_persona(owner, seed=1, name="Nova")
    upload = services.upload_create(user=owner, file=SimpleUploadedFile("me.jpg", encode(faces_picture((14,)))))
    run_job("swaps.Upload")
    upload.refresh_from_db()
    before = set(stored_files())
    job = services.swap_start(user=owner, upload=upload, assignments={0: nova.pk})
    real_swap = processing._swap_image

    def cancelled_meanwhile(job, *args, **kwargs):
        result = real_swap(job, *args, **kwargs)  # the whole swap ran...
        job_cancel(job)  # ...and the owner pressed Cancel just before it was saved
        return result

    monkeypatch.setattr(processing, "_swap_image", cancelled_meanwhile)
    run_job("swaps.SwapJob", "cancelled")
    job.refresh_from_db()
    assert job.status == JobStatus.CANCELLED and job.cancel_requested
    assert not job.result and not job.result_thumbnail and job.report == {}
    assert set(stored_files()) == before
    assert job.quota_refunded and swaps_used(owner) == 0


@pytest.mark.parametrize("others", ["blur", "replace"])
def test_the_faces_nobody_chose_are_blurred_or_replaced_by_a_fresh_generated_face(owner, owner_client, others, monkeypatch):
    """Face 1 gets the persona; face 2 (nobody chosen) is blurred, or replaced by a face the
    generator makes for this job (not a library persona), and is no longer that person."""
    monkeypatch.setattr(processing.secrets, "randbits", lambda bits: 77)  # a fixed fresh face
    picture = faces_picture((14, 15))
    upload = upload_through_the_page(owner_client, encode(picture, quality=95), "pair.jpg")
    persona = real_persona(owner, seed=1)
    job = swap_through_the_page(owner_client, upload, face_0=str(persona.pk), others=others)
    reports = {f["index"]: f for f in job.report["faces"]}
    assert reports[0]["action"] == "swapped" and reports[0]["target"] == 0
    assert reports[1]["action"] == ("blurred" if others == "blur" else "replaced")
    with default_storage.open(job.result.name) as handle, Image.open(handle) as im:
        out = np.asarray(im.convert("RGB"))
    x0, y0, x1, y1 = (int(v) for v in Upload.objects.get(pk=upload.pk).faces.get(key=1).box)
    before, after = picture[y0:y1, x0:x1].astype(float), out[y0:y1, x0:x1].astype(float)
    assert np.abs(before - after).mean() > 8  # the second face changed
    analyzer = FaceAnalyzer.default()
    if others == "blur":
        # blurred: much less fine detail than the original face
        assert np.abs(np.diff(after, axis=1)).mean() < 0.6 * np.abs(np.diff(before, axis=1)).mean()
    else:
        assert reports[1]["protected"] is True and reports[1]["distance_to_original"] >= SAME_PERSON
        face = max((f for f in analyzer.analyze(out) if f.box[0] >= picture.shape[1] / 2), key=lambda f: f.area)
        assert embedding_distance(analyzer.embed(out, face), generated_face(15)[1]) > 0.5  # not that person
