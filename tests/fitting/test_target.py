"""Target: folders of recordings from every source, neuron subsets, bad folders, measuring.

Small on purpose: 4-16 neurons and short protocol settings; twin runs take about a second.
"""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from dynacal import get_backend
from dynacal.errors import ParameterError, RecordingError
from dynacal.labformat import import_file
from dynacal.protocols import FICurve, HeldOut, Recorded, Refractory
from dynacal.recording import Recording
from dynacal.fitting import Target
from dynacal.fitting.noise import repeats_needed
from dynacal.fitting.target import IGNORED

from dynacal.hardware.twin import TwinNoise

FI = FICurve(duration=0.03, settle=0.0)
REFRACTORY = Refractory(duration=0.05)
HELD = HeldOut(duration=0.05)
PROTOCOLS = [FI, REFRACTORY, HELD]
V1 = "tests/data/v1_refractory.h5"


def _folder(path, neurons="core0:16", protocols=PROTOCOLS, backend="torch"):
    be = get_backend(backend)
    path.mkdir(parents=True, exist_ok=True)
    for p in protocols:
        p.run(be, neurons).save(path / f"{p.name}.h5")
    return path


@pytest.fixture(scope="module")
def torch_folder(tmp_path_factory):
    return _folder(tmp_path_factory.mktemp("torch"))


def test_load_torch_folder(torch_folder):
    target = Target.load(torch_folder)
    assert sorted(target.recordings) == ["fi", "refractory"] and sorted(target.heldout) == ["heldout"]
    assert target.source == "torch" and target.serial is None and target.codes == {}
    assert target.noise is None and target.repeats["fi"] == [target.recordings["fi"]]
    np.testing.assert_array_equal(target.neurons, np.stack([np.zeros(16), np.zeros(16), np.arange(16)], 1))
    assert target.network.n_neurons == 16
    for name in ("fi.h5", "refractory.h5", "heldout.h5"):
        assert target.hashes[name] == hashlib.sha256((torch_folder / name).read_bytes()).hexdigest()
    assert target.protocol("fi") == FI and target.protocol("heldout") == HELD
    with pytest.raises(ParameterError, match="no recording 'kernels'.*fi"):
        target.protocol("kernels")
    # held out can be changed, and nothing held out
    assert sorted(Target.load(torch_folder, heldout=()).recordings) == ["fi", "heldout", "refractory"]


def test_load_skips_what_runs_write_beside_recordings(torch_folder, tmp_path):
    folder = tmp_path / "t"
    shutil.copytree(torch_folder, folder)
    for name in ("manifest.json", "features.csv", "fi.png", "noise.json"):
        (folder / name).write_text("{}")
    assert sorted(Target.load(folder).recordings) == ["fi", "refractory"]
    assert "manifest.json" in IGNORED


def test_subset_cuts_every_recording_consistently(tmp_path):
    folder = _folder(tmp_path / "a", "core0:16", [FI])
    REFRACTORY.run(get_backend("torch"), "core0:8").save(folder / "refractory.h5")
    with pytest.raises(RecordingError, match=r"refractory.h5 measures 8 neurons.*fi.h5 measures 16.*neurons=.*8 are "
                                             r"common"):
        Target.load(folder)
    target = Target.load(folder, neurons="core0:8")
    full = Recording.load(folder / "fi.h5")
    cut = target.recordings["fi"]
    assert cut.n_neurons == 8 and cut.experiment.network.n_neurons == 8
    np.testing.assert_array_equal(cut.spike_counts(), full.spike_counts()[:, :8])
    # the cut experiment runs the kept neurons as before
    again = get_backend("torch").run(cut.experiment)
    np.testing.assert_array_equal(again.spike_counts(), cut.spike_counts())
    assert cut.unstable.shape == (12, 8)
    saved = Recording.load(cut.save(tmp_path / "cut.h5"))  # its metadata names the cut experiment
    assert saved.experiment.content_hash() == cut.experiment.content_hash()
    np.testing.assert_array_equal(target.unstable["fi"], full.unstable.any(0)[:8])
    # neurons as (chip, core, id) rows, in the order asked for
    picked = Target.load(folder, neurons=np.array([[0, 0, 5], [0, 0, 2]]))
    np.testing.assert_array_equal(picked.neurons[:, 2], [5, 2])
    np.testing.assert_array_equal(picked.recordings["fi"].spike_counts(), full.spike_counts()[:, [5, 2]])
    with pytest.raises(ParameterError, match=r"refractory.h5 does not hold 1 neurons.*\(0, 0, 9\)"):
        Target.load(folder, neurons=np.array([[0, 0, 9]]))
    with pytest.raises(ParameterError, match="core1.*does not hold"):
        Target.load(folder, neurons="core1:2")
    with pytest.raises(ParameterError, match="shape"):
        Target.load(folder, neurons=[0.5, 1.5])
    with pytest.raises(ParameterError, match="twice"):
        Target.load(folder, neurons=[[0, 0, 1], [0, 0, 1]])
    as_floats = Target.load(folder, neurons=np.array([[0.0, 0.0, 3.0]]))  # as a JSON file gives them back
    np.testing.assert_array_equal(as_floats.neurons, [[0, 0, 3]])


def test_subset_keeps_traces_and_per_neuron_values(tmp_path):
    from dynacal.protocols import SynapticKernels
    kernels = SynapticKernels(synapses=("ampa",), weights=(2,), repeats=1)
    rec = kernels.run(get_backend("torch"), "core0:6")
    folder = tmp_path / "k"
    folder.mkdir()
    rec.save(folder / "kernels.h5")
    target = Target.load(folder, neurons=np.array([[0, 0, 4], [0, 0, 1]]))
    cut = target.recordings["kernels"]
    assert sorted(cut.trace_neurons) == [0, 1] and sorted(cut.traces) == sorted(rec.traces)
    for name in rec.traces:
        for new, old in ((0, 4), (1, 1)):
            np.testing.assert_array_equal(cut.trace(name, new), rec.trace(name, old))
    np.testing.assert_allclose(kernels.features(cut)["tau_ampa"], kernels.features(rec)["tau_ampa"][:, [4, 1]])


def test_bad_folders_are_refused_with_the_fix(tmp_path, torch_folder):
    with pytest.raises(RecordingError, match="does not exist"):
        Target.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RecordingError, match="is empty; record the protocols"):
        Target.load(tmp_path / "empty")
    only = tmp_path / "only"
    only.mkdir()
    (only / "manifest.json").write_text("{}")
    with pytest.raises(RecordingError, match="holds no recordings"):
        Target.load(only)
    mixed = tmp_path / "mixed"
    shutil.copytree(torch_folder, mixed)
    (mixed / "notes.docx").write_text("x")
    with pytest.raises(RecordingError, match=r"not recordings: \['notes.docx'\].*Move them out"):
        Target.load(mixed)
    (mixed / "notes.docx").unlink()
    (mixed / "junk.h5").write_text("not hdf5")
    with pytest.raises(RecordingError, match="junk.h5"):
        Target.load(mixed)
    (mixed / "junk.h5").unlink()
    shutil.copy(V1, mixed / "old.h5")
    with pytest.raises(RecordingError, match=r"old.h5.*version 1.*Re-record"):
        Target.load(mixed)
    (mixed / "old.h5").unlink()
    FICurve(duration=0.02, settle=0.0).run(get_backend("torch"), "core0:16").save(mixed / "fi_short.h5")
    with pytest.raises(RecordingError, match="two recordings of protocol 'fi' with different experiments: fi.h5"):
        Target.load(mixed)
    held = tmp_path / "held"
    held.mkdir()
    shutil.copy(torch_folder / "heldout.h5", held)
    with pytest.raises(RecordingError, match="only held-out recordings"):
        Target.load(held)


def test_recordings_of_two_boards_are_refused(tmp_path, torch_folder):
    folder = tmp_path / "two"
    shutil.copytree(torch_folder, folder)
    for name, serial in (("fi.h5", 1), ("refractory.h5", 2)):
        rec = Recording.load(folder / name)
        rec.metadata["serial"] = str(serial)
        rec.save(folder / name)
    with pytest.raises(RecordingError, match="different boards"):
        Target.load(folder)


def _plain(path, neurons, seed=0):
    """A lab's plain .npz file: 4 neurons of core 0 driven by one AMPA input."""
    rng = np.random.default_rng(seed)
    desc = {"name": "lab", "dt": "100 us", "n_steps": 2000, "neurons": neurons, "n_inputs": 1,
            "input_connections": [{"source": 0, "target": k, "synapse": "AMPA", "weight": 4} for k in range(4)]}
    np.savez(path, experiment=json.dumps(desc), input_source=np.zeros(50, np.int64),
             input_step=np.sort(rng.choice(2000, 50, replace=False)), spike_neuron=rng.integers(0, 4, 30),
             spike_step=np.sort(rng.integers(0, 2000, 30)))
    return path


def test_load_imported_data(tmp_path):
    folder = tmp_path / "imported"
    import_file(_plain(tmp_path / "lab_session.npz", [[0, 0, k] for k in range(4)]), folder)
    _plain(folder / "raw.npz", [[0, 0, k] for k in range(4)], seed=1)  # a plain file, read as import reads it
    FI.run(get_backend("torch"), "core0:4").save(folder / "fi.h5")
    target = Target.load(folder)
    assert sorted(target.recordings) == ["fi", "lab_session", "raw"]
    assert target.source == "imported+torch"
    assert isinstance(target.protocol("lab_session"), Recorded)
    counts = target.protocol("lab_session").features(target.recordings["lab_session"])["spike_count"]
    assert counts.shape == (1, 4, 1) and counts.sum() == 30
    bad = tmp_path / "bad"
    bad.mkdir()
    _plain(bad / "other.npz", [[0, 1, k] for k in range(4)])
    FI.run(get_backend("torch"), "core0:4").save(bad / "fi.h5")
    with pytest.raises(RecordingError, match=r"measures 4 neurons \(chip, core, id\): \(0, 1, 0\)"):
        Target.load(bad)


def test_load_replayed_target(tmp_path, torch_folder):
    target = Target.measure(get_backend(f"replay:{torch_folder}"), "core0:16", PROTOCOLS, out=tmp_path / "r",
                            repeats=2, progress=False)
    direct = Target.load(torch_folder)
    assert target.source == "replay" and sorted(target.recordings) == ["fi", "refractory"]
    for name, rec in direct.recordings.items():
        np.testing.assert_array_equal(target.recordings[name].spike_counts(), rec.spike_counts())
    assert target.noise.level("fi") == 0.0  # a replay repeats the same file


def test_twin_target_has_serial_codes_and_a_noise_floor(tmp_path):
    from dynacal.hardware.twin import TwinNoise
    board = get_backend("twin:7", noise=TwinNoise(drop_rate=0.02))  # 16 short f-I runs fire ~1000 spikes
    target = Target.measure(board, "core0:16", [FI, REFRACTORY], out=tmp_path / "tw", repeats=3, progress=False)
    assert target.source == "twin" and target.serial == 7
    assert sorted(target.codes) == ["fi", "refractory"] and target.unstable == {}  # the board does not know
    fi_codes = target.codes["fi"]
    assert len(fi_codes) == 12 and set(fi_codes[0]) == {"0,0"} and len(fi_codes[0]["0,0"]["IF_DC_P"]) == 2
    assert [r.metadata["serial"] for r in target.repeats["fi"]] == ["7"] * 3
    spread = target.noise.spreads["fi"]["rate"]
    # the twin drops 2 % of the events: some repeats differ (the plain spread sees it)
    assert spread.n_repeats == 3 and np.nanmax(spread.std) > 0
    assert target.noise.summary()["fi"]["features"]["rate"]["max_cv"] > 0


def test_noisy_twin_gets_more_repeats(tmp_path):
    noisy = get_backend("twin:7", noise=TwinNoise(drop_rate=0.5))  # MAD of 3 repeats needs a big spread
    target = Target.measure(noisy, "core0:16", [FI, REFRACTORY], out=tmp_path / "n", repeats=3, tolerance=1e-3,
                            progress=False)
    level = target.noise.level("fi")
    assert level > 1e-3 and repeats_needed(level, 1e-3, 3) == 3
    assert len(target.repeats["refractory"]) == 3
    assert sorted(p.name for p in (tmp_path / "n").glob("refractory*")) == ["refractory.h5", "refractory.r1.h5",
                                                                          "refractory.r2.h5"]


class Counting:
    """The torch backend, counting its runs."""

    name = "torch"
    records_traces = True

    def __init__(self):
        self.backend, self.runs = get_backend("torch"), []

    def __repr__(self):
        return "Counting(torch)"

    def run(self, experiment, params=None, **kwargs):
        self.runs.append(experiment.name)
        return self.backend.run(experiment, params, **kwargs)


def test_measure_resumes_without_measuring_again(tmp_path, capsys):
    out = tmp_path / "m"
    backend = Counting()
    target = Target.measure(backend, "core0:16", PROTOCOLS, out=out, repeats=3)
    assert "measuring target" in capsys.readouterr().err  # the progress bar
    assert backend.runs == ["fi", "fi", "fi", "refractory", "heldout"]  # noise floor 0: one of each other
    assert len(target.repeats["fi"]) == 3 and sorted(target.recordings) == ["fi", "refractory"]
    assert np.all(target.noise.spreads["fi"]["rate"].mad == 0) and np.all(target.noise.spreads["fi"]["rate"].std == 0)
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")}
    backend.runs.clear()
    again = Target.measure(backend, "core0:16", PROTOCOLS, out=out, repeats=3, progress=False)
    assert backend.runs == [] and {p.name: p.stat().st_mtime_ns for p in out.glob("*.h5")} == stamps
    assert again.hashes == target.hashes
    (out / "refractory.h5").unlink()
    calls = []
    Target.measure(backend, "core0:16", PROTOCOLS, out=out, repeats=3, progress=lambda *a: calls.append(a))
    assert backend.runs == ["refractory"]
    assert calls[0] == ("fi.h5", 0, 9) and calls[-1] == ("", 5, 5)  # the total shrinks once the floor is known
    with pytest.raises(ParameterError, match="other options.*repeats"):
        Target.measure(backend, "core0:16", PROTOCOLS, out=out, repeats=2, progress=False)
    with pytest.raises(ParameterError, match="repeats"):
        Target.measure(backend, "core0:16", PROTOCOLS, out=tmp_path / "x", repeats=0, progress=False)
    with pytest.raises(ParameterError, match="one protocol twice"):
        Target.measure(backend, "core0:16", [FI, FI], out=tmp_path / "x", progress=False)


def test_load_finds_repeats_by_experiment(tmp_path, torch_folder):
    folder = tmp_path / "rep"
    shutil.copytree(torch_folder, folder)
    shutil.copy(folder / "fi.h5", folder / "fi.r1.h5")
    shutil.copy(folder / "fi.h5", folder / "fi.r2.h5")
    target = Target.load(folder)
    assert len(target.repeats["fi"]) == 3 and target.recordings["fi"] is target.repeats["fi"][0]
    assert [p.name for p in target.files["fi"]] == ["fi.h5", "fi.r1.h5", "fi.r2.h5"]
    assert target.noise.level("fi") == 0.0 and list(target.noise.spreads) == ["fi"]


def test_target_of_different_neurons_is_refused(torch_folder):
    target = Target.load(torch_folder)
    small = Target.load(torch_folder, neurons="core0:4")
    with pytest.raises(RecordingError, match="'refractory' measures other neurons"):
        Target({"fi": target.recordings["fi"], "refractory": small.recordings["refractory"]})
    with pytest.raises(RecordingError, match="at least one recording"):
        Target({})
