"""Speaker embeddings (Resemblyzer's d-vectors, Apache-2.0, weights shipped in its package) to
tell how far a masked voice is from the original: the cosine of the two embeddings. Same
speaker is typically above 0.85, different speakers below 0.75.

Resemblyzer (torch, librosa) is imported on first use: the rest of the voice engine does not
need it.
"""
from __future__ import annotations

import threading

import numpy as np

from engine.voice.audio import PathLike, read_head

RATE = 16000
_encoder = None
_lock = threading.Lock()


def _get_encoder():
    global _encoder
    with _lock:
        if _encoder is None:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from resemblyzer import VoiceEncoder

            _encoder = VoiceEncoder(device="cpu", verbose=False)
        return _encoder


def speaker_embedding(samples: np.ndarray, rate: int = RATE) -> np.ndarray:
    """The unit-length 256-d embedding of mono ``samples`` (float, at ``rate``; resampled to 16 kHz
    by Resemblyzer when needed). Silence is trimmed first; raises ``ValueError`` if nothing is left."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # resemblyzer imports a deprecated scipy namespace
        from resemblyzer import preprocess_wav

    wav = preprocess_wav(np.asarray(samples, dtype=np.float32), source_sr=rate)
    if len(wav) < RATE // 2:
        raise ValueError("too little speech to recognise a voice")
    encoder = _get_encoder()
    with _lock:  # the torch module is not re-entrant across threads
        return encoder.embed_utterance(wav)


def voice_similarity(path_a: PathLike, path_b: PathLike, *, seconds: float = 60.0) -> float:
    """Cosine similarity (about 0..1) of the voices in the first ``seconds`` of two recordings."""
    a = speaker_embedding(read_head(path_a, seconds, rate=RATE)[:, 0])
    b = speaker_embedding(read_head(path_b, seconds, rate=RATE)[:, 0])
    return float(np.clip(np.dot(a, b), -1.0, 1.0))
