"""samna is optional: absent, the PyPI stub (detected without importing it), no board attached."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

from dynacal import get_backend
from dynacal.errors import BackendUnavailable
from dynacal.hardware.fake_samna import make_samna
from dynacal.hardware.samna_board import BoardBackend
from dynacal.hardware.samna_detect import import_samna, samna_status

_STUB_INIT = '''\
"""The PyPI installer stub of samna (a stand-in with the same marker)."""
import pathlib
pathlib.Path({marker!r}).write_text("imported")
PYPI_SAMNA = True
raise SystemExit("the stub tried to reinstall samna")
'''


@pytest.fixture
def stub_on_path(tmp_path, monkeypatch):
    """A package ``samna`` on sys.path whose __init__ sets PYPI_SAMNA = True and, if imported,
    writes a marker file and exits (as the real stub fails when it cannot reinstall)."""
    marker = tmp_path / "imported.txt"
    pkg = tmp_path / "site" / "samna"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(_STUB_INIT.format(marker=str(marker)))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, "samna", raising=False)
    importlib.invalidate_caches()
    return pkg, marker


def test_the_pypi_stub_is_detected_without_being_imported(stub_on_path):
    pkg, marker = stub_on_path
    status = samna_status()
    assert status.state == "stub" and status.origin == str(pkg / "__init__.py")
    with pytest.raises(BackendUnavailable, match=r"PyPI installer stub .*PYPI_SAMNA = True.*get_backend\('twin'\)"):
        import_samna()
    with pytest.raises(BackendUnavailable, match="installer stub"):
        get_backend("board")
    assert not marker.exists() and "samna" not in sys.modules


def test_a_real_looking_package_is_not_taken_for_the_stub(tmp_path, monkeypatch):
    pkg = tmp_path / "samna"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("# PYPI_SAMNA = True in a comment is not the marker\nPYPI_SAMNA = False\n"
                                     "raise RuntimeError('broken driver')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "samna", raising=False)
    importlib.invalidate_caches()
    assert samna_status().state == "real"
    with pytest.raises(BackendUnavailable, match=r"cannot be imported: RuntimeError: broken driver.*twin"):
        import_samna()


def test_absent_samna_says_so_and_points_to_the_twin(monkeypatch):
    monkeypatch.setitem(sys.modules, "samna", None)  # find_spec then reports it missing
    assert samna_status().state == "absent"
    with pytest.raises(BackendUnavailable, match=r"samna .* is not installed.*get_backend\('twin'\)"):
        get_backend("board")


def test_samna_without_a_board_says_so_and_points_to_the_twin():
    with pytest.raises(BackendUnavailable, match=r"no Dynapse1DevKit is attached \(unopened devices: none\).*twin"):
        BoardBackend(samna_module=make_samna([]))


def test_importing_the_hardware_package_and_the_twin_imports_no_samna(tmp_path):
    code = ("import sys, dynacal.hardware\nfrom dynacal import get_backend\nget_backend('twin').close()\n"
            "print('samna' in sys.modules)")
    # Run outside the checkout, so that the installed package (with dynacal.hardware mapped
    # in) is imported, not the source tree that `python -c` would put first on sys.path.
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
