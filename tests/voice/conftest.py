"""Voice fixtures: recordings the tests make themselves (a speech-like voiced sound, plain tones, a
silent video, damaged and empty files), the sample sentence pointed at one of them, personas and
mask jobs as rows, and the helpers the swaps tests share.

The speech-like signal is a glottal pulse train at a slowly moving pitch through vowel-like
formant resonances, in syllables: the real engine converts it as it converts speech, and a fresh
clone without the corpus still runs every worker test."""
from __future__ import annotations

import functools
import io
import tempfile
import uuid
from pathlib import Path

import av
import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from accounts.models import UsageCounter
from safeface.jobs import JobStatus
from tests.swaps.conftest import swap_models  # noqa: F401  (the swap tests' fixture: model files present)
from voice import processing
from voice.models import MaskJob
from voice.services import voice_for

SPEECH = "speech/speech_libri1688_male_15s.flac"


# --- recordings --------------------------------------------------------------------------------
@functools.cache
def voiced(seconds: float = 3.0, rate: int = 16000, pitch: float = 120.0) -> np.ndarray:
    """A speech-like mono signal in -1..1: pitch pulses through two formants, four syllables a second."""
    from scipy.signal import lfilter

    n = int(seconds * rate)
    t = np.arange(n) / rate
    f0 = pitch * (1 + 0.08 * np.sin(2 * np.pi * 0.7 * t))
    phase = np.cumsum(f0 / rate)
    pulses = np.diff(np.floor(phase), prepend=0.0)
    signal = pulses.astype(np.float64)
    for formant, bandwidth in ((700.0, 110.0), (1200.0, 130.0), (2600.0, 200.0)):
        r = np.exp(-np.pi * bandwidth / rate)
        theta = 2 * np.pi * formant / rate
        signal = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], signal)
    envelope = np.clip(np.sin(2 * np.pi * 2.0 * t), 0, None) ** 0.5
    signal = signal * envelope
    return (0.5 * signal / (np.abs(signal).max() or 1)).astype(np.float32)


def recording(fmt: str = "wav", seconds: float = 3.0, rate: int = 16000, channels: int = 1, pitch: float = 120.0) -> bytes:
    """A speech-like recording encoded as ``fmt`` (wav, flac, mp3, aac)."""
    from engine.voice import write_audio

    samples = voiced(seconds, rate, pitch)
    if channels == 2:
        samples = np.stack([samples, samples], axis=1)
    suffix = {"aac": "m4a"}.get(fmt, fmt)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"voice.{suffix}"
        write_audio(path, samples, rate, fmt)
        return path.read_bytes()


def tone_wav(seconds: float, rate: int = 8000, frequency: float = 220.0) -> bytes:
    """A plain sine tone as a 16-bit mono WAV (cheap to make at any length)."""
    import wave

    t = np.arange(int(seconds * rate)) / rate
    data = (0.3 * 32767 * np.sin(2 * np.pi * frequency * t)).astype("<i2").tobytes()
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(data)
    return buffer.getvalue()


def empty_wav() -> bytes:
    """A valid WAV header with no samples at all."""
    return tone_wav(0.0)


def aiff(seconds: float = 2.0, rate: int = 16000) -> bytes:
    """AIFF (big-endian PCM): a format some browsers do not play in <audio>."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="aiff") as out:
        stream = out.add_stream("pcm_s16be", rate=rate, layout="mono")
        samples = (voiced(seconds, rate) * 32767).astype(np.int16).reshape(1, -1)
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = rate
        for packet in stream.encode(frame):
            out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return buffer.getvalue()


def silent_video(path: Path) -> bytes:
    from tests.swaps.conftest import write_video

    frames = [np.full((64, 64, 3), 40 * i, np.uint8) for i in range(6)]
    return write_video(path, frames, 6, audio=False).read_bytes()


def video_with_sound(path: Path, seconds: int = 2) -> bytes:
    from tests.swaps.conftest import write_video

    frames = [np.full((64, 64, 3), 10 * i, np.uint8) for i in range(seconds * 8)]
    return write_video(path, frames, 8, audio=True).read_bytes()


def uploaded(data: bytes, name: str) -> SimpleUploadedFile:
    return SimpleUploadedFile(name, data)


def decoded(path_or_bytes) -> tuple[float, int, int, str]:
    """(seconds, sample rate, channels, codec) of an audio file, measured by decoding it all."""
    source = io.BytesIO(path_or_bytes) if isinstance(path_or_bytes, bytes) else str(path_or_bytes)
    with av.open(source) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        rate = stream.codec_context.sample_rate
        return samples / rate, rate, stream.codec_context.channels, stream.codec_context.name


# --- the sample sentence and the speaker check ---------------------------------------------------
@pytest.fixture
def sample_sentence(tmp_path, monkeypatch) -> Path:
    """The preview's sample sentence: a speech-like recording (the engine's own is fetched with
    the models; tests do not depend on it)."""
    path = tmp_path / "sample.flac"
    path.write_bytes(recording("flac", seconds=4.0))
    monkeypatch.setattr(processing, "sample_path", lambda: path)
    return path


@pytest.fixture
def no_sample_sentence(monkeypatch):
    from engine.errors import ModelMissing

    def missing():
        raise ModelMissing("the sample sentence is missing (python -m engine models fetch)")

    monkeypatch.setattr(processing, "sample_path", missing)


@pytest.fixture
def similarity(monkeypatch):
    """Sets what the speaker check measures: ``similarity(0.4)``; ``similarity(error)`` raises."""

    def set_value(value):
        def measure(original, masked):
            if isinstance(value, BaseException):
                raise value
            assert Path(original).exists() and Path(masked).exists()
            return value

        monkeypatch.setattr(processing, "voice_similarity", measure)

    return set_value


# --- rows --------------------------------------------------------------------------------------
def voice_seconds_used(user) -> int:
    return UsageCounter.objects.filter(user=user, metric="voice_seconds").values_list("used", flat=True).first() or 0


def finished_mask(user, avatar, *, status: str = JobStatus.SUCCEEDED, name: str = "talk.wav", report: dict | None = None) -> MaskJob:
    """A mask job as a worker leaves it (tiny WAV files in place of the real ones)."""
    now = timezone.now()
    job = MaskJob(
        user=user, avatar=avatar, avatar_name=avatar.name if avatar else "Gone",
        settings=voice_for(avatar).settings if avatar else {}, original_name=name, size_bytes=100,
        container="wav", codec="pcm_s16le", duration=1.0, sample_rate=8000, channels=1,
        status=status, progress=100 if status == JobStatus.SUCCEEDED else 0, attempts=1,
        queued_at=now, started_at=now, finished_at=now, submission=uuid.uuid4(),
        error="It broke." if status == JobStatus.FAILED else "",
    )
    job.source.save("original", ContentFile(tone_wav(1.0)), save=False)
    if status == JobStatus.SUCCEEDED:
        job.result.save("masked.mp3", ContentFile(recording("mp3", seconds=1.0)), save=False)
        job.report = report if report is not None else {"duration": 1.0, "voice_similarity": 0.42}
    job.save()
    return job
