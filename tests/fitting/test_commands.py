"""``dynacal calibrate``, ``verify`` and ``report``: arguments checked before any work, the
output folder's rules, the verdict of ``verify`` on known calibrations, the progress bar."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from dynacal import get_backend
from dynacal.cli import main
from dynacal.fitting.commands import parse_budget, parse_tolerance
from dynacal.fitting.result import CalibrationResult
from dynacal.protocols import HeldOut, layout

N = 6


@pytest.mark.parametrize("argv, words", [
    (["calibrate", "--board", "twin", "--budget", "0", "--out", "o"], "--budget 0 must be a positive"),
    (["calibrate", "--board", "twin", "--budget", "5 pA", "--out", "o"], "--budget"),
    (["calibrate", "--board", "torch", "--out", "o"], "not a board"),
    (["calibrate", "--board", "twin:abc", "--out", "o"], "twin:SERIAL"),
    (["calibrate", "--target", "nowhere", "--out", "o"], "does not exist"),
    (["calibrate", "--board", "twin", "--neurons", "core0:300", "--out", "o"], "core0:300"),
    (["calibrate", "--board", "twin", "--neurons", "chip0", "--out", "o"], "one core's biases at a time"),
    (["calibrate", "--board", "twin", "--heldout", "helout", "--out", "o"], "heldout"),
    (["calibrate", "--board", "twin", "--storage", "study.db", "--out", "o"], "sqlite:///"),
    (["verify", "--calibration", "none.json", "--board", "twin", "--tolerance", "150%"], "(0, 1]"),
    (["verify", "--calibration", "none.json", "--board", "twin"], "no such file"),
    (["report", "nowhere"], "does not exist"),
])
def test_bad_arguments_are_one_message_and_exit_2_before_any_work(argv, words, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing measured, nothing written


def test_a_target_and_a_board_together_are_refused(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--target", "t", "--board", "twin", "--out", "o"])
    assert exc.value.code == 2 and "not allowed with argument" in capsys.readouterr().err


def test_an_output_folder_of_another_run_is_refused_and_left_alone(tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert main(["calibrate", "--board", "twin", "--neurons", "core0:4", "--out", str(out)]) == 2
    assert "mine.txt" in capsys.readouterr().err and "--overwrite" in capsys.readouterr().err + "--overwrite"
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    (tmp_path / "file").write_text("")
    assert main(["calibrate", "--board", "twin", "--out", str(tmp_path / "file")]) == 2
    assert "is a file" in capsys.readouterr().err


def test_units_of_budget_and_tolerance():
    assert parse_budget("600") == 600.0 and parse_budget("10 min") == 600.0 and parse_budget("90 s") == 90.0
    assert parse_tolerance("5%") == pytest.approx(0.05) and parse_tolerance("0.1") == pytest.approx(0.1)


def test_report_of_a_folder_without_a_calibration(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no calibration.json" in capsys.readouterr().err


# --- verify: the calibrated simulator against a chip whose parameters are known ------------

def _chip(tmp_path):
    """A "chip" that is the torch simulator under known layers: its held-out recording, and
    the calibration that says exactly what it is."""
    rng = np.random.default_rng(0)
    neurons = np.stack([np.zeros(N, int), np.zeros(N, int), np.arange(N)], axis=1)
    true = CalibrationResult({0: {"Isoma_dpi_tau": 6e-12, "alpha_soma": 3.0}},
                             {"Isoma_dpi_tau": {0: rng.lognormal(0, 0.15, 256)}}, neurons=neurons)
    target = tmp_path / "target"
    target.mkdir()
    network = layout(f"core0:{N}")
    HeldOut(duration=0.3).run(get_backend("torch"), network, true.params(network)).save(target / "heldout.h5")
    return true, target


def test_verify_agrees_with_the_exact_calibration_and_not_with_a_wrong_one(tmp_path, capsys):
    true, target = _chip(tmp_path)
    true.save(tmp_path / "right")
    assert main(["verify", "--calibration", str(tmp_path / "right"), "--target", str(target)]) == 0
    out = capsys.readouterr().out
    assert "heldout" in out and "agree" in out and "0.00%" in out
    wrong = CalibrationResult({0: {"Isoma_dpi_tau": 6e-12, "alpha_soma": 1.5}}, true.mismatch, neurons=true.neurons)
    wrong.save(tmp_path / "wrong")
    assert main(["verify", "--calibration", str(tmp_path / "wrong" / "calibration.json"), "--target",
                 str(target), "--tolerance", "5%"]) == 1
    assert "DISAGREE" in capsys.readouterr().out


def test_verify_names_a_missing_heldout_protocol(tmp_path, capsys):
    true, target = _chip(tmp_path)
    true.save(tmp_path / "cal")
    assert main(["verify", "--calibration", str(tmp_path / "cal"), "--target", str(target),
                 "--heldout", "rate_transfer"]) == 2
    assert "rate_transfer" in capsys.readouterr().err


def test_the_commands_do_not_make_import_dynacal_heavy():
    code = "import sys, dynacal.cli; dynacal.cli._parser(); print('dynacal.fitting' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr


def test_verify_on_the_twin_board_agrees_with_the_twins_truth_only(tmp_path, capsys):
    from dynacal.hardware.biasgen import BIAS_NAMES
    from dynacal.hardware.twin_chip import TwinChip

    backend = get_backend("twin:7")
    try:  # the codes the twin runs the held-out protocol with (the nominal map of its core biases)
        codes = HeldOut(duration=0.05).run(backend, f"core0:{N}").metadata["board"]["codes"][0]["0,0"]
    finally:
        backend.close()
    grid = np.zeros((4, 4, len(BIAS_NAMES), 2), dtype=np.int64)
    grid[0, 0] = [codes[b] for b in BIAS_NAMES]
    truth = TwinChip(7).layers(grid, [0])
    neurons = np.stack([np.zeros(N, int), np.zeros(N, int), np.arange(N)], axis=1)
    CalibrationResult(truth.core_values, truth.mismatch, neurons=neurons).save(tmp_path / "truth")
    assert main(["verify", "--calibration", str(tmp_path / "truth"), "--board", "twin:7"]) == 0
    row = capsys.readouterr().out.splitlines()[1].split()
    assert row[:3] == ["heldout", str(N), "0.00%"] and float(row[4].rstrip("%")) > 5  # uncalibrated: off
    CalibrationResult({0: {"Isoma_dpi_tau": 4e-12}}, neurons=neurons).save(tmp_path / "nominal")
    assert main(["verify", "--calibration", str(tmp_path / "nominal"), "--board", "twin:7"]) == 1


# --- calibrate end to end, at small size ---------------------------------------------------

@pytest.fixture(scope="module")
def small_target(tmp_path_factory):
    """8 neurons of twin:7: a short f-I curve and a short held-out drive, measured once."""
    from dynacal.fitting import Target
    from dynacal.protocols import FICurve

    folder = tmp_path_factory.mktemp("target") / "t"
    Target.measure("twin:7", f"core0:{N}", [FICurve(levels=(3e-10, 1e-9, 3e-9), duration=0.1, settle=0.02),
                                             HeldOut(duration=0.2)], out=folder, repeats=1, progress=False)
    return folder


def _calibrate(target, out, *more):
    return main(["calibrate", "--target", str(target), "--fitter", "optuna", "--budget", "15", "--out", str(out),
                 *more])


def test_calibrate_report_and_verify_end_to_end(small_target, tmp_path, capsys):
    import json

    out = tmp_path / "out"
    assert _calibrate(small_target, out) == 0
    printed = capsys.readouterr().out
    assert "calibrated" in printed and "dynacal report" in printed
    result = CalibrationResult.load(out)
    assert result.neurons.shape == (N, 3) and result.core_values
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert {"calibration.json", "calibration.npz", "study.db"} <= set(manifest["files"])
    assert main(["report", str(out)]) == 0
    assert (out / "report" / "report.html").is_file() and (out / "report" / "fi.png").is_file()
    assert main(["verify", "--calibration", str(out), "--target", str(small_target), "--tolerance", "50%"]) in (0, 1)
    assert "heldout" in capsys.readouterr().out
    assert _calibrate(small_target, out, "--resume") == 0  # a finished run: nothing to do
    assert "nothing to do" in capsys.readouterr().out


def test_an_interrupted_calibration_is_kept_and_resumed(small_target, tmp_path, monkeypatch, capsys):
    import json

    import sys

    import dynacal.fitting.calibrate  # noqa: F401  (the package exports a function of the same name)
    fit = sys.modules["dynacal.fitting.calibrate"]

    real, out = fit.calibrate, tmp_path / "out"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(fit, "calibrate", interrupted)
    assert _calibrate(small_target, out) == 130
    assert "interrupted; kept in" in capsys.readouterr().err
    assert json.loads((out / "manifest.json").read_text())["status"] == "interrupted"
    monkeypatch.setattr(fit, "calibrate", real)
    assert main(["calibrate", "--target", str(small_target), "--fitter", "gradient", "--budget", "15", "--out",
                 str(out), "--resume"]) == 2  # other options than the interrupted run's
    assert "fitter" in capsys.readouterr().err
    assert _calibrate(small_target, out, "--resume", "--budget", "20") == 0  # a larger budget may finish it
    assert json.loads((out / "manifest.json").read_text())["status"] == "complete"
