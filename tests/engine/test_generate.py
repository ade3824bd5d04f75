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
        assert all(directions.refinable(attribute, value) for value in values), attribute
    assert directions.vectors.shape == (len(directions.names), 512)
    assert np.allclose(np.linalg.norm(directions.vectors, axis=1), 1.0, atol=1e-4)


def _calibrated_directions() -> Directions:
    from dataclasses import replace

    # measure "a" = 10 x projection on vector 0; "b" = -2 x projection on vector 1 + 1
    return replace(_toy_directions(), names=("a", "b", "ab"),
                   calibration={"a": [10.0, 0.0], "b": [-2.0, 1.0], "ab": [1.0, 0.0]},
                   target_measures={"glasses": {"yes": [["a", 20.0, 30.0]]}, "smile": {"smile": [["ab", 1.0, 1.5]]}})


def test_refine_moves_a_missed_measure_by_its_shortfall_and_holds_the_rest(monkeypatch):
    from engine.generate import directions as module

    monkeypatch.setitem(module.MEASURES, "a", lambda raw: raw["a"])
    directions = _calibrated_directions()
    style = np.zeros((1, 512), np.float32)
    style[0, 0], style[0, 1] = 2.1, 0.3  # edited: projection 2.1 is in range, but it measured 12
    fixes = directions.fixes({"glasses": "yes"}, ["glasses"], [])
    assert fixes == [("a", 20.0, 30.0)]
    refined = module.refine_style(style, {"glasses": "yes"}, fixes, {"a": 12.0}, directions, seed=3)
    moved = float(refined[0, 0] - style[0, 0])
    # the measure must rise by 8..18 (to 20..30, inner part 21.5..28.5): 0.95..1.65 projection units
    assert 0.95 <= moved <= 1.65
    assert refined[0, 1] == pytest.approx(0.3, abs=1e-5)  # the always-on constraint stays
    # a measure already in range, or one that cannot be read, leaves the style as it is
    assert np.array_equal(module.refine_style(style, {"glasses": "yes"}, fixes, {"a": 25.0}, directions), style)
    assert np.array_equal(module.refine_style(style, {"glasses": "yes"}, fixes, {"a": float("nan")}, directions), style)
    assert directions.refinable("glasses", "yes") and not directions.refinable("glasses", "no")


def test_swap_source_problems_that_a_constraint_stands_for_can_be_fixed(monkeypatch):
    from dataclasses import replace

    from engine.generate import directions as module
    from engine.generate.measure import Measurement, source_problems

    monkeypatch.setitem(module.MEASURES, "b", lambda raw: raw["b"])
    directions = replace(_calibrated_directions(), constraint_measures={"frontal_yaw": ["b", -3.0, 3.0]},
                         constraints={"frontal_yaw": [1, -2.0, 2.0]})
    fit = {"yaw": 1.0, "pitch": -2.0, "roll": 0.0, "eye_open": [0.3, 0.3], "forehead_skin": 0.98,
           "cheek_l_difference": 2.0, "beside_face_texture": 30.0, "symmetry": 0.03, "sharpness": 200.0,
           "presence": 1.0, "age": 30.0, "eye_darkness": 20.0, "lip_colour_excess": 10.0}
    # every problem named in PROBLEM_CONSTRAINTS is one that source_problems reports
    for problem, change in {"head not frontal": {"yaw": 25.0}, "strong shadow on one side": {"cheek_l_difference": 25.0},
                            "busy background beside the face": {"beside_face_texture": 90.0},
                            "forehead covered by hair": {"forehead_skin": 0.3}, "looks like a child": {"age": 8.0}}.items():
        assert source_problems(Measurement(faces=1, raw={**fit, **change})) == [problem]
    assert set(module.PROBLEM_CONSTRAINTS) == {"head not frontal", "strong shadow on one side", "busy background beside the face",
                                               "forehead covered by hair", "looks like a child"}
    # "head not frontal" needs frontal_yaw and frontal_pitch; only yaw is known here
    assert not directions.fixable("head not frontal") and not directions.fixable("blurred")
    directions = replace(directions, constraint_measures={"frontal_yaw": ["b", -3.0, 3.0], "frontal_pitch": ["a", 0.0, 1.0]})
    assert directions.fixable("head not frontal")
    assert directions.fixes({}, [], ["head not frontal"]) == [("b", -3.0, 3.0), ("a", 0.0, 1.0)]
    style = np.zeros((1, 512), np.float32)
    refined = module.refine_style(style, {}, [("b", -3.0, 3.0)], {"b": 9.0}, directions, seed=1)
    # b = -2 x projection + 1 must fall by 6.9..11.1: the projection on vector 1 rises by 3.45..5.55
    assert 3.45 <= float(refined[0, 1]) <= 5.55


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


# --- measurement -----------------------------------------------------------------------------------


def test_hair_colour_names_cover_the_vocabulary():
    from engine.generate.measure import hair_colour_name

    assert hair_colour_name([12.0, 2.0, 3.0]) == "black"
    assert hair_colour_name([32.0, 8.0, 12.0]) == "brown"
    assert hair_colour_name([62.0, 6.0, 24.0]) == "blonde"
    assert hair_colour_name([72.0, 6.0, 12.0]) == "blonde"  # platinum: light, faintly yellow
    assert hair_colour_name([40.0, 22.0, 24.0]) == "red"
    assert hair_colour_name([65.0, 1.0, 4.0]) == "grey"
    assert hair_colour_name([float("nan")] * 3) is None
    assert set(CHOICES["hair_colour"]) == {"black", "brown", "blonde", "red", "grey"}


def test_age_is_the_expected_age_over_the_classes_and_bands_split_at_30_45_60():
    from engine.generate.measure import AGE_CLASS_YEARS, age_band, age_years

    one_hot = np.zeros(81)
    one_hot[52] = 1.0
    assert age_years(one_hot) == pytest.approx(52.0)
    split = np.zeros(81)
    split[[20, 40]] = 0.5
    assert age_years(split) == pytest.approx(30.0)
    assert len(AGE_CLASS_YEARS) == 81
    assert [age_band(y) for y in (18, 29.9, 30, 44.9, 45, 59.9, 60, 85)] == [
        "young", "young", "adult", "adult", "middle", "middle", "senior", "senior"]


# --- measurement on real faces ------------------------------------------------------------------


def test_fused_inverse_wavelets_render_the_exported_network_exactly(generator_models):
    import openvino

    from engine.generate.stylegan import SYNTHESIS, fuse_inverse_wavelets, style_for_seed
    from engine.models import model_path

    core = openvino.Core()
    exported = core.read_model(*map(model_path, SYNTHESIS))
    fused = core.read_model(*map(model_path, SYNTHESIS))
    assert fuse_inverse_wavelets(fused) == 8  # one per resolution, 8 px to 1024 px
    assert not [op for op in fused.get_ops() if op.get_type_name() == "GroupConvolutionBackpropData"]
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    style = style_for_seed(5)
    a = next(iter(core.compile_model(exported, "CPU", config)(style).values()))
    b = next(iter(core.compile_model(fused, "CPU", config)(style).values()))
    assert a.shape == b.shape == (1, 3, 1024, 1024)
    assert float(np.abs(a - b).max()) < 1e-4


def test_age_and_gender_of_generated_faces(generator_models, analyzer):
    from engine.generate.measure import measure_face
    from engine.generate.stylegan import generate_face

    ages = {seed: measure_face(generate_face(seed), analyzer, embed=False).raw["age"] for seed in (7, 24)}
    assert ages[7] < 12  # seed 7 is a small child
    assert 17 <= ages[24] <= 80


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


def test_a_candidate_that_missed_is_refined_until_it_matches(monkeypatch):
    from engine.generate import pipeline
    from engine.generate.measure import Measurement

    fit = {"yaw": 1.0, "pitch": -2.0, "roll": 0.0, "eye_open": [0.3, 0.3], "forehead_skin": 0.98,
           "cheek_l_difference": 2.0, "beside_face_texture": 30.0, "symmetry": 0.03, "sharpness": 200.0,
           "presence": 1.0, "age": 30.0, "eye_darkness": 20.0, "lip_colour_excess": 10.0}

    class Backend:
        name, model_hash = "fake", "x"

        def __init__(self):
            self.refined = []

        def render(self, seed, targets):
            return self.render_style(self.style(seed, targets))

        def style(self, seed, targets):
            return np.zeros((1, 512), np.float32)

        def render_style(self, style):
            return np.full((4, 4, 3), int(style[0, 0]), np.uint8)

        def can_refine(self, attribute, value):
            return attribute == "glasses"

        def can_fix(self, problem):
            return problem == "head not frontal"

        def refine(self, style, targets, missed, raw, problems=(), seed=0):
            self.refined.append((missed, list(problems)))
            return style + 1.0

    def run(*measurements, request=AttributeRequest(glasses="yes", expression="smile")):
        queue = iter(measurements)
        monkeypatch.setattr(pipeline, "measure_face", lambda image, analyzer, embed: next(queue))
        backend = Backend()
        result = pipeline.finish_candidate(backend, 1, request, request.as_dict(), backend.render(1, {}), None)
        return result, backend.refined

    missed = Measurement(faces=1, raw=fit, labels={"glasses": "no", "expression": "neutral"})
    hit = Measurement(faces=1, raw=fit, labels={"glasses": "yes", "expression": "neutral"})
    turned = Measurement(faces=1, raw={**fit, "yaw": 30.0}, labels=missed.labels)
    # missed glasses (refinable) and smile (not): refined for glasses; it matches more, so it stays,
    # and nothing refinable is left
    result, calls = run(missed, hit)
    assert calls == [(["glasses"], [])] and result.refined and result.renders == 2 and result.image.max() == 1
    # the refined face fails a check: the first face stays, and both renders count
    result, calls = run(missed, turned)
    assert calls == [(["glasses"], [])] and not result.refined and result.renders == 2 and result.image.max() == 0
    # a refinement that gains nothing ends it; a second one may follow one that helped
    result, calls = run(missed, missed)
    assert len(calls) == 1 and result.image.max() == 0 and result.renders == 2
    result, calls = run(turned, missed, hit)
    assert calls == [(["glasses"], ["head not frontal"]), (["glasses"], [])]
    assert result.refined and result.renders == 3 and result.image.max() == 2 and not result.problems
    assert len(calls) <= pipeline.REFINEMENTS
    # a face that matched is not refined
    assert run(hit, request=AttributeRequest(glasses="yes"))[1] == []
    # a problem no constraint stands for: a new seed instead
    blurred = Measurement(faces=1, raw={**fit, "yaw": 30.0, "sharpness": 1.0}, labels=missed.labels)
    result, calls = run(blurred)
    assert calls == [] and result.problems == ["head not frontal", "blurred"]
