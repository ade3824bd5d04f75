"""Voice masking: privacy (speaker-verification EER), utility (ASR word agreement, pitch
contour correlation) and speed (real-time factor), side by side for no masking, the McAdams
baseline and the persona voice, in one run.

Protocol (the issue's), on the corpus speech clips at 16 kHz mono:
* each clip's first half is the speaker's enrolment (original audio, one Resemblyzer embedding);
* its second half is masked as a whole with the speaker's persona and cut into 3 s trials;
* ignorant attacker: every trial scored (cosine) against every original enrolment;
* lazy-informed attacker: knows the persona used on the trial and masks every enrolment with it
  before scoring (so the persona's own voice cannot be what matches);
* EER over same-speaker vs other-speaker scores.
Each speaker gets a persona of their own gender presentation (the conservative case: a masculine
speaker masked with a masculine persona), seeded per speaker.

Utility: pocketsphinx (offline, its English model ships in the wheel; a fresh decoder per clip)
transcribes the original and the masked second halves; agreement = 1 - word edit distance / words
in the original's transcript. Pitch: Pearson correlation of log-F0 on frames voiced in both.
For scale, the same figures for plain WORLD analysis/resynthesis (the vocoder with nothing
changed: the recogniser's ceiling for any WORLD-based voice) and for the personas with McAdams
coefficient 1 (the clearer end of the user's privacy/intelligibility setting).
Speed: ``mask_file`` on the whole clips (decode, convert on 2 threads, encode WAV).

Usage: .venv/bin/python bench/voice.py [--corpus ../shared/corpus]
Writes bench/results/voice.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
warnings.filterwarnings("ignore")

from engine.voice import VoiceProfile, mask_file, read_audio  # noqa: E402
from engine.voice import convert as conv  # noqa: E402
from engine.voice.embed import speaker_embedding  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SR = 16000
TRIAL_SECONDS = 3.0
SPEAKERS = [  # file, gender presentation (from the corpus MANIFEST; the radio clip by its pitch)
    ("speech_jfk_male_11s.flac", "masculine"),
    ("speech_libri1688_male_15s.flac", "masculine"),
    ("speech_libri3080_female_17s.flac", "feminine"),
    ("speech_libri367_female_15s.flac", "feminine"),
    ("speech_libri1998_female_13s.flac", "feminine"),
    ("speech_trump_male_29s.mp3", "masculine"),
    ("speech_hdtf_radio34_8s.wav", "masculine"),
]


def eer(scores: list[float], same: list[bool]) -> float:
    scores_a = np.asarray(scores)
    same_a = np.asarray(same)
    positives, negatives = same_a.sum(), (~same_a).sum()
    best = (2.0, 0.0)
    for threshold in np.unique(scores_a):
        far = ((scores_a >= threshold) & ~same_a).sum() / negatives
        frr = ((scores_a < threshold) & same_a).sum() / positives
        best = min(best, (abs(far - frr), (far + frr) / 2))
    return float(best[1])


def word_agreement(reference: list[str], hypothesis: list[str]) -> float:
    if not reference:
        return 1.0 if not hypothesis else 0.0
    previous = list(range(len(hypothesis) + 1))
    for i, word in enumerate(reference, 1):
        current = [i]
        for j, other in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return max(0.0, 1.0 - previous[-1] / len(reference))


class Recogniser:
    """A fresh pocketsphinx decoder per clip. One decoder re-used across clips carries state from
    the clip before into the next (identical audio came out as different words: 0.562 agreement
    on an unchanged clip), so the transcript depended on the order clips were decoded in."""

    def words(self, x: np.ndarray) -> list[str]:
        from pocketsphinx import Decoder

        decoder = Decoder(samprate=SR, logfn=os.devnull)
        pcm = (np.clip(x, -1, 1) * 32767).astype("<i2").tobytes()
        decoder.start_utt()
        decoder.process_raw(pcm, full_utt=True)
        decoder.end_utt()
        hyp = decoder.hyp()
        return hyp.hypstr.split() if hyp else []


def world_resynthesis(x: np.ndarray) -> np.ndarray:
    """WORLD analysis (the persona conversion's: DIO + StoneMask, CheapTrick, here with D4C
    aperiodicity) and resynthesis with nothing changed: what the vocoder alone costs the
    recogniser, the ceiling for any WORLD-based voice."""
    import pyworld

    f0, sp, ap = conv._analyse(x, SR, aperiodicity=True)
    return conv._fit_length(pyworld.synthesize(f0, sp, ap, SR, conv.FRAME_MS), len(x))


def log_f0(x: np.ndarray) -> np.ndarray:
    import pyworld

    x = np.ascontiguousarray(x, dtype=np.float64)
    f0, t = pyworld.dio(x, SR, frame_period=10.0)
    f0 = pyworld.stonemask(x, f0, t, SR)
    return np.where(f0 > 0, np.log(np.maximum(f0, 1e-6)), np.nan)


def pitch_correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    fa, fb = log_f0(a), log_f0(b)
    n = min(len(fa), len(fb))
    both = ~np.isnan(fa[:n]) & ~np.isnan(fb[:n])
    if both.sum() < 20:
        return None
    return float(np.corrcoef(fa[:n][both], fb[:n][both])[0, 1])


def trials(y: np.ndarray) -> list[np.ndarray]:
    n = int(TRIAL_SECONDS * SR)
    return [y[i:i + n] for i in range(0, len(y) - n + 1, n)]


def evaluate(name: str, mask, clips, profiles, recogniser, original_words) -> dict:
    print(f"[{name}]", flush=True)
    enrol = [speaker_embedding(first) for _, _, first, _ in clips]
    masked_second = [mask(second, profiles[i]) for i, (_, _, _, second) in enumerate(clips)]
    trial_embeddings = [(i, speaker_embedding(seg)) for i, y in enumerate(masked_second) for seg in trials(y)]
    scores, same = [], []
    for i, vector in trial_embeddings:
        for j, reference in enumerate(enrol):
            scores.append(float(vector @ reference))
            same.append(i == j)
    ignorant = eer(scores, same)
    # lazy-informed: every enrolment masked with the trial speaker's persona
    informed = {
        (i, j): speaker_embedding(mask(first, profiles[i]))
        for i in range(len(clips)) for j, (_, _, first, _) in enumerate(clips)
    }
    scores, same = [], []
    for i, vector in trial_embeddings:
        for j in range(len(clips)):
            scores.append(float(vector @ informed[(i, j)]))
            same.append(i == j)
    lazy = eer(scores, same)
    speakers = []
    for i, (file, gender, _, second) in enumerate(clips):
        y = masked_second[i]
        words = recogniser.words(y)
        speakers.append({
            "clip": file,
            "gender": gender,
            "persona": profiles[i].to_dict(),
            "cosine_original_vs_masked": round(float(speaker_embedding(second) @ speaker_embedding(y)), 3),
            "asr_agreement": round(word_agreement(original_words[i], words), 3),
            "asr_words_original": len(original_words[i]),
            "pitch_correlation": pitch_correlation(second, y),
        })
    pitch = [s["pitch_correlation"] for s in speakers if s["pitch_correlation"] is not None]
    result = {
        "eer": round(ignorant, 4),
        "eer_lazy_informed": round(lazy, 4),
        "mean_cosine_original_vs_masked": round(float(np.mean([s["cosine_original_vs_masked"] for s in speakers])), 3),
        "asr_agreement": round(float(np.mean([s["asr_agreement"] for s in speakers])), 3),
        "pitch_correlation": round(float(np.mean(pitch)), 3) if pitch else None,
        "trials": len(trial_embeddings),
        "speakers": speakers,
    }
    print(json.dumps({k: v for k, v in result.items() if k != "speakers"}), flush=True)
    return result


def speed(corpus: Path, profiles) -> dict:
    """mask_file on the whole clips: total seconds taken / total seconds of audio."""
    taken = duration = 0.0
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (file, _) in enumerate(SPEAKERS):
            started = time.perf_counter()
            result = mask_file(corpus / "speech" / file, Path(tmp) / f"{i}.wav", profiles[i])
            seconds = time.perf_counter() - started
            taken += seconds
            duration += result.duration
            rows.append({"clip": file, "seconds": round(result.duration, 2), "rtf": round(seconds / result.duration, 4)})
    return {"rtf": round(taken / duration, 4), "audio_seconds": round(duration, 1), "clips": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    args = parser.parse_args()
    corpus = Path(args.corpus)
    clips = []
    for file, gender in SPEAKERS:
        x, _ = read_audio(corpus / "speech" / file, rate=SR, mono=True)
        x = x[:, 0].astype(np.float64)
        half = len(x) // 2
        clips.append((file, gender, x[:half], x[half:]))
    profiles = [VoiceProfile.from_seed(1000 + i, gender) for i, (_, gender) in enumerate(SPEAKERS)]
    recogniser = Recogniser()
    original_words = [recogniser.words(second) for _, _, _, second in clips]

    speed_persona = speed(corpus, profiles)
    print("speed", json.dumps({k: v for k, v in speed_persona.items() if k != "clips"}), flush=True)
    methods = {
        "none": evaluate("no masking", lambda x, p: x, clips, profiles, recogniser, original_words),
        "mcadams_0.8": evaluate(
            "McAdams 0.8", lambda x, p: conv.mcadams_convert(x, SR, 0.8), clips, profiles, recogniser, original_words
        ),
        "world_resynthesis": evaluate(
            "WORLD resynthesis, nothing changed", lambda x, p: world_resynthesis(x), clips, profiles, recogniser,
            original_words,
        ),
        "persona": evaluate(
            "persona voice", lambda x, p: conv.persona_convert(x, SR, p), clips, profiles, recogniser, original_words
        ),
        # the user's "clearer" end of the trade-off: the same personas with McAdams coefficient 1
        "persona_alpha_1": evaluate(
            "persona voice, McAdams coefficient 1", lambda x, p: conv.persona_convert(x, SR, replace(p, alpha=1.0)),
            clips, profiles, recogniser, original_words,
        ),
    }
    persona = methods["persona"]
    out = {
        "benchmark": "voice masking (issue 6)",
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "protocol": __doc__.split("Usage:")[0].strip(),
        "eer": persona["eer"],
        "eer_lazy_informed": persona["eer_lazy_informed"],
        "rtf": speed_persona["rtf"],
        "asr_agreement": persona["asr_agreement"],
        "pitch_correlation": persona["pitch_correlation"],
        # what plain WORLD analysis/resynthesis (no change) keeps of the recogniser's transcript:
        # the part of the agreement lost to the vocoder rather than to the masking
        "asr_agreement_vocoder_ceiling": methods["world_resynthesis"]["asr_agreement"],
        "targets": {"eer": ">= 0.35", "eer_lazy_informed": ">= 0.25", "rtf": "<= 0.05", "asr_agreement": ">= 0.8"},
        "speed": speed_persona,
        "methods": methods,
        "original_transcripts": {file: " ".join(words) for (file, _), words in zip(SPEAKERS, original_words)},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "voice.json").write_text(json.dumps(out, indent=2) + "\n")
    print(json.dumps({k: out[k] for k in ("eer", "eer_lazy_informed", "rtf", "asr_agreement", "pitch_correlation")}))


if __name__ == "__main__":
    main()
