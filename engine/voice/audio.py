"""Audio in and out with PyAV: any common audio file, or the sound track of a video, read as
float32 chunks at a chosen rate; WAV, FLAC, MP3 or AAC (M4A) written atomically.

* Reading streams: :func:`read_chunks` decodes and resamples as it goes and yields arrays of at
  most ``chunk_seconds``, so memory does not grow with the recording's length.
* Channels: mono stays mono; anything with two or more channels is read as stereo (FFmpeg's
  standard downmix for surround), or as the mean of left and right when mono is asked for.
* Damage: a file whose start cannot be decoded is :class:`~engine.errors.UnreadableAudio`; a file
  cut off part-way keeps what decoded (the way a player would play it).
"""
from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from engine.errors import AudioTooLong, EmptyAudio, NoAudioStream, UnreadableAudio
from engine.media._files import commit, discard, temp_path_for

PathLike = str | os.PathLike

#: Recordings longer than this are refused outright (callers pass their own, lower limits).
MAX_SECONDS = 4 * 3600.0

#: Output formats: name -> (container format, codec, file suffix, sample format).
OUTPUT_FORMATS: dict[str, tuple[str, str, str, str]] = {
    "wav": ("wav", "pcm_s16le", "wav", "s16"),
    "flac": ("flac", "flac", "flac", "s16"),
    "mp3": ("mp3", "libmp3lame", "mp3", "fltp"),
    "aac": ("ipod", "aac", "m4a", "fltp"),
}

#: Sample rates each encoder accepts (the closest one at or above the source is used).
_MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_AAC_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000, 64000, 88200, 96000)

NOT_AUDIO = (
    "This file is not audio SafeFace can read. Use WAV, FLAC, MP3, AAC/M4A, OGG, Opus or WebM, "
    "or a video with sound."
)
NO_AUDIO = "This file has no sound track."
EMPTY = "The recording is empty (zero seconds of sound)."
DAMAGED = "The audio in this file is damaged and cannot be decoded."


@dataclass(frozen=True)
class AudioInfo:
    duration: float  # seconds (0.0 when the container does not say)
    sample_rate: int
    channels: int
    codec: str
    container: str
    has_video: bool

    def as_dict(self) -> dict:
        return {
            "duration": round(self.duration, 3),
            "sample_rate": self.sample_rate,
            "channels": self.channels,
            "codec": self.codec,
            "container": self.container,
            "has_video": self.has_video,
        }


def too_long_message(limit: float) -> str:
    minutes = limit / 60
    amount = f"{minutes:g} minutes" if minutes >= 1 else f"{limit:g} seconds"
    return f"The recording is too long: at most {amount} can be processed at once."


def _open(path: PathLike):
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise UnreadableAudio(NOT_AUDIO) from exc
    if size == 0:
        raise EmptyAudio(EMPTY)
    try:
        return av.open(str(path), mode="r", metadata_errors="ignore")
    except Exception as exc:  # FFmpeg cannot even identify the container
        raise UnreadableAudio(NOT_AUDIO) from exc


def _stream_duration(container, stream) -> float:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return 0.0


def probe_audio(path: PathLike, *, max_seconds: float = MAX_SECONDS) -> AudioInfo:
    """What the file's first audio track holds. Raises the typed audio errors."""
    container = _open(path)
    try:
        if not container.streams.audio:
            raise NoAudioStream(NO_AUDIO)
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        if not ctx.sample_rate:
            raise UnreadableAudio(DAMAGED)
        duration = _stream_duration(container, stream)
        if duration > max_seconds:
            raise AudioTooLong(too_long_message(max_seconds))
        return AudioInfo(
            duration=max(duration, 0.0),
            sample_rate=int(ctx.sample_rate),
            channels=int(ctx.channels or 1),
            codec=ctx.name,
            container=container.format.name,
            has_video=bool(container.streams.video) and container.format.name not in ("mp3", "flac", "ogg"),
        )
    finally:
        container.close()


def read_chunks(
    path: PathLike,
    *,
    rate: int | None = None,
    mono: bool = False,
    chunk_seconds: float = 10.0,
    max_seconds: float = MAX_SECONDS,
) -> Iterator[np.ndarray]:
    """Yield float32 arrays of shape (n, channels), at ``rate`` (default: the file's own), of
    at most ``chunk_seconds`` each. Raises :class:`AudioTooLong` once more than ``max_seconds``
    have been decoded (whatever the container claimed) and :class:`EmptyAudio` when none were."""
    container = _open(path)
    try:
        if not container.streams.audio:
            raise NoAudioStream(NO_AUDIO)
        stream = container.streams.audio[0]
        ctx = stream.codec_context
        if not ctx.sample_rate:
            raise UnreadableAudio(DAMAGED)
        if _stream_duration(container, stream) > max_seconds:
            raise AudioTooLong(too_long_message(max_seconds))
        out_rate = int(rate or ctx.sample_rate)
        channels = 1 if (ctx.channels or 1) == 1 else 2
        resampler = av.AudioResampler(format="flt", layout="mono" if channels == 1 else "stereo", rate=out_rate)
        chunk_len = max(1, int(chunk_seconds * out_rate))
        limit = int(max_seconds * out_rate)
        pending: list[np.ndarray] = []
        pending_len = 0
        total = 0

        def frames() -> Iterator:
            decoded_any = False
            packets = container.demux(stream)
            while True:
                try:
                    packet = next(packets)
                except StopIteration:
                    break
                except av.FFmpegError as exc:
                    if not decoded_any:
                        raise UnreadableAudio(DAMAGED) from exc
                    break  # cut-off tail: keep what decoded
                try:
                    decoded = packet.decode()
                except av.FFmpegError as exc:
                    if not decoded_any:
                        raise UnreadableAudio(DAMAGED) from exc
                    continue  # one bad packet in the middle: skip it, as players do
                for frame in decoded:
                    decoded_any = True
                    frame.pts = None  # resample by sample count; gaps in timestamps are not ours to fill
                    yield from resampler.resample(frame)
            yield from resampler.resample(None)

        for frame in frames():
            data = frame.to_ndarray().reshape(-1, channels)
            if mono and channels == 2:
                data = data.mean(axis=1, keepdims=True)  # (FFmpeg's own downmix adds 3 dB)
            total += len(data)
            if total > limit:
                raise AudioTooLong(too_long_message(max_seconds))
            pending.append(data)
            pending_len += len(data)
            while pending_len >= chunk_len:
                joined = np.concatenate(pending)
                yield np.ascontiguousarray(joined[:chunk_len])
                rest = joined[chunk_len:]
                pending, pending_len = ([rest] if len(rest) else []), len(rest)
        if pending_len:
            yield np.ascontiguousarray(np.concatenate(pending))
        if total == 0:
            raise EmptyAudio(EMPTY)
    finally:
        container.close()


def read_head(path: PathLike, seconds: float, *, rate: int | None = None, mono: bool = True,
              max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """The first ``seconds`` of the track as one float32 (n, channels) array (at ``rate``, default
    the file's own); the rest of the file is not decoded."""
    chunks = read_chunks(path, rate=rate, mono=mono, chunk_seconds=seconds, max_seconds=max_seconds)
    try:
        return next(chunks)  # (read_chunks raises EmptyAudio when nothing decodes)
    finally:
        chunks.close()  # closes the file now


def read_audio(path: PathLike, *, rate: int | None = None, mono: bool = False,
               max_seconds: float = MAX_SECONDS) -> tuple[np.ndarray, int]:
    """The whole track as one float32 (n, channels) array, and its rate (for short clips)."""
    if rate is None:
        rate = probe_audio(path, max_seconds=max_seconds).sample_rate
    chunks = list(read_chunks(path, rate=rate, mono=mono, chunk_seconds=60.0, max_seconds=max_seconds))
    return np.concatenate(chunks), int(rate)


def _encoder_rate(codec: str, rate: int) -> int:
    allowed = _MP3_RATES if codec == "libmp3lame" else _AAC_RATES if codec == "aac" else None
    if allowed is None or rate in allowed:
        return rate
    above = [r for r in allowed if r >= rate]
    return above[0] if above else allowed[-1]


class AudioWriter:
    """Writes float32 (n, channels) chunks to ``dst`` in ``fmt`` at ``rate``; the file appears at
    ``dst`` only when :meth:`close` succeeds (use as a context manager: an exception discards it).

    ``input_rate``: the rate of the chunks given to :meth:`write` when it is not ``rate`` (they are
    resampled). ``close(samples=n)`` pads or trims the end so the file holds exactly ``n`` samples
    at ``rate`` (resampling rounds; a masked recording must keep the original's exact length)."""

    def __init__(self, dst: PathLike, fmt: str, rate: int, channels: int, *, input_rate: int | None = None) -> None:
        if fmt not in OUTPUT_FORMATS:
            raise ValueError(f"unknown audio format {fmt!r} (known: {', '.join(OUTPUT_FORMATS)})")
        container_format, codec, suffix, sample_format = OUTPUT_FORMATS[fmt]
        self.dst = Path(dst)
        self.dst.parent.mkdir(parents=True, exist_ok=True)
        self.channels = 1 if channels == 1 else 2
        self.rate = int(rate)
        self.input_rate = int(input_rate or rate)
        self.tmp = temp_path_for(self.dst, f".{suffix}")
        self.out = av.open(str(self.tmp), mode="w", format=container_format)
        layout = "mono" if self.channels == 1 else "stereo"
        enc_rate = _encoder_rate(codec, self.rate)
        self.stream = self.out.add_stream(codec, rate=enc_rate, layout=layout)
        if codec in ("aac", "libmp3lame"):
            self.stream.bit_rate = 96_000 if self.channels == 1 else 160_000
        self.layout = layout
        # Two stages: to the output rate (held back, so the end can be padded or trimmed), then to
        # the encoder's sample format, rate and frame size.
        self.to_rate = av.AudioResampler(format="flt", layout=layout, rate=self.rate)
        self.resampler = av.AudioResampler(format=sample_format, layout=layout, rate=enc_rate,
                                           frame_size=1152 if codec == "libmp3lame" else 1024 if codec == "aac" else None)
        self.held = np.zeros((0, self.channels), dtype=np.float32)
        self.samples = 0  # at ``rate``, handed to the encoder so far
        self._closed = False

    def write(self, samples: np.ndarray) -> None:
        data = np.asarray(samples, dtype=np.float32)
        if data.ndim == 1:
            data = data[:, None]
        if data.shape[1] != self.channels:
            data = np.repeat(data[:, :1], self.channels, axis=1) if data.shape[1] == 1 else data[:, : self.channels]
        if not len(data):
            return
        data = np.clip(data, -1.0, 1.0)
        frame = self._frame(data, self.input_rate)
        if self.input_rate == self.rate:
            self._hold([data])
        else:
            self._hold([f.to_ndarray().reshape(-1, self.channels) for f in self.to_rate.resample(frame)])

    def _frame(self, data: np.ndarray, rate: int):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data.reshape(1, -1)), format="flt", layout=self.layout)
        frame.sample_rate = rate
        frame.pts = None
        return frame

    def _hold(self, parts: list[np.ndarray], keep: int | None = None) -> None:
        """Append to the held samples and encode all but the last ``keep`` (a second by default)."""
        self.held = np.concatenate([self.held, *parts]) if parts else self.held
        keep = self.rate if keep is None else keep
        if len(self.held) > keep:
            out, self.held = self.held[: len(self.held) - keep], self.held[len(self.held) - keep:]
            self.samples += len(out)
            self._encode(self.resampler.resample(self._frame(out, self.rate)))

    def _encode(self, frames) -> None:
        for frame in frames:
            frame.pts = None
            for packet in self.stream.encode(frame):
                self.out.mux(packet)

    def close(self, samples: int | None = None) -> Path:
        if self._closed:
            return self.dst
        self._closed = True
        try:
            if self.input_rate != self.rate:
                self._hold([f.to_ndarray().reshape(-1, self.channels) for f in self.to_rate.resample(None)])
            if samples is not None:
                missing = samples - self.samples - len(self.held)
                if missing > 0:
                    self.held = np.concatenate([self.held, np.zeros((missing, self.channels), np.float32)])
                elif missing < 0:
                    self.held = self.held[: max(0, len(self.held) + missing)]
            self._hold([], keep=0)
            self._encode(self.resampler.resample(None))
            for packet in self.stream.encode(None):
                self.out.mux(packet)
            self.out.close()
            commit(self.tmp, self.dst)
        except BaseException:
            self.abort()
            raise
        return self.dst

    def abort(self) -> None:
        self._closed = True
        try:
            self.out.close()
        except Exception:
            pass
        discard(self.tmp)

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_audio(dst: PathLike, samples: np.ndarray, rate: int, fmt: str = "wav") -> Path:
    data = np.asarray(samples, dtype=np.float32)
    with AudioWriter(dst, fmt, rate, 1 if data.ndim == 1 else data.shape[1]) as writer:
        writer.write(data)
    return Path(dst)
