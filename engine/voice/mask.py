"""Masking whole recordings: a file (audio, or a video's sound track) in, a masked file out.

* Constant memory: the input is decoded in chunks of ``CHUNK_SECONDS``; each chunk is converted
  with ``CONTEXT_SECONDS`` of its neighbours on both sides (so the vocoder's frames at the seams
  see real signal) and the seams are cross-faded. At most ``workers + 1`` chunks are in memory.
* Speed: chunks are converted on a thread pool (the vocoder releases the GIL), two at a time on a
  2-core machine.
* Speaker statistics (pitch level and range, long-term spectrum) come from the first
  ``STATS_SECONDS`` of speech, read in a first pass, so every chunk is normalised the same way.
* Timing: the output holds exactly as many samples as the input at the input's rate (lips stay in
  sync); stereo input comes out as stereo (the masked voice on both channels).
* Conversion runs at ``work_rate`` (16 kHz by default: speech band; higher input rates are
  resampled for the conversion and back for the output).
"""
from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from engine.errors import Cancelled
from engine.voice.audio import (
    MAX_SECONDS, OUTPUT_FORMATS, AudioWriter, PathLike, probe_audio, read_chunks, read_head,
)
from engine.voice.convert import SpeakerStats, convert, speaker_stats
from engine.voice.profile import VoiceProfile

CHUNK_SECONDS = 4.0
CONTEXT_SECONDS = 0.25
FADE_SECONDS = 0.02
STATS_SECONDS = 30.0
WORK_RATE = 16000

#: ``progress(percent, stage)``; raising :class:`~engine.errors.Cancelled` (or returning False)
#: stops the run.
ProgressFn = Callable[[float, str], object]


@dataclass(frozen=True)
class MaskResult:
    duration: float  # seconds
    sample_rate: int
    channels: int
    samples: int
    format: str
    seconds_taken: float

    @property
    def rtf(self) -> float:
        return self.seconds_taken / self.duration if self.duration else 0.0


def _work_rate(rate: int, work_rate: int) -> int:
    return rate if rate <= work_rate else work_rate


def _resampled(chunks: Iterator[np.ndarray], src_rate: int, dst_rate: int, counter: list[int]) -> Iterator[np.ndarray]:
    """Mono chunks at ``src_rate`` -> at ``dst_rate`` (stateful, so no seams); counts the input."""
    resampler = None if src_rate == dst_rate else av.AudioResampler(format="flt", layout="mono", rate=dst_rate)
    for chunk in chunks:
        counter[0] += len(chunk)
        if resampler is None:
            yield chunk[:, 0].astype(np.float64)
            continue
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(chunk.reshape(1, -1)), format="flt", layout="mono")
        frame.sample_rate = src_rate
        out = [f.to_ndarray()[0] for f in resampler.resample(frame)]
        if out:
            yield np.concatenate(out).astype(np.float64)
    if resampler is not None:
        out = [f.to_ndarray()[0] for f in resampler.resample(None)]
        if out:
            yield np.concatenate(out).astype(np.float64)


def _rechunk(chunks: Iterator[np.ndarray], size: int) -> Iterator[np.ndarray]:
    buffer = np.zeros(0)
    for chunk in chunks:
        buffer = np.concatenate([buffer, chunk])
        while len(buffer) >= size:
            yield buffer[:size]
            buffer = buffer[size:]
    if len(buffer):
        yield buffer


def mask_stream(
    chunks: Iterator[np.ndarray], rate: int, profile: VoiceProfile, stats: SpeakerStats | None, *,
    workers: int = 2, chunk_seconds: float = CHUNK_SECONDS,
) -> Iterator[np.ndarray]:
    """Masked mono float64 chunks for mono float64 chunks at ``rate``; the same total length."""
    size = max(1, int(chunk_seconds * rate))
    context = int(CONTEXT_SECONDS * rate)
    fade = int(FADE_SECONDS * rate)

    def job(left: np.ndarray, body: np.ndarray, right: np.ndarray) -> np.ndarray:
        y = convert(np.concatenate([left, body, right]), rate, profile, stats)
        # the body, plus up to ``fade`` samples past it to cross-fade into the next chunk
        return y[len(left): len(left) + len(body) + min(fade, len(right))]

    pending: deque[tuple[Future, int]] = deque()
    tail = np.zeros(0)  # the previous chunk's continuation past its body

    def finish(future: Future, extra: int) -> np.ndarray:
        nonlocal tail
        y = future.result()
        n = min(len(tail), len(y))
        if n:
            y = y.copy()
            ramp = np.linspace(0.0, 1.0, n + 2)[1:-1]
            y[:n] = tail[:n] * (1 - ramp) + y[:n] * ramp
        body_len = len(y) - extra
        tail = y[body_len:]
        return y[:body_len]

    with ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="voice") as pool:
        previous: np.ndarray | None = None
        current: np.ndarray | None = None
        for nxt in _with_end(_rechunk(chunks, size)):
            if current is not None:
                left = previous[-context:] if previous is not None else np.zeros(0)
                right = nxt[:context] if nxt is not None else np.zeros(0)
                pending.append((pool.submit(job, left, current, right), min(fade, len(right))))
            previous, current = current, nxt
            while len(pending) > workers:
                yield finish(*pending.popleft())
        while pending:
            yield finish(*pending.popleft())


def _with_end(chunks: Iterator[np.ndarray]) -> Iterator[np.ndarray | None]:
    yield from chunks
    yield None


def mask_array(samples: np.ndarray, rate: int, profile: VoiceProfile, *, workers: int = 2) -> np.ndarray:
    """Masked copy of ``samples`` (mono (n,) or (n, channels) floats at ``rate``), converted at
    the rate given (no resampling). Same shape; multi-channel input gets the masked mix on every
    channel."""
    data = np.asarray(samples, dtype=np.float64)
    mono = data if data.ndim == 1 else data.mean(axis=1)
    if not len(mono):
        return data.copy()
    stats = speaker_stats(mono[: int(STATS_SECONDS * rate)], rate)
    parts = list(mask_stream(iter([mono]), rate, profile, stats, workers=workers))
    y = np.concatenate(parts) if parts else np.zeros(0)
    y = _limit(y)
    if data.ndim == 1:
        return y
    return np.repeat(y[:, None], data.shape[1], axis=1)


def _limit(y: np.ndarray) -> np.ndarray:
    """Soft knee above 0.9 of full scale (the vocoder can overshoot on loud input); sample-wise,
    so chunks are limited alike."""
    over = np.abs(y) > 0.9
    if not over.any():
        return y
    y = y.copy()
    y[over] = np.sign(y[over]) * (0.9 + 0.1 * np.tanh((np.abs(y[over]) - 0.9) / 0.1))
    return y


def _report(progress: ProgressFn | None, percent: float, stage: str) -> None:
    if progress is not None and progress(percent, stage) is False:
        raise Cancelled("Processing was cancelled")


def mask_file(
    src: PathLike,
    dst: PathLike,
    profile: VoiceProfile,
    *,
    fmt: str | None = None,
    progress: ProgressFn | None = None,
    max_seconds: float = MAX_SECONDS,
    work_rate: int = WORK_RATE,
    workers: int | None = None,
) -> MaskResult:
    """Mask the first audio track of ``src`` (an audio file or a video) into ``dst``.

    ``fmt``: one of :data:`~engine.voice.audio.OUTPUT_FORMATS` (default: from ``dst``'s suffix,
    ``m4a`` meaning AAC). Raises the typed audio errors of :func:`probe_audio` and
    :func:`read_chunks`, and ``Cancelled``. Nothing is left at ``dst`` unless the run completes.
    """
    started = time.perf_counter()
    dst = Path(dst)
    if fmt is None:
        suffix = dst.suffix.lower().lstrip(".")
        fmt = {"m4a": "aac", "mp4": "aac"}.get(suffix, suffix)
    if fmt not in OUTPUT_FORMATS:
        raise ValueError(f"unknown audio format {fmt!r} (known: {', '.join(OUTPUT_FORMATS)})")
    workers = workers or min(2, os.cpu_count() or 1)
    info = probe_audio(src, max_seconds=max_seconds)
    rate = info.sample_rate
    conv_rate = _work_rate(rate, work_rate)
    expected = info.duration or 1.0

    _report(progress, 1, "Listening to the voice")
    head = read_head(src, STATS_SECONDS, rate=conv_rate, max_seconds=max_seconds)[:, 0].astype(np.float64)
    stats = speaker_stats(head, conv_rate)
    del head

    channels = 1 if info.channels == 1 else 2
    counter = [0]
    done = 0
    with AudioWriter(dst, fmt, rate, channels, input_rate=conv_rate) as writer:
        native = read_chunks(src, mono=True, chunk_seconds=CHUNK_SECONDS, max_seconds=max_seconds)
        for y in mask_stream(_resampled(native, rate, conv_rate, counter), conv_rate, profile, stats, workers=workers):
            writer.write(_limit(y).astype(np.float32))
            done += len(y)
            _report(progress, min(99.0, 2 + 97 * (done / conv_rate) / expected), "Masking the voice")
        writer.close(samples=counter[0])
    return MaskResult(
        duration=counter[0] / rate,
        sample_rate=rate,
        channels=channels,
        samples=counter[0],
        format=fmt,
        seconds_taken=time.perf_counter() - started,
    )
