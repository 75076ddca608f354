"""Gradients of the fused CPU engine (fused_cpu_grad) against eager autograd through dpi_step.

Same spike steps, same outputs, and the same gradients: float64, relative 1e-6 (they agree
to about 1e-13 in practice: the tangent-linear step is the derivative autograd takes, in
another order of operations). Each test also checks that its gradients are not trivially
zero and that its regime is what it claims.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacal import Experiment, Params, Stimulus, poisson
from dynacal.backends.torch_sim import cpu_grad as fused_cpu_grad, cpu_grad_kernels as fused_cpu_grad_kernels
from dynacal.backends.torch_sim import TorchBackend
from dynacal.errors import ParameterError
from dynacal.params import PARAMETERS, per_core

from ...conftest import single_neuron_experiment
from .test_cpu import _dc, _network

#: every parameter that enters the step (all but soma_refP, whose steps are whole)
DIFFERENTIABLE = ("kn", "kp", "Ut", "I0", "alpha_soma", "alpha_ahp", "alpha_nmda", "alpha_ampa", "alpha_gaba_a",
                  "alpha_gaba_b", "Csoma_mem", "Isoma_dpi_tau", "Isoma_th", "Isoma_reset", "Isoma_const",
                  "Csoma_ahp", "Isoma_ahp_tau", "Isoma_ahp_w", "Isoma_pfb_gain", "Isoma_pfb_th", "Isoma_pfb_norm",
                  "Cnmda", "Campa", "Cgaba_a", "Cgaba_b", "Inmda_tau", "Iampa_tau", "Igaba_a_tau", "Igaba_b_tau",
                  "Inmda_w0", "Iampa_w0", "Igaba_a_w0", "Igaba_b_w0", "Inmda_thr")


def gradients(engine, experiment, base: Params, names, loss_fn, *, surrogate="none", record=("Isoma_mem",),
              substeps=1, dtype=torch.float64):
    """(recording, {name: grad}) of ``loss_fn(recording)`` through one engine; the
    parameters ``names`` are leaves of the shape they have in ``base``."""
    leaves = {name: getattr(base, name).detach().clone().to(dtype).requires_grad_(True) for name in names}
    rec = TorchBackend(engine=engine, surrogate=surrogate, substeps=substeps, dtype=dtype).run(
        experiment, base.replace(**leaves), record=record)
    loss_fn(rec).backward()
    return rec, {name: (leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)) for name, leaf in leaves.items()}


def assert_same_gradients(experiment, base, names, loss_fn, rtol=1e-6, **kw):
    eager, g_eager = gradients("eager", experiment, base, names, loss_fn, **kw)
    fused, g_fused = gradients("fused", experiment, base, names, loss_fn, **kw)
    assert eager.metadata["engine"] == "eager" and fused.metadata["engine"] == "fused"
    np.testing.assert_array_equal(fused.spike_step, eager.spike_step)
    np.testing.assert_array_equal(fused.spike_neuron, eager.spike_neuron)
    for name in names:
        scale = float(g_eager[name].abs().max())
        np.testing.assert_allclose(g_fused[name].numpy(), g_eager[name].numpy(), rtol=rtol, atol=rtol * scale * 1e-3,
                                   err_msg=name)
    return eager, g_eager


def _log_trace(name="Isoma_mem"):
    return lambda rec: torch.log(rec.traces[name]).sum()


def test_smooth_observable_exact_gradient_subthreshold_every_parameter():
    """surrogate 'none', no spike: the pathwise derivative of a sum of log-currents."""
    exp = single_neuron_experiment({"NMDA": 2, "AMPA": 2, "GABA_A": 1, "GABA_B": 1}, rate=100, n_steps=400)
    base = exp.network.params()
    rec, g = assert_same_gradients(exp, base, DIFFERENTIABLE, lambda r: _log_trace()(r) + _log_trace("Iampa")(r),
                                   record=("Isoma_mem", "Iampa"))
    assert rec.spike_step.size == 0
    assert sum(float(v.abs().sum()) > 0 for v in g.values()) >= 25


def test_smooth_observable_spiking_per_neuron_and_per_set():
    """3 neurons with their own DC, 2 parameter sets: per-set and per-neuron leaves."""
    stim = _dc(poisson(3, 150, 500, 1e-4, seed=2), [1e-9, 3e-9, 6e-9])
    exp = Experiment(_network(3, [("NMDA", 4), ("AMPA", 6), ("GABA_B", 1)]), stim, 1e-4, 500)
    base = Params.from_values(Isoma_dpi_tau=np.array([[4e-12], [6e-12]]), Iampa_w0=np.array([80e-12, 100e-12, 130e-12]),
                              Isoma_ahp_w=np.full((2, 3), 0.2e-12))
    names = ("Isoma_dpi_tau", "Iampa_w0", "Isoma_ahp_w", "Isoma_reset", "Inmda_tau", "alpha_gaba_a", "Csoma_mem")
    rec, g = assert_same_gradients(exp, base, names, _log_trace())
    assert rec.spike_step.size > 5 and g["Iampa_w0"].shape == (1, 3) and g["Isoma_dpi_tau"].shape == (2, 1)


@pytest.mark.parametrize("surrogate", ["fast_sigmoid", "straight_through"])
def test_surrogate_gradients_of_spikes_and_traces(surrogate):
    exp = single_neuron_experiment({"NMDA": 10, "AMPA": 10, "GABA_A": 1, "GABA_B": 1}, rate=120, n_steps=600)
    base = exp.network.params()
    names = ("Iampa_w0", "Isoma_th", "Igaba_b_w0", "Isoma_dpi_tau", "Isoma_ahp_w", "Isoma_reset", "alpha_ahp", "I0")
    rec, g = assert_same_gradients(exp, base, names, lambda r: r.raster.sum() + 1e-2 * _log_trace()(r),
                                   surrogate=surrogate)
    assert rec.spike_step.size >= 2
    assert float(g["Iampa_w0"]) != 0 and float(g["Isoma_th"]) != 0  # the surrogate path is live


def test_substeps_and_record_subset():
    stim = _dc(poisson(2, 200, 300, 1e-4, seed=4), [2e-9, 4e-9])
    exp = Experiment(_network(2, [("AMPA", 5), ("GABA_B", 1)]), stim, 1e-4, 300)
    names = ("Iampa_w0", "Isoma_dpi_tau", "Igaba_b_tau", "alpha_ampa")
    assert_same_gradients(exp, Params.from_values(), names,
                          lambda r: r.raster.sum() + _log_trace("Igaba_b")(r) + 1e-3 * r.traces["Isoma_mem"][::3].sum() / 1e-12,
                          surrogate="fast_sigmoid", substeps=2, record=("Igaba_b", "Isoma_mem"))


def test_per_core_parameter_gradient_is_the_sum_over_its_neurons():
    stim = _dc(Stimulus(0), [2e-9, 3e-9, 4e-9, 5e-9])
    exp = Experiment(_network(4), stim, 1e-4, 300)
    core_of = np.array([0, 0, 1, 1])
    tau = torch.tensor([5e-12, 6e-12], dtype=torch.float64, requires_grad=True)
    rec = TorchBackend(engine="fused", surrogate="none").run(exp, Params.from_values(Isoma_dpi_tau=per_core(tau, core_of)),
                                                             record=["Isoma_mem"])
    torch.log(rec.traces["Isoma_mem"]).sum().backward()
    _, g = gradients("fused", exp, Params.from_values(Isoma_dpi_tau=per_core(tau.detach(), core_of)), ["Isoma_dpi_tau"],
                     _log_trace())
    torch.testing.assert_close(tau.grad, torch.stack([g["Isoma_dpi_tau"][0, :2].sum(), g["Isoma_dpi_tau"][0, 2:].sum()]),
                               rtol=1e-12, atol=0)


def test_engine_choice_for_gradients(caplog):
    exp = single_neuron_experiment(n_steps=100)
    x = torch.tensor(100e-12, dtype=torch.float64, requires_grad=True)
    assert TorchBackend().run(exp, Params.from_values(Iampa_w0=x)).metadata["engine"] == "fused"
    rec_exp = Experiment(_network(2, [("AMPA", 5)], [(0, 1, "AMPA", 2)]), poisson(1, 100, 100, 1e-4, seed=1), 1e-4, 100)
    assert TorchBackend().run(rec_exp, Params.from_values(Iampa_w0=x)).metadata["engine"] == "eager"
    with pytest.raises(ParameterError, match="recurrent"):
        TorchBackend(engine="fused").run(rec_exp, Params.from_values(Iampa_w0=x))
    with pytest.raises(ParameterError, match="weights"):
        TorchBackend(engine="fused").run(exp, input_weights=torch.ones(4, dtype=torch.float64, requires_grad=True))


def test_kernel_pins_are_current():
    """The gradient kernels compile in cpu_kernels (with layout and vector_math); numba's disk cache
    only sees this file, so an edit there has to update ``_PINNED`` (until then the kernels
    are compiled afresh in every process, which is safe but slow)."""
    for name, sha in fused_cpu_grad_kernels._PINNED.items():
        assert fused_cpu_grad_kernels.source_sha256(name) == sha, name
    assert fused_cpu_grad_kernels._CACHE


def test_the_workspace_holds_every_term_at_its_row():
    """init_workspace puts term ``name`` of layout.derive at row ``P0 + layout.index(name)``, bit for bit."""
    from dynacal.backends.torch_sim import cpu as fused_cpu, cpu_kernels as K, layout
    rng = np.random.default_rng(0)
    p = Params.from_values({name: spec.default * rng.uniform(0.5, 2.0, 5) for name, spec in
                            __import__("dynacal").params.PARAMETERS.items()}).expand(1, 5)
    lay = fused_cpu._Layout(1, 5)
    ws = fused_cpu._workspace(lay, fused_cpu._pack(p, np.float64, 1e-4), np.float64, 1e-4)
    terms = layout.derive(p, 1e-4)
    assert list(terms) == list(layout.TERMS) and K.N_ROWS == K.P0 + len(terms)
    for name, value in terms.items():
        row = K.P0 + layout.index(name)
        np.testing.assert_array_equal(ws[0, row * K.BLK:row * K.BLK + 5], value.reshape(-1).double().numpy(),
                                      err_msg=name)
    for row, value in fused_cpu_grad.derived_rows(p).items():
        np.testing.assert_array_equal(ws[0, row * K.BLK:row * K.BLK + 5], value.reshape(-1).numpy(), err_msg=str(row))


def test_every_parameter_but_the_refractory_period_moves_a_term():
    """A parameter the step reads must reach the engines through layout.derive (soma_refP
    through refractory_steps, whole steps without a gradient)."""
    from dynacal.backends.torch_sim import layout
    p = Params.from_values()
    for name in PARAMETERS:
        if name == "soma_refP":
            continue
        moved = fused_cpu_grad._row_tangents(p, name)
        assert moved, f"{name} enters no term of layout.derive"


@pytest.mark.slow
def test_gradient_descent_recovers_per_neuron_parameters_of_64_neurons():
    """A synthetic target (64 neurons, each with its own Iampa_w0 and Iampa_tau) is
    recovered from a 30 % perturbed start by Adam on log-parameters, through the fused
    gradients of a log-trace loss."""
    n, steps = 64, 400
    rng = np.random.default_rng(11)
    stim = _dc(poisson(2, 100, steps, 1e-4, seed=12), rng.uniform(50e-12, 150e-12, n))
    exp = Experiment(_network(n, [("AMPA", 1), ("NMDA", 1)]), stim, 1e-4, steps)
    true = {"Iampa_w0": rng.uniform(60e-12, 140e-12, n), "Iampa_tau": rng.uniform(10e-12, 30e-12, n)}
    backend = TorchBackend(engine="fused", surrogate="none")
    log_target = torch.log(backend.run(exp, Params.from_values(true), record=["Iampa"]).traces["Iampa"])
    logs = {k: torch.tensor(np.log(v * rng.choice([0.7, 1.3], n)), requires_grad=True) for k, v in true.items()}
    opt = torch.optim.Adam(logs.values(), lr=0.03)
    losses = []
    for _ in range(150):
        opt.zero_grad()
        rec = backend.run(exp, Params.from_values({k: torch.exp(v) for k, v in logs.items()}), record=["Iampa"])
        assert rec.metadata["engine"] == "fused"
        loss = ((torch.log(rec.traces["Iampa"]) - log_target) ** 2).mean()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 1e-3 * losses[0]
    for k in true:
        err = np.abs(np.exp(logs[k].detach().numpy()) / true[k] - 1)
        assert err.max() < 0.02, (k, err.max())
