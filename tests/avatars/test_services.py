"""Persona services and the generation job, with the engine replaced by FakeEngine."""
from __future__ import annotations

import io
import logging
import uuid

import numpy as np
import pytest
from django.core.files.storage import default_storage
from PIL import Image

from accounts.models import UsageCounter
from accounts.quotas import LimitReached, quota_reserve
from avatars import services
from avatars.models import Avatar, GenerationJob, provenance_keys
from engine.errors import GenerationFailed
from engine.media.provenance import read_digital_source_type, verify, watermark_detect
from safeface.jobs import JobStatus, job_cancel, run_next_job, sweep_jobs
from tests.avatars.conftest import generation, persona, stored
from tests.conftest import make_user

pytestmark = pytest.mark.django_db


def avatars_used(user) -> int:
    return UsageCounter.objects.filter(user=user, metric="avatars").values_list("used", flat=True).first() or 0


def user_files(user) -> list[str]:
    found = []

    def walk(prefix):
        try:
            dirs, files = default_storage.listdir(prefix)
        except FileNotFoundError:
            return
        found.extend(prefix + f for f in files)
        for d in dirs:
            walk(f"{prefix}{d}/")

    walk(f"users/{user.pk}/")
    return sorted(found)


# --- generation -------------------------------------------------------------------------------
def test_a_generation_stores_four_signed_watermarked_candidates(owner, fake_engine):
    job = generation(owner, {"gender": "feminine", "glasses": "yes"})
    assert job.status == JobStatus.SUCCEEDED and job.progress == 100
    assert avatars_used(owner) == 1
    candidates = list(job.candidates())
    assert len(candidates) == 4 and all(c.status == "candidate" for c in candidates)
    (call,) = fake_engine.calls
    assert call["request"].as_dict() == {"gender": "feminine", "glasses": "yes"}
    assert call["seed"] == job.seed and call["options"].count == 4
    for candidate in candidates:
        assert candidate.image.name.startswith(f"users/{owner.pk}/avatars/") and candidate.image.name.endswith(".png")
        data = default_storage.open(candidate.image.name).read()
        assert data.startswith(b"\x89PNG")
        assert read_digital_source_type(data).endswith("/trainedAlgorithmicMedia")
        pixels = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        assert pixels.shape == (512, 512, 3) and watermark_detect(pixels)
        assert Image.open(default_storage.open(candidate.thumbnail.name)).size == (384, 384)
        assert verify(provenance_keys()[0], data, candidate.provenance_fields(), candidate.signature)
        assert services.avatar_verify(candidate) == data
        assert candidate.generator == "fake-stylegan" and candidate.model_hash == "f" * 64
        assert candidate.attributes == {"gender": "feminine", "glasses": "yes"}
        assert candidate.embedding_array.shape == (128,)
        assert candidate.measured["monk"] == 3 and candidate.measured["gender"] == "feminine"
    assert len({c.seed for c in candidates}) == 4


def test_every_other_avatar_on_the_platform_is_passed_as_avoid(owner, other_user, fake_engine):
    theirs = persona(other_user, "Theirs")
    leftover = generation(other_user)  # candidates not kept yet count too
    fake_engine.calls.clear()
    generation(owner)
    avoid = fake_engine.calls[0]["avoid"]
    expected = [theirs.embedding_array, *[c.embedding_array for c in leftover.candidates()]]
    assert avoid.shape == (5, 128) and avoid.dtype == np.float32
    assert sorted(map(tuple, avoid.tolist())) == sorted(map(tuple, np.array(expected).tolist()))


def test_the_first_generation_on_the_platform_avoids_nothing(owner, fake_engine):
    generation(owner)
    assert fake_engine.calls[0]["avoid"] is None


def test_engine_failure_fails_the_job_with_its_message_refunds_and_leaves_no_files(owner, fake_engine):
    fake_engine.fail = GenerationFailed("None of the 24 faces passed our checks. Try again.")
    job = generation(owner, {"hair_colour": "red"}, run=False)
    assert run_next_job("avatars.GenerationJob").endswith("failed")
    job.refresh_from_db()
    assert job.error == "None of the 24 faces passed our checks. Try again."
    assert avatars_used(owner) == 0 and job.quota_refunded
    assert not Avatar.objects.exists() and user_files(owner) == []


def test_a_crash_after_the_files_are_written_leaves_none_behind(owner, fake_engine, monkeypatch):
    def broken_bulk_create(*args, **kwargs):
        raise RuntimeError("database went away")

    monkeypatch.setattr(Avatar.objects, "bulk_create", broken_bulk_create)
    job = generation(owner, run=False)
    assert run_next_job("avatars.GenerationJob").endswith("queued")  # retried once
    assert user_files(owner) == [] and not Avatar.objects.exists()
    assert run_next_job("avatars.GenerationJob").endswith("failed")
    job.refresh_from_db()
    assert job.quota_refunded and avatars_used(owner) == 0 and user_files(owner) == []


def test_a_cancel_requested_while_running_stores_nothing(owner, fake_engine, monkeypatch):
    import engine.generate.pipeline as pipeline

    job = generation(owner, run=False)

    def cancel_then_generate(request, **kwargs):
        GenerationJob.objects.filter(pk=job.pk).update(cancel_requested=True)
        return fake_engine(request, **kwargs)

    monkeypatch.setattr(pipeline, "generate_avatars", cancel_then_generate)
    assert run_next_job("avatars.GenerationJob").endswith("cancelled")
    assert not Avatar.objects.exists() and user_files(owner) == []
    assert avatars_used(owner) == 0


def test_cancelling_a_queued_generation_refunds(owner, fake_engine):
    job = generation(owner, run=False)
    assert avatars_used(owner) == 1
    assert job_cancel(job)
    assert avatars_used(owner) == 0 and run_next_job("avatars.GenerationJob") == "idle"


def test_quota_exhausted_creates_no_job(owner, fake_engine):
    quota_reserve(user=owner, metric="avatars", amount=10)
    with pytest.raises(LimitReached, match="You have used 10 of your 10 monthly personas generated"):
        services.generation_start(user=owner, attributes={})
    assert not GenerationJob.objects.exists() and fake_engine.calls == []


def test_the_same_form_submitted_twice_makes_one_job(owner, fake_engine):
    token = uuid.uuid4()
    first = services.generation_start(user=owner, attributes={"gender": "masculine"}, submission=token)
    second = services.generation_start(user=owner, attributes={"gender": "masculine"}, submission=token)
    assert first.pk == second.pk and GenerationJob.objects.count() == 1 and avatars_used(owner) == 1


def test_an_unknown_attribute_value_is_refused(owner):
    with pytest.raises(ValueError, match="Hair colour: 'green' is not one of"):
        services.generation_start(user=owner, attributes={"hair_colour": "green"})
    assert not GenerationJob.objects.exists()


def test_regenerate_uses_the_same_attributes_and_a_new_seed(owner, fake_engine):
    first = generation(owner, {"expression": "smile"})
    again = services.generation_regenerate(user=owner, job=first)
    assert again.pk != first.pk and again.attributes == {"expression": "smile"}
    assert again.seed != first.seed and avatars_used(owner) == 2


# --- keeping a candidate ----------------------------------------------------------------------
def test_keeping_a_candidate_deletes_the_others_and_their_files(owner, fake_engine, django_capture_on_commit_callbacks):
    job = generation(owner)
    chosen, *others = job.candidates()
    other_files = [name for o in others for name in stored(o)]
    with django_capture_on_commit_callbacks(execute=True):
        kept = services.avatar_pick(user=owner, avatar=chosen, name="  Studio   Sam ")
    assert kept.status == "ready" and kept.name == "Studio Sam" and kept.kept_at
    assert list(Avatar.objects.filter(user=owner)) == [kept]
    assert not any(default_storage.exists(name) for name in other_files)
    assert all(default_storage.exists(name) for name in stored(kept))
    assert job.kept == kept


def test_keeping_twice_makes_one_persona(owner, fake_engine):
    job = generation(owner)
    chosen, second, *_ = job.candidates()
    first = services.avatar_pick(user=owner, avatar=chosen, name="Sam")
    again = services.avatar_pick(user=owner, avatar=chosen, name="Sam")
    assert first.pk == again.pk
    with pytest.raises(services.AvatarActionRefused):  # the other candidates are gone
        services.avatar_pick(user=owner, avatar=second, name="Other")
    assert Avatar.objects.filter(user=owner, status="ready").count() == 1


def test_a_second_candidate_of_the_same_generation_cannot_be_kept(owner, fake_engine):
    job = generation(owner)
    first, second, *_ = job.candidates()
    services.avatar_pick(user=owner, avatar=first, name="Sam")
    # Even if a second candidate row were still there (e.g. a race), the rule holds.
    second.pk = None
    second.save()
    with pytest.raises(services.AvatarActionRefused, match="You already kept “Sam” from this generation."):
        services.avatar_pick(user=owner, avatar=second, name="Kim")


def test_keeping_needs_a_name_and_refuses_an_overlong_one(owner, fake_engine):
    candidate = generation(owner).candidates().first()
    with pytest.raises(services.AvatarActionRefused, match="Give your persona a name."):
        services.avatar_pick(user=owner, avatar=candidate, name="   ")
    with pytest.raises(services.AvatarActionRefused, match="at most 80 characters; this one has 81"):
        services.avatar_pick(user=owner, avatar=candidate, name="x" * 81)
    candidate.refresh_from_db()
    assert candidate.status == "candidate"


def test_another_users_candidate_cannot_be_kept(owner, other_user, fake_engine):
    candidate = generation(owner).candidates().first()
    with pytest.raises(services.AvatarActionRefused):
        services.avatar_pick(user=other_user, avatar=candidate, name="Mine now")
    candidate.refresh_from_db()
    assert candidate.status == "candidate"


def test_a_candidate_too_close_to_a_persona_kept_meanwhile_is_refused(owner, other_user, fake_engine):
    job = generation(owner)
    candidate = job.candidates().first()
    twin = persona(other_user, "Twin")
    Avatar.objects.filter(pk=twin.pk).update(embedding=(candidate.embedding_array + 0.01).astype("<f4").tobytes())
    with pytest.raises(services.AvatarActionRefused, match="looks too much like this candidate"):
        services.avatar_pick(user=owner, avatar=candidate, name="Sam")


# --- provenance -------------------------------------------------------------------------------
def test_a_tampered_file_is_refused(owner, fake_engine):
    avatar = persona(owner)
    original = default_storage.open(avatar.image.name).read()
    recoded = io.BytesIO()
    Image.open(io.BytesIO(original)).save(recoded, "PNG", optimize=True)  # same pixels, other bytes
    assert recoded.getvalue() != original
    with default_storage.open(avatar.image.name, "wb") as handle:
        handle.write(recoded.getvalue())
    with pytest.raises(services.AvatarTampered, match="does not match the signature"):
        services.avatar_verify(avatar)
    assert not services.avatar_is_verified(avatar)


def test_a_changed_provenance_field_is_refused(owner, fake_engine):
    avatar = persona(owner)
    Avatar.objects.filter(pk=avatar.pk).update(seed=avatar.seed + 1)
    avatar.refresh_from_db()
    with pytest.raises(services.AvatarTampered):
        services.avatar_verify(avatar)


def test_a_missing_file_is_refused(owner, fake_engine):
    avatar = persona(owner)
    default_storage.delete(avatar.image.name)
    with pytest.raises(services.AvatarTampered, match="missing"):
        services.avatar_verify(avatar)


def test_signatures_survive_rotating_the_secret_key(owner, fake_engine, settings):
    avatar = persona(owner)
    settings.SECRET_KEY_FALLBACKS = [settings.SECRET_KEY]
    settings.SECRET_KEY = "a-brand-new-secret-key-" + "x" * 40
    assert services.avatar_verify(avatar)
    settings.SECRET_KEY_FALLBACKS = []
    with pytest.raises(services.AvatarTampered):
        services.avatar_verify(avatar)


# --- rename, favourite, delete ----------------------------------------------------------------
def test_rename_and_favourite(owner, fake_engine):
    avatar = persona(owner)
    services.avatar_rename(avatar=avatar, name="Kim")
    assert Avatar.objects.get(pk=avatar.pk).name == "Kim"
    with pytest.raises(services.AvatarActionRefused):
        services.avatar_rename(avatar=avatar, name="")
    assert services.avatar_toggle_favourite(avatar=avatar).favourite
    assert not services.avatar_toggle_favourite(avatar=avatar).favourite
    assert Avatar.objects.get(pk=avatar.pk).name == "Kim"


def test_deleting_a_persona_removes_its_files(owner, fake_engine, django_capture_on_commit_callbacks):
    avatar = persona(owner)
    names = stored(avatar)
    assert all(default_storage.exists(n) for n in names) and len(names) == 2
    with django_capture_on_commit_callbacks(execute=True):
        services.avatar_delete(avatar=avatar)
    assert not Avatar.objects.filter(pk=avatar.pk).exists()
    assert not any(default_storage.exists(n) for n in names)


# --- retention and account deletion -----------------------------------------------------------
def test_candidates_not_kept_are_purged_after_retention_but_personas_stay(owner, fake_engine, django_capture_on_commit_callbacks):
    from datetime import timedelta

    from django.utils import timezone

    left = generation(owner)
    kept = persona(owner, "Kept")
    left_files = [n for c in left.candidates() for n in stored(c)]
    GenerationJob.objects.update(finished_at=timezone.now() - timedelta(days=8))
    with django_capture_on_commit_callbacks(execute=True):
        assert sweep_jobs()["purged"] == 2
    assert not left.candidates().exists() and not any(default_storage.exists(n) for n in left_files)
    assert Avatar.objects.filter(pk=kept.pk).exists() and all(default_storage.exists(n) for n in stored(kept))


def test_deleting_the_account_removes_every_persona_file(owner, fake_engine):
    from accounts.services import user_delete

    persona(owner)
    generation(owner)
    survivor = make_user("survivor@example.com")
    theirs = persona(survivor)
    assert len(user_files(owner)) == 2 + 8
    user_delete(user=owner)
    assert user_files(owner) == [] and not Avatar.objects.filter(user_id=owner.pk).exists()
    assert all(default_storage.exists(n) for n in stored(theirs))


def test_the_security_log_names_the_refused_avatar(owner, fake_engine, caplog):
    avatar = persona(owner)
    with caplog.at_level(logging.WARNING, logger="safeface.security"):
        services.report_tampered(services.AvatarTampered(avatar, "changed"), action="download", user_id=owner.pk)
    assert f"avatar {avatar.pk}" in caplog.text and "download" in caplog.text


def test_the_data_export_holds_the_personas_and_their_files(owner, other_user, fake_engine):
    import json
    import zipfile

    from accounts.models import DataExport
    from accounts.services import data_export_create

    avatar = persona(owner, "Exported")
    persona(other_user, "Not mine")
    data_export_create(user=owner)
    assert run_next_job("accounts.DataExport").endswith("succeeded")
    export = DataExport.objects.get(user=owner)
    archive = zipfile.ZipFile(default_storage.open(export.archive.name))
    rows = json.loads(archive.read("records/avatars.avatar.json"))
    assert [r["fields"]["name"] for r in rows] == ["Exported"]
    png = default_storage.open(avatar.image.name).read()
    assert png in [archive.read(n) for n in archive.namelist() if n.startswith("files/")]
