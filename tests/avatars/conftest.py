"""Persona fixtures: a stand-in for ``generate_avatars`` (synthetic pictures, random identity
embeddings, honest ``matched``) for view and service tests, and factories for finished
generations and kept personas. The real engine runs in test_real_engine.py and the e2e test."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from avatars.models import Avatar, GenerationJob
from engine.generate.attributes import ATTRIBUTE_NAMES, CHOICES
from safeface.jobs import run_next_job

FAKE_SIDE = 512  # large enough for the watermark, smaller than the real 1024 to keep tests quick


@dataclass
class FakeEngine:
    """Records each call; ``fail`` makes the next calls raise that engine error."""

    calls: list[dict] = field(default_factory=list)
    fail: Exception | None = None
    miss: str | None = None  # an attribute the last candidate does not match

    def __call__(self, request, *, seed, options, avoid=None, progress=None, **kwargs):
        from engine.generate.pipeline import Candidate

        self.calls.append({"request": request, "seed": seed, "options": options, "avoid": avoid})
        if progress:
            progress(50.0, "Generating faces (2 of 4 ready)")
        if self.fail is not None:
            raise self.fail
        asked = request.as_dict()
        candidates = []
        for index in range(options.count):
            rng = np.random.default_rng([seed, index])
            image = np.zeros((FAKE_SIDE, FAKE_SIDE, 3), np.uint8)
            image[..., 0] = np.arange(FAKE_SIDE, dtype=np.uint16)[None, :] * 255 // FAKE_SIDE
            image[..., 1] = rng.integers(0, 256)
            image[..., 2] = np.arange(FAKE_SIDE, dtype=np.uint16)[:, None] * 255 // FAKE_SIDE
            measured = {name: asked.get(name, next(iter(CHOICES[name]))) for name in ATTRIBUTE_NAMES}
            matched = {name: True for name in asked}
            if self.miss and self.miss in asked and index == options.count - 1:
                other = [key for key in CHOICES[self.miss] if key != asked[self.miss]][0]
                measured[self.miss] = other
                matched[self.miss] = False
            measured.update({"monk": np.int64(3), "ita": np.float32(41.5), "age": 33.0})
            candidates.append(Candidate(
                seed=seed * 10 + index,
                image=image,
                embedding=rng.standard_normal(128).astype(np.float32),
                measured=measured,
                matched=matched,
                checks={"yaw": np.float32(1.5)},
                generator="fake-stylegan",
                model_hash="f" * 64,
            ))
        return candidates


@pytest.fixture
def fake_engine(monkeypatch) -> FakeEngine:
    import engine.generate.pipeline as pipeline

    fake = FakeEngine()
    monkeypatch.setattr(pipeline, "generate_avatars", fake)
    return fake


def generation(user, attributes: dict | None = None, *, run: bool = True) -> GenerationJob:
    """A generation submitted (and, with ``run``, run by a worker) for ``user``."""
    from avatars.services import generation_start

    job = generation_start(user=user, attributes=attributes or {})
    if run:
        outcome = run_next_job("avatars.GenerationJob")
        assert outcome.endswith("succeeded"), outcome
    job.refresh_from_db()
    return job


def persona(user, name: str = "Sam", attributes: dict | None = None) -> Avatar:
    """A persona kept from a finished generation (the other candidates' files deleted)."""
    from django.test import TestCase

    from avatars.services import avatar_pick

    job = generation(user, attributes)
    with TestCase.captureOnCommitCallbacks(execute=True):
        return avatar_pick(user=user, avatar=job.candidates().first(), name=name)


def stored(avatar: Avatar) -> list[str]:
    return [f.name for f in (avatar.image, avatar.thumbnail) if f]
