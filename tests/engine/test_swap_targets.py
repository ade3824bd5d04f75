"""Several personas in one swap (targets by face index or by identity) and the survey of an upload
that feeds the face picker, with the real embedded models on real photos and videos (corpus)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.errors import NoFaceFound

pytestmark = pytest.mark.corpus


@pytest.fixture(scope="module")
def personas(models, analyzer):
    from engine.generate.stylegan import generate_face
    from engine.swap.pipeline import prepare_persona

    return [prepare_persona(generate_face(seed), analyzer) for seed in (1, 2)]


def load(corpus, name: str) -> np.ndarray:
    from engine.media import load_image

    return load_image(corpus / "faces" / name).pixels


def reference_of(analyzer, rgb: np.ndarray) -> np.ndarray:
    face = max(analyzer.analyze(rgb), key=lambda f: f.area)
    return analyzer.embed(rgb, face)


@pytest.fixture(scope="module")
def group(corpus):
    return load(corpus, "group_obama_biden_2faces.jpg")


@pytest.fixture(scope="module")
def references(analyzer, corpus):
    """Identity embeddings of the two men in the group photo, from other photos of them."""
    return {
        "obama": reference_of(analyzer, load(corpus, "face_obama_frontal.jpg")),
        "biden": reference_of(analyzer, load(corpus, "face_biden_fullbody_2204px.jpg")),
    }


@pytest.fixture(scope="module")
def who(analyzer, group, references):
    """Face index in the group photo -> name (by the nearest reference)."""
    from engine.faces import embedding_distance

    faces = analyzer.analyze(group)
    assert len(faces) == 2
    names = {}
    for face in faces:
        embedding = analyzer.embed(group, face)
        names[face.index] = min(references, key=lambda n: embedding_distance(embedding, references[n]))
    assert sorted(names.values()) == ["biden", "obama"]
    return names


def output_identities(analyzer, out: np.ndarray, boxes: dict[int, tuple]) -> dict[int, np.ndarray]:
    """Embedding of the output face found where each input face was (by box overlap)."""
    from engine.swap.video import _iou

    faces = analyzer.analyze(out)
    result = {}
    for index, box in boxes.items():
        face = max(faces, key=lambda f: _iou(f.box, box))
        assert _iou(face.box, box) > 0.4, f"no face where face {index} was"
        result[index] = analyzer.embed(out, face)
    return result


def assert_wears(identities: dict[int, np.ndarray], wanted: dict[int, int], personas) -> None:
    """Each output face is nearer to the persona it was given than to the other one."""
    from engine.faces import embedding_distance

    for index, number in wanted.items():
        own = embedding_distance(identities[index], personas[number].embedding)
        other = embedding_distance(identities[index], personas[1 - number].embedding)
        assert own < other, f"face {index}: {own:.2f} to its persona {number}, {other:.2f} to the other"


def box_region(box, shape):
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    return slice(max(y0, 0), min(y1, shape[0])), slice(max(x0, 0), min(x1, shape[1]))


# ----------------------------------------------------------------------------------------------
# photos
# ----------------------------------------------------------------------------------------------


def test_each_face_gets_its_own_persona_by_index(analyzer, personas, group):
    from engine.swap.pipeline import Target, swap_image

    out, reports = swap_image(group, targets=[Target(personas[1], index=0), Target(personas[0], index=1)], analyzer=analyzer)
    assert [(r.index, r.action, r.target) for r in reports] == [(0, "swapped", 0), (1, "swapped", 1)]
    assert all(r.protected for r in reports)
    identities = output_identities(analyzer, out, {r.index: r.box for r in reports})
    # face 0 wears target 0's persona (personas[1]), face 1 wears personas[0]
    assert_wears(identities, {0: 1, 1: 0}, personas)


def test_reference_targets_follow_the_person_not_the_position(analyzer, personas, group, references, who):
    from engine.swap.pipeline import Target, swap_image

    obama = next(i for i, name in who.items() if name == "obama")
    biden = 1 - obama
    targets = [Target(personas[0], reference=references["biden"]), Target(personas[1], reference=references["obama"])]
    out, reports = swap_image(group, targets=targets, analyzer=analyzer)
    by_index = {r.index: r for r in reports}
    assert by_index[biden].target == 0 and by_index[obama].target == 1
    assert {r.action for r in reports} == {"swapped"}
    identities = output_identities(analyzer, out, {r.index: r.box for r in reports})
    assert_wears(identities, {biden: 0, obama: 1}, personas)


def test_index_wins_over_reference_and_a_reference_goes_to_the_nearest_target(analyzer, personas, group, references, who):
    from engine.swap.pipeline import Target, swap_image

    obama = next(i for i, name in who.items() if name == "obama")
    biden = 1 - obama
    # both references would match Obama's face; the Obama reference is nearer. Target 2 claims
    # Biden's face by index although its reference is Obama's.
    targets = [
        Target(personas[0], reference=references["obama"]),
        Target(personas[1], reference=(references["obama"] + references["biden"]) / 2),
        Target(personas[1], index=biden, reference=references["obama"]),
    ]
    _, reports = swap_image(group, targets=targets, analyzer=analyzer)
    by_index = {r.index: r for r in reports}
    assert by_index[obama].target == 0  # exact tie between targets 0 and 2: the first one
    assert by_index[biden].target == 2


@pytest.mark.parametrize("bystanders", ["keep", "blur"])
def test_a_face_no_target_names_is_a_bystander(analyzer, personas, group, references, who, bystanders):
    from engine.swap.pipeline import ImageSwapOptions, Target, swap_image

    obama = next(i for i, name in who.items() if name == "obama")
    out, reports = swap_image(
        group, None, ImageSwapOptions(bystanders=bystanders),
        targets=[Target(personas[0], reference=references["obama"])], analyzer=analyzer,
    )
    by_index = {r.index: r for r in reports}
    assert by_index[obama].action == "swapped" and by_index[obama].target == 0
    bystander = by_index[1 - obama]
    assert bystander.target is None
    region = box_region(bystander.box, group.shape)
    if bystanders == "keep":
        assert bystander.action == "kept"
        assert np.array_equal(out[region], group[region])
    else:
        assert bystander.action == "blurred"
        assert np.abs(out[region].astype(int) - group[region].astype(int)).mean() > 3


def test_single_persona_reports_target_zero(analyzer, personas, group):
    from engine.swap.pipeline import ImageSwapOptions, swap_image

    out, reports = swap_image(group, personas[0], ImageSwapOptions(faces="index:1"), analyzer=analyzer)
    assert [(r.action, r.target) for r in reports] == [("kept", None), ("swapped", 0)]
    region = box_region(reports[0].box, group.shape)
    assert np.array_equal(out[region], group[region])


def test_a_target_index_out_of_range_is_refused(analyzer, personas, group):
    from engine.faces import FaceIndexOutOfRange
    from engine.swap.pipeline import Target, swap_image

    with pytest.raises(FaceIndexOutOfRange, match=r"face 2, but the photo has 2 faces \(indexes 0-1\)"):
        swap_image(group, targets=[Target(personas[0], index=0), Target(personas[1], index=2)], analyzer=analyzer)
    assert issubclass(FaceIndexOutOfRange, NoFaceFound)


def test_a_reference_that_matches_nobody_is_refused(analyzer, personas, group):
    from engine.faces import NoMatchingFace
    from engine.swap.pipeline import Target, swap_image

    stranger = personas[1].embedding  # a generated face: nobody in the photo
    with pytest.raises(NoMatchingFace, match="No face matches"):
        swap_image(group, targets=[Target(personas[0], reference=stranger)], analyzer=analyzer)


def test_malformed_requests_are_refused(analyzer, personas, group, tmp_path):
    from engine.swap.pipeline import Target, swap_image
    from engine.swap.video import swap_video

    with pytest.raises(ValueError, match="exactly one"):
        swap_image(group, analyzer=analyzer)
    with pytest.raises(ValueError, match="exactly one"):
        swap_image(group, personas[0], targets=[Target(personas[1], index=0)], analyzer=analyzer)
    with pytest.raises(ValueError, match="neither"):
        swap_image(group, targets=[Target(personas[1])], analyzer=analyzer)
    with pytest.raises(ValueError, match="Two targets name face 0"):
        swap_image(group, targets=[Target(personas[0], index=0), Target(personas[1], index=0)], analyzer=analyzer)
    with pytest.raises(ValueError, match="no reference"):
        swap_video(tmp_path / "in.mp4", tmp_path / "out.mp4", targets=[Target(personas[0], index=0)], analyzer=analyzer)
    assert not (tmp_path / "out.mp4").exists()


# ----------------------------------------------------------------------------------------------
# survey
# ----------------------------------------------------------------------------------------------


def test_survey_image_keys_are_the_swap_indexes(analyzer, corpus, references):
    from engine.faces import FaceAnalyzer, embedding_distance
    from engine.swap.survey import survey_image

    for name in ("group_obama_biden_2faces.jpg", "group_elderly_family_7faces.jpg"):
        rgb = load(corpus, name)
        survey = survey_image(rgb, analyzer, thumb_size=96)
        again = FaceAnalyzer().analyze(rgb)  # what the worker's later swap sees (fresh analyzer)
        assert (survey.width, survey.height, survey.samples) == (rgb.shape[1], rgb.shape[0], 1)
        assert [f.key for f in survey.faces] == list(range(len(again))) and len(again) >= 2
        for face in survey.faces:
            assert np.allclose(face.box, again[face.key].box, atol=0.5)
            assert face.thumbnail.shape == (96, 96, 3) and face.thumbnail.dtype == np.uint8
            assert face.embedding.shape == (128,) and face.embedding.dtype == np.float32
            assert face.time is None and face.appearances == 1 and face.quality > 0
    survey = survey_image(load(corpus, "group_obama_biden_2faces.jpg"), analyzer)
    assert all(f.thumbnail.shape == (160, 160, 3) for f in survey.faces)
    obama = min(survey.faces, key=lambda f: embedding_distance(f.embedding, references["obama"]))
    assert embedding_distance(obama.embedding, references["obama"]) < 0.5


def test_thumbnail_is_centred_and_padded_with_the_edge_colour():
    from engine.swap.survey import thumbnail

    rgb = np.zeros((100, 200, 3), np.uint8)
    rgb[:, :100] = (200, 10, 10)
    rgb[:, 100:] = (10, 10, 200)
    centred = thumbnail(rgb, (80, 30, 120, 70), 64)  # 64 px around the red/blue border
    assert centred.shape == (64, 64, 3)
    assert (centred[:, :28, 0] > 150).all() and (centred[:, 36:, 2] > 150).all()
    corner = thumbnail(rgb, (0, 0, 50, 50), 80)  # runs past the top-left corner: red padding
    assert corner.shape == (80, 80, 3) and (corner[..., 0] > 150).all()


def test_survey_frames_keeps_people_apart_and_merges_appearances(analyzer, corpus, references):
    from engine.faces import embedding_distance
    from engine.swap.survey import survey_frames

    group = load(corpus, "group_obama_biden_2faces.jpg")
    obama = load(corpus, "face_obama_small_320x240.jpg")
    # a huge same_person would merge anyone: both faces of the group photo are nearest to the
    # Obama seen first, but only one of them may join him
    survey = survey_frames([(0.0, obama), (1.0, group)], analyzer, same_person=10.0)
    assert survey.samples == 2 and [f.appearances for f in survey.faces] == [2, 1]
    assert survey.faces[1].time == 1.0
    survey = survey_frames([(0.0, group), (1.0, group)], analyzer, same_person=10.0)
    assert [f.appearances for f in survey.faces] == [2, 2]
    assert survey.faces[0].box[0] < survey.faces[1].box[0]  # same first frame: left to right
    # the real threshold: Obama in another photo joins the Obama of the group photo
    survey = survey_frames([(0.0, group), (1.0, obama), (2.0, group)], analyzer)
    assert [f.key for f in survey.faces] == [0, 1] and survey.samples == 3
    person = min(survey.faces, key=lambda f: embedding_distance(f.embedding, references["obama"]))
    assert person.appearances == 3
    assert sorted(f.appearances for f in survey.faces) == [2, 3]
    assert embedding_distance(person.embedding, references["obama"]) < 0.5
    # never merging: four people, of whom max_people keep the first two
    survey = survey_frames([(0.0, group), (1.0, group)], analyzer, same_person=0.0, max_people=2)
    assert len(survey.faces) == 2 and all(f.time == 0.0 for f in survey.faces)


def test_survey_of_a_talking_head_video_is_one_person(analyzer, corpus):
    from engine.swap.survey import survey_frames, video_samples

    path = corpus / "videos" / "video_man_suit_talking_6s.mp4"
    counts: list[int] = []

    class Counting:  # the analyzer, counting the faces of each sample
        def analyze(self, rgb):
            faces = analyzer.analyze(rgb)
            counts.append(len(faces))
            return faces

        def embed(self, rgb, face):
            return analyzer.embed(rgb, face)

    samples = list(video_samples(path, interval=1.0))
    assert 5 <= len(samples) <= 7
    survey = survey_frames(samples, Counting())
    assert survey.samples == len(samples) and (survey.width, survey.height) == (700, 700)
    (person,) = survey.faces
    assert person.key == 0 and person.appearances == sum(1 for c in counts if c) >= len(samples) - 1
    assert person.time in {t for t, _ in samples}
    assert person.thumbnail.shape == (160, 160, 3)
    x0, y0, x1, y1 = person.box
    assert 0 <= x0 < x1 <= 700 and 0 <= y0 < y1 <= 700


# ----------------------------------------------------------------------------------------------
# video
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def group_video(tmp_path_factory, group):
    """A short clip of the group photo, panning slowly (12 frames at 12 fps)."""
    from tests.engine.test_media import write_video

    h, w = group.shape[:2]
    frame = group[: h - h % 2, : w - w % 2]
    path = tmp_path_factory.mktemp("video") / "group.mp4"
    return write_video(path, frames=12, fps=12, size=(frame.shape[1], frame.shape[0]), frame_source=lambda i: np.roll(frame, 2 * i, axis=1))


def test_video_swap_gives_each_person_their_own_persona(analyzer, personas, references, who, group_video, tmp_path):
    from engine.media import iter_frames
    from engine.swap.pipeline import Target
    from engine.swap.video import swap_video

    obama = next(i for i, name in who.items() if name == "obama")
    biden = 1 - obama
    targets = [Target(personas[0], reference=references["biden"]), Target(personas[1], reference=references["obama"])]
    report = swap_video(group_video, tmp_path / "out.mp4", targets=targets, analyzer=analyzer)
    assert report.frames == 12
    tracks = {t["index"]: t for t in report.tracks}
    assert tracks[biden]["target"] == 0 and tracks[obama]["target"] == 1
    assert all(t["selected"] and t["frames"] == 12 for t in tracks.values())
    assert all(t["protected"] for t in tracks.values())
    first_in = next(iter(iter_frames(group_video))).rgb
    first_out = next(iter(iter_frames(tmp_path / "out.mp4"))).rgb
    boxes = {f.index: f.box for f in analyzer.analyze(first_in)}
    assert_wears(output_identities(analyzer, first_out, boxes), {biden: 0, obama: 1}, personas)


def test_video_swap_with_one_target_and_a_blurred_bystander(analyzer, personas, references, who, group_video, tmp_path):
    from engine.swap.pipeline import ImageSwapOptions, Target
    from engine.swap.video import VideoSwapOptions, swap_video

    obama = next(i for i, name in who.items() if name == "obama")
    options = VideoSwapOptions(image=ImageSwapOptions(bystanders="blur"), keyframe_interval=6)
    report = swap_video(
        group_video, tmp_path / "out.mp4", options=options,
        targets=[Target(personas[0], reference=references["obama"])], analyzer=analyzer,
    )
    tracks = {t["index"]: t for t in report.tracks}
    assert tracks[obama]["target"] == 0 and tracks[obama]["selected"]
    assert tracks[1 - obama]["target"] is None and not tracks[1 - obama]["selected"]
    assert tracks[1 - obama]["frames"] == 12  # blurred in every frame
    assert tracks[1 - obama]["protected"] is None
