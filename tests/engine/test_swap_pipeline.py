"""The image swap pipeline with the real embedded models: generated personas onto generated
targets (fresh clone) and onto real photos (corpus)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.errors import NoFaceFound


@pytest.fixture(scope="module")
def personas(analyzer):
    from engine.generate.stylegan import generate_face
    from engine.swap.pipeline import prepare_persona

    return [prepare_persona(generate_face(seed), analyzer) for seed in (1, 2)]


@pytest.fixture(scope="module")
def generated_target(models):
    from engine.generate.stylegan import generate_face

    return cv2.resize(generate_face(11), (640, 640), interpolation=cv2.INTER_AREA)


def test_generator_is_deterministic(models):
    from engine.generate.stylegan import generate_face

    first = generate_face(5)
    assert first.shape == (1024, 1024, 3) and first.dtype == np.uint8
    assert np.array_equal(first, generate_face(5))
    assert not np.array_equal(first, generate_face(6))


def test_swap_protects_the_target_and_reports_it(analyzer, personas, generated_target):
    from engine.swap.pipeline import swap_image

    out, reports = swap_image(generated_target, personas[0], analyzer=analyzer)
    (report,) = reports
    assert report.action == "swapped"
    assert report.distance_to_original >= 0.6 and report.protected is True
    assert report.distance_to_persona < report.distance_to_original
    assert np.abs(out.astype(int) - generated_target.astype(int)).mean() > 2
    # expression is kept: mouth and eye openness of the output follow the input
    assert abs(report.mouth_open[1] - report.mouth_open[0]) < 0.15
    assert abs(report.eye_open[1] - report.eye_open[0]) < 0.15


def test_a_photo_without_a_face_is_refused(analyzer, personas):
    from engine.swap.pipeline import swap_image

    with pytest.raises(NoFaceFound, match="No face was found in this photo"):
        swap_image(np.full((300, 400, 3), 120, np.uint8), personas[0], analyzer=analyzer)


def test_bystanders_are_blurred_or_replaced(analyzer, personas, generated_target):
    from engine.swap.pipeline import ImageSwapOptions, swap_image

    second = cv2.flip(generated_target, 1)
    group = np.concatenate([generated_target, second], axis=1)
    out, reports = swap_image(group, personas[0], ImageSwapOptions(faces="index:0", bystanders="blur"), analyzer=analyzer)
    assert reports[0].action == "swapped" and {r.action for r in reports[1:]} == {"blurred"}
    right = (slice(200, 500), slice(840, 1080))
    sharp = cv2.Laplacian(cv2.cvtColor(group[right], cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
    blurred = cv2.Laplacian(cv2.cvtColor(out[right], cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()
    assert blurred < sharp / 4
    _, replaced = swap_image(group, personas[0], ImageSwapOptions(faces="index:0", bystanders="replace"), analyzer=analyzer, bystander_persona=personas[1])
    mirrored = max(replaced[1:], key=lambda r: (r.box[2] - r.box[0]) * (r.box[3] - r.box[1]))
    assert replaced[0].action == "swapped" and mirrored.action == "replaced"
    assert mirrored.distance_to_original > 0.5


def test_personas_are_ranked_by_distance_to_the_target(analyzer, personas, generated_target):
    from engine.swap.pipeline import rank_personas

    face = analyzer.analyze(generated_target)[0]
    target = analyzer.embed(generated_target, face)
    ranked = rank_personas(target, personas)
    assert ranked[0][0] >= ranked[1][0]


def test_reference_selection_swaps_only_the_chosen_person(analyzer, personas, corpus):
    from engine.swap.pipeline import ImageSwapOptions, swap_image

    def load(name):
        return cv2.cvtColor(cv2.imread(str(corpus / "faces" / name)), cv2.COLOR_BGR2RGB)

    reference_image = load("face_obama_frontal.jpg")
    reference = analyzer.embed(reference_image, analyzer.analyze(reference_image)[0])
    group = load("group_obama_biden_2faces.jpg")
    out, reports = swap_image(group, personas[0], ImageSwapOptions(faces="reference", reference_embedding=reference), analyzer=analyzer)
    actions = {r.index: r.action for r in reports}
    assert sorted(actions.values()) == ["kept", "swapped"]
    swapped = next(r for r in reports if r.action == "swapped")
    assert swapped.protected and swapped.distance_to_original >= 0.6
    kept = next(r for r in reports if r.action == "kept")
    x0, y0, x1, y1 = (int(v) for v in kept.box)
    assert np.array_equal(out[y0:y1, x0:x1], group[y0:y1, x0:x1])


def test_video_swap_keeps_frames_fps_and_audio(analyzer, personas, generated_target, tmp_path):
    from engine.media.video import probe_video
    from engine.swap.video import swap_video
    from tests.engine.test_media import write_video

    face = cv2.resize(generated_target, (320, 320), interpolation=cv2.INTER_AREA)
    src = write_video(tmp_path / "in.mp4", frames=24, fps=24, size=(320, 320), frame_source=lambda i: np.roll(face, i, axis=1))
    dst = tmp_path / "out.mp4"
    report = swap_video(src, dst, personas[0], analyzer=analyzer)
    before, after = probe_video(src), probe_video(dst)
    assert (after.frame_count, after.fps, after.has_audio) == (before.frame_count, before.fps, True)
    assert abs(after.duration - before.duration) < 0.05
    assert report.frames == 24 and report.tracks and report.tracks[0]["frames"] == 24


def test_video_without_faces_leaves_no_output(analyzer, personas, tmp_path):
    from engine.swap.video import swap_video
    from tests.engine.test_media import write_video

    grey = np.full((128, 128, 3), 128, np.uint8)
    src = write_video(tmp_path / "grey.mp4", frames=5, fps=10, size=(128, 128), audio=None, frame_source=lambda i: grey)
    dst = tmp_path / "out.mp4"
    with pytest.raises(NoFaceFound, match="No face was found anywhere in this video"):
        swap_video(src, dst, personas[0], analyzer=analyzer)
    assert not dst.exists()


def test_cli_swaps_a_photo_and_explains_errors(models, tmp_path, capsys):
    from engine.cli import main
    from engine.generate.stylegan import generate_face
    from engine.media.image import load_image, save_image

    target = tmp_path / "target.png"
    save_image(cv2.resize(generate_face(11), (512, 512)), target)
    out = tmp_path / "out.jpg"
    assert main(["swap", "--source", "seed:1", "--target", str(target), "--out", str(out)]) == 0
    assert load_image(out).pixels.shape == (512, 512, 3)
    assert "wrote" in capsys.readouterr().out
    blank = tmp_path / "blank.png"
    save_image(np.full((64, 64, 3), 90, np.uint8), blank)
    assert main(["swap", "--source", "seed:1", "--target", str(blank), "--out", str(tmp_path / "x.jpg")]) == 1
    assert "No face was found in this photo." in capsys.readouterr().err


def test_video_smoother_steadies_the_head_but_follows_the_mouth():
    """The video path smooths landmark noise away, but a fast mouth opening must come through
    (a plain One-Euro filter on the whole mesh lagged it)."""
    from engine.faces.geometry import mouth_openness
    from engine.swap.classical import topology
    from engine.swap.video import LandmarkSmoother, OneEuro

    rng = np.random.default_rng(3)
    topo = topology()
    base = rng.uniform(100, 300, (468, 2))
    upper, lower = topo.lips_inner[:10], topo.lips_inner[10:]
    smoother, plain = LandmarkSmoother(fps=25.0), OneEuro(25.0)
    raw_open, smooth_open, plain_open, raw_noise, smooth_noise = [], [], [], [], []
    for frame in range(150):
        gap = 12.0 * max(0.0, np.sin(frame * 2 * np.pi / 8))  # opens and closes about 3x a second
        points = base.copy()
        points[lower, 1] += gap
        noise = rng.normal(0, 1.5, 2)  # the whole mesh shakes together
        noisy = points + noise
        out = smoother(noisy, 200.0)
        z = np.zeros((468, 1))
        raw_open.append(mouth_openness(np.c_[noisy, z]))
        smooth_open.append(mouth_openness(np.c_[out, z]))
        plain_open.append(mouth_openness(np.c_[plain(noisy, 200.0), z]))
        if frame > 10:
            raw_noise.append(np.abs(noisy[0] - base[0]).mean())
            smooth_noise.append(np.abs(out[0] - base[0]).mean())
    follows = np.corrcoef(raw_open, smooth_open)[0, 1]
    assert follows > 0.95 and follows > np.corrcoef(raw_open, plain_open)[0, 1] + 0.1
    assert np.mean(smooth_noise) < 0.6 * np.mean(raw_noise)
