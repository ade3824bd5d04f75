"""Private media: user files live in storage that has no public URL (the local disk, or a private
bucket). Views that have already checked ownership hand a stored file to
``private_file_response``, which streams it (from disk or from the bucket), tells nginx/Apache
to send it, or redirects to a presigned bucket URL that expires within a minute."""
from __future__ import annotations

import mimetypes
import re
import shutil
from collections.abc import Iterable, Iterator
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.files.storage import default_storage
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, HttpResponseRedirect, StreamingHttpResponse
from django.utils.http import content_disposition_header


_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK = 256 * 1024


def _byte_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end inclusive) of a single ``Range: bytes=...`` header; None when it cannot be
    served (several ranges, malformed, or outside the file)."""
    match = _RANGE.match(header.strip())
    if not match or (not match[1] and not match[2]) or size <= 0:
        return None
    if not match[1]:  # the last N bytes
        length = int(match[2])
        return (max(0, size - length), size - 1) if length > 0 else None
    start = int(match[1])
    end = min(int(match[2]), size - 1) if match[2] else size - 1
    return (start, end) if start <= end and start < size else None


def _read_slice(file: FieldFile, start: int, length: int) -> Iterator[bytes]:
    with file.storage.open(file.name, "rb") as handle:
        handle.seek(start)
        while length > 0:
            chunk = handle.read(min(CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk


class _ObjectBody:
    """An object body streamed from the bucket; the response closes it when done, also when
    nothing was read (a HEAD request, a client that went away)."""

    def __init__(self, body) -> None:
        self.body = body

    def __iter__(self) -> Iterator[bytes]:
        return self.body.iter_chunks(CHUNK)

    def close(self) -> None:
        self.body.close()


def _stream(file: FieldFile, start: int, end: int, size: int) -> Iterable[bytes]:
    """Bytes ``start``..``end`` of a stored file. Object storages are read straight from the
    bucket (a ranged GET), never copied whole first."""
    open_stream = getattr(file.storage, "open_stream", None)
    if open_stream is None:
        return _read_slice(file, start, end - start + 1)
    try:
        body = open_stream(file.name, start, end) if (start, end) != (0, size - 1) else open_stream(file.name)
    except FileNotFoundError:
        raise Http404("This file is no longer available.") from None
    return _ObjectBody(body)


def private_file_response(
    file: FieldFile, *, download_name: str, as_attachment: bool = True, request: HttpRequest | None = None
) -> HttpResponse:
    """Streams an already-authorised file. With ``request``, a single byte range is honoured
    (206), which video players need to seek; nginx, Apache and S3 handle ranges themselves."""
    if not file or not file.name:
        raise Http404("This file is no longer available.")
    try:
        size = file.storage.size(file.name)  # one look-up that also proves the file is there
    except FileNotFoundError:
        raise Http404("This file is no longer available.") from None
    content_type = mimetypes.guess_type(download_name)[0] or "application/octet-stream"
    disposition = content_disposition_header(as_attachment, download_name)
    mode = settings.PRIVATE_MEDIA_SERVER
    wanted = request.headers.get("Range", "") if request is not None else ""
    if mode == "s3":
        presign = getattr(file.storage, "presigned_download_url", None)
        if presign is None:
            raise ImproperlyConfigured("PRIVATE_MEDIA_SERVER=s3 needs media on object storage (SAFEFACE_S3_BUCKET).")
        url = presign(
            file.name, content_disposition=disposition, content_type=content_type,
            seconds=settings.S3_PRESIGNED_SECONDS,
        )
        response = HttpResponseRedirect(url)
    elif mode == "django" and wanted:
        span = _byte_range(wanted, size)
        if span is None:
            response = HttpResponse(status=416, content_type=content_type)
            response["Content-Range"] = f"bytes */{size}"
        else:
            start, end = span
            response = StreamingHttpResponse(_stream(file, start, end, size), status=206, content_type=content_type)
            response["Content-Range"] = f"bytes {start}-{end}/{size}"
            response["Content-Length"] = str(end - start + 1)
    elif mode == "nginx":
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.PRIVATE_MEDIA_INTERNAL_URL.rstrip("/") + "/" + file.name
    elif mode == "apache":
        try:
            local = file.storage.path(file.name)
        except NotImplementedError:
            raise ImproperlyConfigured("PRIVATE_MEDIA_SERVER=apache needs media on the local disk.") from None
        response = HttpResponse(content_type=content_type)
        response["X-Sendfile"] = local
    elif hasattr(file.storage, "open_stream"):
        response = StreamingHttpResponse(_stream(file, 0, size - 1, size), content_type=content_type)
        response["Content-Length"] = str(size)
    else:
        response = FileResponse(file.storage.open(file.name, "rb"), content_type=content_type)
        response.block_size = CHUNK
        response["Content-Length"] = str(size)
    if mode == "django":
        response["Accept-Ranges"] = "bytes"
    if mode != "s3":  # the presigned URL asks the bucket to send this with the file itself
        response["Content-Disposition"] = disposition
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def presigned_origin() -> str:
    """The origin presigned downloads point at, for the Content-Security-Policy of pages whose
    <img>/<video> follow the redirect; "" unless PRIVATE_MEDIA_SERVER=s3."""
    if settings.PRIVATE_MEDIA_SERVER != "s3":
        return ""
    presign = getattr(default_storage, "presigned_download_url", None)
    if presign is None:
        return ""
    url = presign("users/0/origin", content_disposition="inline", content_type="application/octet-stream", seconds=1)
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


def user_prefix(user_id: int) -> str:
    """Every file of a user lives under this storage prefix, so deleting it removes them all."""
    return f"users/{user_id}/"


def storage_delete_tree(prefix: str, storage=default_storage) -> int:
    """Deletes every file under ``prefix`` (works for file-system and object storages)."""
    delete_prefix = getattr(storage, "delete_prefix", None)
    if delete_prefix is not None:  # object storage: list and delete in batches, no directories
        return delete_prefix(prefix)
    removed = 0
    try:
        directories, files = storage.listdir(prefix)
    except FileNotFoundError:
        return 0
    for name in files:
        storage.delete(prefix + name)
        removed += 1
    for directory in directories:
        removed += storage_delete_tree(f"{prefix}{directory}/", storage)
    try:
        local_dir = storage.path(prefix)
    except NotImplementedError:  # object storage has no directories to remove
        return removed
    shutil.rmtree(local_dir, ignore_errors=True)
    return removed
