"""Private media: user files live in storage that has no public URL. Views that have already
checked ownership hand a stored file to ``private_file_response``, which streams it (or, in
production behind nginx/Apache, tells the web server to send it)."""
from __future__ import annotations

import mimetypes
import shutil

from django.conf import settings
from django.core.files.storage import default_storage
from django.db.models.fields.files import FieldFile
from django.http import FileResponse, Http404, HttpResponse
from django.utils.http import content_disposition_header


def private_file_response(file: FieldFile, *, download_name: str, as_attachment: bool = True) -> HttpResponse:
    if not file or not file.name or not file.storage.exists(file.name):
        raise Http404("This file is no longer available.")
    content_type = mimetypes.guess_type(download_name)[0] or "application/octet-stream"
    mode = settings.PRIVATE_MEDIA_SERVER
    if mode == "nginx":
        response = HttpResponse(content_type=content_type)
        response["X-Accel-Redirect"] = settings.PRIVATE_MEDIA_INTERNAL_URL.rstrip("/") + "/" + file.name
    elif mode == "apache":
        response = HttpResponse(content_type=content_type)
        response["X-Sendfile"] = file.storage.path(file.name)
    else:
        response = FileResponse(file.storage.open(file.name, "rb"), content_type=content_type)
        response["Content-Length"] = str(file.size)
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
