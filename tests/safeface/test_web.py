"""Site-wide behaviour: landing page, security headers, private media, health check, engine isolation."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from safeface.private_media import private_file_response
from tests.jobapp.models import EchoJob

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.django_db
def test_landing_page_explains_safeface(client):
    page = client.get("/")
    assert page.status_code == 200
    html = page.content.decode()
    assert "Publish without giving away your face." in html
    assert "A swap source can only be a face SafeFace generated itself" in html
    assert "/static/django_htmx/htmx" in html  # bundled htmx, no CDN
    assert "https://" not in html.split("<body")[0]  # nothing loaded from other origins
    assert client.head("/").status_code == 200


@pytest.mark.django_db
def test_security_headers(client):
    response = client.get("/")
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "script-src 'self'" in csp and "'unsafe-inline'" not in csp
    assert "frame-ancestors 'none'" in csp
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "same-origin"
    assert "camera=()" in response["Permissions-Policy"]


@pytest.mark.django_db
def test_media_files_have_no_public_url(client, owner):
    job = EchoJob.objects.create(user=owner)
    job.output.save("x.txt", ContentFile(b"secret"))
    assert client.get("/media/" + job.output.name).status_code == 404
    assert client.get(job.output.url).status_code == 404


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["django", "nginx", "apache"])
def test_private_file_response_modes(settings, owner, mode):
    settings.PRIVATE_MEDIA_SERVER = mode
    job = EchoJob.objects.create(user=owner)
    job.output.save("x.txt", ContentFile(b"secret"))
    response = private_file_response(job.output, download_name="result.txt")
    assert response["Content-Disposition"] == 'attachment; filename="result.txt"'
    assert response["Cache-Control"] == "private, no-store"
    if mode == "django":
        assert b"".join(response.streaming_content) == b"secret"
    elif mode == "nginx":
        assert response["X-Accel-Redirect"] == "/_private/" + job.output.name and response.content == b""
    else:
        assert response["X-Sendfile"] == default_storage.path(job.output.name)


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("header", "status", "body", "content_range"),
    [
        ("bytes=0-3", 206, b"0123", "bytes 0-3/10"),
        ("bytes=7-", 206, b"789", "bytes 7-9/10"),
        ("bytes=-2", 206, b"89", "bytes 8-9/10"),
        ("bytes=5-100", 206, b"56789", "bytes 5-9/10"),
        ("bytes=10-12", 416, b"", "bytes */10"),
        ("bytes=0-1,4-5", 416, b"", "bytes */10"),
        ("", 200, b"0123456789", None),
    ],
)
def test_private_file_response_serves_byte_ranges(rf, owner, header, status, body, content_range):
    job = EchoJob.objects.create(user=owner)
    job.output.save("x.mp4", ContentFile(b"0123456789"))
    request = rf.get("/", HTTP_RANGE=header) if header else rf.get("/")
    response = private_file_response(job.output, download_name="clip.mp4", as_attachment=False, request=request)
    assert response.status_code == status
    content = b"".join(response.streaming_content) if response.streaming else response.content
    assert content == body
    assert response.get("Content-Range") == content_range
    assert response["Accept-Ranges"] == "bytes"


@pytest.mark.django_db
def test_private_file_response_404s_for_missing_files(owner):
    from django.http import Http404

    job = EchoJob.objects.create(user=owner)
    job.output.save("x.txt", ContentFile(b"secret"))
    default_storage.delete(job.output.name)
    with pytest.raises(Http404):
        private_file_response(job.output, download_name="gone.txt")


@pytest.mark.django_db
def test_healthz(client):
    assert client.get(reverse("healthz")).json() == {"status": "ok"}


@pytest.mark.django_db
def test_unknown_page_is_a_friendly_404(client):
    response = client.get("/no-such-page/")
    assert response.status_code == 404 and b"Nothing here" in response.content


def test_engine_never_imports_django_or_the_apps():
    forbidden = {"django", "safeface", "accounts", "avatars", "swaps", "voice"}
    offenders = []
    for path in (ROOT / "engine").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in forbidden]
    assert offenders == []
