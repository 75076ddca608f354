"""Recording files: round trip, atomic writes, clear errors for damaged files, schema 2."""

from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from dynacal import Experiment, Recording, Stimulus
from dynacal.errors import ParameterError, RecordingError
from dynacal.recording import check_record


def _rec():
    traces = {"Isoma_mem": torch.rand(10, 2, 3, dtype=torch.float64) * 1e-9}
    return Recording.from_steps("torch", 1e-4, 10, 2, 5, [1, 0, 1], [4, 2, 0], [7, 3, 3], traces=traces,
                                trace_neurons=np.array([0, 2, 4]), metadata={"engine": "eager", "x": np.arange(3)})


def test_round_trip_conserves_everything(tmp_path):
    rec = _rec()
    path = rec.save(tmp_path / "sub" / "r.h5")
    back = Recording.load(path)
    for key in ("backend", "dt", "n_steps", "batch", "n_neurons", "trace_every"):
        assert getattr(back, key) == getattr(rec, key)
    for key in ("spike_batch", "spike_neuron", "spike_step", "spike_time", "trace_neurons"):
        np.testing.assert_array_equal(getattr(back, key), getattr(rec, key))
    torch.testing.assert_close(back.traces["Isoma_mem"], rec.traces["Isoma_mem"], rtol=0, atol=0)
    assert back.metadata["x"] == [0, 1, 2]
    assert rec.spike_step.tolist() == [3, 3, 7]  # sorted by step
    assert rec.spike_counts().tolist() == [[0, 0, 1, 0, 0], [1, 0, 0, 0, 1]]
    np.testing.assert_allclose(rec.trace("Isoma_mem", neuron=2, batch=1), rec.traces["Isoma_mem"][:, 1, 1].numpy())


def test_board_times_give_steps():
    rec = Recording.from_times("board", 1e-4, 100, 1, 2, [0, 0], [1, 0], [0.00251, 0.0003])
    assert rec.spike_step.tolist() == [3, 25]
    assert rec.spike_time.tolist() == [0.0003, 0.00251]


def test_errors_for_missing_corrupt_and_foreign_files(tmp_path):
    with pytest.raises(RecordingError, match="does not exist"):
        Recording.load(tmp_path / "nope.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an hdf5 file at all")
    with pytest.raises(RecordingError, match="corrupt or truncated"):
        Recording.load(bad)
    good = _rec().save(tmp_path / "good.h5")
    truncated = tmp_path / "trunc.h5"
    truncated.write_bytes(good.read_bytes()[:600])
    with pytest.raises(RecordingError):
        Recording.load(truncated)
    with h5py.File(tmp_path / "foreign.h5", "w") as f:
        f["x"] = 1
    with pytest.raises(RecordingError, match="not a dynacal recording"):
        Recording.load(tmp_path / "foreign.h5")
    with h5py.File(good, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(RecordingError, match="schema version 99"):
        Recording.load(good)


def test_failed_save_leaves_old_file_intact(tmp_path, monkeypatch):
    path = _rec().save(tmp_path / "r.h5")
    before = path.read_bytes()
    rec = _rec()

    class DiskFull(OSError):
        pass

    class Failing:  # fails while the file is half written: after the spikes, at the traces
        def numel(self):  # the size check before the save
            return 1

        def detach(self):
            raise DiskFull("no space left on device")

    rec.traces["Isoma_mem"] = Failing()
    with pytest.raises(DiskFull, match="no space left"):
        rec.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]


def test_check_record_names():
    assert check_record("all")[0] == "Isoma_mem"
    assert check_record("Inmda,Iampa") == ("Inmda", "Iampa")
    with pytest.raises(ParameterError, match="unknown trace 'Inmdaa'. Did you mean 'Inmda'"):
        check_record(["Inmdaa"])


V1 = Path(__file__).parent / "data" / "v1_refractory.h5"  # recordings/refractory.h5 as shipped before schema 2


def _experiment(n=5, n_conditions=1):
    from dynacal.protocols._common import layout
    cond = {"Isoma_const": np.linspace(1e-12, 5e-12, n_conditions)} if n_conditions > 1 else {}
    return Experiment(layout(n), Stimulus(0), 1e-4, 10, "tiny", conditions=cond,
                      protocol={"name": "fi", "settings": {"dt": 1e-4}})


def test_version_1_file_loads_without_experiment():
    rec = Recording.load(V1)
    assert rec.experiment is None and rec.unstable is None
    assert rec.n_conditions == 1 and rec.n_candidates == rec.batch == 2
    with pytest.raises(RecordingError, match="version 1.*Re-record"):
        rec.require_experiment()
    with pytest.raises(RecordingError, match="version 1 recording"):
        Experiment.load(V1)


def test_schema_2_round_trip_keeps_experiment_and_unstable(tmp_path):
    exp = _experiment(n_conditions=2)
    unstable = np.zeros((2, 5), dtype=bool)
    unstable[1, 3] = True
    rec = Recording.from_steps("torch", 1e-4, 10, 2, 5, [1], [3], [4], experiment=exp, unstable=unstable)
    back = Recording.load(rec.save(tmp_path / "r.h5"))
    assert back.require_experiment().content_hash() == exp.content_hash()
    assert back.experiment.protocol == exp.protocol
    assert back.unstable.dtype == bool and back.unstable.tolist() == unstable.tolist()
    assert (back.n_conditions, back.n_candidates) == (2, 1)
    with h5py.File(tmp_path / "r.h5") as f:
        assert f.attrs["schema_version"] == 2
    assert Experiment.load(tmp_path / "r.h5").content_hash() == exp.content_hash()
    with pytest.raises(RecordingError, match="Experiment.load"):
        Recording.load(exp.save(tmp_path / "e.h5"))


def test_inconsistent_recordings_are_refused(tmp_path):
    with pytest.raises(RecordingError, match="unstable has shape"):
        Recording.from_steps("torch", 1e-4, 10, 2, 5, [], [], [], unstable=np.zeros((1, 5), bool))
    path = Recording.from_steps("torch", 1e-4, 10, 3, 5, [], [], [], experiment=_experiment(n_conditions=2)) \
        .save(tmp_path / "r.h5")
    with pytest.raises(RecordingError, match="not B candidates"):
        Recording.load(path)


def test_repr_is_short():
    """A one-neuron recording with traces printed 4,000 lines (the dataclass repr)."""
    traces = {"Isoma_mem": torch.rand(5000, 1, 1, dtype=torch.float64)}
    rec = Recording.from_steps("torch", 1e-4, 5000, 1, 1, [0] * 300, [0] * 300, np.arange(300) * 10,
                               traces=traces, trace_neurons=np.array([0]), experiment=_experiment(1),
                               unstable=np.ones((1, 1), bool))
    text = repr(rec)
    assert "\n" not in text and len(text) < 250
    assert "300 spikes" in text and "Isoma_mem" in text and "1 unstable" in text and "'tiny'" in text
    assert "no experiment" in repr(Recording.load(V1))
