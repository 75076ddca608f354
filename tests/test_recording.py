"""Recording files: round trip, atomic writes, clear errors for damaged files."""

import h5py
import numpy as np
import pytest
import torch

from dynacal import Recording
from dynacal.errors import RecordingError
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
    rec.traces["Isoma_mem"] = object()  # cannot be written
    with pytest.raises(Exception):
        rec.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["r.h5"]


def test_check_record_names():
    assert check_record("all")[0] == "Isoma_mem"
    assert check_record("Inmda,Iampa") == ("Inmda", "Iampa")
    with pytest.raises(Exception, match="Inmda"):
        check_record(["Inmdaa"])
