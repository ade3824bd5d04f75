"""Persona pages, each for its owner, another user and an anonymous visitor."""
from __future__ import annotations

import io
import logging
import re

import pytest
from django.core.files.storage import default_storage
from django.urls import reverse
from PIL import Image

from accounts.quotas import quota_reserve
from avatars.models import Avatar, GenerationJob
from safeface.jobs import run_next_job
from tests.avatars.conftest import generation, persona, stored

pytestmark = pytest.mark.django_db
LOGIN = "/accounts/login/"
HTMX = {"HTTP_HX_REQUEST": "true"}


def html(response) -> str:
    return response.content.decode()


# --- who may see what --------------------------------------------------------------------------
AVATAR_GETS = ["avatars-detail", "avatars-image", "avatars-download"]
AVATAR_POSTS = ["avatars-rename", "avatars-favourite", "avatars-delete", "avatars-pick"]
JOB_GETS = ["avatars-job"]
JOB_POSTS = ["avatars-job-cancel", "avatars-regenerate"]


@pytest.mark.parametrize("name", ["avatars-library", "avatars-create"])
def test_pages_redirect_anonymous_visitors_to_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith(LOGIN)


def test_every_persona_view_is_private(owner, other_client, client, fake_engine):
    avatar = persona(owner)
    job = generation(owner)
    candidate = job.candidates().first()
    for name in AVATAR_GETS:
        assert other_client.get(reverse(name, args=[avatar.pk])).status_code == 404, name
    for name in AVATAR_POSTS:
        assert other_client.post(reverse(name, args=[avatar.pk]), {"name": "Mine"}).status_code == 404, name
    for name in JOB_GETS:
        assert other_client.get(reverse(name, args=[job.pk])).status_code == 404, name
    for name in JOB_POSTS:
        assert other_client.post(reverse(name, args=[job.pk])).status_code == 404, name
    assert other_client.get(reverse("avatars-image", args=[candidate.pk])).status_code == 404
    assert other_client.post(reverse("avatars-pick", args=[candidate.pk]), {"name": "Stolen"}).status_code == 404
    client.logout()
    for name in AVATAR_GETS + JOB_GETS:
        pk = avatar.pk if name in AVATAR_GETS else job.pk
        response = client.get(reverse(name, args=[pk]))
        assert response.status_code == 302 and response["Location"].startswith(LOGIN), name
    for name in AVATAR_POSTS:
        response = client.post(reverse(name, args=[avatar.pk]), {"name": "Anon"})
        assert response.status_code == 302 and response["Location"].startswith(LOGIN), name
    avatar.refresh_from_db()
    candidate.refresh_from_db()
    assert (avatar.name, avatar.favourite, candidate.status) == ("Sam", False, "candidate")
    assert Avatar.objects.filter(user=owner).count() == 5 and GenerationJob.objects.count() == 2


def test_other_users_personas_are_not_in_my_library(owner, other_client, fake_engine):
    persona(owner, "Owner's face")
    page = html(other_client.get(reverse("avatars-library")))
    assert "Owner&#x27;s face" not in page and 'data-testid="library-empty"' in page


def test_write_views_need_post(owner_client, owner, fake_engine):
    avatar = persona(owner)
    for name in AVATAR_POSTS:
        assert owner_client.get(reverse(name, args=[avatar.pk])).status_code == 405, name


# --- library ----------------------------------------------------------------------------------
def test_empty_library_leads_to_creation(owner_client):
    page = html(owner_client.get(reverse("avatars-library")))
    assert 'data-testid="library-empty"' in page and f'href="{reverse("avatars-create")}"' in page
    assert "Create your first persona" in page


def test_library_lists_and_filters_personas(owner_client, owner, fake_engine):
    sam = persona(owner, "Sam", {"gender": "masculine"})
    kim = persona(owner, "Kim", {"gender": "feminine", "expression": "smile"})
    Avatar.objects.filter(pk=kim.pk).update(favourite=True)
    page = html(owner_client.get(reverse("avatars-library")))
    assert page.count('data-testid="avatar-card"') == 2 and "Sam" in page and "Kim" in page
    assert 'data-testid="nav-personas"' in page
    favourites = html(owner_client.get(reverse("avatars-library"), {"favourite": "on"}, **HTMX))
    assert favourites.lstrip().startswith('<section id="avatar-grid"') and "<html" not in favourites
    assert "Kim" in favourites and "Sam" not in favourites
    masculine = html(owner_client.get(reverse("avatars-library"), {"gender": "masculine"}))
    assert "Sam" in masculine and ">Kim<" not in masculine
    by_name = html(owner_client.get(reverse("avatars-library"), {"q": "ki"}))
    assert ">Kim<" in by_name and ">Sam<" not in by_name
    nothing = html(owner_client.get(reverse("avatars-library"), {"gender": "feminine", "expression": "neutral"}))
    assert 'data-testid="library-no-match"' in nothing
    assert sam.pk != kim.pk


def test_library_rejects_an_unknown_filter_value_clearly(owner_client, owner, fake_engine):
    persona(owner)
    page = html(owner_client.get(reverse("avatars-library"), {"gender": "robot"}))
    assert "Gender presentation: “robot” is not one of the options." in page


def test_library_links_to_generations_waiting_for_a_pick(owner_client, owner, fake_engine):
    job = generation(owner)
    page = html(owner_client.get(reverse("avatars-library")))
    assert reverse("avatars-job", args=[job.pk]) in page and "Candidates ready to pick" in page


# --- creating ---------------------------------------------------------------------------------
def test_create_form_has_every_attribute_with_any(owner_client):
    page = html(owner_client.get(reverse("avatars-create")))
    for name in ("age_band", "gender", "skin_tone", "hair_colour", "hair_length", "expression", "glasses", "facial_hair", "background"):
        assert re.search(rf'<select name="{name}"[^>]*>\s*<option value="" selected>Any</option>', page), name
    assert 'name="submission"' in page and 'hx-get="/personas/new/"' in page


def test_summary_updates_from_the_chosen_attributes(owner_client):
    fragment = html(owner_client.get(reverse("avatars-create"), {"gender": "feminine", "glasses": "yes"}, **HTMX))
    assert fragment.lstrip().startswith('<section id="attribute-summary"') and "<html" not in fragment
    assert "Gender presentation:</span> <strong>Feminine</strong>" in fragment
    assert "Glasses:</span> <strong>Glasses</strong>" in fragment
    assert "Uses 1 of the 10 personas left this month." in fragment
    bad = html(owner_client.get(reverse("avatars-create"), {"skin_tone": "green"}, **HTMX))
    assert "Skin tone: “green” is not one of the options." in bad


def test_generate_queues_a_job_and_opens_its_page(owner_client, owner, fake_engine):
    response = owner_client.post(reverse("avatars-create"), {"hair_length": "long", "submission": "6d0e3f4c-8a1b-4c2d-9e5f-0a1b2c3d4e5f"})
    job = GenerationJob.objects.get(user=owner)
    assert response.status_code == 302 and response["Location"] == reverse("avatars-job", args=[job.pk])
    assert job.status == "queued" and job.attributes == {"hair_length": "long"}
    htmx = owner_client.post(reverse("avatars-create"), {"hair_length": "long", "submission": "6d0e3f4c-8a1b-4c2d-9e5f-0a1b2c3d4e5f"}, **HTMX)
    assert htmx["HX-Redirect"] == reverse("avatars-job", args=[job.pk])  # a double click: the same job
    assert GenerationJob.objects.count() == 1


def test_generate_with_bad_input_says_what_is_wrong(owner_client, owner):
    response = owner_client.post(reverse("avatars-create"), {"age_band": "ancient"})
    assert response.status_code == 200
    assert "Age: “ancient” is not one of the options. Choose one from the list, or Any." in html(response)
    assert not GenerationJob.objects.exists()


def test_generate_with_quota_exhausted_shows_why_and_makes_nothing(owner_client, owner, fake_engine):
    quota_reserve(user=owner, metric="avatars", amount=10)
    response = owner_client.post(reverse("avatars-create"), {"gender": "feminine"}, **HTMX)
    page = html(response)
    assert response.status_code == 200 and page.lstrip().startswith('<form id="create-form"')
    assert 'data-testid="create-error"' in page and "You have used 10 of your 10 monthly personas generated" in page
    assert "You have used all 10 personas of this month." in page
    assert not GenerationJob.objects.exists() and not Avatar.objects.exists()
    assert run_next_job("avatars.GenerationJob") == "idle" and fake_engine.calls == []
    try:
        assert default_storage.listdir(f"users/{owner.pk}/") == ([], [])
    except FileNotFoundError:
        pass


# --- the generation page ----------------------------------------------------------------------
def test_job_page_polls_while_running_and_stops_with_the_candidates(owner_client, owner, fake_engine):
    fake_engine.miss = "glasses"
    job = generation(owner, {"gender": "feminine", "glasses": "yes"}, run=False)
    url = reverse("avatars-job", args=[job.pk])
    page = html(owner_client.get(url))
    assert 'hx-trigger="every 1s"' in page and 'data-testid="job-progress"' in page and "Cancel" in page
    assert "Gender presentation <strong>Feminine</strong>" in page
    polling = owner_client.get(url, **HTMX)
    assert polling.status_code == 200 and html(polling).lstrip().startswith('<section id="job-status"')
    run_next_job("avatars.GenerationJob")
    finished = owner_client.get(url, **HTMX)
    assert finished.status_code == 286
    fragment = html(finished)
    assert 'hx-trigger="every 1s"' not in fragment
    assert fragment.count('data-testid="candidate"') == 4 and fragment.count("Keep this one") == 4
    # Honest about what matched: the last candidate missed the glasses.
    assert fragment.count("✓ Gender presentation: Feminine") == 4
    assert fragment.count("✓ Glasses: Glasses") == 3
    assert "✗ Glasses: asked Glasses, looks No glasses" in fragment
    for candidate in job.candidates():
        assert reverse("avatars-image", args=[candidate.pk]) in fragment


def test_job_page_shows_a_failure_and_offers_a_retry(owner_client, owner, fake_engine):
    from engine.errors import GenerationFailed

    fake_engine.fail = GenerationFailed("No face passed our checks. Try again, or leave some attributes open.")
    job = generation(owner, run=False)
    run_next_job("avatars.GenerationJob")
    page = html(owner_client.get(reverse("avatars-job", args=[job.pk])))
    assert "No face passed our checks. Try again, or leave some attributes open." in page
    assert "Try again with the same attributes" in page


def test_cancel_a_queued_generation(owner_client, owner, fake_engine):
    job = generation(owner, run=False)
    response = owner_client.post(reverse("avatars-job-cancel", args=[job.pk]), follow=True)
    job.refresh_from_db()
    assert job.status == "cancelled" and "Generation cancelled; your quota was refunded." in html(response)


def test_regenerate_makes_a_new_job_once_per_click(owner_client, owner, fake_engine):
    job = generation(owner)
    token = re.search(r'name="submission" value="([0-9a-f-]+)"', html(owner_client.get(reverse("avatars-job", args=[job.pk])))).group(1)
    first = owner_client.post(reverse("avatars-regenerate", args=[job.pk]), {"submission": token}, **HTMX)
    second = owner_client.post(reverse("avatars-regenerate", args=[job.pk]), {"submission": token}, **HTMX)
    new = GenerationJob.objects.exclude(pk=job.pk).get()
    assert first["HX-Redirect"] == second["HX-Redirect"] == reverse("avatars-job", args=[new.pk])
    assert new.attributes == job.attributes


def test_regenerate_with_quota_exhausted_says_so(owner_client, owner, fake_engine):
    job = generation(owner)
    quota_reserve(user=owner, metric="avatars", amount=9)
    page = html(owner_client.post(reverse("avatars-regenerate", args=[job.pk]), follow=True))
    assert "You have used 10 of your 10 monthly personas generated" in page
    assert GenerationJob.objects.count() == 1


# --- keeping a candidate ----------------------------------------------------------------------
def test_keep_a_candidate_puts_it_in_the_library(owner_client, owner, fake_engine):
    job = generation(owner)
    chosen = job.candidates().first()
    response = owner_client.post(reverse("avatars-pick", args=[chosen.pk]), {"name": "Studio Sam"}, **HTMX)
    assert response["HX-Redirect"] == reverse("avatars-library")
    again = owner_client.post(reverse("avatars-pick", args=[chosen.pk]), {"name": "Studio Sam"}, **HTMX)
    assert again["HX-Redirect"] == reverse("avatars-library")  # a double click keeps one
    assert list(Avatar.objects.filter(user=owner).values_list("name", "status")) == [("Studio Sam", "ready")]
    library = html(owner_client.get(reverse("avatars-library")))
    assert "“Studio Sam” is in your library." in library and library.count('data-testid="avatar-card"') == 1
    page = html(owner_client.get(reverse("avatars-job", args=[job.pk])))
    assert 'data-testid="job-kept"' in page and "Keep this one" not in page


def test_keep_without_a_name_says_so_in_the_card(owner_client, owner, fake_engine):
    chosen = generation(owner).candidates().first()
    response = owner_client.post(reverse("avatars-pick", args=[chosen.pk]), {"name": "  "}, **HTMX)
    fragment = html(response)
    assert fragment.lstrip().startswith(f'<article id="candidate-card-{chosen.pk}"')
    assert "Give your persona a name." in fragment and 'aria-invalid="true"' in fragment
    chosen.refresh_from_db()
    assert chosen.status == "candidate"


def test_a_forged_keep_of_another_users_candidate_is_404(owner, other_client, fake_engine):
    candidate = generation(owner).candidates().first()
    assert other_client.post(reverse("avatars-pick", args=[candidate.pk]), {"name": "Mine"}, **HTMX).status_code == 404
    candidate.refresh_from_db()
    assert candidate.status == "candidate" and candidate.user == owner


# --- one persona ------------------------------------------------------------------------------
def test_detail_shows_the_face_attributes_and_provenance(owner_client, owner, fake_engine):
    avatar = persona(owner, "Kim", {"gender": "feminine", "hair_colour": "red"})
    page = html(owner_client.get(reverse("avatars-detail", args=[avatar.pk])))
    assert reverse("avatars-image", args=[avatar.pk]) + "?size=full" in page
    assert "fake-stylegan" in page and "f" * 64 in page and str(avatar.seed) in page
    assert "✓ verified" in page
    assert "<td class=\"py-1\">Hair colour</td><td class=\"py-1\">Red</td><td class=\"py-1\">Red</td>" in page
    assert reverse("avatars-download", args=[avatar.pk]) in page


def test_candidates_have_no_detail_page_yet(owner_client, owner, fake_engine):
    candidate = generation(owner).candidates().first()
    assert owner_client.get(reverse("avatars-detail", args=[candidate.pk])).status_code == 404
    assert owner_client.get(reverse("avatars-download", args=[candidate.pk])).status_code == 404
    assert owner_client.get(reverse("avatars-image", args=[candidate.pk])).status_code == 200


def test_image_view_serves_thumbnail_and_full_size_inline(owner_client, owner, fake_engine):
    avatar = persona(owner)
    thumb = owner_client.get(reverse("avatars-image", args=[avatar.pk]))
    full = owner_client.get(reverse("avatars-image", args=[avatar.pk]), {"size": "full"})
    for response in (thumb, full):
        assert response.status_code == 200 and response["Content-Type"] == "image/png"
        assert response["Content-Disposition"].startswith("inline") and response["Cache-Control"] == "private, no-store"
    assert Image.open(io.BytesIO(b"".join(thumb.streaming_content))).size == (384, 384)
    assert Image.open(io.BytesIO(b"".join(full.streaming_content))).size == (512, 512)


def test_download_gives_the_signed_png(owner_client, owner, fake_engine):
    avatar = persona(owner, "Studio Sam")
    response = owner_client.get(reverse("avatars-download", args=[avatar.pk]))
    assert response.status_code == 200 and response["Content-Type"] == "image/png"
    assert response["Content-Disposition"] == 'attachment; filename="studio-sam.png"'
    assert response.content == default_storage.open(avatar.image.name).read()


def test_a_tampered_file_is_not_downloaded(owner_client, owner, fake_engine, caplog):
    avatar = persona(owner)
    original = default_storage.open(avatar.image.name).read()
    recoded = io.BytesIO()
    Image.open(io.BytesIO(original)).save(recoded, "PNG", compress_level=1)
    with default_storage.open(avatar.image.name, "wb") as handle:
        handle.write(recoded.getvalue())
    with caplog.at_level(logging.WARNING, logger="safeface.security"):
        response = owner_client.get(reverse("avatars-download", args=[avatar.pk]))
    assert response.status_code == 409 and response["Content-Type"].startswith("text/html")
    assert "This persona's file was changed" in html(response) and b"\x89PNG" not in response.content
    assert f"SECURITY avatar {avatar.pk}" in caplog.text
    detail = html(owner_client.get(reverse("avatars-detail", args=[avatar.pk])))
    assert "✗ does not verify" in detail


def test_rename_with_htmx_and_without(owner_client, owner, fake_engine):
    avatar = persona(owner)
    url = reverse("avatars-rename", args=[avatar.pk])
    fragment = html(owner_client.post(url, {"name": "Kim"}, **HTMX))
    assert fragment.lstrip().startswith('<section id="avatar-name"') and "Renamed." in fragment
    bad = html(owner_client.post(url, {"name": ""}, **HTMX))
    assert "Give your persona a name." in bad
    long = html(owner_client.post(url, {"name": "y" * 81}, **HTMX))
    assert "A name is at most 80 characters; this one has 81." in long
    plain = owner_client.post(url, {"name": "Lee"})
    assert plain.status_code == 302
    assert Avatar.objects.get(pk=avatar.pk).name == "Lee"


def test_favourite_toggles(owner_client, owner, fake_engine):
    avatar = persona(owner)
    url = reverse("avatars-favourite", args=[avatar.pk])
    on = html(owner_client.post(url, **HTMX))
    assert on.lstrip().startswith('<form id="favourite-button"') and 'aria-pressed="true"' in on
    off = html(owner_client.post(url, **HTMX))
    assert 'aria-pressed="false"' in off
    assert not Avatar.objects.get(pk=avatar.pk).favourite


def test_delete_removes_the_persona_and_its_files(owner_client, owner, fake_engine, django_capture_on_commit_callbacks):
    avatar = persona(owner, "Gone")
    names = stored(avatar)
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("avatars-delete", args=[avatar.pk]), **HTMX)
    assert response["HX-Redirect"] == reverse("avatars-library")
    assert not Avatar.objects.filter(pk=avatar.pk).exists()
    assert not any(default_storage.exists(n) for n in names)
    assert owner_client.get(reverse("avatars-image", args=[avatar.pk])).status_code == 404
