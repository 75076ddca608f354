"""Input-rate transfer: segments, baseline and the sign of each synapse type's gain."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dynacal import Experiment, Params, Stimulus, get_backend
from dynacal.errors import ParameterError
from dynacal.protocols import RateTransfer

PROTOCOL = RateTransfer(segment=0.3, gap=0.1, baseline=0.3)


@pytest.fixture(scope="module")
def run():
    rec = PROTOCOL.run(get_backend("torch"), "core0:4")
    return rec, PROTOCOL.features(rec)


def test_gains_have_the_sign_of_the_synapse(run):
    _, f = run
    assert np.all(f["gain_nmda"] > 0) and np.all(f["gain_ampa"] > 0)
    assert np.all(f["gain_gaba_a"] < 0) and np.all(f["gain_gaba_b"] < 0)
    assert f["rate_gaba_a"].shape == (1, 4, 5) and f["rate_nmda"][..., -1].min() > f["baseline"].max()


def test_baseline_is_the_dc_alone(run):
    rec, f = run
    exp = PROTOCOL.experiment("core0:4")
    dc_only = Experiment(exp.network, Stimulus(exp.network.n_inputs), exp.dt, exp.n_steps)
    alone = get_backend("torch").run(dc_only, Params.from_values(Isoma_const=PROTOCOL.dc))
    start, stop = (int(round(t / exp.dt)) for t in (PROTOCOL.settle, PROTOCOL.baseline))
    counts = np.array([np.sum((alone.spike_steps(n) >= start) & (alone.spike_steps(n) < stop)) for n in range(4)])
    np.testing.assert_allclose(f["baseline"][0], counts / (PROTOCOL.baseline - PROTOCOL.settle), rtol=1e-12)


def test_each_source_fires_only_in_its_segments_at_its_rates():
    exp = PROTOCOL.experiment("core0:2")
    seg = int(round(PROTOCOL.segment / exp.dt))
    for k, (syn, starts) in enumerate(zip(PROTOCOL.synapses, PROTOCOL.segments())):
        steps = exp.stimulus.steps[exp.stimulus.sources == k]
        inside = np.zeros(steps.size, dtype=bool)
        for start, rate in zip(starts, PROTOCOL.rates_of(syn)):
            sel = (steps >= start) & (steps < start + seg)
            inside |= sel
            expected = rate * PROTOCOL.segment
            assert abs(sel.sum() - expected) < 4 * np.sqrt(expected) + 1, (syn, rate, sel.sum())
        assert inside.all(), syn
    assert PROTOCOL.rates_of("gaba_a") == (1.0, 2.0, 5.0, 10.0, 15.0)


def test_rates_are_checked():
    with pytest.raises(ParameterError, match="rates"):
        dataclasses.replace(PROTOCOL, rates=(50.0, 10.0))
    with pytest.raises(ParameterError, match="synapse type"):
        dataclasses.replace(PROTOCOL, rates_by_type=(("gaba_c", (1.0, 2.0)),))


def test_separate_runs_one_per_input_rate():
    # the baseline and each (type, rate) pair as a run of its own from the fresh state: each
    # rate is that of a direct run of the same train alone
    protocol = RateTransfer(rates=(20.0, 50.0), rates_by_type=(("gaba_a", (5.0, 10.0)),), segment=0.15,
                            settle=0.02, baseline=0.1, separate_runs=True)
    exp = protocol.experiment("core0:3")
    assert exp.n_conditions == len(exp.condition_stimuli) == 1 + 4 * 2 == protocol.n_conditions
    assert exp.n_steps == 1500 and exp.condition_stimuli[0].steps.size == 0
    np.testing.assert_array_equal(exp.conditions["Isoma_const"], [PROTOCOL.dc] * 9)
    backend, p = get_backend("torch"), Params.from_values(Isoma_const=PROTOCOL.dc)
    f = protocol.features(protocol.run(backend, "core0:3"))
    assert f["rate_ampa"].shape == (1, 3, 2) and set(f) == {"baseline"} | {
        f"{k}_{syn}" for k in ("rate", "gain") for syn in protocol.synapses}
    start, seg = int(round(protocol.settle / exp.dt)), int(round(protocol.segment / exp.dt))
    for l in (0, 3, 6):  # the baseline, AMPA at 20 Hz, GABA_A at 5 Hz
        stim = exp.condition_stimuli[l]
        alone = backend.run(Experiment(exp.network, stim, exp.dt, exp.n_steps), p)
        stop = int(round(protocol.baseline / exp.dt)) if l == 0 else seg
        rate = [np.sum((alone.spike_steps(n) >= start) & (alone.spike_steps(n) < stop)) / ((stop - start) * exp.dt)
                for n in range(3)]
        got = {0: f["baseline"][0], 3: f["rate_ampa"][0, :, 0], 6: f["rate_gaba_a"][0, :, 0]}[l]
        np.testing.assert_allclose(got, rate, rtol=1e-12)
    assert np.all(f["gain_nmda"] > 0)
