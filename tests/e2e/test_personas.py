"""The persona journey in a real browser with the real engine: choose attributes and watch the
summary follow, generate, wait for the candidates, keep one with a name, find it in the library,
open it and download its PNG."""
from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Page, expect

from avatars.models import Avatar, GenerationJob
from safeface.jobs import run_next_job
from tests.conftest import PASSWORD, make_user
from tests.e2e.test_account_journey import fill_login, nav, path_is
from tests.engine.conftest import require_models

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def test_create_a_persona_find_it_in_the_library_and_download_it(page: Page, screenshot) -> None:
    require_models()
    user = make_user("persona@example.com")
    page.goto("/accounts/login/")
    fill_login(page, email=user.email, password=PASSWORD)
    expect(page).to_have_url(path_is("/accounts/usage/"))

    # An empty library leads to creation.
    nav(page).get_by_role("link", name="Personas").click()
    expect(page).to_have_url(path_is("/personas/"))
    expect(page.get_by_test_id("library-empty")).to_be_visible()
    screenshot("library-empty")
    page.get_by_role("link", name="Create your first persona").click()
    expect(page).to_have_url(path_is("/personas/new/"))
    expect(page.get_by_test_id("summary-chosen")).to_have_text("Any look: nothing chosen yet.")

    # The live summary follows the form.
    page.get_by_label("Gender presentation").select_option("feminine")
    expect(page.get_by_test_id("summary-chosen")).to_contain_text("Gender presentation: Feminine")
    page.get_by_label("Glasses").select_option("no")
    expect(page.get_by_test_id("summary-chosen")).to_contain_text("Glasses: No glasses")
    expect(page.get_by_test_id("summary-chosen")).to_contain_text("Gender presentation: Feminine")
    expect(page.get_by_test_id("personas-left")).to_have_text("Uses 1 of the 10 personas left this month.")
    screenshot("create")

    # Generate: the job page shows progress while the generation is queued.
    page.get_by_role("button", name="Generate 4 candidates").click()
    expect(page).to_have_url(re.compile(r"/personas/generations/\d+/$"))
    expect(page.get_by_test_id("job-progress")).to_be_visible()
    job = GenerationJob.objects.get(user=user)
    assert job.attributes == {"gender": "feminine", "glasses": "no"}
    screenshot("generating")

    # A gpu worker runs it (here: this test, with the real engine) while the page polls.
    assert run_next_job("avatars.GenerationJob").endswith("succeeded")
    candidates = page.get_by_test_id("candidate")
    expect(candidates.first).to_be_visible(timeout=20_000)
    count = Avatar.objects.filter(generation_job=job).count()
    assert 1 <= count <= 4
    expect(candidates).to_have_count(count)
    for index in range(count):  # every candidate says which requested attributes it matched
        expect(candidates.nth(index).locator("li")).to_have_count(2)
    expect(page.get_by_test_id("job-progress")).to_have_count(0)
    screenshot("candidates")

    # Keep the first one, named.
    first = candidates.first
    first.get_by_label("Name").fill("Studio Sam")
    first.get_by_role("button", name="Keep this one").click()
    expect(page).to_have_url(path_is("/personas/"))
    expect(page.get_by_text("“Studio Sam” is in your library.")).to_be_visible()
    cards = page.get_by_test_id("avatar-card")
    expect(cards).to_have_count(1)
    expect(cards.first.get_by_test_id("avatar-name")).to_have_text("Studio Sam")
    kept = Avatar.objects.get(user=user)
    assert kept.status == "ready" and kept.name == "Studio Sam"
    thumbnail = cards.first.get_by_role("img")
    page.wait_for_function("img => img.complete && img.naturalWidth === 384", arg=thumbnail.element_handle())
    screenshot("library")

    # The detail page: full-size face, attributes, verified provenance.
    cards.first.get_by_role("link").click()
    expect(page).to_have_url(path_is(f"/personas/{kept.pk}/"))
    expect(page.get_by_test_id("avatar-title")).to_have_text("Studio Sam")
    expect(page.get_by_test_id("provenance-verified")).to_contain_text("verified")
    expect(page.get_by_test_id("provenance-generator")).to_have_text(kept.generator)
    full = page.get_by_test_id("avatar-full")
    expect(full).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth === 1024", arg=full.element_handle())
    screenshot("detail")

    # Download it: the bytes are the stored, signed PNG.
    with page.expect_download() as download_info:
        page.get_by_role("link", name="Download PNG").click()
    download = download_info.value
    assert download.suggested_filename == "studio-sam.png"
    data = Path(download.path()).read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert data == kept.image.storage.open(kept.image.name).read()
