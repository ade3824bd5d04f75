"""Local paths for the engine: an upload in the web process, a stored file on a worker; and the
name of an uploaded file as it may be shown back to its owner."""
from __future__ import annotations

import contextlib
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import UploadedFile
from django.db.models.fields.files import FieldFile


@contextlib.contextmanager
def upload_local_path(file: UploadedFile) -> Iterator[Path]:
    """The upload as a local path whose name carries no extension: Django's temporary file keeps
    the client's (".upload.jpg"), and FFmpeg would pick a demuxer by it instead of the content."""
    if hasattr(file, "temporary_file_path"):
        with tempfile.TemporaryDirectory() as folder:
            link = Path(folder) / "upload"
            link.symlink_to(file.temporary_file_path())
            yield link
        return
    with tempfile.NamedTemporaryFile(suffix=".upload") as handle:
        for chunk in file.chunks():
            handle.write(chunk)
        handle.flush()
        yield Path(handle.name)
    file.seek(0)


@contextlib.contextmanager
def stored_local_path(file: FieldFile) -> Iterator[Path]:
    """A local file path for a stored file: the file itself on the local disk; for object
    storage a private temporary copy (in SAFEFACE_TEMP_DIR), deleted when the block ends
    (FileNotFoundError when the object is gone)."""
    try:
        local = Path(file.storage.path(file.name))
    except NotImplementedError:
        local = None
    if local is not None:
        yield local
        return
    suffix = Path(file.name).suffix
    with tempfile.NamedTemporaryFile(suffix=suffix, dir=settings.JOB_TEMP_DIR) as handle:
        download_to = getattr(file.storage, "download_to", None)
        if download_to is not None:  # straight from the bucket, in parallel parts for big files
            download_to(file.name, handle)
        else:
            with file.storage.open(file.name, "rb") as source:
                shutil.copyfileobj(source, handle, 1 << 20)
        handle.flush()
        yield Path(handle.name)


def display_name(name: str | None, default: str = "upload") -> str:
    """The client's file name without folders or control characters, at most 200 characters."""
    base = Path(name or "").name
    base = re.sub(r"[\x00-\x1f\x7f]", "", base).strip()
    return base[:200] or default
