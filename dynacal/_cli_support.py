"""What the ``dynacal`` command needs beside its subcommands: the version line, a
progress bar for callbacks, and the report of an internal error (:mod:`dynacal.cli`)."""

from __future__ import annotations

import os
import sys
import tempfile
import traceback
from pathlib import Path

from .errors import ParameterError

__all__ = ["version", "ProgressBar", "internal_error", "check_writable"]


def version() -> str:
    """``dynacal X.Y.Z (Python A.B.C)``, for ``dynacal --version`` and the crash log."""
    from . import __version__  # noqa: PLC0415  (the package is imported by now)

    return f"dynacal {__version__} (Python {sys.version.split()[0]})"


class ProgressBar:
    """A tqdm bar on stderr driven by ``progress(name, done, total)`` callbacks: it
    appears at the first call (when the total is known) and names the part that runs
    (``name = ""``: done). A context manager that closes the bar."""

    def __init__(self, unit: str):
        self.unit, self.bar = unit, None

    def __enter__(self):
        return self

    def __call__(self, name: str, done: int, total: int) -> None:
        if self.bar is None:
            from tqdm import tqdm  # noqa: PLC0415

            self.bar = tqdm(total=total, unit=self.unit, file=sys.stderr)
        self.bar.n = done
        self.bar.set_description(name or "done")
        self.bar.refresh()

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            self.bar.close()


def internal_error(command: str, exc: BaseException, *, verbose: bool = False) -> int:
    """Report an exception that is not one of dynacal's own errors: a bug of dynacal, not a
    mistake of the user. Its traceback goes to a log file in the temp folder (printed
    too with ``verbose``), the terminal gets one line with the log's path.

    Returns:
        The exit code, 1.
    """
    text = (f"{version()}\nargv: {sys.argv!r}\n\n"
            + "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    path = None
    try:
        fd, path = tempfile.mkstemp(prefix=f"dynacal-{command}-", suffix=".log")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        where = f"the traceback is in {path}"
    except OSError:
        path, where = None, "the traceback follows"
        print(text, file=sys.stderr)
    print(f"dynacal {command}: internal error: {type(exc).__name__}: {exc}. This is a bug in dynacal, "
          f"not in your input; {where} (please include it in a report).", file=sys.stderr)
    if verbose and path:
        print(text, file=sys.stderr)
    return 1


def check_writable(path: str | os.PathLike, option: str, *, folder: bool) -> None:
    """Refuse an output path that cannot be written, before any work is done.

    Args:
        path: the output folder (``folder=True``, created later if missing) or file.
        option: the command-line option that gave it, for the message (``--out``).

    Raises:
        ParameterError: the path is a file where a folder is needed (or the reverse), sits
            under a file, or its folder is not writable.
    """
    p = Path(path)
    if p.exists() and p.is_dir() != folder:
        need = "a folder (it is created if missing)" if folder else f"a file name, e.g. {p / 'bench.json'}"
        raise ParameterError(f"{option} {path} is a {'folder' if p.is_dir() else 'file'}; give {need}.")
    existing = p if (folder and p.exists()) else p.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ParameterError(f"{option} {path} cannot be created: {existing} is a file, not a folder; choose "
                             f"another path.")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ParameterError(f"{option} {path} cannot be written: the folder {existing} is not writable "
                             f"here; choose another path.")
