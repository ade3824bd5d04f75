"""A persona's voice as data: made from its seed and presentation on first use, tuned, randomised;
and the voice-masking quota in minutes, metered in seconds."""
from __future__ import annotations

import pytest

from accounts.models import Plan
from accounts.quotas import LimitReached, format_seconds, metric_limit, quota_reserve, usage_meters
from engine.voice import PARAMETERS, VoiceProfile
from tests.conftest import make_user
from tests.swaps.conftest import fake_persona
from voice import services
from voice.models import PersonaVoice

pytestmark = pytest.mark.django_db


def persona_with(user, name: str, *, seed: int, attributes: dict | None = None, measured: dict | None = None):
    avatar = fake_persona(user, name, seed=seed)
    avatar.attributes, avatar.measured = attributes or {}, measured or {}
    avatar.save(update_fields=["attributes", "measured"])
    return avatar


def test_a_voice_is_made_once_from_the_persona_seed_and_presentation(owner):
    feminine = persona_with(owner, "Ada", seed=11, attributes={"gender": "feminine", "age_band": "young"})
    voice = services.voice_for(feminine)
    assert voice.user_id == owner.pk and voice.avatar_id == feminine.pk
    assert voice.settings == VoiceProfile.from_seed(11, "feminine", "young").to_dict()
    assert voice.settings["pitch_hz"] > VoiceProfile.from_seed(11, "masculine", "young").pitch_hz + 40
    assert services.voice_for(feminine).pk == voice.pk and PersonaVoice.objects.count() == 1
    # no requested gender: what the engine measured on the face decides
    measured = persona_with(owner, "Bo", seed=12, measured={"gender": "masculine", "age_band": "senior"})
    assert services.voice_for(measured).settings["pitch_hz"] < 140
    # another seed, another voice
    other = persona_with(owner, "Cy", seed=13, attributes={"gender": "feminine", "age_band": "young"})
    assert services.voice_for(other).settings != voice.settings


def test_the_description_does_not_make_a_row(owner):
    avatar = persona_with(owner, "Ada", seed=11, attributes={"gender": "feminine"})
    assert services.voice_description(avatar) == VoiceProfile.from_seed(11, "feminine").describe()
    assert not PersonaVoice.objects.exists()


def test_update_validates_every_value_and_keeps_the_rest(owner):
    voice = services.voice_for(fake_persona(owner, "Ada", seed=3))
    before = dict(voice.settings)
    services.voice_update(voice=voice, values={"method": "mcadams", "pitch_hz": 150.0, "intonation": 1.2, "formant": 1.1, "alpha": 0.7})
    voice.refresh_from_db()
    assert voice.settings == {**before, "method": "mcadams", "pitch_hz": 150.0, "intonation": 1.2, "formant": 1.1, "alpha": 0.7}
    assert voice.describe().startswith("McAdams 0.70")
    with pytest.raises(ValueError, match="Pitch must be between 70 and 300"):
        services.voice_update(voice=voice, values={"pitch_hz": 999})
    with pytest.raises(ValueError, match="unknown voice method"):
        services.voice_update(voice=voice, values={"method": "robot"})
    voice.refresh_from_db()
    assert voice.settings["pitch_hz"] == 150.0 and voice.settings["method"] == "mcadams"


def test_randomise_draws_a_new_voice_of_the_same_method(owner):
    voice = services.voice_for(persona_with(owner, "Ada", seed=3, attributes={"gender": "masculine"}))
    services.voice_update(voice=voice, values={"method": "mcadams"})
    before = dict(voice.settings)
    services.voice_randomise(voice=voice)
    voice.refresh_from_db()
    assert voice.settings["seed"] != before["seed"] and voice.settings["method"] == "mcadams"
    assert voice.settings["pitch_hz"] != before["pitch_hz"] and voice.settings["pitch_hz"] < 150  # still masculine
    for name, spec in PARAMETERS.items():
        assert spec.minimum <= voice.settings[name] <= spec.maximum


# --- the quota --------------------------------------------------------------------------------
def test_voice_minutes_are_metered_in_seconds(owner):
    plan = Plan.objects.get(slug="free")
    assert plan.voice_minutes_per_period == 10 and Plan.objects.get(slug="pro").voice_minutes_per_period == 300
    assert metric_limit(plan, "voice_seconds") == 600
    quota_reserve(user=owner, metric="voice_seconds", amount=125)
    meter = {m.metric: m for m in usage_meters(owner)}["voice_seconds"]
    assert (meter.used, meter.limit, meter.human_used, meter.human_limit) == (125, 600, "2 min 5 s", "10 min")
    assert meter.label == "Voice masking" and meter.percent == 21
    with pytest.raises(LimitReached) as refused:
        quota_reserve(user=owner, metric="voice_seconds", amount=476)
    assert refused.value.message.startswith(
        "You have used 2 min 5 s of your 10 min monthly voice masking on the Free plan; this needs 7 min 56 s more."
    )
    with pytest.raises(LimitReached, match=r"This needs 11 min of voice masking, more than your Free plan's monthly 10 min\."):
        quota_reserve(user=owner, metric="voice_seconds", amount=660)
    pro = make_user("pro@example.com", plan="pro")
    quota_reserve(user=pro, metric="voice_seconds", amount=3600)


@pytest.mark.parametrize(("seconds", "words"), [(0, "0 s"), (59, "59 s"), (60, "1 min"), (61, "1 min 1 s"), (3600, "1 h"), (5430, "1 h 30 min")])
def test_seconds_in_words(seconds, words):
    assert format_seconds(seconds) == words


def test_a_recording_costs_its_length_rounded_up():
    assert [services.quota_seconds(d) for d in (0.2, 1.0, 1.0004, 1.01, 59.5)] == [1, 1, 1, 2, 60]
