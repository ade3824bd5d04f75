"""Swap fixtures: personas with real generated faces (StyleGAN, rendered once per session and
signed like the generation job signs them), uploads made through the service from corpus files
or small generated media, and a helper that runs the queued job the way a worker does."""
from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import pytest
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.utils import timezone

from avatars.models import Avatar, embedding_to_bytes, provenance_keys
from safeface.jobs import run_next_job


def corpus_dir() -> Path:
    """The shared media corpus; skipped without SAFEFACE_CORPUS, a failure when CI is set."""
    folder = os.environ.get("SAFEFACE_CORPUS")
    if not folder or not Path(folder).is_dir():
        if os.environ.get("CI"):
            pytest.fail("SAFEFACE_CORPUS must name the media corpus under CI")
        pytest.skip("SAFEFACE_CORPUS is not set")
    return Path(folder)


@pytest.fixture(scope="session")
def swap_models():
    from tests.engine.conftest import require_models

    require_models("faces")
    require_models("generator")
    require_models("safety")


@functools.cache
def generated_face(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(RGB 1024 px face, its identity embedding) for a StyleGAN seed."""
    from engine.faces import FaceAnalyzer
    from engine.generate.stylegan import generate_face

    image = generate_face(seed)
    analyzer = FaceAnalyzer.default()
    face = max(analyzer.analyze(image), key=lambda f: f.area)
    return image, analyzer.embed(image, face)


def real_persona(user, *, seed: int = 1, name: str = "Nova") -> Avatar:
    """A kept persona whose file is a real generated face, signed with the server key."""
    from engine.media.provenance import encode_avatar_image, sign

    image, embedding = generated_face(seed)
    png = encode_avatar_image(image, generator="stylegan2-ffhq", seed=seed)
    avatar = Avatar(
        user=user, status=Avatar.Status.READY, name=name, generator="stylegan2-ffhq", model_hash="0" * 64,
        seed=seed, attributes={}, embedding=embedding_to_bytes(embedding), kept_at=timezone.now(),
    )
    avatar.signature = sign(provenance_keys()[0], png, avatar.provenance_fields())
    avatar.image.save("avatar.png", ContentFile(png), save=False)
    avatar.thumbnail.save("thumb.png", ContentFile(png), save=False)
    avatar.full_clean()
    avatar.save()
    return avatar


def uploaded(path: Path, name: str | None = None) -> SimpleUploadedFile:
    return SimpleUploadedFile(name or path.name, path.read_bytes())


def run_job(label: str, expect: str = "succeeded") -> str:
    outcome = run_next_job(label)
    assert outcome.endswith(expect), outcome
    return outcome
