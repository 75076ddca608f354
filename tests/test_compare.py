"""dynacal.compare: the seed experiment, the agreement measure and its verdict."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynacal import ParameterError, Recording
from dynacal.compare import LOG_FLOOR, TOLERANCE, agreement
from dynacal.seed import seed_experiment
from dynacal.params import STATE_NAMES


def _recording(scale=1.0, steps=(10, 20), dtype=torch.float64, n_steps=50, backend="x"):
    t = torch.arange(n_steps, dtype=torch.float64)
    base = {name: (1e-12 + 1e-10 * k * (1 + torch.sin(t / 7))).reshape(-1, 1, 1)
            for k, name in enumerate(STATE_NAMES)}
    base["Isoma_ahp"][:5] = 0.0  # the reference's Isoma_ahp starts at exactly 0
    traces = {name: (v * scale).to(dtype) for name, v in base.items()}
    s = np.asarray(steps, dtype=np.int64)
    return Recording.from_steps(backend, 1e-4, n_steps, 1, 1, np.zeros_like(s), np.zeros_like(s), s,
                                traces=traces, trace_neurons=np.array([0]))


def test_identical_recordings_agree():
    result = agreement(_recording(), _recording())
    assert result["verdict"] == "agree" and result["precision"] == "float64"
    assert all(m["max_rel_diff"] == 0 and m["rms_log10_diff"] == 0 for m in result["traces"].values())
    assert result["spike_steps"] == [[10, 20], [10, 20]]


@pytest.mark.parametrize("rel, verdict", [(1e-11, "agree"), (1e-8, "disagree")])
def test_float64_tolerance_is_1e_9(rel, verdict):
    result = agreement(_recording(), _recording(scale=1 + rel), labels=("a", "b"))
    assert result["tolerance"] == TOLERANCE["float64"] == 1e-9
    assert result["verdict"] == verdict
    m = result["traces"]["Isoma_mem"]
    assert m["max_rel_diff"] == pytest.approx(rel / (1 + rel), rel=1e-3)
    assert m["rms_log10_diff"] == pytest.approx(math.log10(1 + rel), rel=1e-3)
    if verdict == "disagree":
        assert "over the tolerance 1e-09 for float64" in result["reason"]


@pytest.mark.parametrize("rel, verdict", [(1e-6, "agree"), (1e-4, "disagree")])
def test_a_float32_run_is_held_to_1e_5(rel, verdict):
    result = agreement(_recording(), _recording(scale=1 + rel, dtype=torch.float32))
    assert result["precision"] == "float32" and result["tolerance"] == 1e-5
    assert result["verdict"] == verdict


def test_different_spikes_disagree_even_with_equal_traces():
    result = agreement(_recording(), _recording(steps=(10, 21)), labels=("torch", "brian2"))
    assert not result["spikes_identical"] and result["verdict"] == "disagree"
    assert "spike steps differ" in result["reason"]


def test_zero_against_a_current_counts_in_log_units():
    a, b = _recording(), _recording()
    b.traces["Isoma_ahp"][0] = 1e-12  # 0 (floored at LOG_FLOOR) against 1 pA
    m = agreement(a, b)["traces"]["Isoma_ahp"]
    assert m["max_rel_diff"] == 1.0
    assert m["rms_log10_diff"] == pytest.approx(math.sqrt((math.log10(1e-12 / LOG_FLOOR)) ** 2 / 50))


def test_nan_never_agrees():
    b = _recording()
    b.traces["Iampa"][3] = float("nan")
    assert agreement(_recording(), b)["verdict"] == "disagree"


def test_recordings_of_different_experiments_are_refused():
    with pytest.raises(ParameterError, match="compare runs of one experiment"):
        agreement(_recording(n_steps=50), _recording(n_steps=40))


def test_seed_experiment_matches_the_notebook():
    e = seed_experiment()
    net = e.network
    assert (e.dt, e.n_steps, net.n_neurons, net.n_inputs) == (1e-4, 1000, 1, 4)
    assert net.core.tolist() == [1]
    assert net.inputs.syn_type.tolist() == [0, 1, 2, 3] and net.inputs.weight.tolist() == [10, 5, 1, 2]
    assert net.core_biases[1] == {"Isoma_th": pytest.approx(2e-9), "Isoma_pfb_th": pytest.approx(1e-9)}
    rate = e.stimulus.steps.size / (4 * e.duration)
    assert 40 < rate < 120  # 80 Hz Poisson per source
    assert np.array_equal(seed_experiment(seed=1).stimulus.steps, seed_experiment(seed=1).stimulus.steps)
    assert not np.array_equal(seed_experiment(seed=1).stimulus.steps, e.stimulus.steps)


def test_seed_experiment_rejects_bad_values():
    with pytest.raises(ParameterError, match="weight ampa"):
        seed_experiment(weights={"ampa": 1.5})
    with pytest.raises(ParameterError, match="Did you mean 'gaba_a'"):
        seed_experiment(weights={"gaba_aa": 1})
    with pytest.raises(ParameterError, match="duration"):
        seed_experiment(duration=float("nan"))


def _two_neurons(spikes: dict[int, tuple[int, ...]], swap_traces: bool = False, batch: int = 1) -> Recording:
    """2 neurons (in set ``batch - 1``) with different traces; spikes {neuron: steps}."""
    t = torch.arange(50, dtype=torch.float64)
    per = torch.stack([1e-12 + 1e-10 * (1 + torch.sin(t / 7)), 1e-12 + 3e-10 * (1 + torch.cos(t / 5))], -1)
    per = per.flip(-1) if swap_traces else per
    traces = {"Isoma_mem": per.reshape(50, 1, 2).expand(50, batch, 2).clone()}
    n = [k for k, s in spikes.items() for _ in s]
    s = [x for v in spikes.values() for x in v]
    return Recording.from_steps("x", 1e-4, 50, batch, 2, [batch - 1] * len(s), n, s, traces=traces,
                                trace_neurons=np.array([0, 1]))


def test_the_verdict_tells_neurons_and_sets_apart():
    # the same spike steps and the same traces, but on the other neuron (or set): not agreement
    a = _two_neurons({0: (10, 20), 1: (15,)})
    assert agreement(a, _two_neurons({0: (10, 20), 1: (15,)}))["verdict"] == "agree"
    swapped = agreement(a, _two_neurons({0: (15,), 1: (10, 20)}))
    assert swapped["verdict"] == "disagree" and "spike steps differ" in swapped["reason"]
    moved = agreement(a, _two_neurons({0: (10, 20, 15)}))
    assert moved["verdict"] == "disagree" and not moved["spikes_identical"]
    traces = agreement(a, _two_neurons({0: (10, 20), 1: (15,)}, swap_traces=True))
    assert traces["verdict"] == "disagree" and "Isoma_mem differs" in traces["reason"]
    sets = agreement(_two_neurons({0: (10,)}, batch=2), Recording.from_steps(
        "x", 1e-4, 50, 2, 2, [0], [0], [10], traces=_two_neurons({0: (10,)}, batch=2).traces,
        trace_neurons=np.array([0, 1])))
    assert sets["verdict"] == "disagree"  # the spike is in set 1 in one, set 0 in the other
