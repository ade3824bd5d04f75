"""Account views, each for its owner, another user and an anonymous visitor."""
from __future__ import annotations

import io
import json
import re
import zipfile

import pytest
from django.apps import apps
from django.core import mail
from django.core.files.storage import default_storage
from django.urls import reverse

from accounts.models import DataExport, UsageCounter, User, user_owned_models
from accounts.quotas import quota_reserve
from safeface.jobs import run_next_job
from tests.conftest import PASSWORD, make_user
from tests.jobapp.models import EchoJob

LOGIN = "/accounts/login/"


def echo_done(user, text: str) -> EchoJob:
    from safeface.jobs import job_submit

    job = job_submit(EchoJob(user=user, text=text))
    assert run_next_job("jobapp.EchoJob").endswith("succeeded")
    job.refresh_from_db()
    return job


def exported(user) -> DataExport:
    from accounts.services import data_export_create

    export = data_export_create(user=user)
    assert run_next_job("accounts.DataExport").endswith("succeeded")
    export.refresh_from_db()
    return export


# --- pages that only need a login -------------------------------------------------------------
@pytest.mark.django_db
@pytest.mark.parametrize("name", ["accounts-usage", "accounts-profile", "accounts-delete"])
def test_private_pages_redirect_anonymous_visitors_to_login(client, name):
    response = client.get(reverse(name))
    assert response.status_code == 302 and response["Location"].startswith(LOGIN)


@pytest.mark.django_db
def test_usage_page_shows_meters_for_the_owner(owner_client, owner):
    quota_reserve(user=owner, metric="avatars", amount=3)
    page = owner_client.get(reverse("accounts-usage"))
    assert page.status_code == 200
    html = page.content.decode()
    assert 'data-testid="meter-avatars"' in html and "3 <span" in html and "of 10" in html
    assert 'data-testid="meter-upload_bytes"' in html and 'data-testid="meter-jobs"' in html
    assert re.search(r'<progress[^>]+value="30"', html)
    fragment = owner_client.get(reverse("accounts-usage"), HTTP_HX_REQUEST="true").content.decode()
    assert fragment.lstrip().startswith('<section id="usage-meters"') and "<html" not in fragment


@pytest.mark.django_db
def test_usage_page_shows_each_user_their_own_usage(other_client, owner):
    quota_reserve(user=owner, metric="avatars", amount=7)
    html = other_client.get(reverse("accounts-usage")).content.decode()
    assert "7 <span" not in html and "0 <span" in html


@pytest.mark.django_db
def test_profile_update_and_duplicate_email_message(owner_client, owner, other_user):
    response = owner_client.post(reverse("accounts-profile"), {"display_name": "Ada", "email": "ada@example.com"})
    assert response.status_code == 302
    owner.refresh_from_db()
    assert (owner.display_name, owner.email) == ("Ada", "ada@example.com")
    clash = owner_client.post(reverse("accounts-profile"), {"display_name": "Ada", "email": "OTHER@example.com"})
    assert b"Another account already uses this e-mail address." in clash.content


# --- sign up, log in, rate limits, password reset ---------------------------------------------
@pytest.mark.django_db
def test_signup_creates_account_logs_in_and_lands_on_usage(client):
    response = client.post(reverse("accounts-signup"), {
        "email": "New@Example.com", "display_name": "New", "password1": PASSWORD, "password2": PASSWORD,
    })
    assert response.status_code == 302 and response["Location"] == reverse("accounts-usage")
    user = User.objects.get(email="new@example.com")
    assert user.check_password(PASSWORD)
    assert client.get(reverse("accounts-usage")).status_code == 200


@pytest.mark.django_db
def test_signup_rejects_weak_and_mismatched_passwords(client):
    weak = client.post(reverse("accounts-signup"), {"email": "a@example.com", "password1": "12345678", "password2": "12345678"})
    assert b"This password is entirely numeric." in weak.content
    mismatch = client.post(reverse("accounts-signup"), {"email": "a@example.com", "password1": PASSWORD, "password2": PASSWORD + "x"})
    assert b"The two passwords differ." in mismatch.content
    assert not User.objects.filter(email="a@example.com").exists()


@pytest.mark.django_db
def test_login_with_wrong_password_says_so(client, owner):
    response = client.post(LOGIN, {"username": owner.email, "password": "nope"})
    assert response.status_code == 200
    assert b"That e-mail and password do not match an account." in response.content


@pytest.mark.django_db
def test_login_is_rate_limited_per_address(client, owner, settings):
    settings.RATELIMIT_AUTH = "3/300"
    for _ in range(3):
        assert client.post(LOGIN, {"username": owner.email, "password": "nope"}).status_code == 200
    blocked = client.post(LOGIN, {"username": owner.email, "password": PASSWORD})
    assert blocked.status_code == 429
    assert b"Too many attempts" in blocked.content and int(blocked["Retry-After"]) > 0
    assert client.get(LOGIN).status_code == 200  # reading the form is never limited


@pytest.mark.django_db
def test_login_rate_limit_also_counts_per_email_across_addresses(client, owner, settings):
    settings.RATELIMIT_AUTH = "2/300"
    for index in range(2):
        client.post(LOGIN, {"username": owner.email, "password": "nope"}, REMOTE_ADDR=f"10.0.0.{index}")
    assert client.post(LOGIN, {"username": owner.email, "password": "x"}, REMOTE_ADDR="10.0.0.9").status_code == 429


@pytest.mark.django_db
def test_signup_is_rate_limited(client, settings):
    settings.RATELIMIT_AUTH = "2/300"
    for index in range(2):
        client.post(reverse("accounts-signup"), {"email": f"s{index}@example.com", "password1": "x", "password2": "y"})
    assert client.post(reverse("accounts-signup"), {"email": "z@example.com"}).status_code == 429


@pytest.mark.django_db
def test_password_reset_sends_a_working_link(client, owner):
    response = client.post(reverse("accounts-password-reset"), {"email": owner.email})
    assert response.status_code == 302
    (message,) = mail.outbox
    link = re.search(r"http://testserver(/accounts/password-reset/\S+)", message.body).group(1)
    form_page = client.get(link, follow=True)
    assert b"Choose a new password" in form_page.content
    done = client.post(form_page.redirect_chain[-1][0], {"new_password1": "a fresh long passphrase 7", "new_password2": "a fresh long passphrase 7"})
    assert done.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password("a fresh long passphrase 7")


@pytest.mark.django_db
def test_password_reset_for_unknown_email_reveals_nothing(client):
    response = client.post(reverse("accounts-password-reset"), {"email": "nobody@example.com"})
    assert response.status_code == 302 and not mail.outbox


@pytest.mark.django_db
def test_logout_needs_post(owner_client):
    assert owner_client.get(reverse("accounts-logout")).status_code == 405
    assert owner_client.post(reverse("accounts-logout")).status_code == 302
    assert owner_client.get(reverse("accounts-usage")).status_code == 302


# --- data export ------------------------------------------------------------------------------
@pytest.mark.django_db
def test_export_contains_the_users_records_and_files_only(owner_client, owner, other_user):
    echo_done(owner, "owner secret")
    echo_done(other_user, "other secret")
    quota_reserve(user=owner, metric="avatars", amount=2)
    owner_client.post(reverse("accounts-export-create"))
    assert run_next_job("accounts.DataExport").endswith("succeeded")
    export = DataExport.objects.get(user=owner)
    response = owner_client.get(reverse("accounts-export-download", args=[export.pk]))
    assert response.status_code == 200
    assert response["Content-Disposition"].startswith('attachment; filename="safeface-export-')
    assert response["Cache-Control"] == "private, no-store"
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    names = archive.namelist()
    assert json.loads(archive.read("account.json"))["email"] == "owner@example.com"
    assert "records/accounts.usagecounter.json" in names
    files = [n for n in names if n.startswith("files/")]
    assert [archive.read(n) for n in files] == [b"owner secret"]
    assert b"other secret" not in b"".join(archive.read(n) for n in names)


@pytest.mark.django_db
def test_export_download_is_private(owner, other_client, client):
    export = exported(owner)
    url = reverse("accounts-export-download", args=[export.pk])
    assert other_client.get(url).status_code == 404
    client.logout()
    assert client.get(url).status_code == 302


@pytest.mark.django_db
def test_export_status_partial_polls_until_finished(owner_client, owner):
    from accounts.services import data_export_create

    export = data_export_create(user=owner)
    url = reverse("accounts-export-status", args=[export.pk])
    polling = owner_client.get(url, HTTP_HX_REQUEST="true")
    assert polling.status_code == 200 and b'hx-trigger="every 1s"' in polling.content
    run_next_job("accounts.DataExport")
    finished = owner_client.get(url, HTTP_HX_REQUEST="true")
    assert finished.status_code == 286 and b"Download" in finished.content


@pytest.mark.django_db
def test_export_status_and_cancel_are_private(owner, client):
    from accounts.services import data_export_create

    export = data_export_create(user=owner)
    intruder = make_user("intruder@example.com")
    client.force_login(intruder)
    assert client.get(reverse("accounts-export-status", args=[export.pk])).status_code == 404
    assert client.post(reverse("accounts-export-cancel", args=[export.pk])).status_code == 404
    export.refresh_from_db()
    assert export.status == "queued"
    client.logout()
    assert client.post(reverse("accounts-export-cancel", args=[export.pk])).status_code == 302
    export.refresh_from_db()
    assert export.status == "queued"


@pytest.mark.django_db
def test_owner_can_cancel_a_queued_export(owner_client, owner):
    owner_client.post(reverse("accounts-export-create"))
    export = DataExport.objects.get(user=owner)
    owner_client.post(reverse("accounts-export-cancel", args=[export.pk]))
    export.refresh_from_db()
    assert export.status == "cancelled"


@pytest.mark.django_db
def test_second_export_while_one_is_pending_is_refused_with_a_message(owner_client, owner):
    owner_client.post(reverse("accounts-export-create"))
    page = owner_client.post(reverse("accounts-export-create"), follow=True)
    assert b"An export is already being prepared" in page.content
    assert DataExport.objects.filter(user=owner).count() == 1


# --- account deletion -------------------------------------------------------------------------
@pytest.mark.django_db
def test_account_deletion_requires_password_and_confirmation(owner_client, owner):
    wrong = owner_client.post(reverse("accounts-delete"), {"password": "nope", "confirm": "DELETE"})
    assert b"That is not your current password." in wrong.content
    unconfirmed = owner_client.post(reverse("accounts-delete"), {"password": PASSWORD, "confirm": "delete"})
    assert b"Type DELETE in capitals to confirm." in unconfirmed.content
    assert User.objects.filter(pk=owner.pk).exists()


@pytest.mark.django_db
def test_account_deletion_removes_every_row_and_file_of_the_user_only(owner_client, owner, other_user):
    echo_done(owner, "mine")
    theirs = echo_done(other_user, "theirs")
    quota_reserve(user=owner, metric="avatars", amount=1)
    export = exported(owner)
    owner_files = default_storage.listdir(f"users/{owner.pk}/")[0]
    assert set(owner_files) == {"echo", "exports"} and default_storage.exists(export.archive.name)

    response = owner_client.post(reverse("accounts-delete"), {"password": PASSWORD, "confirm": "DELETE"}, follow=True)
    assert b"have been deleted" in response.content
    assert not User.objects.filter(pk=owner.pk).exists()
    for model in user_owned_models():
        assert not model.objects.filter(user_id=owner.pk).exists(), model
    assert not UsageCounter.objects.filter(user_id=owner.pk).exists()
    assert not default_storage.exists(f"users/{owner.pk}/")
    assert default_storage.exists(theirs.output.name)
    assert owner_client.get(reverse("accounts-usage")).status_code == 302  # logged out


def test_every_user_owned_model_is_in_the_deletion_scope(db):
    owned = {m._meta.label for m in user_owned_models()}
    for model in apps.get_models():
        for field in model._meta.get_fields():
            if getattr(field, "related_model", None) is User and field.many_to_one and model._meta.app_label not in ("admin",):
                assert field.name == "user" and model._meta.label in owned, (
                    f"{model._meta.label}.{field.name} points at users but is not deleted/exported with them"
                )


@pytest.mark.django_db
def test_password_change_checks_the_old_password(owner_client, owner, client):
    url = reverse("accounts-password-change")
    wrong = owner_client.post(url, {"old_password": "nope", "new_password1": "another long phrase 9", "new_password2": "another long phrase 9"})
    assert b"Your old password was entered incorrectly" in wrong.content
    ok = owner_client.post(url, {"old_password": PASSWORD, "new_password1": "another long phrase 9", "new_password2": "another long phrase 9"})
    assert ok.status_code == 302
    owner.refresh_from_db()
    assert owner.check_password("another long phrase 9")
    assert owner_client.get(reverse("accounts-profile")).status_code == 200  # still logged in here


def test_password_change_needs_login(client):
    assert client.get(reverse("accounts-password-change")).status_code == 302
