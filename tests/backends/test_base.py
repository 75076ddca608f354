"""B candidates x L conditions (backends/base.py), through torch, brian2 and replay; round
trips of every backend's recording; the unstable mask and its warning."""

from __future__ import annotations

import importlib.util
import logging

import h5py
import numpy as np
import pytest
import torch

from dynacal import Experiment, Params, Recording, Stimulus, get_backend, poisson
from dynacal.backends.base import resolve_params, run_conditions
from dynacal.backends.replay import ReplayBackend
from dynacal.errors import ParameterError, RecordingError
from dynacal.experiment import split_sets
from dynacal.protocols._common import build_network, all_to_all

from ..conftest import single_neuron_experiment

LEVELS = (5e-11, 2e-10, 6e-10)  # Isoma_const per condition, A


def _network(n=3):
    return build_network(f"core0:{n}", 2, all_to_all(n, [0, 1], [1, 0], [4, 2]))  # AMPA, NMDA inputs


def _candidates(n=3):
    return Params.from_values(Isoma_th=torch.tensor([[1e-9], [3e-9]], dtype=torch.float64),
                              Isoma_dpi_tau=torch.linspace(4e-12, 6e-12, n, dtype=torch.float64).reshape(1, n))


def _assert_same_set(merged: Recording, m: int, single: Recording, s: int, traces=True):
    np.testing.assert_array_equal(merged.dense_spikes()[:, m], single.dense_spikes()[:, s])
    if traces:
        for name in single.traces:
            torch.testing.assert_close(merged.traces[name][:, m], single.traces[name][:, s], rtol=0, atol=0)
    np.testing.assert_array_equal(merged.unstable[m], single.unstable[s])


@pytest.mark.parametrize("engine", ["eager", "fused"])
def test_conditions_give_b_times_l_sets_equal_to_single_runs(engine):
    net, stim = _network(), poisson(2, 150.0, 300, 1e-4, seed=1)
    exp = Experiment(net, stim, 1e-4, 300, conditions={"Isoma_const": LEVELS})
    backend, cand = get_backend("torch", engine=engine), _candidates()
    rec = backend.run(exp, cand, record=["Isoma_mem"])
    assert rec.batch == 6 and (rec.n_candidates, rec.n_conditions) == (2, 3) and rec.experiment is exp
    assert split_sets(rec.spike_counts(), 3).shape == (2, 3, 3)
    assert rec.spike_counts().sum() > 0
    for b in range(2):
        for l, level in enumerate(LEVELS):
            one = cand.replace(Isoma_const=level, Isoma_th=cand.Isoma_th[b:b + 1])
            single = backend.run(Experiment(net, stim, 1e-4, 300), one, record=["Isoma_mem"])
            _assert_same_set(rec, b * 3 + l, single, 0)
    # the rates grow with the level: the conditions reached the right sets
    counts = split_sets(rec.spike_counts(), 3).sum(axis=2)
    assert np.all(np.diff(counts, axis=1) >= 0) and np.all(counts[:, -1] > counts[:, 0])


def test_per_neuron_conditions_and_network_parameters():
    net = _network()
    th = np.array([[1e-9, 2e-9, 3e-9], [3e-9, 2e-9, 1e-9]])
    exp = Experiment(net, Stimulus(2), 1e-4, 10, conditions={"Isoma_th": th})
    p = resolve_params(exp, None)
    assert p.shape[0] == 2 and p.Isoma_th.tolist() == th.tolist()
    p = resolve_params(exp, _candidates())  # (2 candidates) x (2 conditions)
    assert p.Isoma_th.shape == (4, 3) and p.Isoma_th[3].tolist() == th[1].tolist()
    assert p.Isoma_dpi_tau.shape == (1, 3)  # values without a batch stay unexpanded


def test_condition_stimuli_are_separate_runs_merged_in_order():
    net = _network()
    stims = tuple(poisson(2, r, 300, 1e-4, seed=k) for k, r in enumerate((50.0, 200.0, 400.0)))
    exp = Experiment(net, stims[0], 1e-4, 300, condition_stimuli=stims, conditions={"Isoma_const": LEVELS})
    backend, cand = get_backend("torch", engine="eager"), _candidates()
    rec = backend.run(exp, cand, record=["Iampa"], record_neurons=[0, 2], record_every=3)
    assert rec.batch == 6 and rec.experiment is exp and rec.traces["Iampa"].shape == (100, 6, 2)
    assert rec.metadata["condition_runs"] == 3 and rec.metadata["experiment"]["hash"] == exp.content_hash()
    for l in range(3):
        single = backend.run(Experiment(net, stims[l], 1e-4, 300), cand.replace(Isoma_const=LEVELS[l]),
                             record=["Iampa"], record_neurons=[0, 2], record_every=3)
        for b in range(2):
            _assert_same_set(rec, b * 3 + l, single, b)
    with pytest.raises(ParameterError, match="run_conditions"):
        resolve_params(exp, cand)


@pytest.mark.parametrize("make", ["conditions", "condition_stimuli"])
def test_torch_round_trip_reruns_to_the_same_spikes(make, tmp_path):
    net = _network()
    stims = (poisson(2, 200.0, 200, 1e-4, seed=3), Stimulus(2, dc=[1e-10, 2e-10, 3e-10]))
    kwargs = {"conditions": {"Isoma_const": LEVELS}} if make == "conditions" else {"condition_stimuli": stims}
    exp = Experiment(net, stims[0], 1e-4, 200, "rt", protocol={"name": "x", "settings": {"k": 1}}, **kwargs)
    backend = get_backend("torch")
    rec = backend.run(exp, _candidates())
    back = Recording.load(rec.save(tmp_path / "r.h5"))
    assert back.experiment.content_hash() == exp.content_hash() and back.experiment.protocol == exp.protocol
    np.testing.assert_array_equal(back.unstable, rec.unstable)
    again = backend.run(back.experiment, _candidates())
    for key in ("spike_batch", "spike_neuron", "spike_step"):
        np.testing.assert_array_equal(getattr(again, key), getattr(rec, key))


def _unstable_experiment():
    """test_dpi's unstable case: Igaba_a_w0 = 200 pA makes Euler at 100 us overshoot; 25 pA is stable."""
    base = single_neuron_experiment(weights={"NMDA": 10, "AMPA": 20, "GABA_A": 2, "GABA_B": 0}, rate=200, n_steps=600)
    return Experiment(base.network, base.stimulus, base.dt, base.n_steps, conditions={"Igaba_a_w0": [25e-12, 200e-12]})


def test_unstable_mask_travels_with_the_recording_and_warns_once(tmp_path, caplog):
    exp = _unstable_experiment()
    backend = get_backend("torch", engine="eager")
    with caplog.at_level(logging.WARNING):
        rec = backend.run(exp)
        backend.run(exp)
    assert rec.unstable.tolist() == [[False], [True]]
    assert sum("forward Euler was unstable" in r.getMessage() for r in caplog.records) == 1
    assert "1 unstable" in repr(rec)
    back = Recording.load(rec.save(tmp_path / "u.h5"))
    assert back.unstable.tolist() == [[False], [True]]
    fused = get_backend("torch", engine="fused").run(exp)
    np.testing.assert_array_equal(fused.unstable, rec.unstable)


def _as_version_1(path):
    """Make a schema-2 file a version-1 one: what dynacal wrote before (no experiment, no mask)."""
    with h5py.File(path, "a") as f:
        del f["experiment"], f["unstable"]
        f.attrs["schema_version"] = 1
    return path


def test_replay_matches_by_hash_and_serves_condition_stimuli_from_single_runs(tmp_path):
    net = _network()
    stims = (poisson(2, 200.0, 200, 1e-4, seed=3), poisson(2, 400.0, 200, 1e-4, seed=4))
    exp = Experiment(net, stims[0], 1e-4, 200, conditions={"Isoma_const": LEVELS[:2]}, condition_stimuli=stims)
    torch_backend = get_backend("torch")
    direct = torch_backend.run(exp, record=["Isoma_mem"])
    direct.save(tmp_path / "whole" / "merged.h5")
    rec = ReplayBackend(str(tmp_path / "whole")).run(exp, record=["Isoma_mem"])
    assert rec.backend == "replay" and rec.experiment.content_hash() == exp.content_hash()
    np.testing.assert_array_equal(rec.dense_spikes(), direct.dense_spikes())
    # a board records the conditions one after another: one file per condition
    for l in range(2):
        torch_backend.run(exp.condition(l), record=["Isoma_mem"]).save(tmp_path / "parts" / f"c{l}.h5")
    merged = ReplayBackend(str(tmp_path / "parts")).run(exp, record=["Isoma_mem"])
    assert merged.experiment is exp and merged.batch == 2
    np.testing.assert_array_equal(merged.dense_spikes(), direct.dense_spikes())
    torch.testing.assert_close(merged.traces["Isoma_mem"], direct.traces["Isoma_mem"], rtol=0, atol=0)
    with pytest.raises(RecordingError, match="no recording of experiment"):
        ReplayBackend(str(tmp_path / "parts")).run(Experiment(net, stims[1], 1e-4, 200))


def test_replay_serves_version_1_files_by_their_metadata_hash(tmp_path):
    exp = Experiment(_network(), poisson(2, 200.0, 200, 1e-4, seed=3), 1e-4, 200)
    direct = get_backend("torch").run(exp)
    path = _as_version_1(direct.save(tmp_path / "old.h5"))
    assert Recording.load(path).experiment is None
    rec = ReplayBackend(str(path)).run(exp)
    assert rec.experiment is exp  # the hash matched: the file records this experiment
    np.testing.assert_array_equal(rec.dense_spikes(), direct.dense_spikes())


def test_run_conditions_without_condition_stimuli_is_one_call():
    calls = []

    def fake_run(experiment, params, **kw):
        calls.append(experiment)
        return Recording.from_steps("fake", experiment.dt, experiment.n_steps, 3, 3, [], [], [])

    exp = Experiment(_network(), Stimulus(2), 1e-4, 10, conditions={"Isoma_const": LEVELS})
    rec = run_conditions(fake_run, exp, None)
    assert calls == [exp] and rec.experiment is exp and rec.n_conditions == 3


_brian2 = pytest.mark.skipif(importlib.util.find_spec("brian2") is None, reason="brian2 not installed")


@pytest.mark.brian2
@_brian2
def test_brian2_round_trip_and_unstable_mask(tmp_path):
    exp = _unstable_experiment()
    backend = get_backend("brian2")
    rec = backend.run(exp)
    assert rec.experiment is exp and rec.batch == 2
    assert rec.unstable.tolist() == get_backend("torch", engine="eager").run(exp).unstable.tolist() == [[False], [True]]
    back = Recording.load(rec.save(tmp_path / "b.h5"))
    assert back.experiment.content_hash() == exp.content_hash() and back.unstable.tolist() == [[False], [True]]
    again = backend.run(back.experiment)
    for key in ("spike_batch", "spike_neuron", "spike_step"):
        np.testing.assert_array_equal(getattr(again, key), getattr(rec, key))


@pytest.mark.hardware
def test_twin_board_runs_conditions_and_condition_stimuli(tmp_path):
    net = _network()
    stims = (poisson(2, 200.0, 1000, 1e-4, seed=3), poisson(2, 400.0, 1000, 1e-4, seed=4))
    exp = Experiment(net, stims[0], 1e-4, 1000, conditions={"Isoma_const": LEVELS[:2]}, condition_stimuli=stims)
    twin = get_backend("twin")
    rec = twin.run(exp)
    assert rec.experiment is exp and rec.batch == 2 and rec.unstable is None  # a board has no state readout
    for l in range(2):
        np.testing.assert_array_equal(rec.spike_counts()[l], twin.run(exp.condition(l)).spike_counts()[0])
    back = Recording.load(rec.save(tmp_path / "t.h5"))
    assert back.experiment.content_hash() == exp.content_hash()
