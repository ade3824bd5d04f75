"""Shared fixtures: three people (an owner, another user, an outsider with no account), an
isolated media folder per test, and helpers to require services (fail under CI, skip locally)."""
from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from django.core.cache import cache

from accounts.models import Plan, User

PASSWORD = "correct horse battery staple 42"


def ensure_plans() -> None:
    """Transactional tests flush the plans the data migration created; put them back."""
    from importlib import import_module

    seed = import_module("accounts.migrations.0002_seed_plans")
    swaps = import_module("accounts.migrations.0003_plan_swaps_per_period").SWAPS
    voice = import_module("accounts.migrations.0004_plan_voice_minutes_per_period").VOICE_MINUTES
    for values in seed.PLANS:
        slug = values["slug"]
        Plan.objects.get_or_create(
            slug=slug, defaults={**values, "swaps_per_period": swaps[slug], "voice_minutes_per_period": voice[slug]}
        )


def make_user(email: str, *, plan: str | None = None, password: str = PASSWORD) -> User:
    ensure_plans()
    user = User.objects.create_user(email=email, password=password)
    if plan:
        user.plan = Plan.objects.get(slug=plan)
        user.save(update_fields=["plan"])
    return user


@pytest.fixture(autouse=True)
def _isolated_media(tmp_path, settings):
    media = tmp_path / "media"
    settings.MEDIA_ROOT = media
    settings.STORAGES = {
        **settings.STORAGES,
        "default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage",
            "OPTIONS": {"location": str(media), "base_url": settings.MEDIA_URL},
        },
    }
    # Changing STORAGES makes Django drop its cached storages, so default_storage follows.
    cache.clear()
    yield media


@pytest.fixture
def owner(db) -> User:
    return make_user("owner@example.com")


@pytest.fixture
def other_user(db) -> User:
    return make_user("other@example.com")


@pytest.fixture
def owner_client(client, owner):
    client.force_login(owner)
    return client


@pytest.fixture
def other_client(client, other_user):
    client.force_login(other_user)
    return client


def service_available(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def require_service(name: str, host: str, port: int) -> None:
    """Under CI a missing service is a failure, never a skip."""
    if service_available(host, port):
        return
    message = f"{name} is not reachable at {host}:{port}"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: tests that need it must run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def corpus() -> Path:
    """The real media corpus named by SAFEFACE_CORPUS. Unset: corpus tests skip (a fresh clone
    without ../shared). Set but missing or empty: a failure, so CI cannot silently skip them."""
    folder = os.environ.get("SAFEFACE_CORPUS")
    if not folder:
        pytest.skip("SAFEFACE_CORPUS is not set (real-media tests need ../shared/corpus)")
    path = Path(folder)
    if not (path / "MANIFEST.md").is_file():
        pytest.fail(f"SAFEFACE_CORPUS={folder} does not hold the media corpus (no MANIFEST.md)")
    return path
