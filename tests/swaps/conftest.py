"""Swap fixtures: personas with real generated faces (StyleGAN, rendered once per session and
signed like the generation job signs them), uploads made through the service from corpus files
or small generated media, and a helper that runs the queued job the way a worker does.

Also media the tests make themselves (photos of generated people, with or without EXIF GPS;
short videos with a tone; so a fresh clone without the corpus still runs the real engine), and
rows made without the engine (a placeholder persona, a checked upload, a finished swap) for the
page and service tests."""
from __future__ import annotations

import functools
import os
import zlib
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from avatars.models import Avatar, embedding_to_bytes, provenance_keys
from safeface.jobs import run_next_job


def corpus_dir() -> Path:
    """The shared media corpus; skipped without SAFEFACE_CORPUS, a failure when CI is set."""
    folder = os.environ.get("SAFEFACE_CORPUS")
    if not folder or not Path(folder).is_dir():
        if os.environ.get("CI"):
            pytest.fail("SAFEFACE_CORPUS must name the media corpus under CI")
        pytest.skip("SAFEFACE_CORPUS is not set")
    return Path(folder)


@pytest.fixture(scope="session")
def swap_models():
    from tests.engine.conftest import require_models

    require_models("faces")
    require_models("generator")
    require_models("safety")


@functools.cache
def generated_face(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB 1024 px face, its identity embedding) for a StyleGAN seed."""
    from engine.faces import FaceAnalyzer
    from engine.generate.stylegan import generate_face

    image = generate_face(seed)
    analyzer = FaceAnalyzer.default()
    face = max(analyzer.analyze(image), key=lambda f: f.area)
    return image, analyzer.embed(image, face)


def real_persona(user, *, seed: int = 1, name: str = "Nova") -> Avatar:
    """A kept persona whose file is a real generated face, signed with the server key."""
    from engine.media.provenance import encode_avatar_image, sign

    image, embedding = generated_face(seed)
    png = encode_avatar_image(image, generator="stylegan2-ffhq", seed=seed)
    avatar = Avatar(
        user=user, status=Avatar.Status.READY, name=name, generator="stylegan2-ffhq", model_hash="0" * 64,
        seed=seed, attributes={}, embedding=embedding_to_bytes(embedding), kept_at=timezone.now(),
    )
    avatar.signature = sign(provenance_keys()[0], png, avatar.provenance_fields())
    avatar.image.save("avatar.png", ContentFile(png), save=False)
    avatar.thumbnail.save("thumb.png", ContentFile(png), save=False)
    avatar.full_clean()
    avatar.save()
    return avatar


def uploaded(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes())


def run_job(label: str, expect: str = "succeeded") -> str:
    outcome = run_next_job(label)
    assert outcome.endswith(expect), outcome
    return outcome


# --- media the tests make themselves (a fresh clone has no corpus) ------------------------------
@functools.cache
def faces_picture(seeds: tuple[int, ...] = (11,), side: int = 384) -> np.ndarray:
    """Generated people (StyleGAN faces of nobody) side by side, ``side`` px each, RGB."""
    import cv2

    tiles = [cv2.resize(generated_face(seed)[0], (side, side), interpolation=cv2.INTER_AREA) for seed in seeds]
    return np.ascontiguousarray(np.concatenate(tiles, axis=1))


def gps_exif():
    """EXIF a phone writes: camera make and model, and where the photo was taken (GPS IFD)."""
    from PIL import ExifTags, Image

    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "PhoneCo"
    exif[ExifTags.Base.Model] = "Pocket 7"
    exif.get_ifd(ExifTags.IFD.GPSInfo).update({
        ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0),
        ExifTags.GPS.GPSLongitudeRef: "E", ExifTags.GPS.GPSLongitude: (2.0, 21.0, 3.0),
    })
    return exif


def encode(rgb: np.ndarray, fmt: str = "JPEG", **params) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8)).save(buffer, fmt, **params)
    return buffer.getvalue()


def write_video(path: Path, frames, fps: int, *, audio: bool = False) -> Path:
    """An H.264 MP4 of ``frames`` (RGB arrays) at ``fps``, with a 440 Hz AAC tone when ``audio``."""
    import av

    frames = list(frames)
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=fps)
        video.pix_fmt = "yuv420p"
        video.height, video.width = frames[0].shape[:2]
        sound = out.add_stream("aac", rate=44100) if audio else None
        if sound is not None:
            sound.layout = "stereo"
        for frame in frames:
            for packet in video.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                out.mux(packet)
        for packet in video.encode():
            out.mux(packet)
        if sound is not None:
            count = int(44100 * len(frames) / fps)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(count) / 44100)).astype(np.float32)
            samples = np.stack([tone, tone])
            for start in range(0, count, 1024):
                part = np.ascontiguousarray(samples[:, start:start + 1024])
                chunk = av.AudioFrame.from_ndarray(part, format="fltp", layout="stereo")
                chunk.sample_rate, chunk.pts = 44100, start
                for packet in sound.encode(chunk):
                    out.mux(packet)
            for packet in sound.encode():
                out.mux(packet)
    return path


def face_clip(path: Path, *, seconds: int = 2, fps: int = 8, seed: int = 13, side: int = 256, audio: bool = True) -> Path:
    """A short video of one generated person drifting slowly across the frame."""
    still = faces_picture((seed,), side)
    frames = [np.roll(still, shift=i, axis=1) for i in range(seconds * fps)]
    return write_video(path, frames, fps, audio=audio)


# --- rows without the engine (for pages and services) ------------------------------------------
def tiny_jpeg(colour: int = 120, side: int = 64) -> bytes:
    return encode(np.full((side, side, 3), colour, np.uint8))


def fake_persona(
    user, name: str = "Sam", *, embedding: np.ndarray | None = None, status: str = Avatar.Status.READY, seed: int = 0,
) -> Avatar:
    """A persona row with a placeholder picture (its signature does not verify: never swap with it)."""
    if embedding is None:
        embedding = np.random.default_rng(seed or zlib.crc32(name.encode())).standard_normal(128).astype(np.float32) * 0.05
    avatar = Avatar(
        user=user, status=status, name=name, generator="fake", model_hash="f" * 64, seed=seed,
        attributes={}, embedding=embedding_to_bytes(np.asarray(embedding, np.float32)), signature="0" * 64,
        kept_at=timezone.now() if status == Avatar.Status.READY else None,
    )
    avatar.image.save("avatar.png", ContentFile(encode(np.full((32, 32, 3), 90, np.uint8), "PNG")), save=False)
    avatar.thumbnail.save("thumb.png", ContentFile(encode(np.full((16, 16, 3), 90, np.uint8), "PNG")), save=False)
    avatar.save()
    return avatar


def ready_upload(user, *, embeddings: list[np.ndarray] | None = None, kind: str = "image", name: str = "beach.jpg"):
    """A checked upload with stored original, preview and one face row (thumbnail, embedding) per
    embedding, as the upload check leaves it."""
    from safeface.jobs import JobStatus
    from swaps.models import Upload, UploadFace

    if embeddings is None:
        embeddings = [np.random.default_rng(7).standard_normal(128).astype(np.float32) * 0.05]
    now = timezone.now()
    video = kind == "video"
    upload = Upload(
        user=user, kind=kind, format="mp4" if video else "jpeg", original_name=name, size_bytes=2048,
        width=640, height=480, status=JobStatus.SUCCEEDED, progress=100, attempts=1,
        queued_at=now, started_at=now, finished_at=now, samples=3 if video else 1,
        duration=3.0 if video else None, fps=25.0 if video else None,
    )
    upload.file.save("original", ContentFile(b"\x00\x00\x00\x18ftypmp42" + b"\0" * 64 if video else tiny_jpeg()), save=False)
    upload.preview.save("preview.jpg", ContentFile(tiny_jpeg(200)), save=False)
    upload.save()
    for key, embedding in enumerate(embeddings):
        face = UploadFace(
            upload=upload, key=key, box=[40 + 200 * key, 40, 160 + 200 * key, 160], quality=0.9,
            appearances=3 if video else 1, time=1.0 if video else None, embedding=embedding_to_bytes(embedding),
        )
        face.thumbnail.save("face.jpg", ContentFile(tiny_jpeg(60 + key)), save=False)
        face.save()
    return upload


def finished_swap(user, upload, avatar, *, status: str = "succeeded", suffix: str = "jpg"):
    """A swap as a worker leaves it: with ``status`` succeeded, a result, a thumbnail and a report."""
    from swaps.models import SwapAssignment, SwapJob

    now = timezone.now()
    job = SwapJob(
        user=user, upload=upload, status=status, progress=100 if status == "succeeded" else 0, attempts=1,
        queued_at=now, started_at=now, finished_at=now, error="It broke." if status == "failed" else "",
    )
    if status == "succeeded":
        job.result.save(f"result.{suffix}", ContentFile(tiny_jpeg(30)), save=False)
        job.result_thumbnail.save("thumb.jpg", ContentFile(tiny_jpeg(31)), save=False)
        job.report = {"kind": "image", "faces": [{
            "index": 0, "action": "swapped", "protected": True, "distance_to_original": 0.81,
            "distance_to_persona": 0.3, "target": 0,
        }]}
    job.save()
    SwapAssignment.objects.create(job=job, face_key=0, avatar=avatar, avatar_name=avatar.name if avatar else "")
    return job


def stored_files() -> list[str]:
    """Every file in the (per-test) media storage, relative to its root."""
    from django.core.files.storage import default_storage

    root = Path(default_storage.location)
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def swaps_used(user) -> int:
    from accounts.models import UsageCounter

    return UsageCounter.objects.filter(user=user, metric="swaps").values_list("used", flat=True).first() or 0


def upload_bytes_used(user) -> int:
    from accounts.models import UsageCounter

    return UsageCounter.objects.filter(user=user, metric="upload_bytes").values_list("used", flat=True).first() or 0
