"""Private media: user files live in storage that has no public URL. Views that have already
checked ownership hand a stored file to ``private_file_response``, which streams it (or, in
production behind nginx/Apache, tells the web server to send it)."""
from __future__ import annotations

import mimetypes
import re
import shutil
from collections.abc import Iterator

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpRequest, HttpResponse, StreamingHttpResponse
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


def private_file_response(
    file: FieldFile, *, download_name: str, as_attachment: bool = True, request: HttpRequest | None = None
) -> HttpResponse:
    """Streams an already-authorised file. With ``request``, a single byte range is honoured
    (206), which video players need to seek; nginx and Apache handle ranges themselves."""
    if not file or not file.name or not file.storage.exists(file.name):
        raise Http404("This file is no longer available.")
    content_type = mimetypes.guess_type(download_name)[0] or "application/octet-stream"
    mode = settings.PRIVATE_MEDIA_SERVER
    wanted = request.headers.get("Range", "") if request is not None else ""
    if mode == "django" and wanted:
        size = file.size
        span = _byte_range(wanted, size)
        if span is None:
            response = HttpResponse(status=416, content_type=content_type)
            response["Content-Range"] = f"bytes */{size}"
        else:
            start, end = span
            response = StreamingHttpResponse(_read_slice(file, start, end - start + 1), status=206, content_type=content_type)
            response["Content-Range"] = f"bytes {start}-{end}/{size}"
            response["Content-Length"] = str(end - start + 1)
    elif mode == "nginx":
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.PRIVATE_MEDIA_INTERNAL_URL.rstrip("/") + "/" + file.name
    elif mode == "apache":
        response = HttpResponse(content_type=content_type)
        response["X-Sendfile"] = file.storage.path(file.name)
    else:
        response = FileResponse(file.storage.open(file.name, "rb"), content_type=content_type)
        response["Content-Length"] = str(file.size)
    if mode == "django":
        response["Accept-Ranges"] = "bytes"
    response["Content-Disposition"] = content_disposition_header(as_attachment, download_name)
    response["Cache-Control"] = "private, no-store"
    response["X-Content-Type-Options"] = "nosniff"
    return response


def user_prefix(user_id: int) -> str:
    """Every file of a user lives under this storage prefix, so deleting it removes them all."""
    return f"users/{user_id}/"


def storage_delete_tree(prefix: str, storage=default_storage) -> int:
    """Deletes every file under ``prefix`` (works for file-system and object storages)."""
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
