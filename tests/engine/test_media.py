"""engine.media: image loading/saving and video probing/transcoding.

Every fixture is generated here (Pillow, PyAV); the corpus tests at the end run only when
SAFEFACE_CORPUS names the shared media corpus. Speed is printed (``-s``), never asserted.
"""
from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import threading
import time
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image as PILImage
from PIL import ImageCms, ImageOps

from engine.errors import Cancelled, CorruptMedia, EngineError, MediaTooLarge, UnsupportedMedia
from engine.media import (
    Image,
    VideoInfo,
    iter_frames,
    load_image,
    probe_video,
    process_video,
    save_image,
)
from engine.media.image import NOT_AN_IMAGE

RED = (255, 0, 0)
BLUE = (0, 0, 255)

# ----------------------------------------------------------------------------------------------
# image fixtures
# ----------------------------------------------------------------------------------------------


def banded(width: int, height: int) -> np.ndarray:
    """Red top quarter, blue bottom quarter, grey middle: orientation is easy to check."""
    a = np.full((height, width, 3), 128, np.uint8)
    a[: height // 4] = RED
    a[height - height // 4 :] = BLUE
    return a


def gps_exif(orientation: int) -> PILImage.Exif:
    exif = PILImage.Exif()
    exif[0x0112] = orientation  # Orientation
    exif[0x010F] = "PhoneMaker"  # Make
    exif[0x0131] = "SecretCamApp 1.0"  # Software
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 13.0, 26.5)
    gps[3] = "E"
    gps[4] = (13.0, 24.0, 17.9)
    return exif


def jpeg_bytes(array: np.ndarray, **kwargs) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, "JPEG", quality=95, **kwargs)
    return buffer.getvalue()


def png_bytes(im: PILImage.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    im.save(buffer, "PNG", **kwargs)
    return buffer.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims width x height in IHDR with one tiny IDAT: a decompression bomb's
    header (the pixels are never there)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def assert_no_metadata(path_or_bytes) -> None:
    data = path_or_bytes if isinstance(path_or_bytes, bytes) else Path(path_or_bytes).read_bytes()
    with PILImage.open(io.BytesIO(data)) as im:
        assert len(im.getexif()) == 0
        assert not im.getexif().get_ifd(0x8825)  # GPS
        for key in ("exif", "icc_profile", "xmp", "XML:com.adobe.xmp", "comment"):
            assert not im.info.get(key), key
    for needle in (b"Exif\x00\x00", b"PhoneMaker", b"SecretCamApp", b"http://ns.adobe.com/xap", b"ICC_PROFILE"):
        assert needle not in data, needle


def right_half_is_red(rgb: np.ndarray) -> bool:
    h, w = rgb.shape[:2]
    right = rgb[h // 4 : 3 * h // 4, w - max(2, w // 8) :].reshape(-1, 3).mean(axis=0)
    left = rgb[h // 4 : 3 * h // 4, : max(2, w // 8)].reshape(-1, 3).mean(axis=0)
    return right[0] > 200 and right[2] < 60 and left[2] > 200 and left[0] < 60


# ----------------------------------------------------------------------------------------------
# images: loading
# ----------------------------------------------------------------------------------------------


def test_jpeg_exif_orientation_6_is_upright_and_metadata_is_dropped(tmp_path):
    stored = banded(120, 80)  # landscape as stored; orientation 6 = rotate 90 deg clockwise
    data = jpeg_bytes(stored, exif=gps_exif(6), icc_profile=srgb_icc())
    with PILImage.open(io.BytesIO(data)) as im:  # the fixture really carries GPS + ICC
        assert im.getexif().get_ifd(0x8825)[1] == "N"
        assert im.info.get("icc_profile")
    path = tmp_path / "phone.jpg"
    path.write_bytes(data)

    image = load_image(path)
    assert isinstance(image, Image)
    assert image.format == "jpeg"
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == (120, 80, 3)
    assert image.pixels.flags.c_contiguous
    assert image.alpha is None
    assert right_half_is_red(image.pixels)  # the stored top is now on the right
    assert not hasattr(image, "info") and not hasattr(image, "exif")

    out = save_image(image, tmp_path / "out.jpg")
    assert out == tmp_path / "out.jpg"
    assert_no_metadata(out)
    again = load_image(out)
    assert again.pixels.shape == (120, 80, 3)  # no orientation tag left to rotate it twice
    assert right_half_is_red(again.pixels)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_pillow(orientation, tmp_path):
    rng = np.random.default_rng(orientation)
    stored = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    exif = PILImage.Exif()
    exif[0x0112] = orientation
    data = png_bytes(PILImage.fromarray(stored), exif=exif)  # lossless: exact comparison
    with PILImage.open(io.BytesIO(data)) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    assert np.array_equal(load_image(data).pixels, expected)


def test_png_rgba_keeps_alpha_and_composites_over_white(tmp_path):
    rgba = np.zeros((40, 50, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[..., 1] = 40
    rgba[..., 2] = 10
    rgba[:, :25, 3] = 255  # left opaque
    rgba[:, 25:40, 3] = 128  # semi-transparent
    rgba[:, 40:, 3] = 0  # transparent
    path = tmp_path / "cutout.png"
    path.write_bytes(png_bytes(PILImage.fromarray(rgba, "RGBA")))

    image = load_image(path)
    assert image.format == "png" and image.pixels.shape == (40, 50, 3)
    assert np.array_equal(image.alpha, rgba[..., 3])
    assert tuple(image.pixels[0, 0]) == (200, 40, 10)
    assert tuple(image.pixels[0, 45]) == (255, 255, 255)  # transparent -> white
    assert tuple(image.pixels[0, 30]) == tuple((np.array([200, 40, 10]) * 128 + 255 * 127 + 127) // 255)

    out = save_image(image, tmp_path / "again.png")
    with PILImage.open(out) as im:
        assert im.mode == "RGBA"
        back = np.asarray(im)
    assert np.array_equal(back[..., 3], rgba[..., 3])
    assert np.array_equal(back[:, :25], rgba[:, :25])
    assert np.abs(back[:, 25:40, :3].astype(int) - rgba[:, 25:40, :3]).max() <= 2
    # JPEG has no alpha: the composited colour is written
    jpeg = load_image(save_image(image, tmp_path / "flat.jpg"))
    assert jpeg.alpha is None and jpeg.pixels[0, 45].min() > 245


def test_fully_opaque_alpha_is_dropped():
    rgba = np.dstack([banded(20, 20), np.full((20, 20), 255, np.uint8)])
    image = load_image(png_bytes(PILImage.fromarray(rgba, "RGBA")))
    assert image.alpha is None and np.array_equal(image.pixels, rgba[..., :3])


@pytest.mark.parametrize(
    "mode",
    ["L", "LA", "P", "P-transparent", "CMYK", "I;16", "1", "RGB-icc"],
)
def test_other_modes_become_rgb(mode):
    base = PILImage.fromarray(banded(32, 24))
    if mode == "I;16":
        gray = np.tile(np.linspace(0, 65535, 32).astype(np.uint16), (24, 1))
        im = PILImage.fromarray(gray)
        assert im.mode == "I;16"
        data = png_bytes(im)
    elif mode == "CMYK":
        buffer = io.BytesIO()
        base.convert("CMYK").save(buffer, "JPEG", quality=95)
        data = buffer.getvalue()
    elif mode == "P-transparent":
        indices = np.ones((24, 32), np.uint8)
        indices[: 24 // 4] = 2  # red band
        indices[:, :4] = 0  # transparent strip
        im = PILImage.fromarray(indices, "P")
        im.putpalette([0, 0, 0, 128, 128, 128, 255, 0, 0])
        data = png_bytes(im, transparency=0)
    elif mode == "RGB-icc":
        data = jpeg_bytes(np.asarray(base), icc_profile=srgb_icc())
    else:
        data = png_bytes(base.convert(mode))
    image = load_image(data)
    assert image.pixels.dtype == np.uint8 and image.pixels.shape == (24, 32, 3)
    if mode == "I;16":
        assert image.pixels[0, 0, 0] == 0 and image.pixels[0, -1, 0] == 255  # scaled, not clipped
        assert 100 < image.pixels[0, 16, 0] < 160
    elif mode in ("CMYK", "RGB-icc", "P"):
        assert image.pixels[0, 0, 0] > 200 and image.pixels[0, 0, 2] < 60  # still red on top
    if mode == "P-transparent":
        assert image.alpha is not None and image.alpha[:, :4].max() == 0 and image.alpha[:, 4:].min() == 255
        assert tuple(image.pixels[0, 0]) == (255, 255, 255) and tuple(image.pixels[0, 10]) == RED
    else:
        assert image.alpha is None  # opaque (LA from an opaque image included)


def test_webp_disguised_as_jpg_is_judged_by_content(tmp_path):
    buffer = io.BytesIO()
    PILImage.fromarray(banded(64, 48)).save(buffer, "WEBP", quality=90)
    path = tmp_path / "photo.jpg"
    path.write_bytes(buffer.getvalue())
    image = load_image(path)
    assert image.format == "webp" and image.pixels.shape == (48, 64, 3)


def test_text_file_named_jpg_is_unsupported(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("definitely not a picture\n" * 10)
    with pytest.raises(UnsupportedMedia) as info:
        load_image(path)
    assert str(info.value) == NOT_AN_IMAGE == "This file is not a JPEG, PNG, WebP or HEIC image"


@pytest.mark.parametrize("kind", ["gif", "bmp", "tiff"])
def test_other_image_types_are_unsupported(kind):
    buffer = io.BytesIO()
    PILImage.fromarray(banded(8, 8)).save(buffer, kind.upper())
    with pytest.raises(UnsupportedMedia, match="not a JPEG, PNG, WebP or HEIC"):
        load_image(buffer.getvalue())


def _heic(rgb: np.ndarray, **save) -> bytes:
    from pillow_heif import from_bytes

    heif = from_bytes(mode="RGB", size=(rgb.shape[1], rgb.shape[0]), data=np.ascontiguousarray(rgb).tobytes())
    buffer = io.BytesIO()
    heif.save(buffer, quality=90, **save)
    return buffer.getvalue()


def test_heic_phone_photos_are_decoded_whatever_their_name(tmp_path):
    rgb = banded(96, 64)
    path = tmp_path / "IMG_0001.jpg"  # phones and chat apps rename them
    path.write_bytes(_heic(rgb))
    image = load_image(path)
    assert image.format == "heic" and image.pixels.shape == (64, 96, 3)
    assert np.abs(image.pixels.astype(int) - rgb).mean() < 6  # lossy, but the same picture


def test_damaged_or_oversized_heic_is_refused():
    data = _heic(banded(64, 64))
    with pytest.raises(CorruptMedia):
        load_image(data[: len(data) // 2])
    with pytest.raises(MediaTooLarge):
        load_image(data, max_pixels=64 * 63)


def test_zero_byte_file_is_corrupt(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(CorruptMedia, match="empty"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["jpeg", "png", "webp"])
def test_truncated_image_is_corrupt(fmt, tmp_path):
    rng = np.random.default_rng(1)
    noisy = rng.integers(0, 256, (120, 160, 3), dtype=np.uint8)
    data = save_image(noisy, fmt)
    assert isinstance(data, bytes)
    path = tmp_path / f"cut.{fmt}"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptMedia) as info:
        load_image(path)
    assert "damaged or incomplete" in str(info.value)
    assert info.value.__cause__ is not None  # the Pillow error is chained, not raised


def test_decompression_bomb_header_is_refused_before_decoding():
    bomb = png_header_only(20000, 20000)
    assert len(bomb) < 200
    started = time.perf_counter()
    with pytest.raises(MediaTooLarge) as info:
        load_image(bomb)
    assert time.perf_counter() - started < 1.0
    assert "20000 x 20000" in str(info.value) and "400.0 megapixels" in str(info.value)
    # Past our own limit, Pillow's DecompressionBombError is mapped too
    with pytest.raises(MediaTooLarge, match="20000 x 20000"):
        load_image(bomb, max_pixels=10**12)


def test_pixel_limit_from_real_headers(tmp_path):
    for fmt in ("jpeg", "png", "webp"):
        data = save_image(banded(300, 200), fmt)
        with pytest.raises(MediaTooLarge, match="300 x 200"):
            load_image(data, max_pixels=300 * 200 - 1)
        assert load_image(data, max_pixels=300 * 200).size == (300, 200)


def test_header_claiming_a_size_but_broken_body_is_corrupt():
    with pytest.raises(CorruptMedia):
        load_image(png_header_only(64, 64))


def test_load_from_bytes_and_file_object():
    data = save_image(banded(30, 20), "png")
    assert load_image(data).size == (30, 20)
    assert load_image(io.BytesIO(data)).size == (30, 20)
    assert load_image(bytearray(data)).size == (30, 20)


# ----------------------------------------------------------------------------------------------
# images: saving
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jpg", ".jpeg", ".png", ".webp"])
def test_save_image_writes_clean_files_atomically(suffix, tmp_path):
    source = tmp_path / "src.jpg"
    source.write_bytes(jpeg_bytes(banded(64, 48), exif=gps_exif(1), icc_profile=srgb_icc()))
    image = load_image(source)
    out = save_image(image, tmp_path / f"result{suffix}", quality=85)
    assert out.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src.jpg", f"result{suffix}"])
    assert_no_metadata(out)
    assert oct(out.stat().st_mode & 0o777) == oct(0o644)
    again = load_image(out)
    assert again.size == (64, 48)
    assert np.abs(again.pixels.astype(int) - image.pixels).mean() < 4


def test_save_image_replaces_existing_file_and_returns_bytes_for_a_format(tmp_path):
    target = tmp_path / "x.png"
    target.write_bytes(b"old")
    save_image(banded(10, 10), target)
    assert load_image(target).size == (10, 10)
    data = save_image(banded(10, 10), "webp")
    assert data[:4] == b"RIFF" and data[8:12] == b"WEBP"
    assert save_image(banded(10, 10), "JPEG")[:3] == b"\xff\xd8\xff"


def test_save_image_rejects_bad_input_without_leaving_files(tmp_path):
    with pytest.raises(ValueError):
        save_image(np.zeros((4, 4, 3), np.float32), tmp_path / "f.png")
    with pytest.raises(ValueError):
        save_image(banded(4, 4), tmp_path / "f.bmp")
    with pytest.raises(ValueError):
        save_image(np.zeros((4, 4, 5), np.uint8), tmp_path / "f.png")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------------------
# video fixtures
# ----------------------------------------------------------------------------------------------

W, H, FPS, N = 160, 120, 24, 48


def synthetic_frame(i: int, width: int = W, height: int = H) -> np.ndarray:
    """Moving gradient with a red top band and a frame-number bar."""
    x = np.linspace(0, 255, width, dtype=np.float32)
    a = np.empty((height, width, 3), np.uint8)
    a[..., 0] = ((x + i * 5) % 256).astype(np.uint8)
    a[..., 1] = 90
    a[..., 2] = (255 - x).astype(np.uint8)
    a[: height // 4] = RED
    return a


def write_video(
    path: Path,
    *,
    frames: int = N,
    fps: int = FPS,
    size: tuple[int, int] = (W, H),
    audio: str | None = "aac",
    rotation: int | None = None,
    pix_fmt: str = "yuv420p",
    metadata: dict | None = None,
    faststart: bool = False,
    audio_seconds: float | None = None,
    fmt: str | None = None,
    frame_source=None,
) -> Path:
    """A test video; ``frame_source(i) -> (H, W, 3) uint8`` overrides the synthetic pattern."""
    frame_source = frame_source or (lambda i: synthetic_frame(i, width, height))
    options = {"movflags": "+faststart"} if faststart else {}
    out = av.open(str(path), "w", format=fmt, options=options)
    if metadata:
        out.metadata.update(metadata)
    width, height = size
    video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "18"})
    video.width, video.height, video.pix_fmt = width, height, pix_fmt
    if rotation is not None:
        video.set_display_rotation(rotation)
    astream = None
    rate = 44100
    if audio:
        astream = out.add_stream(audio, rate=rate, layout="mono")
    for i in range(frames):
        frame = av.VideoFrame.from_ndarray(frame_source(i), format="rgb24")
        frame.pts = i
        frame.time_base = Fraction(1, fps)
        for packet in video.encode(frame):
            out.mux(packet)
    for packet in video.encode(None):
        out.mux(packet)
    if astream is not None:
        seconds = audio_seconds if audio_seconds is not None else frames / fps
        mux_tone(out, astream, codec=audio, total=int(rate * seconds), rate=rate, amplitude=0.3, freq=440)
    if frames == 0:
        out.start_encoding()
    out.close()
    return path


def mux_tone(out, stream, *, codec: str, total: int, rate: int, amplitude: float, freq: float) -> None:
    """Encodes a sine tone of ``total`` samples into ``stream`` and flushes it."""
    tone = (amplitude * np.sin(2 * np.pi * freq * np.arange(total) / rate)).astype(np.float32)
    chunk = stream.codec_context.frame_size or 1024
    in_fmt = "fltp" if codec == "aac" else "s16"
    for start in range(0, total, chunk):
        piece = tone[start : start + chunk]
        if in_fmt == "s16":
            piece = (piece * 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(piece[None, :], format=in_fmt, layout="mono")
        frame.sample_rate = rate
        frame.pts = start
        frame.time_base = Fraction(1, rate)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)


def write_audio_only(path: Path, *, seconds: float = 3.0, codec: str = "aac", fmt: str | None = None) -> Path:
    out = av.open(str(path), "w", format=fmt)
    rate = 44100
    stream = out.add_stream(codec, rate=rate, layout="mono")
    mux_tone(out, stream, codec=codec, total=int(rate * seconds), rate=rate, amplitude=0.2, freq=220)
    out.close()
    return path


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("media")


@pytest.fixture(scope="module")
def sample_mp4(media_dir) -> Path:
    """48 frames at 24 fps, 160x120, H.264 + AAC sine tone, with tags that must not leak."""
    return write_video(
        media_dir / "sample.mp4",
        metadata={"title": "SecretTitle", "location": "+52.5200+013.4050/", "creation_time": "2021-05-04T10:00:00Z"},
    )


def stream_seconds(path: Path, kind: str) -> float | None:
    with av.open(str(path)) as container:
        streams = getattr(container.streams, kind)
        if not streams:
            return None
        stream = streams[0]
        return float(stream.duration * stream.time_base)


def frame_times(path: Path) -> list[float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return [round(float(f.pts * stream.time_base), 4) for f in container.decode(stream)]


def no_temp_files(folder: Path, keep: set[str]) -> bool:
    return {p.name for p in folder.iterdir()} == keep


def media_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("media-")]


# ----------------------------------------------------------------------------------------------
# videos: probing and iterating
# ----------------------------------------------------------------------------------------------


def test_probe_synthetic_mp4(sample_mp4):
    info = probe_video(sample_mp4)
    assert isinstance(info, VideoInfo)
    assert (info.width, info.height, info.rotation) == (W, H, 0)
    assert info.fps == Fraction(FPS) and info.frame_count == N and info.frame_count_exact
    assert info.duration == pytest.approx(N / FPS, abs=1e-3)
    assert info.has_audio and info.audio_codec == "aac" and info.audio_sample_rate == 44100
    assert info.audio_channels == 1 and info.video_codec == "h264" and info.container == "mp4"


def test_iter_frames_yields_upright_rgb_in_order(sample_mp4):
    frames = list(iter_frames(sample_mp4))
    assert [f.index for f in frames] == list(range(N))
    assert frames[1].time == pytest.approx(1 / FPS)
    assert frames[0].rgb.shape == (H, W, 3) and frames[0].rgb.dtype == np.uint8
    assert np.abs(frames[0].rgb.astype(int) - synthetic_frame(0)).mean() < 6
    assert [f.index for f in iter_frames(sample_mp4, every=10)] == [0, 10, 20, 30, 40]


def test_iter_frames_closed_early_stops_its_thread(sample_mp4):
    generator = iter_frames(sample_mp4, queue_size=2)
    next(generator)
    generator.close()
    assert media_threads() == []


@pytest.mark.parametrize("rotation, clockwise", [(-90, 90), (90, 270), (180, 180)])
def test_rotated_phone_video_comes_out_upright(rotation, clockwise, media_dir, tmp_path):
    src = write_video(media_dir / f"rot{rotation}.mp4", frames=6, audio=None, rotation=rotation)
    info = probe_video(src)
    assert info.rotation == clockwise
    expected_size = (H, W) if clockwise in (90, 270) else (W, H)
    assert info.size == expected_size
    first = next(iter(iter_frames(src))).rgb
    assert first.shape == (expected_size[1], expected_size[0], 3)
    # The stored top band is red; after turning it clockwise by `clockwise` degrees it lies:
    side = {90: (slice(None), slice(-8, None)), 270: (slice(None), slice(0, 8)), 180: (slice(-8, None), slice(None))}
    band = first[side[clockwise]].reshape(-1, 3).mean(axis=0)
    assert band[0] > 200 and band[1] < 60 and band[2] < 60

    out = process_video(src, tmp_path / "upright.mp4", audio="drop")
    with av.open(str(out.path)) as container:
        frame = next(container.decode(video=0))
        assert frame.rotation == 0 and (frame.width, frame.height) == expected_size
    again = probe_video(out.path)
    assert again.rotation == 0 and again.size == expected_size
    assert np.abs(next(iter(iter_frames(out.path))).rgb.astype(int) - first).mean() < 4


def test_probe_errors_are_typed_with_clear_messages(media_dir, tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    with pytest.raises(CorruptMedia, match="empty"):
        probe_video(empty)

    text = tmp_path / "movie.mp4"
    text.write_text("this is a text file, not a movie\n" * 20)
    with pytest.raises(UnsupportedMedia, match="not a video"):
        probe_video(text)

    still = tmp_path / "still.mp4"
    still.write_bytes(jpeg_bytes(banded(32, 32)))
    with pytest.raises(UnsupportedMedia, match="still image"):
        probe_video(still)

    audio_only = write_audio_only(tmp_path / "voice.m4a", fmt="mp4")
    with pytest.raises(UnsupportedMedia, match="no video track"):
        probe_video(audio_only)

    wav = write_audio_only(tmp_path / "voice.wav", codec="pcm_s16le", fmt="wav")
    with pytest.raises(UnsupportedMedia, match="audio file"):
        probe_video(wav)

    zero = write_video(tmp_path / "zero.mp4", frames=0, audio=None)
    assert zero.stat().st_size > 0
    with pytest.raises(CorruptMedia, match="no frames"):
        probe_video(zero)

    with pytest.raises(FileNotFoundError):
        probe_video(tmp_path / "missing.mp4")


def test_truncated_videos_are_corrupt(media_dir, tmp_path):
    # moov at the end (the muxer's default): the index itself is gone
    whole = write_video(media_dir / "whole.mp4", frames=24)
    cut = tmp_path / "cut_end.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CorruptMedia, match="damaged or incomplete"):
        probe_video(cut)
    # faststart (moov first): the index is there, the samples are not
    fast = write_video(media_dir / "fast.mp4", frames=24, faststart=True)
    cut2 = tmp_path / "cut_fast.mp4"
    cut2.write_bytes(fast.read_bytes()[: fast.stat().st_size * 2 // 3])
    with pytest.raises(CorruptMedia, match="incomplete"):
        probe_video(cut2)
    with pytest.raises(CorruptMedia):
        process_video(cut2, tmp_path / "never.mp4")
    assert not (tmp_path / "never.mp4").exists()
    assert no_temp_files(tmp_path, {"cut_end.mp4", "cut_fast.mp4"})


def test_frame_pixel_limit(sample_mp4):
    with pytest.raises(MediaTooLarge, match="160 x 120"):
        probe_video(sample_mp4, max_pixels=W * H - 1)


# ----------------------------------------------------------------------------------------------
# videos: process_video
# ----------------------------------------------------------------------------------------------


def test_round_trip_keeps_frames_fps_duration_and_audio(sample_mp4, tmp_path):
    calls = []
    result = process_video(sample_mp4, tmp_path / "out.mp4", progress=lambda d, t: calls.append((d, t)))
    assert result.path == tmp_path / "out.mp4" and result.frames == N and result.audio == "copy"
    assert calls[0] == (0, N) and calls[-1] == (N, N) and len(calls) == N + 1

    src, out = probe_video(sample_mp4), probe_video(result.path)
    assert out.frame_count == src.frame_count == N
    assert out.fps == src.fps == Fraction(FPS)
    assert out.duration == pytest.approx(src.duration, abs=1e-6)
    assert frame_times(result.path) == frame_times(sample_mp4)
    assert out.has_audio and out.audio_codec == "aac"
    assert stream_seconds(result.path, "audio") == pytest.approx(stream_seconds(sample_mp4, "audio"), abs=0.1)
    assert no_temp_files(tmp_path, {"out.mp4"})

    with av.open(str(sample_mp4)) as container:  # the input really carries them
        assert {"title", "location", "creation_time"} <= set(container.metadata)
    with av.open(str(result.path)) as container:
        # no metadata of the input: only the muxer's own brand/encoder entries
        assert set(container.metadata) <= {"major_brand", "minor_version", "compatible_brands", "encoder"}
        for stream in container.streams:
            assert set(stream.metadata) <= {"language", "handler_name", "vendor_id", "encoder"}
    data = result.path.read_bytes()
    assert b"SecretTitle" not in data and b"+52.5200" not in data
    # faststart: the index (moov) comes before the media data (mdat)
    assert 0 <= data.find(b"moov") < data.find(b"mdat")


def test_frame_fn_is_applied(sample_mp4, tmp_path):
    seen = []

    def invert(index, rgb):
        seen.append(index)
        return 255 - rgb

    result = process_video(sample_mp4, tmp_path / "inv.mp4", invert, audio="drop")
    assert seen == list(range(N))
    originals = [f.rgb.astype(float).mean(axis=(0, 1)) for f in iter_frames(sample_mp4)]
    inverted = [f.rgb.astype(float).mean(axis=(0, 1)) for f in iter_frames(result.path)]
    for before, after in zip(originals, inverted):
        assert np.allclose(after, 255 - before, atol=3)
    assert not probe_video(result.path).has_audio and result.audio is None


def test_frame_fn_may_modify_in_place_or_return_none(sample_mp4, tmp_path):
    def paint(index, rgb):
        rgb[:, :, 1] = 0
        return None

    result = process_video(sample_mp4, tmp_path / "paint.mp4", paint)
    first = next(iter(iter_frames(result.path))).rgb
    assert first[:, :, 1].mean() < 10

    # a reused output buffer and a mirrored (negative-stride) view are both fine
    buffer = np.empty((H, W, 3), np.uint8)

    def mirror(index, rgb):
        buffer[:] = rgb
        return buffer[:, ::-1]

    result = process_video(sample_mp4, tmp_path / "mirror.mp4", mirror)
    for original, mirrored in zip(iter_frames(sample_mp4), iter_frames(result.path)):
        assert np.abs(mirrored.rgb[:, ::-1].astype(int) - original.rgb).mean() < 4


def test_frame_fn_may_return_futures_finished_on_another_thread(sample_mp4, tmp_path):
    """Frames handed back as futures are written in their own order, whatever order the worker
    threads finish them in, and no more than ``lookahead`` are in flight."""
    from concurrent.futures import ThreadPoolExecutor

    in_flight, peak = [0], [0]
    lock = threading.Lock()

    def finish(index, rgb):
        time.sleep(0.004 * (index % 3))  # later frames sometimes finish first
        out = rgb.copy()
        out[:, :, 0] = index * 8 % 256  # the frame's number, readable after encoding
        with lock:
            in_flight[0] -= 1
        return out

    with ThreadPoolExecutor(max_workers=3) as pool:
        def frame_fn(index, rgb):
            with lock:
                in_flight[0] += 1
                peak[0] = max(peak[0], in_flight[0])
            return pool.submit(finish, index, rgb)

        result = process_video(sample_mp4, tmp_path / "async.mp4", frame_fn, audio="drop", lookahead=2)
    assert result.frames == N and peak[0] <= 3
    reds = [float(f.rgb[:, :, 0].mean()) for f in iter_frames(result.path)]
    assert np.allclose(reds, [i * 8 % 256 for i in range(N)], atol=6)


def test_a_failing_future_fails_the_run_and_cancels_the_rest(sample_mp4, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    def finish(index, rgb):
        if index == 9:
            raise RuntimeError("swap crashed")
        return rgb

    with ThreadPoolExecutor(max_workers=1) as pool:
        with pytest.raises(RuntimeError, match="swap crashed"):
            process_video(sample_mp4, tmp_path / "x.mp4", lambda i, rgb: pool.submit(finish, i, rgb))
    assert list(tmp_path.iterdir()) == [] and media_threads() == []


def test_frame_fn_returning_wrong_shape_fails_cleanly(sample_mp4, tmp_path):
    with pytest.raises(ValueError, match="shape"):
        process_video(sample_mp4, tmp_path / "bad.mp4", lambda i, rgb: rgb[:10])
    assert list(tmp_path.iterdir()) == [] and media_threads() == []


@pytest.mark.parametrize("how", ["raise", "false", "frame_fn"])
def test_cancellation_leaves_no_file(how, sample_mp4, tmp_path):
    dst = tmp_path / "job.mp4"
    dst.write_bytes(b"previous result")  # an existing output is not touched either
    processed = []

    def progress(done, total):
        if done >= 5:
            if how == "raise":
                raise Cancelled("stop")
            if how == "false":
                return False
        return None

    def frame_fn(index, rgb):
        processed.append(index)
        if how == "frame_fn" and index == 7:
            raise Cancelled("user left")
        return rgb

    started = time.perf_counter()
    with pytest.raises(Cancelled):
        process_video(sample_mp4, dst, frame_fn, progress=progress)
    assert time.perf_counter() - started < 5
    assert len(processed) <= 8  # stopped promptly
    assert dst.read_bytes() == b"previous result"
    assert no_temp_files(tmp_path, {"job.mp4"})
    assert media_threads() == []


def test_frame_fn_error_propagates_and_cleans_up(sample_mp4, tmp_path):
    class Boom(RuntimeError):
        pass

    def frame_fn(index, rgb):
        if index == 20:
            raise Boom("model crashed")
        return rgb

    with pytest.raises(Boom):
        process_video(sample_mp4, tmp_path / "x.mp4", frame_fn)
    assert list(tmp_path.iterdir()) == [] and media_threads() == []


def test_audio_drop_and_replace(sample_mp4, media_dir, tmp_path):
    dropped = process_video(sample_mp4, tmp_path / "silent.mp4", audio="drop")
    assert dropped.audio is None and not probe_video(dropped.path).has_audio

    # longer WAV (PCM): re-encoded to AAC and cut at the end of the video
    wav = write_audio_only(media_dir / "voice.wav", seconds=5.0, codec="pcm_s16le", fmt="wav")
    replaced = process_video(sample_mp4, tmp_path / "dub.mp4", audio=wav)
    info = probe_video(replaced.path)
    assert replaced.audio == "aac" and info.has_audio and info.audio_codec == "aac"
    assert stream_seconds(replaced.path, "audio") == pytest.approx(N / FPS, abs=0.1)
    assert info.frame_count == N

    # AAC in M4A: stream-copied, also cut
    m4a = write_audio_only(media_dir / "voice.m4a", seconds=4.0, fmt="mp4")
    copied = process_video(sample_mp4, tmp_path / "dub2.mp4", audio=m4a)
    assert copied.audio == "copy"
    assert stream_seconds(copied.path, "audio") == pytest.approx(N / FPS, abs=0.1)

    # a replacement without audio is refused (typed), nothing written
    with pytest.raises(UnsupportedMedia, match="no audio track"):
        process_video(sample_mp4, tmp_path / "nope.mp4", audio=write_video(media_dir / "mute.mp4", frames=2, audio=None))
    assert not (tmp_path / "nope.mp4").exists()


def test_non_aac_audio_is_reencoded_to_aac(media_dir, tmp_path):
    src = write_video(media_dir / "pcm.mov", audio="pcm_s16le", fmt="mov")
    assert probe_video(src).audio_codec == "pcm_s16le"
    result = process_video(src, tmp_path / "out.mp4")
    info = probe_video(result.path)
    assert result.audio == "aac" and info.audio_codec == "aac"
    assert stream_seconds(result.path, "audio") == pytest.approx(N / FPS, abs=0.1)
    assert info.frame_count == N and info.fps == Fraction(FPS)


def test_odd_dimensions_are_handled(media_dir, tmp_path):
    src = write_video(media_dir / "odd.mp4", size=(161, 121), pix_fmt="yuv444p", frames=12, audio=None)
    info = probe_video(src)
    assert info.size == (161, 121)
    shapes = []
    result = process_video(src, tmp_path / "even.mp4", lambda i, rgb: shapes.append(rgb.shape) or rgb)
    assert shapes == [(121, 161, 3)] * 12  # frame_fn sees the whole frame
    assert (result.width, result.height) == (160, 120)
    out = probe_video(result.path)
    assert out.size == (160, 120) and out.frame_count == 12 and out.pixel_format == "yuv420p"
    first = next(iter(iter_frames(result.path))).rgb
    assert np.abs(first.astype(int) - synthetic_frame(0, 161, 121)[:120, :160]).mean() < 8


def write_two_greys(path: Path, *, pix_fmt: str = "yuv420p", bt709: bool = False, pts=None, time_base=None):
    """64x48: left half grey 30, right half grey 220 (far from the range ends, so a range
    mix-up shows), optionally BT.709-tagged and with arbitrary timestamps."""
    out = av.open(str(path), "w")
    stream = out.add_stream("libx264", rate=25, options={"preset": "ultrafast", "crf": "10"})
    stream.width, stream.height, stream.pix_fmt = 64, 48, pix_fmt
    if bt709:
        ctx = stream.codec_context
        ctx.colorspace = ctx.color_primaries = ctx.color_trc = 1  # BT.709
    if time_base is not None:
        stream.time_base = stream.codec_context.time_base = time_base
    a = np.zeros((48, 64, 3), np.uint8)
    a[:, :32], a[:, 32:] = 30, 220
    for i, p in enumerate(pts if pts is not None else range(5)):
        frame = av.VideoFrame.from_ndarray(a, format="rgb24")
        frame.pts, frame.time_base = p, time_base or Fraction(1, 25)
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode(None):
        out.mux(packet)
    out.close()
    return path


def test_full_range_video_decodes_to_correct_levels(tmp_path):
    src = write_two_greys(tmp_path / "full.mp4", pix_fmt="yuvj420p")
    with av.open(str(src)) as container:
        assert next(container.decode(video=0)).format.name == "yuvj420p"
    for path in (src, process_video(src, tmp_path / "out.mp4").path):
        rgb = next(iter(iter_frames(path))).rgb
        assert abs(rgb[:, :32].mean() - 30) < 3 and abs(rgb[:, 32:].mean() - 220) < 3


def test_colour_tags_are_kept_and_pixels_round_trip(tmp_path):
    src = write_two_greys(tmp_path / "bt709.mp4", bt709=True)
    out = process_video(src, tmp_path / "out.mp4").path
    with av.open(str(src)) as a, av.open(str(out)) as b:
        fa, fb = next(a.decode(video=0)), next(b.decode(video=0))
        assert (fb.colorspace, fb.color_primaries, fb.color_trc) == (fa.colorspace, fa.color_primaries, fa.color_trc) == (1, 1, 1)
        ya, yb = fa.to_ndarray()[:48].astype(int), fb.to_ndarray()[:48].astype(int)
        assert np.abs(ya - yb).mean() < 1.5  # same YUV values: displays exactly as before


def test_variable_frame_rate_timestamps_are_kept(tmp_path):
    pts = [0, 40, 120, 160, 250, 290, 400, 433, 500]  # milliseconds, irregular
    src = write_two_greys(tmp_path / "vfr.mp4", pts=pts, time_base=Fraction(1, 1000))
    before = probe_video(src)
    result = process_video(src, tmp_path / "out.mp4")
    after = probe_video(result.path)
    assert frame_times(result.path) == frame_times(src) == [p / 1000 for p in pts]
    assert [round(f.time, 4) for f in iter_frames(result.path)] == [p / 1000 for p in pts]
    assert after.frame_count == before.frame_count == len(pts)
    assert after.fps == before.fps and after.duration == pytest.approx(before.duration, abs=1e-6)


def test_animated_gif_becomes_mp4(tmp_path):
    frames = [PILImage.fromarray(synthetic_frame(i * 8, 90, 60)) for i in range(10)]
    gif = tmp_path / "anim.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    info = probe_video(gif)
    assert info.container == "gif" and not info.has_audio and info.size == (90, 60)
    assert info.frame_count == 10 and info.fps == Fraction(10)
    result = process_video(gif, tmp_path / "anim.mp4")
    out = probe_video(result.path)
    assert out.video_codec == "h264" and out.frame_count == 10 and out.fps == Fraction(10)
    assert out.duration == pytest.approx(1.0, abs=1e-6) and not out.has_audio


def test_process_video_rejects_bad_inputs_with_typed_errors(media_dir, tmp_path):
    text = tmp_path / "a.mp4"
    text.write_text("nope" * 100)
    with pytest.raises(UnsupportedMedia):
        process_video(text, tmp_path / "b.mp4")
    audio_only = write_audio_only(tmp_path / "c.m4a", fmt="mp4")
    with pytest.raises(UnsupportedMedia, match="audio"):
        process_video(audio_only, tmp_path / "d.mp4")
    assert not (tmp_path / "b.mp4").exists() and not (tmp_path / "d.mp4").exists()
    with pytest.raises(ValueError):
        process_video(audio_only, tmp_path / "e.mp4", preset="warp-speed")


def test_engine_media_imports_without_django():
    code = (
        "import sys, engine.media; "
        "assert not any(m == 'django' or m.startswith('django.') for m in sys.modules), 'django imported'"
    )
    root = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    subprocess.run([sys.executable, "-c", code], cwd=root, env=env, check=True)


def test_all_errors_are_engine_errors():
    for error in (UnsupportedMedia, CorruptMedia, MediaTooLarge, Cancelled):
        assert issubclass(error, EngineError)


# ----------------------------------------------------------------------------------------------
# real corpus (SAFEFACE_CORPUS)
# ----------------------------------------------------------------------------------------------


@pytest.mark.corpus
def test_corpus_images_load(corpus, tmp_path):
    faces = sorted((corpus / "faces").iterdir())
    assert len(faces) >= 20
    for number, path in enumerate(faces):
        image = load_image(path)
        assert image.pixels.dtype == np.uint8 and image.pixels.ndim == 3 and image.pixels.shape[2] == 3
        fmt = "jpg" if image.width * image.height > 4_000_000 else ("jpg", "png", "webp")[number % 3]
        out = save_image(image, tmp_path / f"{path.stem}.{fmt}")
        assert_no_metadata(out)
        assert load_image(out).size == image.size
    assert load_image(corpus / "faces/face_rdj_frontal_1.webp").format == "webp"
    rgba = load_image(corpus / "faces/face_lin_manuel_miranda_rgba.png")
    assert rgba.format == "png" and rgba.size == (704, 612)
    big = load_image(corpus / "faces/face_woman_blonde_4352px.jpg")
    assert big.size == (4352, 2903)


CORPUS_VIDEOS = [
    ("video_man_suit_talking_6s.mp4", True),
    ("video_man_glasses_selfie_portrait_12s_noaudio.mp4", False),
    ("video_elon_smoke_2s.gif", False),
]


@pytest.mark.corpus
@pytest.mark.parametrize("name, has_audio", CORPUS_VIDEOS)
def test_corpus_videos_round_trip(name, has_audio, corpus, tmp_path):
    src = corpus / "videos" / name
    info = probe_video(src)
    assert info.has_audio == has_audio
    if name.startswith("video_man_glasses_selfie"):
        assert info.size == (720, 1280)
    started = time.perf_counter()
    result = process_video(src, tmp_path / "out.mp4", lambda i, rgb: rgb)
    seconds = time.perf_counter() - started
    out = probe_video(result.path)
    assert out.frame_count == info.frame_count == result.frames
    assert out.fps == info.fps
    assert out.duration == pytest.approx(info.duration, abs=0.01)
    assert out.has_audio == has_audio
    assert out.size == (info.width - info.width % 2, info.height - info.height % 2)
    if has_audio:
        assert stream_seconds(result.path, "audio") == pytest.approx(stream_seconds(src, "audio"), abs=0.1)
    print(f"\n{name}: {result.frames} frames, pass-through {result.frames / seconds:.1f} fps")


@pytest.mark.corpus
def test_corpus_throughput_720p(corpus, tmp_path):
    """Prints decode-only and pass-through transcode speed for the 720x1280 video."""
    src = corpus / "videos/video_man_glasses_selfie_portrait_12s_noaudio.mp4"
    started = time.perf_counter()
    count = sum(1 for _ in iter_frames(src))
    decode_fps = count / (time.perf_counter() - started)
    started = time.perf_counter()
    result = process_video(src, tmp_path / "pass.mp4", lambda i, rgb: rgb)
    transcode_fps = result.frames / (time.perf_counter() - started)
    print(
        f"\n720x1280 {count} frames: decode-only {decode_fps:.1f} fps, "
        f"pass-through transcode {transcode_fps:.1f} fps ({os.cpu_count()} CPUs)"
    )
    assert result.frames == count
