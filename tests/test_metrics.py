"""Metrics against elephant (an independent, maintained implementation) and closed forms."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacal import Params, Recording, get_backend
from dynacal.errors import ParameterError, RecordingError
from dynacal.metrics import (exponential_filter, firing_rate_error, gamma_coincidence, isi_statistics,
                             spike_raster, trace_error, van_rossum_distance, victor_purpura_distance)

DT, T = 1e-4, 5000  # 0.5 s


def _recording(trains: list[list[np.ndarray]], backend="test") -> Recording:
    """trains[b][n]: spike steps of neuron n in set b."""
    b, n, s = [], [], []
    for bi, per_set in enumerate(trains):
        for ni, steps in enumerate(per_set):
            b += [bi] * len(steps)
            n += [ni] * len(steps)
            s += list(steps)
    return Recording.from_steps(backend, DT, T, len(trains), len(trains[0]), b, n, s)


def _random_trains(rng, n_sets, n_neurons, rate=40.0):
    return [[np.sort(rng.choice(T, rng.poisson(rate * T * DT), replace=False)) for _ in range(n_neurons)]
            for _ in range(n_sets)]


@pytest.fixture(scope="module")
def pair():
    rng = np.random.default_rng(7)
    return _recording(_random_trains(rng, 2, 5)), _recording(_random_trains(rng, 1, 5))


def _neo(steps):
    neo, pq = pytest.importorskip("neo"), pytest.importorskip("quantities")
    return neo.SpikeTrain(np.asarray(steps) * DT * pq.s, t_start=0 * pq.s, t_stop=T * DT * pq.s)


@pytest.mark.parametrize("tau", [2e-3, 10e-3, 50e-3])
def test_van_rossum_matches_elephant(pair, tau):
    dissim = pytest.importorskip("elephant.spike_train_dissimilarity")
    pq = pytest.importorskip("quantities")
    model, target = pair
    got = van_rossum_distance(spike_raster(model), spike_raster(target), tau, DT).numpy()
    assert got.shape == (2, 5)
    for b in range(2):
        for n in range(5):
            ref = dissim.van_rossum_distance([_neo(model.spike_steps(n, b)), _neo(target.spike_steps(n))],
                                             time_constant=tau * pq.s)[0, 1]
            assert got[b, n] == pytest.approx(float(ref), rel=1e-9, abs=1e-12)


def test_van_rossum_closed_forms():
    one = torch.zeros(100, 1, 1, dtype=torch.float64)
    one[10] = 1
    zero = torch.zeros_like(one)
    assert float(van_rossum_distance(one, zero, 5e-3, DT)) == pytest.approx(1.0, rel=1e-12)  # one spike
    assert float(van_rossum_distance(one, one, 5e-3, DT)) == 0.0
    # two spikes shifted by s: D^2 = 2 (1 - exp(-s / tau))
    other = torch.zeros_like(one)
    other[13] = 1
    expected = np.sqrt(2 * (1 - np.exp(-3 * DT / 5e-3)))
    assert float(van_rossum_distance(one, other, 5e-3, DT)) == pytest.approx(expected, rel=1e-12)


def test_van_rossum_gradient_matches_finite_differences():
    torch.manual_seed(0)
    x = torch.rand(40, 2, 3, dtype=torch.float64, requires_grad=True)
    y = (torch.rand(40, 1, 3, dtype=torch.float64) > 0.7).double()
    assert torch.autograd.gradcheck(lambda v: van_rossum_distance(v, y, 3e-3, DT), (x,), eps=1e-6, atol=1e-7)


def test_van_rossum_on_a_differentiable_run_has_the_engines_gradient():
    # through the simulator: the eager engine's autograd and the fused CPU gradient (separate
    # code) give the same surrogate gradient of the same distance
    pytest.importorskip("numba")
    from .conftest import single_neuron_experiment

    exp = single_neuron_experiment(n_steps=300)
    grads = {}
    for engine in ("eager", "fused"):
        backend = get_backend("torch", engine=engine)
        target = backend.run(exp, Params.from_values(Iampa_w0=120e-12))
        w0 = torch.tensor([[100e-12]], dtype=torch.float64, requires_grad=True)
        model = backend.run(exp, Params.from_values(Iampa_w0=w0))
        assert model.metadata["engine"] == engine and model.raster.requires_grad
        van_rossum_distance(spike_raster(model), spike_raster(target), 10e-3, exp.dt).sum().backward()
        grads[engine] = float(w0.grad)
    assert grads["eager"] != 0
    assert grads["fused"] == pytest.approx(grads["eager"], rel=1e-9)


def test_van_rossum_gradient_in_the_raster_is_the_finite_difference():
    # the distance is smooth in a real-valued raster: its autograd gradient must match
    # central differences (this is what the surrogate gradient flows through)
    g = torch.Generator().manual_seed(3)
    a = torch.rand(40, 2, 3, generator=g, dtype=torch.float64, requires_grad=True)
    b = (torch.rand(40, 2, 3, generator=g, dtype=torch.float64) < 0.2).double()
    assert torch.autograd.gradcheck(lambda x: van_rossum_distance(x, b, 2e-3, DT), (a,), eps=1e-6, atol=1e-8)


def test_exponential_filter_is_the_recursion():
    x = torch.rand(300, 4, dtype=torch.float64)
    r = np.exp(-DT / 2e-3)
    f, ref = exponential_filter(x, 2e-3, DT, chunk=3).numpy(), np.zeros((300, 4))
    for k in range(300):
        ref[k] = (ref[k - 1] * r if k else 0) + x[k].numpy()
    np.testing.assert_allclose(f, ref, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("q", [0.0, 50.0, 1000.0, 1e6])
def test_victor_purpura_matches_elephant(pair, q):
    dissim = pytest.importorskip("elephant.spike_train_dissimilarity")
    pq = pytest.importorskip("quantities")
    model, target = pair
    got = victor_purpura_distance(model, target, q)
    for b in range(2):
        for n in range(5):
            ref = dissim.victor_purpura_distance([_neo(model.spike_steps(n, b)), _neo(target.spike_steps(n))],
                                                 cost_factor=q / pq.s)[0, 1]
            assert got[b, n] == pytest.approx(float(ref), rel=1e-9, abs=1e-12)


def test_isi_statistics_and_rates_match_elephant(pair):
    stats = pytest.importorskip("elephant.statistics")
    model, target = pair
    isi = isi_statistics(model)
    err = firing_rate_error(model, target)
    for b in range(2):
        for n in range(5):
            train = _neo(model.spike_steps(n, b))
            intervals = stats.isi(train)
            assert isi["mean"][b, n] == pytest.approx(float(np.mean(intervals.magnitude)), rel=1e-12)
            assert isi["cv"][b, n] == pytest.approx(float(stats.cv(intervals)), rel=1e-9)
            rate = float(stats.mean_firing_rate(train).rescale("Hz").magnitude)
            ref = float(stats.mean_firing_rate(_neo(target.spike_steps(n))).rescale("Hz").magnitude)
            assert err[b, n] == pytest.approx(rate - ref, abs=1e-9)
    few = isi_statistics(_recording([[np.array([5]), np.array([5, 9])]]))
    assert np.isnan(few["mean"][0, 0]) and few["mean"][0, 1] == pytest.approx(4 * DT) and np.isnan(few["cv"][0, 1])


def test_gamma_closed_forms():
    target = _recording([[np.array([100, 500, 900])]])
    assert gamma_coincidence(target, target)[0, 0] == pytest.approx(1.0, rel=1e-12)
    # one of three target spikes matched within 2 ms; model rate nu = 2 / 0.5 s
    model = _recording([[np.array([110, 700])]])
    nu, delta = 2 / (T * DT), 2e-3
    expected = (1 - 2 * nu * delta * 3) / (0.5 * (3 + 2) * (1 - 2 * nu * delta))
    assert gamma_coincidence(model, target, delta)[0, 0] == pytest.approx(expected, rel=1e-12)
    # a model spike matches at most one target spike
    close = _recording([[np.array([100, 105])]])
    single = _recording([[np.array([102])]])
    nu = 1 / (T * DT)
    expected = (1 - 2 * nu * delta * 2) / (0.5 * 3 * (1 - 2 * nu * delta))
    assert gamma_coincidence(single, close, delta)[0, 0] == pytest.approx(expected, rel=1e-12)


def test_gamma_is_zero_on_average_for_independent_trains():
    rng = np.random.default_rng(3)
    a, b = _recording(_random_trains(rng, 1, 800)), _recording(_random_trains(rng, 1, 800))
    g = gamma_coincidence(a, b, 2e-3)
    assert abs(np.nanmean(g)) < 0.03 and np.nanstd(g) > 0.02


def test_trace_error_in_log_current():
    b = torch.full((50, 2, 3), 1e-10, dtype=torch.float64)
    factor = torch.tensor([1.0, 2.0, 10.0], dtype=torch.float64)
    err = trace_error(b * factor, b[:, :1])
    np.testing.assert_allclose(err.numpy(), np.log(factor.numpy())[None].repeat(2, 0), rtol=1e-12)
    zero = torch.zeros(10, 1, 1, dtype=torch.float64)
    assert float(trace_error(zero, torch.full_like(zero, 1e-15))) == 0.0  # floored at 1e-15 A
    x = torch.full((10, 1, 1), 2e-12, dtype=torch.float64, requires_grad=True)
    trace_error(x, torch.full_like(x, 1e-12)).sum().backward()
    assert torch.isfinite(x.grad).all()


def test_mismatched_recordings_are_refused(pair):
    model, _ = pair
    other = Recording.from_steps("x", DT, T + 1, 1, 5, [], [], [])
    with pytest.raises(RecordingError, match="same experiment"):
        firing_rate_error(model, other)
    with pytest.raises(ParameterError, match="q"):
        victor_purpura_distance(model, model, -1.0)
    with pytest.raises(ParameterError, match="name="):
        trace_error(model, model)
