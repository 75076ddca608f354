"""Finding samna without importing it: absent, the PyPI installer stub, or the real driver.

On PyPI, ``samna`` is an installer stub: importing it tries to download the real package
from SynSense's index and, on machines that cannot reach it, fails after seconds with
``subprocess.CalledProcessError``. :func:`samna_status` therefore never imports samna: it
finds the package with ``importlib.util.find_spec`` (which, for a top-level name, reads no
code) and looks for ``PYPI_SAMNA = True`` in its ``__init__.py``. :func:`import_samna` imports
it only when the status is ``"real"``.
"""

from __future__ import annotations

import importlib
import importlib.util
import re
from pathlib import Path
from typing import NamedTuple

from dynacal.errors import BackendUnavailable

__all__ = ["SamnaStatus", "samna_status", "import_samna", "TWIN_HINT"]

_STUB = re.compile(r"^\s*PYPI_SAMNA\s*(?::[^=]*)?=\s*True\b", re.MULTILINE)
TWIN_HINT = ("To run the board path without a board, use the twin board: get_backend('twin') "
             "(a simulated Dynap-SE1 with its own mismatch and noise behind a fake samna).")


class SamnaStatus(NamedTuple):
    """``state``: ``"absent"``, ``"stub"`` or ``"real"``; ``origin``: the file found (or None)."""

    state: str
    origin: str | None


def samna_status(name: str = "samna") -> SamnaStatus:
    """Whether samna is installed, and whether it is the PyPI stub, without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return SamnaStatus("absent", None)
    if spec is None:
        return SamnaStatus("absent", None)
    origin = spec.origin
    candidates = []
    if origin and origin not in ("built-in", "frozen", "namespace"):
        candidates.append(Path(origin))
    for location in spec.submodule_search_locations or ():
        candidates.append(Path(location) / "__init__.py")
    for path in candidates:
        if path.name == "__init__.py" and path.is_file():
            try:
                text = path.read_text(errors="replace")
            except OSError:
                continue
            if _STUB.search(text):
                return SamnaStatus("stub", str(path))
    return SamnaStatus("real", origin)


def import_samna(name: str = "samna"):
    """Import the real samna, or raise :class:`BackendUnavailable` saying why it cannot be used.

    Raises:
        BackendUnavailable: samna is not installed, is the PyPI stub, or fails to import.
    """
    status = samna_status(name)
    if status.state == "absent":
        raise BackendUnavailable(
            "the board backend needs samna (SynSense's driver), which is not installed. Install it from "
            "SynSense's package index (pip install 'dynacal[hardware]' only works where that index is "
            f"reachable). {TWIN_HINT}")
    if status.state == "stub":
        raise BackendUnavailable(
            f"the installed samna is the PyPI installer stub ({status.origin} sets PYPI_SAMNA = True); importing "
            "it would try to download the real package from SynSense's index and fail here. Install the real "
            f"samna from SynSense's index. {TWIN_HINT}")
    try:
        return importlib.import_module(name)
    except Exception as exc:  # the stub raises CalledProcessError, a broken install anything
        raise BackendUnavailable(f"samna was found at {status.origin} but cannot be imported: "
                                 f"{type(exc).__name__}: {exc}. {TWIN_HINT}") from exc
