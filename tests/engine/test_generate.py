"""Avatar generation: attribute vocabulary, measurements, direction editing, the candidate
pipeline and backend choice. Generator tests run the real embedded StyleGAN."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import GenerationFailed, ModelMissing
from engine.generate.attributes import CHOICES, MONK_SWATCHES, AttributeRequest, monk_group
from engine.generate.directions import Directions, edit_style, load_directions

from .conftest import require_models


@pytest.fixture(scope="module")
def generator_models():
    return require_models()


# --- attributes ---------------------------------------------------------------------------------


def test_request_rejects_unknown_values_with_a_clear_message():
    with pytest.raises(ValueError, match="Skin tone: 'purple'"):
        AttributeRequest(skin_tone="purple")


def test_request_round_trips_and_describes_itself():
    request = AttributeRequest(gender="feminine", glasses="yes")
    assert AttributeRequest.from_dict({**request.as_dict(), "unknown": "x", "age_band": ""}) == request
    assert request.describe() == [("Gender presentation", "Feminine"), ("Glasses", "Glasses")]
    assert AttributeRequest().as_dict() == {}


def test_monk_groups_cover_the_scale():
    assert [monk_group(t) for t in range(1, 11)] == ["light"] * 3 + ["medium"] * 3 + ["deep"] * 4
    with pytest.raises(ValueError):
        monk_group(11)


def test_monk_tone_of_each_swatch_is_itself():
    from engine.generate.measure import MONK_LAB, monk_tone

    assert [monk_tone(lab) for lab in MONK_LAB] == list(range(1, 11))
    assert len(MONK_SWATCHES) == 10


# --- direction editing --------------------------------------------------------------------------


def _toy_directions() -> Directions:
    vectors = np.zeros((3, 512), np.float32)
    vectors[0, 0] = vectors[1, 1] = 1.0
    vectors[2, 0], vectors[2, 2] = 0.6, 0.8  # correlated with the first
    return Directions(
        vectors=vectors,
        names=("a", "b", "ab"),
        targets={"glasses": {"yes": [[0, 2.0, 3.0]], "no": [[0, -3.0, -2.0]]}, "smile": {"smile": [[2, 1.0, 1.5]]}},
        constraints={"frontal": [1, -0.5, 0.5]},
        sha256="x",
    )


def test_edit_moves_each_active_projection_into_its_range_and_nothing_else():
    directions = _toy_directions()
    style = np.zeros((1, 512), np.float32)
    style[0, 1] = 4.0  # outside the always-on constraint
    style[0, 5] = 7.0  # unrelated to every direction
    edited = edit_style(style, {"glasses": "yes"}, directions)
    assert 2.0 <= edited[0, 0] <= 3.0
    assert -0.5 <= edited[0, 1] <= 0.5
    assert edited[0, 5] == pytest.approx(7.0)
    assert edited.shape == style.shape


def test_edit_keeps_projections_already_in_range():
    directions = _toy_directions()
    style = np.zeros((1, 512), np.float32)
    style[0, 0] = 2.5
    assert np.allclose(edit_style(style, {"glasses": "yes"}, directions), style)


def test_edit_solves_correlated_directions_together():
    directions = _toy_directions()
    style = np.zeros((1, 512), np.float32)
    edited = edit_style(style, {"glasses": "no", "smile": "smile"}, directions)
    projections = directions.vectors.astype(np.float64) @ edited[0].astype(np.float64)
    assert -3.0 <= projections[0] <= -2.0
    assert -0.5 <= projections[1] <= 0.5
    assert 1.0 <= projections[2] <= 1.5


def test_the_shipped_directions_cover_every_attribute_value():
    directions = load_directions()
    for attribute, values in CHOICES.items():
        assert set(directions.targets[attribute]) == set(values), attribute
    assert directions.vectors.shape == (len(directions.names), 512)
    assert np.allclose(np.linalg.norm(directions.vectors, axis=1), 1.0, atol=1e-4)


def test_missing_directions_file_is_a_clear_model_error(tmp_path):
    with pytest.raises(ModelMissing, match="learn_directions"):
        load_directions(tmp_path / "directions.npz")


# --- backends -----------------------------------------------------------------------------------


def test_unknown_and_uninstalled_backends_say_so():
    from engine.generate.backends import get_backend

    with pytest.raises(ModelMissing, match="Unknown avatar generator 'dalle'"):
        get_backend("dalle")
    with pytest.raises(ModelMissing, match="SAFEFACE_GENERATOR=stylegan"):
        get_backend("diffusers")


def test_diffusion_prompt_carries_the_attributes():
    from engine.generate.backends import diffusion_prompt

    prompt, negative = diffusion_prompt({"gender": "feminine", "glasses": "yes", "hair_colour": "red", "skin_tone": "deep"})
    assert "woman" in prompt and "wearing glasses" in prompt and "red hair" in prompt and "deep dark skin" in prompt
    assert "profile" in negative and "hair over forehead" in negative
    assert "person" in diffusion_prompt({})[0]


# --- measurement on real faces ------------------------------------------------------------------


def test_measure_a_generated_face(generator_models, analyzer):
    from engine.generate.measure import measure_face
    from engine.generate.stylegan import generate_face

    m = measure_face(generate_face(7), analyzer)
    assert m.faces == 1
    assert set(m.labels) >= {"age_band", "gender", "skin_tone", "expression", "glasses", "facial_hair", "background", "hair_length"}
    for name, value in m.labels.items():
        assert value in CHOICES[name]
    assert 1 <= m.raw["monk"] <= 10
    assert len(m.raw["embedding"]) == 128
    json.dumps(m.raw)  # plain numbers only: the site stores it


def test_measure_reads_glasses_and_beard_on_a_real_photo(generator_models, analyzer, corpus):
    from engine.faces.image import as_rgb
    from engine.generate.measure import measure_face, source_problems
    from engine.media.image import load_image

    m = measure_face(as_rgb(load_image(corpus / "faces/face_sundar_pichai_glasses.jpg").pixels), analyzer)
    assert m.labels["glasses"] == "yes"
    assert m.labels["facial_hair"] == "yes"
    assert m.labels["gender"] == "masculine"
    group = measure_face(as_rgb(load_image(corpus / "faces/group_obama_biden_2faces.jpg").pixels), analyzer)
    assert group.faces == 2
    assert "more than one face" in source_problems(group)


def test_a_blank_image_has_no_face_and_is_refused(generator_models, analyzer):
    from engine.generate.measure import measure_face, source_problems

    m = measure_face(np.full((512, 512, 3), 128, np.uint8), analyzer)
    assert m.faces == 0 and source_problems(m) == ["no face found"]


# --- the pipeline --------------------------------------------------------------------------------


def test_generate_avatars_returns_checked_unique_candidates_that_render_again(generator_models, analyzer):
    from engine.generate.measure import measure_face, source_problems
    from engine.generate.pipeline import GenerationOptions, generate_avatars, render_avatar

    request = AttributeRequest(glasses="yes")
    steps = []
    candidates = generate_avatars(request, seed=11, options=GenerationOptions(count=2, max_attempts=10),
                                  analyzer=analyzer, progress=lambda p, s: steps.append((p, s)))
    assert 1 <= len(candidates) <= 2
    assert steps and all(0 <= p <= 100 for p, _ in steps)
    for c in candidates:
        assert c.image.shape == (1024, 1024, 3) and c.image.dtype == np.uint8
        assert c.embedding.shape == (128,)
        assert set(c.matched) == {"glasses"}
        assert c.matched["glasses"] == (c.measured["glasses"] == "yes")
        assert c.generator == "stylegan2-ffhq-mobile" and len(c.model_hash) == 64
        assert source_problems(measure_face(c.image, analyzer, embed=False)) == []
        assert np.array_equal(render_avatar(c.seed, request), c.image)
    if len(candidates) == 2:
        assert np.linalg.norm(candidates[0].embedding - candidates[1].embedding) >= GenerationOptions().uniqueness_margin


def test_generate_avatars_avoids_existing_personas(generator_models, analyzer):
    from engine.generate.pipeline import GenerationOptions, generate_avatars

    first = generate_avatars(AttributeRequest(), seed=5, options=GenerationOptions(count=1, max_attempts=6), analyzer=analyzer)
    again = generate_avatars(AttributeRequest(), seed=5, options=GenerationOptions(count=1, max_attempts=6),
                             analyzer=analyzer, avoid=np.array([first[0].embedding]))
    assert again[0].seed != first[0].seed
    assert np.linalg.norm(again[0].embedding - first[0].embedding) >= GenerationOptions().uniqueness_margin


def test_generate_avatars_fails_clearly_when_nothing_passes(generator_models, analyzer):
    from engine.generate.pipeline import GenerationOptions, generate_avatars

    with pytest.raises(GenerationFailed, match="too close to an existing persona"):
        generate_avatars(AttributeRequest(), seed=3, options=GenerationOptions(count=1, max_attempts=2, uniqueness_margin=99.0),
                         analyzer=analyzer, avoid=np.zeros((1, 128), np.float32))


def test_fair_draws_are_uniform_and_seeded():
    from engine.generate.pipeline import candidate_seed, render_targets

    draws = [render_targets(candidate_seed(1, i), AttributeRequest(gender="masculine")) for i in range(600)]
    assert all(d["gender"] == "masculine" for d in draws)
    tones = [d["skin_tone"] for d in draws]
    assert all(150 <= tones.count(t) <= 250 for t in ("light", "medium", "deep"))
    assert render_targets(42, AttributeRequest()) == render_targets(42, AttributeRequest())
    assert render_targets(42, AttributeRequest(), fair=False) == {}


def test_edit_holds_what_an_attribute_would_drag_along():
    from dataclasses import replace

    directions = replace(_toy_directions(), holds={"glasses": ["ab"]})
    style = np.zeros((1, 512), np.float32)
    before = float(directions.vectors[2] @ style[0])
    edited = edit_style(style, {"glasses": "yes"}, directions)
    assert 2.0 <= edited[0, 0] <= 3.0
    assert float(directions.vectors[2] @ edited[0]) == pytest.approx(before, abs=1e-5)
    free = edit_style(style, {"glasses": "yes"}, _toy_directions())
    assert float(directions.vectors[2] @ free[0]) != pytest.approx(before, abs=1e-3)


def test_source_problems_name_each_failed_check():
    from engine.generate.measure import Measurement, source_problems

    fit = {"yaw": 1.0, "pitch": -2.0, "roll": 0.0, "eye_open": [0.3, 0.3], "forehead_skin": 0.98,
           "cheek_l_difference": 2.0, "beside_face_texture": 30.0, "symmetry": 0.03, "sharpness": 200.0,
           "presence": 1.0, "age": 30.0, "eye_darkness": 20.0, "lip_colour_excess": 10.0}
    assert source_problems(Measurement(faces=1, raw=fit)) == []
    cases = {
        "head not frontal": {"yaw": 25.0},
        "eyes not open": {"eye_open": [0.05, 0.3]},
        "forehead covered by hair": {"forehead_skin": 0.3},
        "strong shadow on one side": {"cheek_l_difference": 25.0},
        "busy background beside the face": {"beside_face_texture": 90.0},
        "distorted face (mesh asymmetry)": {"symmetry": 0.2},
        "blurred": {"sharpness": 5.0},
        "face not confirmed by the mesh": {"presence": 0.5},
        "looks like a child": {"age": 8.0},
        "eyes hidden behind dark glasses": {"eye_darkness": 70.0},
        "strong make-up": {"lip_colour_excess": 40.0},
    }
    for problem, change in cases.items():
        assert source_problems(Measurement(faces=1, raw={**fit, **change})) == [problem], problem
    assert source_problems(Measurement(faces=2, raw=fit)) == ["more than one face"]
