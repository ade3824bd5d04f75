"""Media on S3-compatible object storage, against a real S3 server started by the test (moto's
server mode on a free loopback port): the storage settings come from safeface.settings and the
S3 variables, every flow runs through the real views, services and worker code.

Uploads land as private objects under users/<id>/ and nothing touches the local disk; the owner
downloads them through the permission-checked views, streamed (byte ranges included) or as a
redirect to a presigned URL that lives a minute; the other user and visitors get nothing; the
upload check on the worker reads its input from the bucket and writes its outputs there; the
retention sweep, the orphan purge, deleting an upload and deleting an account remove the objects
(the bucket is listed to prove it); data exports are built from and saved to the bucket."""
from __future__ import annotations

import copy
import io
import json
import logging
import os
import socket
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import boto3
import numpy as np
import pytest
from botocore.config import Config
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage, storages
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import resolve, reverse
from django.utils import timezone

from accounts.models import DataExport, User
from safeface.files import stored_local_path
from safeface.jobs import JobStatus, run_next_job, sweep_jobs
from swaps.models import Upload
from tests.conftest import PASSWORD
from tests.swaps.conftest import encode, faces_picture, fake_persona, swap_models  # noqa: F401  (model files present)

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]
ACCESS_KEY, SECRET_KEY, REGION = "safeface-test", "safeface-test-secret", "eu-west-1"
S3_VARIABLES = (
    "SAFEFACE_S3_BUCKET", "SAFEFACE_S3_ENDPOINT_URL", "SAFEFACE_S3_PUBLIC_ENDPOINT_URL", "SAFEFACE_S3_REGION",
    "SAFEFACE_S3_ACCESS_KEY_ID", "SAFEFACE_S3_SECRET_ACCESS_KEY", "SAFEFACE_S3_ENCRYPT", "PRIVATE_MEDIA_SERVER",
)


# --- the server, the settings, a bucket per test ------------------------------------------------
def settings_for(cases: list[dict[str, str]], var_dir: Path) -> list[dict]:
    """Runs safeface/settings.py once per environment in ``cases`` (one fresh interpreter for
    all): the default storage and download mode it builds, or the start-up error it raises."""
    script = """
import json, os, runpy, sys
from django.core.exceptions import ImproperlyConfigured
results = []
for case in json.loads(sys.argv[1]):
    for name in json.loads(sys.argv[2]):
        os.environ.pop(name, None)
    os.environ.update(case)
    try:
        ns = runpy.run_module("safeface.settings")
        results.append({"storage": ns["STORAGES"]["default"], "server": ns["PRIVATE_MEDIA_SERVER"]})
    except ImproperlyConfigured as error:
        results.append({"error": str(error)})
print(json.dumps(results))
"""
    drop = ("DATABASE_URL", "SECRET_KEY", "DEBUG", "REDIS_URL", "SAFEFACE_ENV", "ALLOWED_HOSTS", *S3_VARIABLES)
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["SAFEFACE_VAR_DIR"] = str(var_dir)
    done = subprocess.run(
        [sys.executable, "-c", script, json.dumps(cases), json.dumps(S3_VARIABLES)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.fixture(scope="session")
def s3_endpoint():
    from moto.server import ThreadedMotoServer

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    access_log = logging.getLogger("werkzeug")  # one line per S3 request otherwise
    level = access_log.level
    access_log.setLevel(logging.WARNING)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()
    access_log.setLevel(level)


@pytest.fixture(scope="session")
def s3_admin(s3_endpoint):
    """A client of our own, to create buckets and look inside them."""
    return boto3.client(
        "s3", endpoint_url=s3_endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY, config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


@pytest.fixture(scope="session")
def s3_storage(s3_endpoint, tmp_path_factory) -> dict:
    """STORAGES["default"] exactly as the settings build it from the S3 variables."""
    [result] = settings_for([{
        "SAFEFACE_S3_BUCKET": "placeholder", "SAFEFACE_S3_ENDPOINT_URL": s3_endpoint, "SAFEFACE_S3_REGION": REGION,
        "SAFEFACE_S3_ACCESS_KEY_ID": ACCESS_KEY, "SAFEFACE_S3_SECRET_ACCESS_KEY": SECRET_KEY,
        "SAFEFACE_S3_ENCRYPT": "true",
    }], tmp_path_factory.mktemp("var"))
    assert "storage" in result, result
    return result["storage"]


class Bucket:
    def __init__(self, client, name: str) -> None:
        self.client, self.name = client, name

    def keys(self, prefix: str = "") -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.name, Prefix=prefix)
        return sorted(entry["Key"] for page in pages for entry in page.get("Contents", ()))

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.name, Key=key)["Body"].read()

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.name, Key=key, Body=data)


@pytest.fixture
def bucket(_isolated_media, settings, s3_admin, s3_storage, tmp_path) -> Bucket:
    """A fresh private bucket as the default storage (after the autouse local-disk fixture)."""
    name = f"safeface-{uuid.uuid4().hex[:20]}"
    s3_admin.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
    storage = copy.deepcopy(s3_storage)
    storage["OPTIONS"]["bucket_name"] = name
    settings.STORAGES = {**settings.STORAGES, "default": storage}
    settings.S3_BUCKET = name
    settings.JOB_TEMP_DIR = str(tmp_path / "job-temp")
    Path(settings.JOB_TEMP_DIR).mkdir()
    assert type(storages["default"]).__name__ == "PrivateS3Storage" and default_storage.bucket_name == name
    return Bucket(s3_admin, name)


@pytest.fixture
def browsers(owner, other_user):
    """Three separate browsers: the owner's, another user's and a visitor's (pytest-django's
    owner_client and other_client share one client, the last login wins)."""
    owner_browser, other_browser, visitor = Client(), Client(), Client()
    owner_browser.force_login(owner)
    other_browser.force_login(other_user)
    return owner_browser, other_browser, visitor


def local_media_files(media: Path) -> list[Path]:
    return [p for p in media.rglob("*") if p.is_file()] if media.exists() else []


def noise_png(seed: int = 1, width: int = 80, height: int = 60) -> bytes:
    return encode(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8), "PNG")


def post_upload(client, data: bytes, name: str = "holiday.png") -> Upload:
    """An upload through the real form, as the browser sends it."""
    response = client.post(reverse("swaps-new"), {"file": SimpleUploadedFile(name, data)})
    assert response.status_code == 302, response.content.decode()[:500]
    return Upload.objects.get(pk=resolve(response["Location"]).kwargs["pk"])


# --- settings ----------------------------------------------------------------------------------
def test_settings_build_a_private_bucket_storage_and_refuse_incomplete_configurations(tmp_path, s3_storage):
    options = s3_storage["OPTIONS"]
    assert s3_storage["BACKEND"] == "safeface.object_storage.PrivateS3Storage"
    assert (options["default_acl"], options["querystring_auth"], options["file_overwrite"]) == (None, True, False)
    assert (options["addressing_style"], options["signature_version"], options["region_name"]) == ("path", "s3v4", REGION)
    assert options["object_parameters"] == {"ServerSideEncryption": "AES256"}
    assert (options["access_key"], options["secret_key"]) == (ACCESS_KEY, SECRET_KEY)

    minio = {"SAFEFACE_S3_BUCKET": "media", "SAFEFACE_S3_ENDPOINT_URL": "http://minio:9000"}
    keys = {"SAFEFACE_S3_ACCESS_KEY_ID": "k", "SAFEFACE_S3_SECRET_ACCESS_KEY": "s"}
    cases = [
        {},
        {"SAFEFACE_S3_BUCKET": "media", "SAFEFACE_S3_REGION": "eu-central-1", "PRIVATE_MEDIA_SERVER": "s3"},
        {**minio, **keys, "SAFEFACE_S3_PUBLIC_ENDPOINT_URL": "https://files.example.com"},
        minio,
        {**minio, "SAFEFACE_S3_ACCESS_KEY_ID": "k"},
        {"SAFEFACE_S3_BUCKET": "media"},
        {"SAFEFACE_S3_BUCKET": "Media_Files", "SAFEFACE_S3_REGION": "eu-central-1"},
        {"SAFEFACE_S3_ENDPOINT_URL": "http://minio:9000"},
        {"PRIVATE_MEDIA_SERVER": "s3"},
        {**minio, **keys, "PRIVATE_MEDIA_SERVER": "nginx"},
        {**minio, **keys, "SAFEFACE_S3_ENDPOINT_URL": "minio:9000"},
    ]
    local, aws, public, no_keys, half_keys, no_region, bad_name, no_bucket, s3_mode_on_disk, nginx, bad_url = (
        settings_for(cases, tmp_path)
    )
    assert local["storage"]["BACKEND"] == "django.core.files.storage.FileSystemStorage" and local["server"] == "django"
    assert aws["server"] == "s3" and aws["storage"]["OPTIONS"]["endpoint_url"] is None
    assert aws["storage"]["OPTIONS"]["access_key"] is None  # boto3's own chain (instance role, AWS_*)
    assert aws["storage"]["OPTIONS"]["addressing_style"] is None and aws["storage"]["OPTIONS"]["object_parameters"] == {}
    assert public["storage"]["OPTIONS"]["public_endpoint_url"] == "https://files.example.com"
    assert public["storage"]["OPTIONS"]["region_name"] == "us-east-1"
    assert "set SAFEFACE_S3_ACCESS_KEY_ID and SAFEFACE_S3_SECRET_ACCESS_KEY" in no_keys["error"]
    assert "must be set together" in half_keys["error"]
    assert "SAFEFACE_S3_REGION must be set for an AWS bucket" in no_region["error"]
    assert "SAFEFACE_S3_BUCKET='Media_Files' is not a valid bucket name" in bad_name["error"]
    assert "SAFEFACE_S3_ENDPOINT_URL is set but SAFEFACE_S3_BUCKET is not" in no_bucket["error"]
    assert "PRIVATE_MEDIA_SERVER=s3 needs media on object storage" in s3_mode_on_disk["error"]
    assert "PRIVATE_MEDIA_SERVER=nginx sends files from the local disk" in nginx["error"]
    assert "SAFEFACE_S3_ENDPOINT_URL must be a URL starting with one of: http://, https://" in bad_url["error"]


# --- uploads and downloads through the views ---------------------------------------------------
@pytest.mark.parametrize("streamed", [False, True], ids=["in memory", "streamed to disk"])
def test_an_upload_is_a_private_object_the_owner_streams_with_ranges(bucket, _isolated_media, settings, owner, browsers, streamed):
    owner_client, other_client, client = browsers
    if streamed:
        settings.FILE_UPLOAD_MAX_MEMORY_SIZE = 1024  # Django writes the upload to a temp file first
    data = noise_png(seed=2, width=120, height=90)
    upload = post_upload(owner_client, data)
    assert upload.file.name.startswith(f"users/{owner.pk}/uploads/")
    assert bucket.keys() == [upload.file.name] and bucket.read(upload.file.name) == data
    assert local_media_files(_isolated_media) == []
    head = bucket.client.head_object(Bucket=bucket.name, Key=upload.file.name)
    assert head["ServerSideEncryption"] == "AES256"
    grants = bucket.client.get_object_acl(Bucket=bucket.name, Key=upload.file.name)["Grants"]
    assert [g["Grantee"]["Type"] for g in grants] == ["CanonicalUser"]  # the owner only, no group
    assert upload.file.url.startswith(settings.MEDIA_URL)  # never a bucket URL

    url = reverse("swaps-upload-media", args=[upload.pk, "original"])
    whole = owner_client.get(url)
    assert whole.status_code == 200 and whole["Content-Length"] == str(len(data))
    assert b"".join(whole.streaming_content) == data
    assert whole["Content-Type"] == "image/png" and whole["Accept-Ranges"] == "bytes"
    assert whole["Content-Disposition"] == 'inline; filename="holiday.png"'
    assert whole["Cache-Control"] == "private, no-store"
    part = owner_client.get(url, HTTP_RANGE="bytes=100-299")
    assert part.status_code == 206 and part["Content-Range"] == f"bytes 100-299/{len(data)}"
    assert b"".join(part.streaming_content) == data[100:300]
    tail = owner_client.get(url, HTTP_RANGE="bytes=-10")
    assert tail.status_code == 206 and b"".join(tail.streaming_content) == data[-10:]
    assert owner_client.get(url, HTTP_RANGE=f"bytes={len(data)}-").status_code == 416

    assert other_client.get(url).status_code == 404
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("accounts-login"))

    # A file that vanished from the bucket is a 404, not a crash.
    bucket.client.delete_object(Bucket=bucket.name, Key=upload.file.name)
    assert owner_client.get(url).status_code == 404


def test_presigned_mode_redirects_the_owner_to_a_short_lived_url(bucket, settings, owner, browsers):
    owner_client, other_client, client = browsers
    settings.PRIVATE_MEDIA_SERVER = "s3"
    data = noise_png(seed=3)
    upload = post_upload(owner_client, data, "Beach day.png")
    url = reverse("swaps-upload-media", args=[upload.pk, "original"])
    before = timezone.now()
    response = owner_client.get(url)
    assert response.status_code == 302 and response["Cache-Control"] == "private, no-store"
    target = response["Location"]
    endpoint = default_storage.endpoint_url
    assert target.startswith(f"{endpoint}/{bucket.name}/{upload.file.name}?")
    query = {k: v[0] for k, v in parse_qs(urlsplit(target).query).items()}
    assert query["X-Amz-Expires"] == "60" and query["X-Amz-Credential"].startswith(ACCESS_KEY + "/")
    signed_at = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
    assert abs((signed_at - before).total_seconds()) < 5
    assert query["response-content-disposition"] == 'inline; filename="beach-day.png"'
    # Pages may show pictures and play media from the bucket, and from nowhere else new.
    assert f"img-src 'self' data: blob: {endpoint};" in response["Content-Security-Policy"]
    assert f"media-src 'self' blob: {endpoint};" in response["Content-Security-Policy"]

    with urllib.request.urlopen(target, timeout=10) as fetched:  # what the browser does next
        assert fetched.status == 200 and fetched.read() == data
        assert fetched.headers["Content-Disposition"] == 'inline; filename="beach-day.png"'
        assert fetched.headers["Content-Type"] == "image/png"
    with pytest.raises(urllib.error.HTTPError) as unsigned:  # the object itself is private
        urllib.request.urlopen(target.split("?")[0], timeout=10)
    assert unsigned.value.code == 403

    assert other_client.get(url).status_code == 404
    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("accounts-login"))


def test_presigned_urls_name_the_public_endpoint_when_the_internal_one_is_private(bucket, settings, owner_client):
    storage = copy.deepcopy(settings.STORAGES["default"])
    storage["OPTIONS"]["public_endpoint_url"] = "https://files.example.com"
    settings.STORAGES = {**settings.STORAGES, "default": storage}
    settings.PRIVATE_MEDIA_SERVER = "s3"
    upload = post_upload(owner_client, noise_png(seed=4))
    assert bucket.keys() == [upload.file.name]  # written through the internal endpoint
    response = owner_client.get(reverse("swaps-upload-media", args=[upload.pk, "original"]))
    target = response["Location"]
    assert target.startswith(f"https://files.example.com/{bucket.name}/{upload.file.name}?") and "X-Amz-Signature=" in target
    assert "media-src 'self' blob: https://files.example.com;" in response["Content-Security-Policy"]


# --- workers -------------------------------------------------------------------------------------
@pytest.mark.usefixtures("swap_models")
def test_the_upload_check_reads_its_input_from_the_bucket_and_writes_its_outputs_there(
    bucket, _isolated_media, settings, owner, owner_client
):
    data = encode(faces_picture((11,), 256), quality=92)
    upload = post_upload(owner_client, data, "portrait.jpg")
    outcome = run_next_job("swaps.Upload")  # the worker's entry point
    assert outcome.endswith("succeeded"), outcome
    upload.refresh_from_db()
    face = upload.faces.get()
    assert upload.status == JobStatus.SUCCEEDED and upload.preview and face.thumbnail
    prefix = f"users/{owner.pk}/"
    assert bucket.keys() == sorted([upload.file.name, upload.preview.name, face.thumbnail.name])
    assert all(key.startswith(prefix) for key in bucket.keys())
    assert bucket.read(face.thumbnail.name)[:3] == b"\xff\xd8\xff"  # a JPEG the worker encoded
    assert local_media_files(_isolated_media) == []
    assert list(Path(settings.JOB_TEMP_DIR).iterdir()) == []  # the local copy of the input went
    thumb = owner_client.get(reverse("swaps-face", args=[upload.pk, face.key]))
    assert b"".join(thumb.streaming_content) == bucket.read(face.thumbnail.name)


def test_stored_local_path_copies_an_object_for_the_engine_and_removes_the_copy(bucket, settings, owner):
    from tests.jobapp.models import EchoJob

    job = EchoJob.objects.create(user=owner)
    payload = os.urandom(9 * 1024 * 1024 + 17)  # past boto3's 8 MiB threshold: multipart both ways
    job.output.save("input.bin", ContentFile(payload))
    with stored_local_path(job.output) as path:
        assert path.parent == Path(settings.JOB_TEMP_DIR) and path.suffix == ".txt"
        assert path.read_bytes() == payload
    assert not path.exists()
    bucket.client.delete_object(Bucket=bucket.name, Key=job.output.name)
    with pytest.raises(FileNotFoundError), stored_local_path(job.output):
        pass


# --- deletion ------------------------------------------------------------------------------------
def test_deleting_an_upload_or_a_persona_removes_its_objects(
    bucket, owner, browsers, other_user, django_capture_on_commit_callbacks
):
    owner_client = browsers[0]
    upload = post_upload(owner_client, noise_png(seed=5))
    persona = fake_persona(owner, "Mira")
    bucket.put(f"users/{other_user.pk}/uploads/theirs.png", b"theirs")
    assert len(bucket.keys(f"users/{owner.pk}/")) == 3
    with django_capture_on_commit_callbacks(execute=True):  # files go once the rows are gone
        response = owner_client.post(reverse("swaps-upload-delete", args=[upload.pk]))
    assert response.status_code == 302 and not Upload.objects.filter(pk=upload.pk).exists()
    assert bucket.keys(f"users/{owner.pk}/") == sorted([persona.image.name, persona.thumbnail.name])
    with django_capture_on_commit_callbacks(execute=True):
        response = owner_client.post(reverse("avatars-delete", args=[persona.pk]))
    assert response.status_code == 302
    assert bucket.keys() == [f"users/{other_user.pk}/uploads/theirs.png"]


def test_the_retention_sweep_deletes_the_objects_of_old_jobs_and_of_deleted_accounts(bucket, owner, owner_client):
    old = post_upload(owner_client, noise_png(seed=6))
    recent = post_upload(owner_client, noise_png(seed=7))
    finished = timezone.now() - timedelta(days=3650)
    Upload.objects.filter(pk=old.pk).update(status=JobStatus.SUCCEEDED, finished_at=finished)
    Upload.objects.filter(pk=recent.pk).update(status=JobStatus.SUCCEEDED, finished_at=timezone.now())
    bucket.put("users/987654/leftover/result.mp4", b"written after the account went")

    counts = sweep_jobs()
    assert counts["purged"] == 1 and counts["orphans"] == 1
    assert bucket.keys() == [recent.file.name]
    old.refresh_from_db()
    assert old.purged_at is not None and not old.file


def test_account_deletion_removes_every_object_under_the_users_prefix(bucket, owner, owner_client, other_user):
    from tests.jobapp.models import EchoJob

    post_upload(owner_client, noise_png(seed=8))
    fake_persona(owner, "Mira")
    echo = EchoJob.objects.create(user=owner)
    echo.output.save("out.txt", ContentFile(b"mine"))
    bucket.put(f"users/{owner.pk}/swaps/stray-result.mp4", b"a worker wrote this after its row went")
    theirs = fake_persona(other_user, "Theo")
    mine = bucket.keys(f"users/{owner.pk}/")
    assert len(mine) == 5 and len(bucket.keys()) == 7

    response = owner_client.post(reverse("accounts-delete"), {"password": PASSWORD, "confirm": "DELETE"})
    assert response.status_code == 302 and not User.objects.filter(pk=owner.pk).exists()
    assert bucket.keys(f"users/{owner.pk}/") == []
    assert bucket.keys() == sorted([theirs.image.name, theirs.thumbnail.name])


# --- data exports ---------------------------------------------------------------------------------
def test_a_data_export_is_built_from_the_bucket_and_saved_to_it(bucket, _isolated_media, owner, browsers):
    owner_client, other_client, _ = browsers
    data = noise_png(seed=9)
    upload = post_upload(owner_client, data)
    owner_client.post(reverse("accounts-export-create"))
    assert run_next_job("accounts.DataExport").endswith("succeeded")
    export = DataExport.objects.get(user=owner)
    assert export.archive.name.startswith(f"users/{owner.pk}/exports/")
    assert bucket.keys() == sorted([upload.file.name, export.archive.name])
    assert local_media_files(_isolated_media) == []

    url = reverse("accounts-export-download", args=[export.pk])
    response = owner_client.get(url)
    assert response.status_code == 200 and response["Content-Disposition"].startswith('attachment; filename="safeface-export-')
    body = b"".join(response.streaming_content)
    assert body == bucket.read(export.archive.name) and len(body) == export.size_bytes
    archive = zipfile.ZipFile(io.BytesIO(body))
    assert json.loads(archive.read("account.json"))["email"] == owner.email
    stored = [n for n in archive.namelist() if n.startswith("files/")]
    assert [archive.read(n) for n in stored] == [data]
    assert other_client.get(url).status_code == 404
