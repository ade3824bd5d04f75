"""Voice conversion to a persona's pseudo-speaker, on mono float arrays. Length is kept exactly.

``persona`` (the default) works on the WORLD vocoder's parameters (pyworld: DIO + StoneMask F0,
CheapTrick spectral envelope, D4C aperiodicity) and replaces, rather than shifts, what identifies
a speaker:

* pitch: log-F0 is standardised with the speaker's own mean and spread, then given the persona's
  (so every speaker comes out at the persona's pitch and intonation range, and the contour's shape,
  which carries the words' stress, stays);
* vocal tract: the envelope is warped in frequency by the persona's vocal-tract ratio divided by
  an estimate of the speaker's (from their pitch), so a deep and a high voice land in the same
  place, then by the persona's own non-linear warp curve (drawn from its seed);
* timbre: the speaker's long-term average spectrum is divided out and the persona's (drawn from its
  seed) put in, so the recording channel and the speaker's voice quality go with it;
* formant pattern: its contrast is compressed (x0.7 around each frame's mean) and the McAdams
  transform on the envelope's all-pole model (pole angles raised to the persona's coefficient)
  reshapes it non-linearly;
* breathiness: the speaker's aperiodicity is replaced by a fixed voiced-speech template (which
  also saves the vocoder's slowest analysis).

``mcadams`` is the VoicePrivacy Challenge's signal-processing baseline on LPC frames: the pole
angles of each 20 ms frame raised to ``alpha``, the residual kept. It is lighter and keeps more of
the voice.
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass

import numpy as np

from engine.voice.profile import VoiceProfile

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # pyworld imports pkg_resources, which warns on import
    import pyworld

FRAME_MS = 10.0
F0_FLOOR = 60.0
F0_CEIL = 500.0
_CONTRAST = 0.7  # formant contrast kept (1: all of it)
_ENVELOPE_ORDER = 16  # all-pole order of the envelope model McAdams works on
_NEUTRAL_F0 = 150.0  # Hz: a vocal-tract ratio of 1 at this pitch
_VTL_EXPONENT = 0.3  # vocal-tract ratio ~ (pitch ratio) ** 0.3 across speakers


@dataclass(frozen=True)
class SpeakerStats:
    """What the conversion normalises away: the speaker's pitch level and range, and the long-term
    average log-spectrum (as low-order cepstral coefficients, so it is smooth)."""

    logf0_mean: float
    logf0_std: float
    mean_cepstrum: np.ndarray

    @property
    def median_f0(self) -> float:
        return float(np.exp(self.logf0_mean))


_CEPSTRAL_ORDER = 24


def _analyse(x: np.ndarray, sr: int, aperiodicity: bool = True):
    x = np.ascontiguousarray(x, dtype=np.float64)
    f0, t = pyworld.dio(x, sr, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_MS)
    f0 = pyworld.stonemask(x, f0, t, sr)
    sp = pyworld.cheaptrick(x, f0, t, sr, f0_floor=F0_FLOOR)
    ap = pyworld.d4c(x, f0, t, sr) if aperiodicity else None
    return f0, sp, ap


# The statistics pass reads up to 30 s before any audio is converted, so it is on the critical path
# of every file (it was a quarter of the whole run's time). Its figures are averages, which need
# neither DIO's full-rate search nor an envelope for every frame: DIO on a signal downsampled by
# this factor (its ``speed`` option) and CheapTrick on every ``_STATS_STRIDE``-th frame change the
# median pitch by well under a semitone and cost a quarter as much.
_STATS_DIO_SPEED = 4
_STATS_STRIDE = 3


def _aperiodicity_template(bins: int) -> np.ndarray:
    """Aperiodicity of clear voiced speech: -35 dB at 0 Hz rising to -3 dB at Nyquist."""
    position = np.linspace(0.0, 1.0, bins)
    return 10 ** ((-35.0 + 32.0 * position ** 1.3) / 20.0)


def _log_cepstrum(log_env: np.ndarray, order: int) -> np.ndarray:
    """Low-order real cepstrum of a log-envelope (bins 0..N/2)."""
    c = np.fft.irfft(log_env, axis=-1)
    return c[..., :order]


def _from_cepstrum(c: np.ndarray, bins: int) -> np.ndarray:
    n = 2 * (bins - 1)
    full = np.zeros(c.shape[:-1] + (n,))
    full[..., : c.shape[-1]] = c
    full[..., n - c.shape[-1] + 1:] = c[..., 1:][..., ::-1]
    return np.fft.rfft(full, axis=-1).real


def stats_from_analysis(f0: np.ndarray, sp: np.ndarray) -> SpeakerStats | None:
    voiced = f0 > 0
    if voiced.sum() < 10:
        return None
    lf = np.log(f0[voiced])
    energy = sp.sum(axis=1)
    loud = voiced & (energy > np.percentile(energy[voiced], 20))
    log_env = np.log(np.maximum(sp[loud] if loud.any() else sp[voiced], 1e-16))
    return SpeakerStats(
        logf0_mean=float(np.median(lf)),
        logf0_std=float(max(np.std(lf), 0.05)),
        mean_cepstrum=_log_cepstrum(log_env.mean(axis=0), _CEPSTRAL_ORDER),
    )


def speaker_stats(x: np.ndarray, sr: int) -> SpeakerStats | None:
    """Statistics of the voice in ``x`` (None when it holds too little voiced speech); a cheaper
    analysis than the conversion's (see ``_STATS_DIO_SPEED``)."""
    x = np.ascontiguousarray(x, dtype=np.float64)
    if not len(x):
        return None
    f0, t = pyworld.dio(x, sr, f0_floor=F0_FLOOR, f0_ceil=F0_CEIL, frame_period=FRAME_MS, speed=_STATS_DIO_SPEED)
    f0 = pyworld.stonemask(x, f0, t, sr)
    f0, t = np.ascontiguousarray(f0[::_STATS_STRIDE]), np.ascontiguousarray(t[::_STATS_STRIDE])
    sp = pyworld.cheaptrick(x, f0, t, sr, f0_floor=F0_FLOOR)
    return stats_from_analysis(f0, sp)


# ------------------------------------------------------------------------------ the persona


@dataclass(frozen=True)
class _PersonaShape:
    warp_points: np.ndarray  # (k,) source-independent anchor frequencies, Hz
    warp_ratios: np.ndarray  # (k,) extra warp at those anchors
    tilt_cepstrum: np.ndarray  # persona's long-term spectrum (cepstral, order _CEPSTRAL_ORDER)


def _persona_shape(profile: VoiceProfile, sr: int) -> _PersonaShape:
    rng = np.random.default_rng([profile.seed & 0xFFFFFFFFFFFF, 0x5BEC])
    points = np.array([0.0, 400.0, 1000.0, 1800.0, 2800.0, 4000.0, sr / 2])
    ratios = np.concatenate([[1.0], 1.0 + rng.uniform(-0.1, 0.1, len(points) - 2), [1.0]])
    tilt = np.zeros(_CEPSTRAL_ORDER)
    # A generic speech long-term spectrum: falling ~ 9 dB per octave above ~500 Hz, plus the
    # persona's own smooth colouring.
    freqs = np.linspace(0, sr / 2, 257)
    generic = -np.log1p((freqs / 500.0) ** 2) * 1.55
    generic += rng.normal(0, 1.0) * np.cos(np.pi * freqs / (sr / 2)) * 0.35
    tilt = _log_cepstrum(generic, _CEPSTRAL_ORDER)
    tilt[1:] += rng.normal(0, 0.12, _CEPSTRAL_ORDER - 1) / np.arange(1, _CEPSTRAL_ORDER)
    return _PersonaShape(points, ratios, tilt)


def _warp_map(bins: int, sr: int, ratio: float, shape: _PersonaShape) -> np.ndarray:
    """For each output bin, the (fractional) source bin: the envelope is moved up by ``ratio``
    (times the persona's non-linear curve)."""
    freqs = np.linspace(0, sr / 2, bins)
    curve = np.interp(freqs, shape.warp_points, shape.warp_ratios)
    src = freqs / (ratio * curve)
    return np.clip(src / (sr / 2) * (bins - 1), 0, bins - 1)


def _apply_warp(values: np.ndarray, src_bins: np.ndarray) -> np.ndarray:
    lo = np.floor(src_bins).astype(int)
    hi = np.minimum(lo + 1, values.shape[1] - 1)
    frac = src_bins - lo
    return values[:, lo] * (1 - frac) + values[:, hi] * frac


def _mcadams_envelope(log_env: np.ndarray, alpha: float, order: int) -> np.ndarray:
    """McAdams on each frame's all-pole fit of the envelope: pole angles phi -> phi ** alpha.
    Returns the log-envelope change to add (smooth: the fit's own error is not added).
    Vectorised over frames: batched Levinson, companion-matrix eigenvalues, batched products."""
    if alpha >= 0.999 or not len(log_env):
        return np.zeros_like(log_env)
    bins = log_env.shape[1]
    autocorr = np.exp(log_env) @ _autocorr_basis(bins, order)
    a = _levinson_batch(autocorr, order)  # (frames, order+1), a[:, 0] == 1
    b = _moved_poles(a, alpha)
    w = np.linspace(0, np.pi, bins)
    basis = np.exp(-1j * np.outer(np.arange(order + 1), w))
    old = -2 * np.log(np.abs(a @ basis) + 1e-12)
    new = -2 * np.log(np.abs(b @ basis) + 1e-12)
    return new - old


@functools.lru_cache(maxsize=8)
def _autocorr_basis(bins: int, order: int) -> np.ndarray:
    """(bins, order+1) matrix taking a power spectrum (bins 0..N/2) to its first autocorrelation
    lags: the first columns of ``irfft``, as one small matrix product instead of a full inverse
    FFT per frame."""
    n = 2 * (bins - 1)
    weights = np.full(bins, 2.0 / n)
    weights[[0, -1]] = 1.0 / n
    lags = np.arange(order + 1)
    basis = np.cos(2 * np.pi * np.outer(np.arange(bins), lags) / n) * weights[:, None]
    basis.setflags(write=False)
    return basis


def _levinson_batch(r: np.ndarray, order: int) -> np.ndarray:
    """Levinson-Durbin over rows of autocorrelations (unstable rows give the identity filter)."""
    frames = len(r)
    a = np.zeros((frames, order + 1))
    a[:, 0] = 1.0
    err = np.maximum(r[:, 0] * (1 + 1e-9), 1e-20)
    ok = r[:, 0] > 0
    for i in range(1, order + 1):
        acc = r[:, i] + np.einsum("fj,fj->f", a[:, 1:i], r[:, i - 1:0:-1])
        k = np.where(ok, -acc / err, 0.0)
        a[:, 1:i] = a[:, 1:i] + k[:, None] * a[:, i - 1:0:-1]
        a[:, i] = k
        err = err * (1 - k * k)
        bad = err <= 0
        if bad.any():
            ok &= ~bad
            err = np.where(bad, 1.0, err)
    a[~ok, 1:] = 0.0
    return a


def persona_convert(x: np.ndarray, sr: int, profile: VoiceProfile, stats: SpeakerStats | None = None) -> np.ndarray:
    """``x`` (mono float) spoken by the persona; same length. ``stats``: the speaker's, from the
    whole recording (computed from ``x`` when not given)."""
    n = len(x)
    f0, sp, _ = _analyse(x, sr, aperiodicity=False)
    if stats is None:
        stats = stats_from_analysis(f0, sp)
    bins = sp.shape[1]
    voiced = f0 > 0
    f0 = _mapped_f0(f0, profile, stats)
    speaker_ratio = (stats.median_f0 / _NEUTRAL_F0) ** _VTL_EXPONENT if stats is not None else 1.0
    shape = _persona_shape(profile, sr)
    ratio = profile.formant / speaker_ratio
    log_sp = np.log(np.maximum(sp, 1e-16))
    if stats is not None:
        log_sp = log_sp - _from_cepstrum(stats.mean_cepstrum, bins)
    log_sp = _apply_warp(log_sp, _warp_map(bins, sr, ratio, shape))
    # Formant contrast is compressed around each frame's mean: vowels stay distinct, but less of
    # the speaker's own resonance pattern survives the warp.
    frame_mean = log_sp.mean(axis=1, keepdims=True)
    log_sp = frame_mean + _CONTRAST * (log_sp - frame_mean)
    log_sp = log_sp + _from_cepstrum(shape.tilt_cepstrum, bins)
    if profile.alpha < 0.999:
        log_sp = log_sp + _mcadams_envelope(log_sp, profile.alpha, order=_ENVELOPE_ORDER)
    # Breathiness (aperiodicity) is the persona's too: a fixed voiced-speech template.
    ap = np.where(voiced[:, None], _aperiodicity_template(bins)[None, :], 1.0)
    # Keep each frame's energy: the level contour is the speaker's delivery, not their timbre,
    # and the removed long-term spectrum must not change the overall level.
    sp_new = np.exp(log_sp)
    sp_new *= (sp.sum(axis=1) / np.maximum(sp_new.sum(axis=1), 1e-30))[:, None]
    y = pyworld.synthesize(f0, np.ascontiguousarray(sp_new), np.ascontiguousarray(ap), sr, FRAME_MS)
    return _fit_length(y, n)


def _fit_length(y: np.ndarray, n: int) -> np.ndarray:
    if len(y) >= n:
        return y[:n]
    return np.pad(y, (0, n - len(y)))


# ------------------------------------------------------------------------------ McAdams


def mcadams_convert(x: np.ndarray, sr: int, alpha: float) -> np.ndarray:
    """The VoicePrivacy McAdams baseline: 20 ms Hann frames at 50 % overlap, LPC order
    ``4 + sr/1000`` (at most 24), pole angles raised to ``alpha``, residual re-filtered."""
    from scipy.signal import lfilter

    x = np.asarray(x, dtype=np.float64)
    n = len(x)
    if not n:
        return x.copy()
    win_len = max(4, int(round(0.02 * sr)) // 2 * 2)
    hop = win_len // 2
    order = min(24, 4 + sr // 1000)
    window = np.hanning(win_len + 1)[:-1]
    # half a window of padding on each side, so every sample is covered by two windows
    frames = int(np.ceil((n + hop) / hop))
    padded = np.pad(x, (hop, (frames - 1) * hop + win_len - n - hop))
    index = np.arange(win_len)[None, :] + hop * np.arange(frames)[:, None]
    segs = padded[index] * window
    spectrum = np.fft.rfft(segs, 2 * win_len, axis=1)
    autocorr = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)[:, : order + 1]
    a = _levinson_batch(autocorr, order)
    b = _moved_poles(a, alpha)
    out = np.zeros_like(padded)
    for i in range(frames):
        if not autocorr[i, 0] > 0:
            continue
        residual = lfilter(a[i], [1.0], segs[i])
        out[i * hop: i * hop + win_len] += lfilter([1.0], b[i], residual)
    y = out[hop: hop + n]
    peak = np.max(np.abs(y))
    return y * (0.98 / peak) if peak > 1.0 else y


def _moved_poles(a: np.ndarray, alpha: float) -> np.ndarray:
    """Rows of all-pole filters ``a`` with their complex pole angles phi -> phi ** alpha."""
    order = a.shape[1] - 1
    companion = np.zeros((len(a), order, order))
    companion[:, 0, :] = -a[:, 1:]
    companion[:, np.arange(1, order), np.arange(order - 1)] = 1.0
    poles = np.linalg.eigvals(companion)
    angles = np.angle(poles)
    moved = np.where(np.abs(poles.imag) > 1e-8, np.sign(angles) * np.abs(angles) ** alpha, angles)
    new_poles = np.abs(poles) * np.exp(1j * moved)
    b = np.zeros((len(a), order + 1), dtype=complex)
    b[:, 0] = 1.0
    for k in range(order):  # multiply out prod (1 - p_k z^-1)
        b[:, 1: k + 2] = b[:, 1: k + 2] - new_poles[:, k: k + 1] * b[:, : k + 1]
    return b.real


def _mapped_f0(f0: np.ndarray, profile: VoiceProfile, stats: SpeakerStats | None) -> np.ndarray:
    """Log-F0 standardised with the speaker's statistics and given the persona's."""
    voiced = f0 > 0
    if stats is None or not voiced.any():
        return f0
    z = np.clip((np.log(f0[voiced]) - stats.logf0_mean) / stats.logf0_std, -3.5, 3.5)
    out = f0.copy()
    out[voiced] = np.exp(np.log(profile.pitch_hz) + z * 0.16 * profile.intonation)
    return out


def pitch_only(x: np.ndarray, sr: int, profile: VoiceProfile, stats: SpeakerStats | None = None) -> np.ndarray:
    """``x`` with the persona's pitch and intonation, timbre untouched (for neural backends)."""
    f0, sp, ap = _analyse(x, sr)
    if stats is None:
        stats = stats_from_analysis(f0, sp)
    y = pyworld.synthesize(_mapped_f0(f0, profile, stats), sp, ap, sr, FRAME_MS)
    return _fit_length(y, len(x))


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    if src == dst:
        return np.asarray(x, dtype=np.float64)
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(src), int(dst))
    return resample_poly(np.asarray(x, dtype=np.float64), dst // g, src // g)


def convert(x: np.ndarray, sr: int, profile: VoiceProfile, stats: SpeakerStats | None = None) -> np.ndarray:
    """``x`` in the profile's voice (same length): its method, or the configured neural model
    (:func:`engine.voice.backends.active_converter`) for the persona method."""
    if profile.method == "mcadams":
        return mcadams_convert(x, sr, profile.alpha)
    from engine.voice.backends import active_converter

    backend = active_converter()
    if backend is not None:
        return backend.convert(x, sr, profile, stats)
    return persona_convert(x, sr, profile, stats)
