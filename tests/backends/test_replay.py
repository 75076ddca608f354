"""The replay backend: round trips, and clear errors for what it does not hold."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pytest

from dynacal import get_backend
from dynacal.backends.replay import ReplayBackend
from dynacal.errors import ParameterError, RecordingError
from dynacal.protocols import get_protocol

from ..protocols.conftest import mismatch

SHORT = {"fi": {"duration": 0.1, "settle": 0.02}, "kernels": {"repeats": 1, "isolation": 0.07},
         "heldout": {"duration": 0.2}}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    out = tmp_path_factory.mktemp("replay")
    torch_backend, p = get_backend("torch"), mismatch(4)
    for name, settings in SHORT.items():
        get_protocol(name, **settings).run(torch_backend, "core0:4", p).save(out / f"{name}.h5")
    return out


@pytest.mark.parametrize("name", list(SHORT))
def test_round_trip_gives_identical_features(folder, name):
    protocol, p = get_protocol(name, **SHORT[name]), mismatch(4)
    direct = protocol.features(protocol.run(get_backend("torch"), "core0:4", p))
    replay = get_backend(f"replay:{folder}")
    rec = protocol.run(replay, "core0:4")
    assert rec.backend == "replay" and rec.metadata["replayed_from"]["backend"] == "torch"
    again = protocol.features(rec)
    assert set(again) == set(direct)
    for key in direct:
        np.testing.assert_array_equal(again[key], direct[key], err_msg=key)
    # the candidate parameters of a fit are not matched: the file stands for the chip
    protocol.run(replay, "core0:4", mismatch(4, seed=9))


def test_an_experiment_it_does_not_hold(folder):
    replay = ReplayBackend(str(folder))
    protocol = get_protocol("fi", duration=0.2, settle=0.02)
    key = protocol.experiment("core0:4").content_hash()
    with pytest.raises(RecordingError, match=key[:16]) as info:
        protocol.run(replay, "core0:4")
    assert "3 recording(s)" in str(info.value) and "fi.h5" in str(info.value)


def test_other_condition_values_are_another_experiment(folder):
    replay = ReplayBackend(str(folder))
    protocol = get_protocol("fi", **SHORT["fi"])
    exp = protocol.experiment("core0:4")
    other = get_protocol("fi", levels=tuple(np.geomspace(2e-10, 2e-8, 12)), **SHORT["fi"]).experiment("core0:4")
    assert other.content_hash() != exp.content_hash()  # the DC levels are conditions of the experiment
    with pytest.raises(RecordingError, match=other.content_hash()[:16]):
        replay.run(other)
    assert replay.run(exp, mismatch(4)).batch == len(protocol.levels)


def test_traces_subsets_and_missing_ones(folder):
    replay = ReplayBackend(str(folder / "kernels.h5"))
    exp = get_protocol("kernels", **SHORT["kernels"]).experiment("core0:4")
    rec = replay.run(exp, record=["Iampa"], record_neurons=[1, 3], record_every=100)
    assert set(rec.traces) == {"Iampa"} and rec.traces["Iampa"].shape[2] == 2 and rec.trace_every == 100
    with pytest.raises(RecordingError, match="Isoma_mem"):
        replay.run(exp, record=["Isoma_mem"])
    with pytest.raises(RecordingError, match="multiple"):
        replay.run(exp, record=["Iampa"], record_every=75)
    with pytest.raises(ParameterError, match="Iampaa"):
        replay.run(exp, record=["Iampaa"])


def test_corrupt_files(folder, tmp_path, caplog):
    bad = tmp_path / "fi.h5"
    bad.write_bytes((folder / "fi.h5").read_bytes()[:2000])  # truncated
    with pytest.raises(RecordingError, match="fi.h5.*not a readable dynacal recording"):
        ReplayBackend(str(bad))
    shutil.copy(folder / "heldout.h5", tmp_path / "heldout.h5")
    (tmp_path / "notes.h5").write_text("not hdf5")
    with caplog.at_level(logging.WARNING):
        replay = ReplayBackend(str(tmp_path))
    assert "notes.h5" in caplog.text and "fi.h5" in caplog.text
    rec = get_protocol("heldout", **SHORT["heldout"]).run(replay, "core0:4")
    assert rec.spike_step.size > 0


def test_a_mislabelled_file_is_refused(folder, tmp_path):
    import h5py

    shutil.copy(folder / "heldout.h5", tmp_path / "heldout.h5")
    with h5py.File(tmp_path / "heldout.h5", "r+") as f:
        f.attrs["n_steps"] = 7
    with pytest.raises(RecordingError, match="mislabelled"):
        get_protocol("heldout", **SHORT["heldout"]).run(ReplayBackend(str(tmp_path)), "core0:4")


def test_a_path_is_required(tmp_path):
    with pytest.raises(ParameterError, match="replay:"):
        get_backend("replay")
    with pytest.raises(RecordingError, match="does not exist"):
        get_backend(f"replay:{tmp_path / 'nothing'}")
    with pytest.raises(RecordingError, match="no readable recording"):
        ReplayBackend(str(tmp_path))
