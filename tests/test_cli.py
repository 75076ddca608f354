"""The ``dynacal`` command line: ``compare`` outputs, ``--inputs`` files, optional brian2,
import hygiene, and the ``bench`` wiring."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

from dynacal import Chip, Experiment, Recording, Stimulus
from dynacal.backends.torch_sim import TorchBackend
from dynacal.cli import main
from dynacal.params import STATE_NAMES
from dynacal.plots import FIGURES

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
NPZ_KEYS = set(STATE_NAMES) | {"spike_steps"}

# Runs the CLI in a fresh interpreter in which `import brian2` fails as if it were not
# installed: a finder placed first on sys.meta_path refuses brian2 and its submodules.
NO_BRIAN2 = textwrap.dedent("""
    import sys

    class _NoBrian2:
        def find_spec(self, name, path=None, target=None):
            if name == "brian2" or name.startswith("brian2."):
                raise ModuleNotFoundError(f"No module named {name!r} (hidden by the test)", name=name)
            return None

    sys.meta_path.insert(0, _NoBrian2())
    from dynacal.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _run_without_brian2(args, cwd):
    return subprocess.run([sys.executable, "-c", NO_BRIAN2, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


def _check_outputs(out, labels, n_steps):
    names = sorted(os.listdir(out))
    assert not [n for n in names if n.endswith(".tmp")], names  # atomic writes leave no temp files
    for fig in FIGURES:
        assert (out / fig).read_bytes()[:8] == PNG_MAGIC
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["backends"]) == labels
    for label in labels:
        rec = Recording.load(out / f"{label}.h5")
        assert rec.n_steps == n_steps and rec.n_neurons == 1
        with np.load(out / f"{label}.npz") as f:
            assert set(f.files) == NPZ_KEYS
            for name in STATE_NAMES:
                assert f[name].shape == (n_steps,) and f[name].dtype == np.float64
                np.testing.assert_array_equal(f[name], rec.traces[name][:, 0, 0].numpy())
            assert f["spike_steps"].dtype == np.int64
            np.testing.assert_array_equal(f["spike_steps"], rec.spike_step)
            assert metrics["backends"][label]["spike_steps"] == f["spike_steps"].tolist()
    return metrics


def test_compare_torch_writes_every_file(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", "--backends", "torch", "--out", str(out)]) == 0
    metrics = _check_outputs(out, ["torch"], 1000)
    # the seed input (seed 0, 80 Hz, weights 10/5/1/2) makes the neuron spike
    assert metrics["backends"]["torch"]["n_spikes"] > 0
    assert metrics["agreement"] == []
    printed = capsys.readouterr().out
    assert "running torch ... first run" in printed and "warm run" in printed
    run = metrics["backends"]["torch"]
    assert run["deterministic"] and 0 < run["wall_time_s"] and 0 < run["first_run_wall_time_s"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["status"] == "complete" and manifest["command"] == "dynacal compare"
    # metrics.json, torch.h5, torch.npz and the figures, each listed in the manifest
    assert sorted(os.listdir(out)) == sorted([*manifest["files"], "manifest.json"])
    assert len(manifest["files"]) == len(FIGURES) + 3


@pytest.mark.parametrize("duration", ["20 ms", "0.02", "20ms"])
def test_duration_units(tmp_path, duration):
    out = tmp_path / "out"
    assert main(["compare", "--backends", "torch", "--duration", duration, "--out", str(out)]) == 0
    with np.load(out / "torch.npz") as f:
        assert f["Isoma_mem"].shape == (200,)


def _save_inputs(path, **arrays):
    np.savez(path, **arrays)
    return str(path)


def test_inputs_reproduce_a_direct_run(tmp_path):
    dt, n_steps = 1e-4, 600
    raster = (np.random.default_rng(3).random((4, n_steps)) < 0.02).astype(np.uint8)
    weights = np.array([12, 6, 1, 1])
    path = _save_inputs(tmp_path / "in.npz", input_spikes=raster, dt=np.float64(dt), weights=weights,
                        Isoma_const=np.float64(5e-12))
    out = tmp_path / "out"
    assert main(["compare", "--backends", "torch", "--inputs", path, "--out", str(out)]) == 0
    _check_outputs(out, ["torch"], n_steps)

    # the same experiment built by hand with the Chip API
    chip = Chip()
    neuron = chip.get_neurons(1, "Core_1")
    sources = chip.add_inputs(4)
    for k, syn_type in enumerate(("NMDA", "AMPA", "GABA_A", "GABA_B")):
        syn = chip.add_connection(sources[k], neuron, synapse_type=syn_type)
        chip.connect(syn, True)
        syn.weight = int(weights[k])
    chip.set_bias({"Isoma_th": 2000e-12, "Isoma_pfb_th": 1000e-12, "Isoma_const": 5e-12}, "Core_1")
    experiment = Experiment(chip.network(), Stimulus.from_dense(raster), dt, n_steps)
    direct = TorchBackend().run(experiment, record=["Isoma_mem"])
    assert direct.spike_step.size > 0
    with np.load(out / "torch.npz") as f:
        np.testing.assert_array_equal(f["spike_steps"], direct.spike_step)
        np.testing.assert_array_equal(f["Isoma_mem"], direct.trace("Isoma_mem", neuron=0))


def _valid():
    raster = np.zeros((4, 50), dtype=np.uint8)
    raster[0, 5] = 1
    return {"input_spikes": raster, "dt": np.float64(1e-4)}


BAD_FILES = [  # (change to a valid file, words the message must contain)
    (lambda d: d.pop("input_spikes"), ["input_spikes", "missing", "(4, T)"]),
    (lambda d: d.pop("dt"), ["dt", "missing", "in s"]),
    (lambda d: d.update(input_spikes=d["input_spikes"].T.copy()), ["input_spikes", "(50, 4)", "transposed"]),
    (lambda d: d.update(input_spikes=d["input_spikes"][:3]), ["input_spikes", "(3, 50)", "(4, T)"]),
    (lambda d: d.update(input_spikes=d["input_spikes"].astype(np.float32)), ["input_spikes", "float32", "uint8"]),
    (lambda d: d["input_spikes"].__setitem__((1, 7), 2), ["input_spikes", "other than 0 and 1", "ampa", "step 7"]),
    (lambda d: d.update(dt=np.float64(0.1)), ["dt", "0.1 s", "ms given as s", "0.0001"]),
    (lambda d: d.update(dt=np.float64(100.0)), ["dt", "us given as s", "0.0001"]),
    (lambda d: d.update(dt=np.float64(np.nan)), ["dt", "not finite", "in s"]),
    (lambda d: d.update(dt=np.array([1e-4, 1e-4])), ["dt", "shape (2,)", "one number in s"]),
    (lambda d: d.update(weights=np.array([10, 5, 1])), ["weights", "shape (3,)", "4 integers"]),
    (lambda d: d.update(weights=np.array([10, -5, 1, 2])), ["weights", "non-negative integers"]),
    (lambda d: d.update(weights=np.array([10, 5.5, 1, 2])), ["weights", "non-negative integers"]),
    (lambda d: d.update(Isoma_const=np.float64(50.0)), ["Isoma_const", "50 A", "pA given as A", "5e-11"]),
    (lambda d: d.update(Isoma_const=np.float64(np.nan)), ["Isoma_const", "not finite", "in A"]),
    (lambda d: d.update(input_spike=d.pop("input_spikes")), ["input_spike", "Did you mean 'input_spikes'"]),
]


@pytest.mark.parametrize("change, words", BAD_FILES)
def test_bad_input_files_give_clear_errors(tmp_path, capsys, change, words):
    data = _valid()
    change(data)
    path = _save_inputs(tmp_path / "bad.npz", **data)
    assert main(["compare", "--backends", "torch", "--inputs", path, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.npz" in err
    for word in words:
        assert word in err, (word, err)
    assert not (tmp_path / "o").exists()  # nothing ran, nothing written


def test_missing_and_unreadable_input_files(tmp_path, capsys):
    out = ["--backends", "torch", "--out", str(tmp_path / "o")]
    assert main(["compare", "--inputs", str(tmp_path / "nope.npz"), *out]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["compare", "--inputs", str(tmp_path), *out]) == 2
    assert "is a folder, not a file" in capsys.readouterr().err
    (tmp_path / "text.npz").write_text("not an archive")
    assert main(["compare", "--inputs", str(tmp_path / "text.npz"), *out]) == 2
    assert "not a readable .npz" in capsys.readouterr().err


@pytest.mark.parametrize("args, words", [
    (["--duration", "100"], ["100 s", "'100 ms'"]),
    (["--duration=-5 ms"], ["--duration", "positive"]),
    (["--weights", "nmda=ten"], ["nmda=ten", "integer"]),
    (["--weights", "nmdaa=3"], ["Did you mean 'nmda'"]),
    (["--weights", "nmda=70"], ["fan-in 78", "limit of 64 CAM entries by 14"]),
    (["--rate", "80 A"], ["--rate", "Hz"]),
    (["--backends", "torch,torch"], ["twice"]),
    (["--backends", "toch"], ["Did you mean 'torch'"]),
])
def test_bad_options_give_clear_errors(tmp_path, capsys, args, words):
    assert main(["compare", "--out", str(tmp_path / "o"), *args]) == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, (word, err)


def test_inputs_conflict_with_poisson_options(tmp_path, capsys):
    path = _save_inputs(tmp_path / "in.npz", **_valid(), weights=np.array([1, 1, 1, 1]))
    assert main(["compare", "--backends", "torch", "--inputs", path, "--duration", "20 ms"]) == 2
    assert "--duration cannot be combined with --inputs" in capsys.readouterr().err
    assert main(["compare", "--backends", "torch", "--inputs", path, "--weights", "nmda=3"]) == 2
    assert "keep one" in capsys.readouterr().err


def test_torch_alone_runs_without_brian2(tmp_path):
    result = _run_without_brian2(["compare", "--backends", "torch", "--duration", "20 ms", "--out", "o"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "note" not in result.stderr
    _check_outputs(tmp_path / "o", ["torch"], 200)


def test_default_backends_skip_missing_brian2_with_a_note(tmp_path):
    result = _run_without_brian2(["compare", "--duration", "20 ms", "--out", "o"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "brian2 is not installed" in result.stderr and "pip install" in result.stderr
    _check_outputs(tmp_path / "o", ["torch"], 200)


def test_brian2_asked_for_but_missing_fails(tmp_path):
    result = _run_without_brian2(["compare", "--backends", "torch,brian2", "--out", "o"], tmp_path)
    assert result.returncode == 2
    assert "brian2" in result.stderr and "pip install 'dynacal[brian2]'" in result.stderr
    assert not (tmp_path / "o").exists()  # it fails before running anything


def test_import_is_light():
    heavy = ["brian2", "numba", "matplotlib", "h5py", "dynacal.hardware", "dynacal.fitting"]
    code = ("import sys, dynacal, dynacal.cli\n"
            f"print(','.join(m for m in {heavy!r} if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "", f"`import dynacal` imported {result.stdout.strip()}"


def test_bench_without_the_module(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "dynacal.bench", None)  # makes the import fail
    assert main(["bench", "--quick"]) == 2
    assert "dynacal.bench is missing" in capsys.readouterr().err


def test_bench_prints_and_writes_the_records(monkeypatch, capsys, tmp_path):
    calls = []
    records = [{"name": "seed", "backend": "torch", "wall_s": 0.000812, "neuron_steps_per_s": 1.23e6, "ratio": 812.5},
               {"name": "seed", "backend": "brian2", "wall_s": 0.66, "neuron_steps_per_s": 1515.0, "ratio": 1.0}]
    fake = types.ModuleType("dynacal.bench")
    fake.run_benchmarks = lambda quick, progress: calls.append(quick) or records
    monkeypatch.setitem(sys.modules, "dynacal.bench", fake)
    path = tmp_path / "bench.json"
    assert main(["bench", "--quick", "--json", str(path)]) == 0
    assert calls == [True]
    assert json.loads(path.read_text()) == records
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["name", "backend", "wall_s", "neuron_steps_per_s", "ratio"]
    assert lines[1].split() == ["seed", "torch", "0.000812", "1.23e+06", "812.5"]
    assert lines[-1] == f"wrote {path}"
    fake.format_table = lambda rows: f"<{len(rows)} rows formatted by dynacal.bench>"
    assert main(["bench"]) == 0
    assert calls == [True, False]
    assert capsys.readouterr().out == "<2 rows formatted by dynacal.bench>\n"


@pytest.mark.brian2
@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_compare_with_brian2_agrees(tmp_path, capsys, dtype):
    pytest.importorskip("brian2")
    out = tmp_path / "out"
    code = main(["compare", "--dtype", dtype, "--out", str(out)])
    printed = capsys.readouterr().out
    metrics = _check_outputs(out, ["torch", "brian2"], 1000)
    (result,) = metrics["agreement"]
    assert result["spikes_identical"] and result["spike_steps"][0]
    assert result["tolerance"] == {"float64": 1e-9, "float32": 1e-5}[dtype]
    assert result["verdict"] == "agree", result["reason"]
    assert code == 0 and "verdict: agree" in printed


# --- options added for new users: --version, --substeps, the backends in --help, bench progress

def test_version_prints_the_package_version(capsys):
    import importlib.metadata

    import dynacal

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f"dynacal {dynacal.__version__} (Python ")
    assert dynacal.__version__ == importlib.metadata.version("dynacal")  # one version, not two


def test_compare_substeps_follows_the_stability_advice(tmp_path, capsys, caplog):
    # a strong GABA_A shunt makes forward Euler unstable at 100 us; the warning names the
    # substeps that are safe, and --substeps with that number runs without the warning
    stiff = ["compare", "--backends", "torch", "--weights", "nmda=0,ampa=0,gaba_a=30,gaba_b=0"]
    assert main(stiff + ["--out", str(tmp_path / "a")]) == 0
    advice = [r.getMessage() for r in caplog.records if "unstable" in r.getMessage()]
    assert advice, "the stiff drive should warn"
    need = int(advice[0].split("substeps=")[1].split()[0])
    assert need > 1
    caplog.clear()
    assert main(stiff + ["--substeps", str(need), "--out", str(tmp_path / "b")]) == 0
    assert not [r for r in caplog.records if "unstable" in r.getMessage()]
    assert f"{need} substeps" in capsys.readouterr().out
    assert Recording.load(tmp_path / "b" / "torch.h5").metadata["substeps"] == need
    assert json.loads((tmp_path / "b" / "metrics.json").read_text())["substeps"] == need


@pytest.mark.parametrize("argv, message", [
    (["compare", "--backends", "brian2", "--substeps", "2"], "--substeps applies to the torch simulator, not to brian2"),
    (["compare", "--backends", "torch", "--substeps", "0"], "--substeps 0 must be an integer >= 1"),
    (["characterize", "--backend", "twin", "--substeps", "2"], "not to twin; run torch or drop --substeps"),
])
def test_substeps_that_cannot_apply_are_refused_before_any_run(argv, message, tmp_path, capsys):
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and "Traceback" not in captured.err
    assert captured.out == "" and not (tmp_path / "out").exists()


def test_characterize_substeps_reaches_the_torch_simulator(tmp_path):
    assert main(["characterize", "--protocol", "fi", "--neurons", "core0:2", "--substeps", "3", "--no-figures",
                 "--out", str(tmp_path)]) == 0
    assert Recording.load(tmp_path / "fi.h5").metadata["substeps"] == 3


@pytest.mark.parametrize("command, option", [("characterize", "--backend"), ("compare", "--backends")])
def test_help_lists_every_backend(command, option, capsys):
    from dynacal.backends.registry import BACKENDS

    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = " ".join(capsys.readouterr().out.split())
    described = text[text.index(option):]
    for name in BACKENDS:
        assert f" {name}" in described, name
    assert "--substeps" in text


def test_bench_shows_each_case_on_stderr(monkeypatch, capsys):
    def run_benchmarks(quick, progress):
        for k, case in enumerate(["jit warm-up", "seed", "scale 2000x2000"]):
            progress(case, k, 3)
        progress("", 3, 3)
        return [{"name": "seed", "backend": "torch", "wall_s": 0.1}]

    fake = types.ModuleType("dynacal.bench")
    fake.run_benchmarks = run_benchmarks
    monkeypatch.setitem(sys.modules, "dynacal.bench", fake)
    assert main(["bench", "--quick"]) == 0
    captured = capsys.readouterr()
    for case in ("jit warm-up", "seed", "scale 2000x2000", "done"):
        assert case in captured.err
    assert "3/3" in captured.err and "jit warm-up" not in captured.out


# --- a user's mistake is one message and exit 2; a bug is one line, a log and exit 1

@pytest.mark.parametrize("argv", [
    ["compare", "--seed", "-1"],
    ["compare", "--rate", "abc"],
    ["compare", "--rate", "-5"],
    ["compare", "--duration", "nan"],
    ["compare", "--weights", "nmda=1e30"],
    ["compare", "--weights", "nmda=-3"],
    ["compare", "--inputs", "missing.npz"],
    ["compare", "--backends", "twin:abc"],
    ["compare", "--backends", "torch", "--substeps", "0"],
    ["characterize", "--neurons", "abc"],
    ["characterize", "--neurons", "core0:0"],
    ["characterize", "--protocol", "fi,kernal"],
    ["characterize", "--backend", "replay:missing"],
    ["characterize", "--backend", "twin:-1"],
    ["characterize", "--backend", "torch:fast"],
])
def test_a_users_mistake_is_one_message_and_exit_2(argv, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"dynacal {argv[0]}: error: "), err


def test_the_message_for_a_bad_quantity_gives_an_example_in_its_unit(capsys):
    assert main(["compare", "--rate", "abc"]) == 2
    assert "write e.g. '80 Hz'" in capsys.readouterr().err
    assert main(["compare", "--duration", "soon"]) == 2
    assert "write e.g. '100 ms'" in capsys.readouterr().err


def test_a_bug_is_one_line_with_the_log_of_its_traceback(monkeypatch, tmp_path, capsys):
    import dynacal.compare

    def broken(*args, **kwargs):
        raise RuntimeError("something inside dynacal went wrong")

    monkeypatch.setattr(dynacal.compare, "compare", broken)
    monkeypatch.setattr("tempfile.tempdir", str(tmp_path))
    assert main(["compare", "--backends", "torch", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: RuntimeError: something inside dynacal went wrong" in err[0]
    assert "Traceback" not in err[0] and "bug in dynacal" in err[0]
    (log,) = tmp_path.glob("dynacal-compare-*.log")
    assert str(log) in err[0]
    text = log.read_text()
    assert text.startswith("dynacal ") and "Traceback (most recent call last)" in text
    assert "in broken" in text and "RuntimeError: something inside dynacal went wrong" in text


def test_an_interrupt_is_one_line_and_exit_130(monkeypatch, capsys, tmp_path):
    import dynacal.compare

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(dynacal.compare, "compare", interrupted)
    assert main(["compare", "--backends", "torch", "--out", str(tmp_path)]) == 130
    assert capsys.readouterr().err.strip() == (f"dynacal compare: interrupted; kept in {tmp_path}/: no finished "
                                               f"file; finish it with --resume")


@pytest.mark.parametrize("argv, message", [
    (["compare", "--backends", "torch", "--out", "{file}"], "--out {file} is a file; give a folder"),
    (["characterize", "--out", "{file}/sub"], "{file} is a file, not a folder"),
    (["bench", "--json", "{folder}"], "--json {folder} is a folder; give a file name"),
    (["bench", "--json", "{file}/b.json"], "{file} is a file, not a folder"),
])
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(argv, message, tmp_path, monkeypatch,
                                                                         capsys):
    (tmp_path / "file").write_text("mine")
    names = {"file": tmp_path / "file", "folder": tmp_path}
    fake = types.ModuleType("dynacal.bench")
    fake.run_benchmarks = lambda quick, progress: pytest.fail("the benchmarks ran")
    monkeypatch.setitem(sys.modules, "dynacal.bench", fake)
    import dynacal.compare

    monkeypatch.setattr(dynacal.compare, "compare", lambda *a, **k: pytest.fail("the comparison ran"))
    assert main([a.format(**names) for a in argv]) == 2
    captured = capsys.readouterr()
    assert message.format(**names) in captured.err and captured.out == ""
    assert (tmp_path / "file").read_text() == "mine"
