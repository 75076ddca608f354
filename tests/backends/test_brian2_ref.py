"""The brian2 backend and the process it runs in: Brian2's "report a bug" hook answers
only errors that come out of Brian2, not the user's own (``_brian2_excepthook``)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.brian2
BUG_MESSAGE = "Brian 2 encountered an unexpected error"

# Makes the backend (which imports brian2 and installs its hook), prints Brian2's debug log
# path, then fails with the error chosen by argv[1]. Brian2 builds no model here.
SCRIPT = textwrap.dedent("""
    import sys
    from dynacal import Params, get_backend
    get_backend("brian2")
    from brian2.utils.logger import BrianLogger
    print(BrianLogger.tmp_log, flush=True)
    case = sys.argv[1]
    if case == "parameter":
        Params.from_values(Isoma_dpi_tau=5)      # the user's mistake, a ParameterError
    elif case == "typo":
        undefined_name                            # a NameError in the user's own script
    elif case == "brian2":
        import brian2
        brian2.Equations("dv/dt = -v / tau : volt (")   # fails inside Brian2's parser
""")


def _run(case, tmp_path):
    result = subprocess.run([sys.executable, "-c", SCRIPT, case], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert result.returncode == 1, result.stderr
    return result.stdout.strip().splitlines()[-1], result.stderr


@pytest.mark.parametrize("case, error", [("parameter", "ParameterError: Isoma_dpi_tau = 5 A"),
                                         ("typo", "NameError: name 'undefined_name' is not defined")])
def test_a_users_error_gets_its_traceback_without_the_brian2_bug_message(case, error, tmp_path):
    pytest.importorskip("brian2")
    log, err = _run(case, tmp_path)
    assert error in err and "Traceback (most recent call last)" in err
    assert BUG_MESSAGE not in err
    assert not Path(log).exists()  # Brian2 removes its debug log when no Brian2 error occurred


def test_an_error_inside_brian2_still_gets_brian2s_message(tmp_path):
    pytest.importorskip("brian2")
    log, err = _run("brian2", tmp_path)
    assert BUG_MESSAGE in err and log in err
    Path(log).unlink(missing_ok=True)


def test_the_guard_is_installed_once_and_only_over_brian2s_hook(monkeypatch):
    pytest.importorskip("brian2")
    from dynacal.backends import _brian2_excepthook as guard
    from dynacal.backends.brian2_ref import Brian2Backend

    Brian2Backend()
    installed = sys.excepthook
    assert getattr(installed, "_dynacal_guard", False)
    Brian2Backend()
    assert sys.excepthook is installed  # not wrapped twice
    mine = lambda *exc: None  # noqa: E731  (a hook of the user's, e.g. from a debugger)
    monkeypatch.setattr(sys, "excepthook", mine)
    guard.guard_excepthook(sys.__excepthook__)
    assert sys.excepthook is mine
