"""Atomic output files: write to a hidden temp file in the destination folder, then
``os.replace`` it over the destination, so a reader never sees a half-written file and a
failed or cancelled run leaves nothing behind."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

#: Mode given to finished output files (mkstemp creates 0600).
OUTPUT_MODE = 0o644


def temp_path_for(dst: Path, suffix: str) -> Path:
    """Create (empty) and return a unique temp file next to ``dst``."""
    fd, name = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=f".part{suffix}", dir=dst.parent)
    os.close(fd)
    return Path(name)


def commit(tmp: Path, dst: Path) -> None:
    """Give the temp file normal permissions and move it over ``dst`` atomically."""
    try:
        os.chmod(tmp, OUTPUT_MODE)
    except OSError:
        pass
    os.replace(tmp, dst)


def discard(tmp: Path | None) -> None:
    if tmp is None:
        return
    try:
        os.unlink(tmp)
    except FileNotFoundError:
        pass
    except OSError:
        pass


def write_atomically(dst: Path, data: bytes) -> Path:
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path_for(dst, dst.suffix)
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        commit(tmp, dst)
    except BaseException:
        discard(tmp)
        raise
    return dst
