"""Account journeys in a real browser: sign up, log out and in, the usage page, deleting the
account, the sign-up form's errors, the login redirect, and the landing page's CSS and htmx."""
from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from accounts.models import User
from tests.conftest import PASSWORD, make_user

EMAIL = "journey@example.com"
INVALID_LOGIN = "That e-mail and password do not match an account. Check both and try again."


def nav(page: Page):
    return page.get_by_role("navigation", name="Main")


def path_is(path: str) -> re.Pattern[str]:
    """Matches a full URL whose path is exactly ``path`` (no query string)."""
    return re.compile(r"^https?://[^/]+" + re.escape(path) + r"$")


def fill_signup(page: Page, *, email: str, password1: str, password2: str, name: str = "") -> None:
    page.get_by_label("Email").fill(email)
    page.get_by_label("Name (optional)").fill(name)
    page.get_by_label("Password", exact=True).fill(password1)
    page.get_by_label("Repeat password").fill(password2)
    page.get_by_role("button", name="Create account").click()


def fill_login(page: Page, *, email: str, password: str) -> None:
    page.get_by_label("E-mail").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()


def test_sign_up_use_log_out_log_in_and_delete_the_account(page: Page, screenshot) -> None:
    # Sign up from the landing page.
    page.goto("/")
    nav(page).get_by_role("link", name="Sign up free").click()
    expect(page).to_have_url(path_is("/accounts/signup/"))
    expect(page.get_by_role("heading", name="Create your account")).to_be_visible()
    fill_signup(page, email="Journey@Example.com", name="Jo", password1=PASSWORD, password2=PASSWORD)

    # Logged in, on the usage page, with the three meters and the Free plan.
    expect(page).to_have_url(path_is("/accounts/usage/"))
    expect(page.get_by_role("heading", name="Usage and plan")).to_be_visible()
    expect(page.get_by_text("Welcome to SafeFace. Your account is ready.")).to_be_visible()
    for metric in ("avatars", "upload_bytes", "jobs"):
        meter = page.get_by_test_id(f"meter-{metric}")
        expect(meter).to_be_visible()
        expect(meter.locator("progress")).to_have_count(1)
        expect(meter.locator("progress")).to_have_attribute("value", "0")
    expect(page.get_by_test_id("current-plan")).to_have_text("Free")
    expect(page.get_by_test_id("billing-not-configured")).to_be_visible()
    expect(page.get_by_test_id("nav-profile")).to_have_text("Jo")
    user = User.objects.get(email=EMAIL)  # the address is stored in lower case
    assert user.display_name == "Jo"
    assert user.check_password(PASSWORD)
    screenshot("usage")

    # Log out.
    nav(page).get_by_role("button", name="Log out").click()
    expect(page).to_have_url(path_is("/"))
    expect(page.get_by_text("You are logged out.")).to_be_visible()
    expect(nav(page).get_by_role("link", name="Sign up free")).to_be_visible()
    expect(page.get_by_test_id("nav-profile")).to_have_count(0)

    # Log in again with the same credentials.
    nav(page).get_by_role("link", name="Log in").click()
    expect(page).to_have_url(path_is("/accounts/login/"))
    fill_login(page, email=EMAIL, password=PASSWORD)
    expect(page).to_have_url(path_is("/accounts/usage/"))
    expect(page.get_by_test_id("current-plan")).to_have_text("Free")

    # Profile, then delete the account.
    page.get_by_test_id("nav-profile").click()
    expect(page).to_have_url(path_is("/accounts/profile/"))
    expect(page.get_by_role("heading", name="Your profile")).to_be_visible()
    page.get_by_role("link", name="Delete my account…").click()
    expect(page).to_have_url(path_is("/accounts/delete/"))
    page.get_by_label("Your password").fill(PASSWORD)
    page.get_by_label("Type DELETE to confirm").fill("DELETE")
    page.get_by_role("button", name="Delete everything").click()

    expect(page).to_have_url(path_is("/"))
    expect(page.get_by_text("Your account and every file and record of it have been deleted.")).to_be_visible()
    expect(nav(page).get_by_role("link", name="Sign up free")).to_be_visible()
    assert not User.objects.filter(pk=user.pk).exists()
    assert not User.objects.filter(email__iexact=EMAIL).exists()

    # The old credentials no longer work.
    page.goto("/accounts/login/")
    fill_login(page, email=EMAIL, password=PASSWORD)
    expect(page.get_by_role("alert")).to_have_text(INVALID_LOGIN)
    expect(page).to_have_url(path_is("/accounts/login/"))
    expect(page.get_by_test_id("nav-profile")).to_have_count(0)


def test_sign_up_shows_field_errors(page: Page) -> None:
    make_user("taken@example.com")

    page.goto("/accounts/signup/")
    fill_signup(page, email="new@example.com", password1=PASSWORD, password2=PASSWORD + "x")
    expect(page).to_have_url(path_is("/accounts/signup/"))
    expect(page.get_by_test_id("field-error")).to_have_text(["The two passwords differ."])
    expect(page.get_by_label("Email")).to_have_value("new@example.com")  # the form keeps the input
    assert not User.objects.filter(email="new@example.com").exists()

    fill_signup(page, email="TAKEN@example.com", password1=PASSWORD, password2=PASSWORD)
    expect(page).to_have_url(path_is("/accounts/signup/"))
    expect(page.get_by_test_id("field-error")).to_have_text(
        ["An account with this e-mail address already exists. Log in instead?"]
    )
    expect(page.get_by_test_id("nav-profile")).to_have_count(0)  # not logged in
    assert User.objects.filter(email__iexact="taken@example.com").count() == 1


def test_anonymous_usage_visit_logs_in_and_returns_to_the_usage_page(page: Page) -> None:
    make_user("returning@example.com")

    page.goto("/accounts/usage/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=(/|%2F)accounts(/|%2F)usage(/|%2F)$"))
    expect(page.get_by_role("heading", name="Log in")).to_be_visible()
    fill_login(page, email="returning@example.com", password=PASSWORD)

    expect(page).to_have_url(path_is("/accounts/usage/"))
    expect(page.get_by_role("heading", name="Usage and plan")).to_be_visible()
    expect(page.get_by_test_id("current-plan")).to_have_text("Free")


def test_landing_page_loads_its_css_and_htmx(page: Page) -> None:
    responses = {}
    page.on("response", lambda response: responses.setdefault(response.url, response.status))

    page.goto("/")
    expect(page.get_by_role("heading", name="Publish without giving away your face.")).to_be_visible()

    sign_up = nav(page).get_by_role("link", name="Sign up free")
    background = sign_up.evaluate("element => getComputedStyle(element).backgroundColor")
    assert background not in ("", "transparent", "rgba(0, 0, 0, 0)"), background
    assert nav(page).evaluate("element => getComputedStyle(element).display") == "flex"

    page.wait_for_function("() => typeof window.htmx === 'object' && typeof window.htmx.ajax === 'function'")

    statics = {url: status for url, status in responses.items() if "/static/" in url}
    assert any(url.endswith("/css/app.css") for url in statics), statics
    assert any("htmx" in url and url.endswith(".js") for url in statics), statics
    assert all(status == 200 for status in statics.values()), statics
    # CSP violations and resources that failed to load are console errors: the ``page``
    # fixture fails the test on any of them at teardown.
