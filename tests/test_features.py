"""Differentiable torch features against the numpy ones of the protocols, and their
gradients against finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacal import Params, Recording, get_backend
from dynacal.errors import ParameterError
from dynacal.features import kernel_fit, rate
from dynacal.protocols import SynapticKernels
from dynacal.protocols._common import SpikeIndex
from dynacal.protocols.kernels import TRACE_OF

DT = 1e-4
#: two synapse types, short isolation: a run of 0.29 s
KERNELS = SynapticKernels(synapses=("ampa", "nmda"), weights=(8, 2), isolation=0.06, fit_span=0.03)
#: per-neuron leak currents around the defaults (20 pA AMPA, 2 pA NMDA): neurons that differ
TAUS = {"Iampa_tau": [14e-12, 20e-12, 27e-12], "Inmda_tau": [1.5e-12, 2e-12, 2.6e-12]}


def _kernel_run(values: dict[str, torch.Tensor], engine: str = "eager") -> Recording:
    return KERNELS.run(get_backend("torch", engine=engine), "core0:3", Params.from_values(values))


def _fit(rec: Recording, syn: str):
    k = KERNELS.synapses.index(syn)
    starts = KERNELS.event_lists()[k] + 1
    return kernel_fit(rec.traces[TRACE_OF[syn]], starts, rec.trace_every, rec.dt,
                      fit_min=KERNELS.fit_min, fit_span=KERNELS.fit_span)


@pytest.fixture(scope="module")
def kernel_run():
    values = {k: torch.tensor([v], dtype=torch.float64, requires_grad=True) for k, v in TAUS.items()}
    return values, _kernel_run(values)


@pytest.mark.parametrize("syn", ["ampa", "nmda"])
def test_kernel_fit_agrees_with_the_protocol(kernel_run, syn):
    _, rec = kernel_run
    ref = KERNELS.features(rec)
    fit = _fit(rec, syn)
    assert fit.valid.all()
    np.testing.assert_allclose(fit.tau.detach().numpy(), ref[f"tau_{syn}"], rtol=1e-12)
    np.testing.assert_allclose(fit.amplitude.detach().numpy(), ref[f"amplitude_{syn}"], rtol=1e-12)
    assert np.ptp(ref[f"tau_{syn}"]) > 0.2 * ref[f"tau_{syn}"].mean()  # the neurons differ


def test_kernel_tau_gradient_through_the_simulator_matches_finite_differences(kernel_run):
    values, rec = kernel_run
    # each neuron's kernel of a type depends on that type's own leak only: one pair of runs
    # (on the fused engine, which agrees with the eager one to rounding) moves them all
    base = {k: v.detach() for k, v in values.items()}
    h = {k: 1e-4 * v for k, v in base.items()}
    up, down = (KERNELS.features(_kernel_run({k: v + sign * h[k] for k, v in base.items()}, engine="auto"))
                for sign in (1, -1))
    for syn, leak in (("ampa", "Iampa_tau"), ("nmda", "Inmda_tau")):
        (grad,) = torch.autograd.grad(_fit(rec, syn).tau.sum(), values[leak], retain_graph=True)
        fd = (up[f"tau_{syn}"][0] - down[f"tau_{syn}"][0]) / (2 * h[leak][0].numpy())
        # tau ~ 1 / I_tau: the derivative is about -tau / I_tau, a large number in s/A
        np.testing.assert_allclose(grad[0].numpy(), fd, rtol=1e-5, err_msg=syn)
        assert np.all(fd < 0)


def test_kernel_fit_gradient_in_the_trace_matches_finite_differences():
    # a decaying current in pA with jumps at samples 3 and 9 (every = 10 steps, dt = 1e-4 s)
    t = torch.arange(16, dtype=torch.float64)
    base = 1 + 300 * torch.exp(-(t - 3).clamp(min=0) / 2.5) * (t >= 3) + 200 * torch.exp(-(t - 9).clamp(min=0) / 2.5) * (t >= 9)
    x = (base[:, None, None] * torch.tensor([1.0, 1.3], dtype=torch.float64)[None, None]).repeat(1, 2, 1)
    x = (x * (1 + 0.01 * torch.rand_like(x))).requires_grad_(True)

    def both(v):  # in ms and pA, so that gradcheck's absolute tolerance means something
        fit = kernel_fit(v * 1e-12, [30, 90], 10, DT, fit_min=2e-12, fit_span=0.004)
        return fit.tau * 1e3, fit.amplitude * 1e12

    assert torch.autograd.gradcheck(both, (x,), eps=1e-6, atol=1e-6, rtol=1e-5)


def test_kernel_fit_marks_a_trace_at_the_dark_current_invalid():
    x = torch.full((20, 1, 2), 1e-12, dtype=torch.float64)
    x[5:, 0, 1] = 1e-10 * torch.exp(-torch.arange(15, dtype=torch.float64) / 3)  # only neuron 1 has a kernel
    fit = kernel_fit(x, [50], 10, DT, fit_min=2e-12, fit_span=0.005)
    assert fit.valid.tolist() == [[False, True]]
    assert float(fit.tau[0, 0]) == 0.0 and float(fit.tau[0, 1]) == pytest.approx(3 * 10 * DT, rel=1e-9)
    assert torch.isfinite(fit.amplitude).all()
    with pytest.raises(ParameterError, match="multiples of every"):
        kernel_fit(x, [55], 10, DT)


def _trains_recording(steps_per_neuron, n_steps=2000):
    b, n, s = [], [], []
    for i, steps in enumerate(steps_per_neuron):
        b += [0] * len(steps)
        n += [i] * len(steps)
        s += list(steps)
    return Recording.from_steps("test", DT, n_steps, 1, len(steps_per_neuron), b, n, s)


def test_rate_agrees_with_recording_and_spike_index():
    # silent, one spike, regular, irregular: the ISI rate differs from the count rate
    rec = _trains_recording([[], [700], list(range(100, 2000, 100)), [250, 300, 900, 1500]])
    raster = torch.as_tensor(rec.dense_spikes(), dtype=torch.float64)
    np.testing.assert_allclose(rate(raster, DT).numpy(), rec.rates(), rtol=1e-14)
    index = SpikeIndex(rec)
    for method in ("count", "isi"):
        np.testing.assert_allclose(rate(raster, DT, 200, 1800, method=method).numpy(),
                                   index.rate(200, 1800, method), rtol=1e-12)
    with pytest.raises(ParameterError, match="window"):
        rate(raster, DT, 10, 5000)


def test_rate_gradient():
    torch.manual_seed(1)
    x = torch.rand(50, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v: rate(v, DT, 5, 45), (x,))  # linear in the raster
    # the ISI rate passes the count rate's gradient, scaled by ISI rate / count rate
    spikes = torch.zeros(100, 1, 1, dtype=torch.float64)
    spikes[[10, 30, 50]] = 1.0
    spikes.requires_grad_(True)
    r = rate(spikes, DT, method="isi")
    assert r.item() == pytest.approx(2 / (40 * DT))
    (g,) = torch.autograd.grad(r.sum(), spikes)
    count_rate = 3 / (100 * DT)
    np.testing.assert_allclose(g[:, 0, 0].numpy(), r.item() / count_rate / (100 * DT), rtol=1e-12)


def test_rate_through_the_surrogate_raster_has_the_engines_gradient():
    # The surrogate gradient has no finite-difference truth (the count is a step function);
    # the eager engine (autograd through dpi_step) and the fused CPU gradient (forward-mode
    # tangents in numba, written separately) must give the same number.
    pytest.importorskip("numba")
    from .conftest import single_neuron_experiment

    exp = single_neuron_experiment(n_steps=400, dc=2e-9)
    grads = {}
    for engine in ("eager", "fused"):
        th = torch.tensor([[2e-9]], dtype=torch.float64, requires_grad=True)
        rec = get_backend("torch", engine=engine).run(exp, Params.from_values(Isoma_th=th))
        assert rec.metadata["engine"] == engine
        r = rate(rec.raster, exp.dt)
        assert r.item() == pytest.approx(float(rec.rates()[0, 0]))
        r.sum().backward()
        grads[engine] = float(th.grad)
    assert grads["eager"] < 0  # a higher threshold fires less
    assert grads["fused"] == pytest.approx(grads["eager"], rel=1e-9)
