"""The calibration report: every section drawn from a saved calibration of a small twin target,
the truth of the twin, the folder rules, and the page in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import optuna
import pytest

from dynacal import get_backend
from dynacal.errors import ParameterError
from dynacal.fitting.report import PAGE, _Data, _load_target, _recordings, find_target, twin_truth, write_report
from dynacal.fitting.result import CalibrationResult
from dynacal.hardware.biasgen import BIAS_NAMES
from dynacal.hardware.twin_chip import TwinChip
from dynacal.protocols import FICurve, HeldOut

PNG = b"\x89PNG\r\n\x1a\n"
SERIAL, N = 7, 8
FITTED = ("Isoma_dpi_tau", "alpha_soma")


def _twin_truth_layers(rec):
    codes = np.zeros((4, 4, len(BIAS_NAMES), 2), dtype=np.int64)
    codes[0, 0] = [rec.metadata["board"]["codes"][0]["0,0"][b] for b in BIAS_NAMES]
    return TwinChip(SERIAL).layers(codes, [0])


def _calibration(folder: Path, target: Path, rec, *, spread: float) -> CalibrationResult:
    """A calibration of the twin's core 0 whose values are the truth times log-normal errors
    of ``spread`` (0: exact), with a fit history and a small Optuna study beside it."""
    truth, rng = _twin_truth_layers(rec), np.random.default_rng(1)
    core = {0: {n: truth.core_values[0][n] * rng.lognormal(0, spread) for n in FITTED}}
    mismatch = {n: {0: truth.mismatch[n][0] * rng.lognormal(0, spread, 256)} for n in FITTED}
    neurons = np.stack([np.zeros(N, int), np.zeros(N, int), np.arange(N)], axis=1)
    result = CalibrationResult(
        core, mismatch, neurons=neurons, quality={"fi": {"per_neuron": rng.uniform(0, 1, N)}},
        identifiability={"parameters": list(FITTED), "rank": {"median": 2.0}, "unconstrained": {},
                         "matrix": {"rows": ["fi.rate[1 nA]", "fi.rate[3 nA]"], "columns": list(FITTED),
                                    "values": [[0.9, 0.4], [0.7, 0.6]], "kind": "sensitivity"},
                         "correlation": {"rows": list(FITTED), "columns": list(FITTED),
                                         "values": [[1.0, -0.8], [-0.8, 1.0]], "kind": "correlation"}},
        combinations=[{"name": "Isoma_dpi_tau/alpha_soma", "exponents": {"Isoma_dpi_tau": 1, "alpha_soma": -1},
                       "values": rng.uniform(1, 2, N)}],
        options={"fitter": "optuna", "heldout": ["heldout"]}, provenance={"serial": SERIAL, "target": str(target)})
    folder.mkdir(parents=True, exist_ok=True)
    result.save(folder)
    for stage in ("fi", "refractory"):
        study = optuna.create_study(storage=f"sqlite:///{folder / 'study.db'}", study_name=f"dynacal.{stage}",
                                    sampler=optuna.samplers.RandomSampler(seed=0))
        study.optimize(lambda t: (t.suggest_float("x", 0, 1) - 0.3) ** 2 + 0.01 * t.suggest_float("y", 0, 1),
                       n_trials=8)
    return result


@pytest.fixture(scope="module")
def twin_target(tmp_path_factory):
    """A small twin target: a short f-I curve and held-out drive of 8 neurons of twin:7."""
    folder = tmp_path_factory.mktemp("twin-target")
    backend = get_backend(f"twin:{SERIAL}")
    try:
        for protocol in (FICurve(levels=(3e-10, 1e-9, 3e-9), duration=0.1, settle=0.02), HeldOut(duration=0.2)):
            protocol.run(backend, f"core0:{N}").save(folder / f"{protocol.name}.h5")
    finally:
        backend.close()
    return folder


@pytest.fixture(scope="module")
def report(twin_target, tmp_path_factory):
    folder = tmp_path_factory.mktemp("calibration")
    from dynacal.recording import Recording

    _calibration(folder, twin_target, Recording.load(twin_target / "heldout.h5"), spread=0.05)
    return write_report(folder)


def test_every_section_has_its_figure(report):
    text = report.read_text()
    figures = re.findall(r'<img src="([^"]+)"', text)
    assert {"raster.png", "counts.png", "traces.png", "fi.png", "mismatch.png", "truth.png", "identifiability.png",
            "identifiability-correlation.png", "convergence.png", "importance-0.png",
            "importance-1.png"} <= set(figures)
    for name in figures:  # relative links to PNGs beside the page
        assert (report.parent / name).read_bytes()[:8] == PNG
    assert 'class="missing"' not in text
    assert len(re.findall(r"<td>[+-]\d+\.\d%</td>", text)) == len(FITTED)  # fitted vs the twin's true core values
    manifest = json.loads((report.parent / "manifest.json").read_text())
    assert manifest["status"] == "complete" and set(figures) | {PAGE} == set(manifest["files"])


def test_the_twin_truth_is_the_chip_behind_the_target(twin_target, tmp_path):
    from dynacal.recording import Recording

    rec = Recording.load(twin_target / "heldout.h5")
    result = _calibration(tmp_path / "cal", twin_target, rec, spread=0.0)
    data = _Data(tmp_path / "cal", result, _recordings(_load_target(twin_target, result)), twin_target)
    truth = twin_truth(data)
    expected = _twin_truth_layers(rec)
    for name in FITTED:  # an exact calibration: fitted == true, neuron by neuron
        np.testing.assert_allclose(truth["factors"][name], expected.mismatch[name][0][:N])
        np.testing.assert_allclose(truth["values"][name], result.per_neuron[name], rtol=1e-9)
    assert truth["values"]["Isoma_dpi_tau"].std() > 0  # the twin's neurons differ


def test_a_simulated_target_has_no_truth_section(tmp_path):
    target = tmp_path / "target"
    target.mkdir()
    FICurve(levels=(1e-9, 3e-9), duration=0.05, settle=0.0).run(get_backend("torch"), "core0:4").save(
        target / "fi.h5")
    neurons = np.stack([np.zeros(4, int), np.zeros(4, int), np.arange(4)], axis=1)
    CalibrationResult({0: {"Isoma_dpi_tau": 4e-12}}, neurons=neurons, provenance={"target": str(target)}).save(
        tmp_path / "cal")
    text = write_report(tmp_path / "cal").read_text()
    assert "truth is known only on a twin target" in text
    assert "No held-out recording in the target" in text and '<img src="fi.png"' in text
    assert find_target(tmp_path / "cal", CalibrationResult.load(tmp_path / "cal")) == target


def test_a_report_replaces_its_own_older_one_but_no_other_files(report, tmp_path):
    folder = report.parent.parent
    (report.parent / "fi.png").write_bytes(b"stale")
    again = write_report(folder)
    assert (again.parent / "fi.png").read_bytes()[:8] == PNG
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ParameterError, match="notes.txt"):
        write_report(folder, other)
    assert (other / "notes.txt").read_text() == "keep me"


# --- the page in a browser --------------------------------------------------------------

# Appended to a copy of the page: on load, one line "src=naturalWidth" per image (0 when the
# browser could not decode it, -1 when it never loaded).
_CHECK = ('<script>window.addEventListener("load", () => {const p = document.createElement("pre"); '
          'p.id = "figure-check"; p.textContent = Array.from(document.images, i => i.getAttribute("src") + "=" + '
          '(i.complete ? i.naturalWidth : -1)).join(" "); document.body.appendChild(p);});</script>')


def _chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it "
                "when it runs as root)")


def test_every_figure_loads_in_headless_chromium(report):
    browser = _chromium()
    page = report.parent / "browser-check.html"
    page.write_text(report.read_text().replace("</body>", _CHECK + "</body>"))
    try:
        done = subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                               "--dump-dom", page.resolve().as_uri()], capture_output=True, text=True, timeout=120,
                              env={**os.environ, "HOME": str(report.parent)})
    finally:
        page.unlink()
    found = re.search(r'<pre id="figure-check">([^<]*)</pre>', done.stdout)
    assert found, f"Chromium printed no check (exit {done.returncode}): {done.stderr[-2000:]}"
    widths = dict(item.rsplit("=", 1) for item in found.group(1).split())
    assert set(widths) == set(re.findall(r'<img src="([^"]+)"', report.read_text()))
    assert all(int(w) > 0 for w in widths.values()), widths


def test_a_calibration_without_identifiability_gets_it_computed_from_its_target(twin_target, tmp_path):
    from dynacal.recording import Recording

    result = _calibration(tmp_path / "cal", twin_target, Recording.load(twin_target / "heldout.h5"), spread=0.0)
    result.identifiability = {}
    result.save(tmp_path / "cal")
    text = write_report(tmp_path / "cal").read_text()
    assert '<img src="identifiability.png"' in text and "Computed by the report at the fitted values" in text
