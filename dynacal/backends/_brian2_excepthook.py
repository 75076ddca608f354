"""Brian2's "report a bug" hook, kept for errors that come out of Brian2 (see
:func:`guard_excepthook`). Imported by the brian2 backend right after it imports brian2."""

from __future__ import annotations

import sys

from ..errors import DynacalError

__all__ = ["guard_excepthook"]


def guard_excepthook(before) -> None:
    """Keep Brian2's "report a bug" message for errors that come out of Brian2.

    Importing brian2 replaces ``sys.excepthook`` with its ``brian_excepthook``, which
    answers *every* uncaught exception of the process (a ``ParameterError`` for the user's
    ``Isoma_dpi_tau=5``, a typo in the user's script) with "Brian 2 encountered an
    unexpected error ... please report this issue" and keeps its debug log in the temp
    folder. The guard passes an exception to Brian2's hook only when it is not one of
    dynacal's own errors (those are the user's, and their message says the fix) and its
    traceback runs through Brian2's code; everything else goes to the hook that was there
    before brian2 was imported. Installed once, and only over Brian2's own hook.
    """
    hook = sys.excepthook
    if getattr(hook, "_dynacal_guard", False) or getattr(hook, "__module__", "") != "brian2.utils.logger":
        return
    fallback = before if before is not hook else sys.__excepthook__

    def guarded(exc_type, exc, tb):
        if not issubclass(exc_type, DynacalError) and _through_brian2(tb):
            return hook(exc_type, exc, tb)
        return fallback(exc_type, exc, tb)

    guarded._dynacal_guard = True
    sys.excepthook = guarded


def _through_brian2(tb) -> bool:
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if name == "brian2" or name.startswith("brian2."):
            return True
        tb = tb.tb_next
    return False
