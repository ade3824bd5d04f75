"""engine.voice: reading and writing audio, persona profiles, conversion, whole-file masking,
speaker embeddings and the neural backend's loading path (with a tiny ONNX model)."""
from __future__ import annotations

import io
import threading
import wave

import av
import numpy as np
import pytest

from engine.errors import AudioTooLong, Cancelled, EmptyAudio, EngineError, NoAudioStream, UnreadableAudio
from engine.voice import (
    OUTPUT_FORMATS, PARAMETERS, VoiceProfile, mask_array, mask_file, probe_audio, read_audio, write_audio,
)
from engine.voice import convert as conv
from engine.voice.mask import mask_stream

SR = 16000


def voiced(seconds: float = 2.0, f0: float = 120.0, sr: int = SR, amplitude: float = 0.3) -> np.ndarray:
    """A vowel-like test signal: a glottal-ish pulse train at ``f0`` (with slow vibrato) through
    two formant resonators, with pauses, so the vocoder finds voiced and unvoiced frames."""
    from scipy.signal import lfilter

    t = np.arange(int(seconds * sr)) / sr
    phase = 2 * np.pi * np.cumsum(f0 * (1 + 0.05 * np.sin(2 * np.pi * 3 * t))) / sr
    source = np.sign(np.sin(phase)) * (np.sin(phase) ** 2)
    y = source
    for formant, bandwidth in ((700, 90), (1200, 110), (2600, 160)):
        r = np.exp(-np.pi * bandwidth / sr)
        theta = 2 * np.pi * formant / sr
        y = lfilter([1 - r], [1, -2 * r * np.cos(theta), r * r], y)
    envelope = (np.sin(2 * np.pi * 0.7 * t) > -0.6).astype(float)
    y = y * envelope
    return amplitude * y / (np.max(np.abs(y)) + 1e-9)


def median_f0(y: np.ndarray, sr: int = SR) -> float:
    import pyworld

    f0, t = pyworld.dio(np.ascontiguousarray(y, dtype=np.float64), sr, frame_period=10)
    f0 = pyworld.stonemask(np.ascontiguousarray(y, dtype=np.float64), f0, t, sr)
    return float(np.median(f0[f0 > 0]))


# ------------------------------------------------------------------------------ profiles


def test_profile_is_stable_per_seed_and_typical_of_gender():
    a = VoiceProfile.from_seed(42, "feminine")
    assert a == VoiceProfile.from_seed(42, "feminine")
    assert a != VoiceProfile.from_seed(43, "feminine")
    feminine = [VoiceProfile.from_seed(s, "feminine").pitch_hz for s in range(40)]
    masculine = [VoiceProfile.from_seed(s, "masculine").pitch_hz for s in range(40)]
    assert min(feminine) > max(masculine) - 20
    assert 170 < np.mean(feminine) < 240 and 95 < np.mean(masculine) < 130
    assert VoiceProfile.from_seed(42, "feminine", "senior").pitch_hz < a.pitch_hz
    for profile in (a, VoiceProfile.from_seed(7)):
        for name, spec in PARAMETERS.items():
            assert spec.minimum <= getattr(profile, name) <= spec.maximum


def test_profile_round_trip_and_validation():
    profile = VoiceProfile.from_seed(5, "masculine")
    assert VoiceProfile.from_dict(profile.to_dict()) == profile
    assert VoiceProfile.from_dict({**profile.to_dict(), "pitch_hz": "150"}).pitch_hz == 150.0
    assert profile.randomised(6).seed == 6 and profile.randomised(6) != profile
    with pytest.raises(ValueError, match="Pitch must be between"):
        VoiceProfile.from_dict({"pitch_hz": 1000})
    with pytest.raises(ValueError, match="Pitch must be a number"):
        VoiceProfile.from_dict({"pitch_hz": "loud"})
    with pytest.raises(ValueError, match="unknown voice setting"):
        VoiceProfile.from_dict({"volume": 3})
    with pytest.raises(ValueError, match="unknown voice method"):
        VoiceProfile.from_dict({"method": "magic"})
    with pytest.raises(ValueError, match="must be a number"):
        VoiceProfile.from_dict({"formant": float("nan")})
    assert "Hz" in profile.describe()


# ------------------------------------------------------------------------------ conversion


@pytest.mark.parametrize("target", [95.0, 230.0])
def test_persona_conversion_moves_pitch_to_the_persona_and_keeps_length(target):
    x = voiced(3.0, f0=150.0)
    profile = VoiceProfile(pitch_hz=target, seed=3)
    y = conv.persona_convert(x, SR, profile)
    assert len(y) == len(x)
    assert np.all(np.isfinite(y))
    assert abs(np.log(median_f0(y) / target)) < 0.1
    # deterministic: the same persona gives the same voice
    assert np.array_equal(y, conv.persona_convert(x, SR, profile))


def test_persona_conversion_removes_the_speakers_pitch_level():
    """Two 'speakers' an octave apart come out at the same persona pitch."""
    profile = VoiceProfile(pitch_hz=160.0, seed=9)
    low = conv.persona_convert(voiced(3.0, f0=100.0), SR, profile)
    high = conv.persona_convert(voiced(3.0, f0=220.0), SR, profile)
    assert abs(np.log(median_f0(low) / median_f0(high))) < 0.08


def test_speaker_statistics_pass_matches_the_full_analysis():
    """The statistics pass is a cheaper analysis (DIO at reduced rate, envelope on a subset of
    frames); its averages must agree with the conversion's own full-rate analysis."""
    x = voiced(4.0, f0=140.0)
    fast = conv.speaker_stats(x, SR)
    f0, sp, _ = conv._analyse(x, SR, aperiodicity=False)
    full = conv.stats_from_analysis(f0, sp)
    assert abs(np.log(fast.median_f0 / full.median_f0)) < 0.03
    assert abs(np.log(fast.median_f0 / 140.0)) < 0.08
    assert abs(fast.logf0_std - full.logf0_std) < 0.03
    assert np.max(np.abs(fast.mean_cepstrum - full.mean_cepstrum)) < 0.15
    assert conv.speaker_stats(np.zeros(0), SR) is None
    assert conv.speaker_stats(np.zeros(SR), SR) is None


def test_envelope_autocorrelation_matches_the_inverse_fft():
    rng = np.random.default_rng(1)
    power = np.exp(rng.normal(0, 2, (7, 513)))
    lags = power @ conv._autocorr_basis(513, 16)
    assert np.allclose(lags, np.fft.irfft(power, axis=1)[:, :17], rtol=1e-9, atol=1e-12 * power.max())


def test_mcadams_changes_the_spectrum_but_not_the_length_or_pitch():
    x = voiced(2.0, f0=130.0)
    y = conv.mcadams_convert(x, SR, 0.8)
    assert len(y) == len(x) and np.all(np.isfinite(y))
    assert abs(np.log(median_f0(y) / 130.0)) < 0.08
    spectrum = lambda s: np.abs(np.fft.rfft(s))  # noqa: E731
    assert np.corrcoef(spectrum(x), spectrum(y))[0, 1] < 0.95
    assert np.allclose(conv.mcadams_convert(x, SR, 1.0), x, atol=0.05)


@pytest.mark.parametrize("signal", ["silence", "clipped", "noise", "tiny"])
def test_conversion_survives_awkward_signals(signal):
    rng = np.random.default_rng(0)
    x = {
        "silence": np.zeros(SR),
        "clipped": np.clip(voiced(1.5, amplitude=4.0), -1, 1),
        "noise": rng.normal(0, 0.2, SR),
        "tiny": voiced(0.05),
    }[signal]
    for profile in (VoiceProfile(seed=1), VoiceProfile(method="mcadams", alpha=0.7)):
        y = mask_array(x, SR, profile)
        assert y.shape == x.shape
        assert np.all(np.isfinite(y)) and np.max(np.abs(y)) <= 1.0
        if signal == "silence":
            assert np.max(np.abs(y)) < 1e-3


def test_mask_array_keeps_channels():
    x = voiced(1.0)
    stereo = np.stack([x, 0.5 * x], axis=1)
    y = mask_array(stereo, SR, VoiceProfile(seed=2))
    assert y.shape == stereo.shape
    assert np.allclose(y[:, 0], y[:, 1])


def test_stream_is_lazy_and_exact_in_length():
    """Chunks are pulled only as the pool needs them (constant memory) and the output holds
    exactly the input's samples."""
    pulled = []

    def source():
        for i in range(12):
            pulled.append(i)
            yield voiced(1.0, f0=110 + i)

    stream = mask_stream(source(), SR, VoiceProfile(seed=4), None, workers=2, chunk_seconds=1.0)
    first = next(stream)
    assert len(first) == SR
    assert len(pulled) <= 5
    rest = list(stream)
    assert sum(map(len, rest)) + len(first) == 12 * SR


# ------------------------------------------------------------------------------ files


def _wav_bytes(samples: np.ndarray, sr: int, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(2)
        handle.setframerate(sr)
        handle.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


@pytest.mark.parametrize("rate,channels", [(8000, 1), (16000, 1), (22050, 2), (44100, 2), (48000, 1)])
def test_mask_file_keeps_exact_length_rate_and_channels(tmp_path, rate, channels):
    x = voiced(2.3, sr=rate)
    data = np.stack([x] * channels, axis=1).reshape(-1) if channels == 2 else x
    src = tmp_path / "in.wav"
    src.write_bytes(_wav_bytes(data, rate, channels))
    for fmt in ("wav", "flac"):
        dst = tmp_path / f"out.{OUTPUT_FORMATS[fmt][2]}"
        result = mask_file(src, dst, VoiceProfile.from_seed(1, "feminine"))
        y, out_rate = read_audio(dst)
        assert (out_rate, y.shape) == (rate, (len(x), channels))
        assert result.samples == len(x) and result.sample_rate == rate and result.format == fmt


@pytest.mark.parametrize("fmt", ["mp3", "aac"])
def test_mask_file_writes_compressed_formats(tmp_path, fmt):
    src = tmp_path / "in.wav"
    src.write_bytes(_wav_bytes(voiced(2.0), SR))
    dst = tmp_path / f"out.{OUTPUT_FORMATS[fmt][2]}"
    mask_file(src, dst, VoiceProfile(seed=3))
    info = probe_audio(dst)
    assert info.codec in ("mp3", "mp3float", "aac")
    y, _ = read_audio(dst, rate=SR)
    assert abs(len(y) - 2 * SR) <= 2048  # the codec's frame padding at most


def test_mask_file_reads_other_formats(tmp_path):
    x = voiced(1.5)
    for fmt in ("mp3", "aac", "flac"):
        encoded = write_audio(tmp_path / f"src.{OUTPUT_FORMATS[fmt][2]}", x, SR, fmt)
        out = mask_file(encoded, tmp_path / f"out-{fmt}.wav", VoiceProfile(seed=1))
        assert out.duration == pytest.approx(probe_audio(encoded).duration, abs=0.15)


def test_progress_and_cancel(tmp_path):
    src = tmp_path / "in.wav"
    src.write_bytes(_wav_bytes(voiced(9.0), SR))
    seen = []
    mask_file(src, tmp_path / "a.wav", VoiceProfile(seed=1), progress=lambda p, s: seen.append((p, s)))
    assert seen[0][0] <= 2 and seen[-1][0] >= 90 and all(0 <= p <= 100 for p, _ in seen)

    def stop(percent, stage):
        if percent > 10:
            raise Cancelled("stop")

    with pytest.raises(Cancelled):
        mask_file(src, tmp_path / "b.wav", VoiceProfile(seed=1), progress=stop)
    assert not (tmp_path / "b.wav").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_bad_inputs_have_typed_user_messages(tmp_path):
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"RIFF\x00\x00not really a wave file" * 20)
    text = tmp_path / "notes.mp3"
    text.write_bytes(b"hello " * 1000)
    zero = tmp_path / "zero.wav"
    zero.write_bytes(_wav_bytes(np.zeros(0), SR))
    image = tmp_path / "picture.png"
    from PIL import Image

    Image.new("RGB", (32, 32), "red").save(image)
    cases = [(empty, EmptyAudio), (junk, UnreadableAudio), (text, UnreadableAudio), (zero, EmptyAudio),
             (image, NoAudioStream)]
    for path, error in cases:
        with pytest.raises(error) as caught:
            mask_file(path, tmp_path / "out.wav", VoiceProfile())
        assert isinstance(caught.value, EngineError) and str(caught.value).endswith(".")
        assert not (tmp_path / "out.wav").exists()
    long = tmp_path / "long.wav"
    long.write_bytes(_wav_bytes(np.zeros(SR * 5), SR))
    with pytest.raises(AudioTooLong, match="at most 3 seconds"):
        mask_file(long, tmp_path / "out.wav", VoiceProfile(), max_seconds=3)


def test_truncated_file_keeps_what_decodes(tmp_path):
    src = write_audio(tmp_path / "full.mp3", voiced(4.0), SR, "mp3")
    data = src.read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(data[: len(data) // 2])
    result = mask_file(cut, tmp_path / "out.wav", VoiceProfile(seed=2))
    assert 1.0 < result.duration < 3.5


def test_video_sound_track_and_silent_video(tmp_path):
    """A video's sound track is masked; a video without one is refused with NoAudioStream."""
    for with_audio in (True, False):
        path = tmp_path / f"clip-{with_audio}.mp4"
        with av.open(str(path), "w") as out:
            video = out.add_stream("libx264", rate=10)
            video.width = video.height = 64
            video.pix_fmt = "yuv420p"
            audio = out.add_stream("aac", rate=SR, layout="mono") if with_audio else None
            for i in range(10):
                frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), i * 20, np.uint8), format="rgb24")
                for packet in video.encode(frame):
                    out.mux(packet)
            for packet in video.encode(None):
                out.mux(packet)
            if audio is not None:
                samples = voiced(1.0).astype(np.float32)[None, :]
                frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
                frame.sample_rate = SR
                for packet in audio.encode(frame):
                    out.mux(packet)
                for packet in audio.encode(None):
                    out.mux(packet)
        if with_audio:
            assert probe_audio(path).has_video
            result = mask_file(path, tmp_path / "voice.m4a", VoiceProfile(seed=1))
            assert result.format == "aac" and result.duration == pytest.approx(1.0, abs=0.1)
        else:
            with pytest.raises(NoAudioStream, match="no sound track"):
                probe_audio(path)


def test_corpus_speech_is_masked_away_from_the_speaker(corpus, tmp_path):
    from engine.voice.embed import voice_similarity

    src = corpus / "speech" / "speech_libri1688_male_15s.flac"
    dst = tmp_path / "masked.flac"
    result = mask_file(src, dst, VoiceProfile.from_seed(11, "masculine"))
    assert result.samples == read_audio(src)[0].shape[0]
    assert voice_similarity(src, src) > 0.99
    assert voice_similarity(src, dst) < 0.75


def test_sample_sentence_is_in_the_manifest():
    from engine.models import get_entry
    from engine.voice.sample import SAMPLE_FILE

    entry = get_entry(SAMPLE_FILE)
    assert entry.group == "voice" and entry.commercial_use and entry.source.sdist


def test_sample_sentence_masks(tmp_path):
    from tests.engine.conftest import require_models

    require_models("voice")
    from engine.voice.sample import sample_speech_path

    info = probe_audio(sample_speech_path())
    assert info.duration == pytest.approx(4.0, abs=0.05)
    mask_file(sample_speech_path(), tmp_path / "preview.mp3", VoiceProfile.from_seed(3, "feminine"))
    assert probe_audio(tmp_path / "preview.mp3").duration == pytest.approx(4.0, abs=0.1)


# ------------------------------------------------------------------------------ neural backend


def _tiny_converter(path, dim: int = 8) -> None:
    """A stand-in neural converter with the production contract: audio [1, n] + target [1, dim]
    -> converted [1, n] (here: audio * (1 + 0.1 * mean(target)) - a real model's signature, tiny
    weights)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["target"], ["m"], keepdims=1),
            helper.make_node("Mul", ["m", "k"], ["mk"]),
            helper.make_node("Add", ["mk", "one"], ["gain"]),
            helper.make_node("Mul", ["audio", "gain"], ["converted"]),
        ],
        "tiny_vc",
        [
            helper.make_tensor_value_info("audio", TensorProto.FLOAT, [1, "n"]),
            helper.make_tensor_value_info("target", TensorProto.FLOAT, [1, dim]),
        ],
        [helper.make_tensor_value_info("converted", TensorProto.FLOAT, [1, "n"])],
        [helper.make_tensor("k", TensorProto.FLOAT, [], [0.1]), helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_neural_backend_loads_from_the_models_folder(tmp_path, monkeypatch):
    from engine.errors import ModelCorrupt, ModelMissing
    from engine.voice import backends

    monkeypatch.setenv("SAFEFACE_MODELS_DIR", str(tmp_path))
    monkeypatch.setenv("SAFEFACE_VOICE_MODEL", "tiny_vc.onnx")
    backends._cache.clear()
    with pytest.raises(ModelMissing, match="tiny_vc.onnx"):
        backends.active_converter()
    _tiny_converter(tmp_path / "tiny_vc.onnx")
    converter = backends.active_converter()
    assert converter is backends.active_converter()  # one session per model
    profile = VoiceProfile(seed=8, pitch_hz=200.0)
    assert np.array_equal(converter.target(profile), converter.target(profile))
    x = voiced(2.0, f0=120.0, sr=22050)
    src = tmp_path / "in.wav"
    src.write_bytes(_wav_bytes(x, 22050))
    result = mask_file(src, tmp_path / "out.wav", profile)  # goes through the model
    y, rate = read_audio(tmp_path / "out.wav")
    assert rate == 22050 and len(y) == len(x) == result.samples
    assert abs(np.log(median_f0(y[:, 0], 22050) / 200.0)) < 0.12  # pitch from the persona
    # McAdams voices do not use the model
    monkeypatch.setattr(backends.OnnxVoiceConverter, "convert", lambda *a: pytest.fail("model used"))
    mask_file(src, tmp_path / "m.wav", VoiceProfile(method="mcadams"))
    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    monkeypatch.setenv("SAFEFACE_VOICE_MODEL", "bad.onnx")
    with pytest.raises(ModelCorrupt, match="cannot be loaded"):
        backends.active_converter()
    backends._cache.clear()


def test_converter_is_thread_safe_under_the_pool():
    """Chunks run on two threads at once: results match a serial run of the same chunks."""
    x = voiced(4.0)
    profile = VoiceProfile(seed=12)
    stats = conv.speaker_stats(x, SR)
    serial = np.concatenate(list(mask_stream(iter([x]), SR, profile, stats, workers=1, chunk_seconds=1.0)))
    parallel = np.concatenate(list(mask_stream(iter([x]), SR, profile, stats, workers=2, chunk_seconds=1.0)))
    assert np.allclose(serial, parallel)
    assert threading.active_count() < 20
