"""The f-I curve: monotone, equal to one direct run per DC level, rheobase and slope."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dynacal import Experiment, Params, Stimulus, get_backend
from dynacal.errors import ParameterError
from dynacal.protocols import FICurve

from .conftest import mismatch

N = 6
PROTOCOL = FICurve(levels=(2e-10, 3e-10, 4e-10, 6e-10, 1e-9, 2e-9, 5e-9), duration=0.3, settle=0.05)


def _rate(steps: np.ndarray, start: int, stop: int, dt: float) -> float:
    """Rate in [start, stop): (k - 1) / (last - first) for k >= 2 spikes, else k / window."""
    s = steps[(steps >= start) & (steps < stop)]
    return (s.size - 1) / ((s[-1] - s[0]) * dt) if s.size >= 2 else s.size / ((stop - start) * dt)


@pytest.fixture(scope="module")
def run():
    p = mismatch(N)
    rec = PROTOCOL.run(get_backend("torch"), f"core0:{N}", p)
    return p, rec, PROTOCOL.features(rec)


def test_rates_are_monotone_and_span_silence_to_firing(run):
    _, rec, f = run
    assert rec.batch == len(PROTOCOL.levels) and f["rate"].shape == (1, N, len(PROTOCOL.levels))
    assert (np.diff(f["rate"], axis=-1) >= 0).all()
    assert f["rate"][..., 0].max() == 0 and f["rate"][..., -1].min() > 100


def test_rates_match_one_direct_run_per_level(run):
    p, _, f = run
    exp = PROTOCOL.experiment(f"core0:{N}")
    start = int(round(PROTOCOL.settle / exp.dt))
    direct = np.zeros((N, len(PROTOCOL.levels)))
    for k, level in enumerate(PROTOCOL.levels):
        # the DC as a per-neuron stimulus, not as a condition of the parameter batch
        one = Experiment(exp.network, Stimulus(0, dc=np.full(N, level)), exp.dt, exp.n_steps)
        rec = get_backend("torch").run(one, p)
        direct[:, k] = [_rate(rec.spike_steps(n), start, exp.n_steps, exp.dt) for n in range(N)]
    np.testing.assert_allclose(f["rate"][0], direct, rtol=1e-12)
    # rheobase: between the last level below 5 Hz and the first at or above it
    first = np.argmax(direct >= PROTOCOL.min_rate, axis=1)
    lv = np.asarray(PROTOCOL.levels)
    assert np.all(first > 0)
    assert np.all((lv[first - 1] <= f["rheobase"][0]) & (f["rheobase"][0] <= lv[first]))
    # slope: least squares over the first three firing levels
    for n in range(N):
        sel = slice(first[n], first[n] + PROTOCOL.n_slope)
        np.testing.assert_allclose(f["slope"][0, n], np.polyfit(lv[sel], direct[n, sel], 1)[0], rtol=1e-9)


def test_rheobase_falls_with_the_gain():
    # steady state of dpi-model.md: Imem = alpha_soma * (Iin - Isum) while Imem >> Itau, so the
    # membrane reaches a fixed current (where the positive feedback takes over) at the DC
    # Iin = Isoma_dpi_tau + X / alpha_soma: (rheobase - Isoma_dpi_tau) * alpha_soma is the same
    # for every neuron (within the 7 % spacing of the levels, interpolated in log current)
    alpha = np.array([2.0, 3.0, 4.0, 6.0, 8.0])
    protocol = FICurve(levels=tuple(np.geomspace(5e-11, 3e-9, 60)), duration=0.3, settle=0.05)
    p = Params.from_values(alpha_soma=alpha)
    f = protocol.features(protocol.run(get_backend("torch"), "core0:5", p))
    rheobase = f["rheobase"][0]
    assert np.all(np.diff(rheobase) < 0), rheobase
    x = (rheobase - float(p.Isoma_dpi_tau)) * alpha
    assert np.ptp(x) < 0.03 * x.mean(), x
    # and X is about the feedback's threshold (1 nA): the soma then runs away to Isoma_th
    assert 1e-9 < x.mean() < 1.5e-9, x


def test_parameter_sets_times_levels():
    sets = torch.tensor([[4e-12], [6e-12]], dtype=torch.float64)
    protocol = FICurve(levels=(5e-10, 2e-9), duration=0.1, settle=0.0)
    backend = get_backend("torch")
    both = protocol.features(protocol.run(backend, "core0:2", Params.from_values(Isoma_dpi_tau=sets)))
    assert both["rate"].shape == (2, 2, 2)
    for b in range(2):
        one = protocol.features(protocol.run(backend, "core0:2", Params.from_values(Isoma_dpi_tau=float(sets[b]))))
        np.testing.assert_array_equal(both["rate"][b], one["rate"][0])
    assert not np.array_equal(both["rate"][0], both["rate"][1])


def test_bad_levels_are_refused():
    with pytest.raises(ParameterError, match="levels"):
        FICurve(levels=(2e-9, 1e-9))
    with pytest.raises(ParameterError, match="pA given as A"):
        FICurve(levels=(100.0, 200.0))


def test_separate_runs_per_level_agree_with_the_batched_form():
    # the board measures one DC level after another, each from the fresh state; the
    # simulators batch the levels as parameter sets: the same neurons give the same curve
    p = mismatch(N, seed=2).replace(Isoma_dpi_tau=torch.tensor([[4e-12], [6e-12]], dtype=torch.float64))
    separate = dataclasses.replace(PROTOCOL, separate_runs=True)
    exp = separate.experiment(f"core0:{N}")
    assert len(exp.condition_stimuli) == exp.n_conditions == len(PROTOCOL.levels)
    assert exp.content_hash() != PROTOCOL.experiment(f"core0:{N}").content_hash()
    backend = get_backend("torch")
    rec = separate.run(backend, f"core0:{N}", p)
    assert rec.batch == 2 * len(PROTOCOL.levels) and rec.metadata.get("condition_runs") == len(PROTOCOL.levels)
    one, batched = PROTOCOL.features(rec), PROTOCOL.features(PROTOCOL.run(backend, f"core0:{N}", p))
    assert set(one) == set(batched) and one["rate"].shape == (2, N, len(PROTOCOL.levels))
    for key in batched:
        np.testing.assert_array_equal(one[key], batched[key], err_msg=key)
    assert not np.array_equal(one["rate"][0], one["rate"][1])  # the two candidates differ


def test_the_levels_are_conditions_of_the_experiment():
    exp = PROTOCOL.experiment("core0:2")
    np.testing.assert_array_equal(exp.conditions["Isoma_const"], PROTOCOL.levels)
    assert exp.protocol["name"] == "fi" and exp.protocol["settings"]["levels"] == list(PROTOCOL.levels)
    assert not exp.condition_stimuli
