"""The exception hierarchy of dynacal.

Every error names the parameter or object at fault, the value with its unit, what was
expected and how to fix it. Catch :class:`DynacalError` to catch them all.
"""

from __future__ import annotations

import difflib
from typing import Iterable

__all__ = [
    "DynacalError",
    "ParameterError",
    "NetworkError",
    "BackendUnavailable",
    "RecordingError",
    "BoardError",
    "CalibrationFailed",
    "unknown_name",
]


class DynacalError(Exception):
    """Base class of every error dynacal raises on purpose."""


class ParameterError(DynacalError, ValueError):
    """A model parameter or an argument is invalid: NaN, negative, in the wrong unit, of
    the wrong shape or unknown. The message says the accepted range and the fix."""


class NetworkError(DynacalError, ValueError):
    """A network breaks a chip limit (fan-in, core size, weights) or refers to a neuron,
    core or input that does not exist. The message names the limit and by how much."""


class BackendUnavailable(DynacalError, ImportError):
    """An optional backend cannot run here: its extra (brian2, samna) is not installed,
    or the device it needs (a CUDA GPU, a board) is missing. The message gives the
    install command or the alternative backend."""


class RecordingError(DynacalError, OSError):
    """A recording file is missing, corrupt, of another schema version, or does not
    belong to the experiment it is used for."""


class BoardError(DynacalError, RuntimeError):
    """The physical board (or its twin) failed or refused a configuration."""


class CalibrationFailed(DynacalError, RuntimeError):
    """A fit did not reach its target; the message says how far it got."""


def unknown_name(kind: str, name: str, valid: Iterable[str]) -> ParameterError:
    """Build the error for an unknown name, listing the valid ones, closest match first."""
    valid, name = list(valid), str(name)  # a name may arrive as any object (a number as a key)
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.5)
    rest = [v for v in valid if v not in close]
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return ParameterError(
        f"unknown {kind} {name!r}.{hint} Valid names: {', '.join(close + rest)}."
    )
