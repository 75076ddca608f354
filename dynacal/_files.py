"""Atomic file writes: a crash or an error never leaves a half-written file behind.

The data is written to a temporary file in the target's folder, flushed to disk, then
renamed over the target with ``os.replace`` (atomic on POSIX and Windows).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_hdf5"]


def check_interrupt() -> None:
    from ._outdir import check_interrupt as check  # noqa: PLC0415  (_outdir imports this module)

    check()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Write ``path`` atomically.

    Args:
        path: the file to create or replace; its folder is created if needed.
        write: called with a binary file object open for writing.

    Returns:
        The path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # os.open with mode 0o666 honours the umask, so the result gets the usual
    # permissions (mkstemp would leave it readable by its owner only).
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        check_interrupt()  # a Ctrl-C that a callback swallowed still stops the rename
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_hdf5(path: str | os.PathLike, fill: Callable) -> Path:
    """Write an HDF5 file atomically: ``fill(h5py.File)`` writes a temporary file in the
    target's folder, which is flushed to disk and renamed over ``path``."""
    import h5py
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
    try:
        with h5py.File(tmp, "w") as f:
            fill(f)
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        check_interrupt()  # h5py drops exceptions raised in its callbacks: a Ctrl-C during the fill
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
