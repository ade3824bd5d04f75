"""Engine fixtures: the embedded model files (skip locally when missing, fail under CI, where
the test command fetches them first) and one shared FaceAnalyzer."""
from __future__ import annotations

import os

import pytest


def require_models(group: str | None = None) -> dict:
    from engine.errors import ModelMissing
    from engine.models import EMBEDDED_GROUPS, MANIFEST, model_path

    # No group: every embedded model (production groups are fetched only on request).
    try:
        return {
            e.name: model_path(e.name) for e in MANIFEST
            if (e.group in EMBEDDED_GROUPS if group is None else e.group == group)
        }
    except ModelMissing as error:
        if os.environ.get("CI"):
            pytest.fail(f"{error} (CI is set: model tests must run)")
        pytest.skip(str(error))


@pytest.fixture(scope="session")
def face_models() -> dict:
    return require_models("faces")


@pytest.fixture(scope="session")
def models() -> dict:
    return require_models()


@pytest.fixture(scope="session")
def analyzer(face_models):
    from engine.faces import FaceAnalyzer

    return FaceAnalyzer.default()
