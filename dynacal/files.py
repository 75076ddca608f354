"""Files the project writes and reads: atomic writes, and the one HDF5 reader.

A crash or an error never leaves a half-written file behind: the data is written to a temporary file in the target's folder, flushed to disk, then
renamed over the target with ``os.replace`` (atomic on POSIX and Windows). Public
because every package writes files: the core, ``dynacal.hardware`` (bias and DAC files)
and ``dynacal.fitting``.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable

__all__ = ["atomic_write", "atomic_hdf5", "open_hdf5"]


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


def open_hdf5(path: str | os.PathLike, what: str, fix: str = ""):
    """Open an HDF5 file for reading, or raise ``RecordingError`` naming ``what`` it should be.

    Args:
        path: the file.
        what: "recording", "experiment", ... (for the messages).
        fix: advice appended to the message of an unreadable file.

    Returns:
        The open ``h5py.File`` (use it as a context manager).
    """
    import h5py

    from .errors import RecordingError
    path = Path(path)
    if not path.exists():
        raise RecordingError(f"{what} file {str(path)!r} does not exist.")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise RecordingError(f"{str(path)!r} is not a readable HDF5 {what} (corrupt or truncated?): {exc}."
                             + (f" {fix}" if fix else "")) from exc
