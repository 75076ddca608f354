"""Physics of dpi.dpi_step and the eager engine: closed forms, step order, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dynacal import Chip, Experiment, Params, Stimulus
from dynacal.backends.torch_sim.dpi import (SURROGATES, derivatives, dpi_step, get_surrogate, initial_state,
                                  refractory_steps)
from dynacal.backends.torch_sim import TorchBackend
from dynacal.errors import ParameterError

from ...conftest import single_neuron_experiment


def _one_input(syn_type="AMPA", weight=1, n_steps=400, spike_steps=(10,), dt=1e-4, n_neurons=1):
    chip = Chip()
    neurons = chip.get_neurons(n_neurons, "Core_0")
    inp = chip.add_inputs(1)
    syn = chip.add_connection(inp, neurons, synapse_type=syn_type)
    chip.connect(syn, True)
    syn.weight = weight
    stim = Stimulus(1, steps=list(spike_steps), sources=[0] * len(spike_steps))
    return Experiment(chip.network(), stim, dt, n_steps)


@pytest.mark.parametrize("syn_type,tau_name,cap", [("AMPA", "Iampa_tau", "Campa"), ("NMDA", "Inmda_tau", "Cnmda"),
                                                   ("GABA_A", "Igaba_a_tau", "Cgaba_a"),
                                                   ("GABA_B", "Igaba_b_tau", "Cgaba_b")])
def test_synapse_decays_with_dpi_time_constant(syn_type, tau_name, cap):
    """Above I0 the DPI decays as dI/dt = -I / tau with tau = C Ut / (kappa Itau):
    Euler gives I[k+1] / I[k] = 1 - dt / tau exactly (closed form, no fitted numbers)."""
    exp = _one_input(syn_type, weight=5, n_steps=60, spike_steps=(5,))
    p = Params.from_values()
    rec = TorchBackend(engine="eager").run(exp, p, record=[{"AMPA": "Iampa", "NMDA": "Inmda",
                                                            "GABA_A": "Igaba_a", "GABA_B": "Igaba_b"}[syn_type]])
    trace = next(iter(rec.traces.values()))[:, 0, 0].numpy()
    kappa = (0.75 + 0.66) / 2
    tau = getattr(p, cap).item() * 0.025 / (kappa * getattr(p, tau_name).item())
    # Step 5's spike is added after step 5's Euler update: visible at the start of step 6.
    assert trace[5] == pytest.approx(1e-12, rel=1e-6)
    assert trace[6] == pytest.approx(1e-12 * (1 - 1e-4 / tau) + 100e-12 * 5 * 4, rel=1e-9)
    ratios = trace[7:30] / trace[6:29]
    np.testing.assert_allclose(ratios, 1 - 1e-4 / tau, rtol=1e-9)


def test_refractory_period_in_whole_steps_as_brian2():
    """After a spike Isoma_mem stays at Isoma_reset for timestep(refP) - 1 further steps."""
    p = Params.from_values(Isoma_const="3 nA", soma_refP="5 ms")
    exp = _one_input(n_steps=400, spike_steps=())
    rec = TorchBackend(engine="eager").run(exp, p, record=["Isoma_mem"])
    steps = rec.spike_steps()
    assert len(steps) >= 3
    mem = rec.traces["Isoma_mem"][:, 0, 0].numpy()
    first = steps[0]
    r = int(math.floor((5e-3 + 1e-7) / 1e-4))
    # Frozen at the reset value from step first+1 up to first+r (the start of step first+r),
    # integrating again at step first+r.
    np.testing.assert_array_equal(mem[first + 1:first + r + 1], 1.2e-12)
    assert mem[first + r + 1] > 1.2e-12
    assert np.all(np.diff(steps) > r)


def test_refractory_steps_rounding_matches_brian2_timestep():
    assert int(refractory_steps(torch.tensor(5e-3), 1e-4)) == 50
    assert int(refractory_steps(torch.tensor(5e-3, dtype=torch.float32), 1e-3)) == 5  # not 4 as int()
    assert int(refractory_steps(torch.tensor(0.0), 1e-4)) == 0


def test_ahp_stays_exactly_zero_until_first_spike():
    """Reference quirk: Isoma_ahp starts at 0 and its derivative is exactly 0 while the
    membrane is above I0 (division by an infinite denominator)."""
    exp = single_neuron_experiment()
    rec = TorchBackend(engine="eager").run(exp, record=["Isoma_ahp", "Isoma_mem"])
    first = rec.spike_steps()[0]
    ahp = rec.traces["Isoma_ahp"][:, 0, 0].numpy()
    mem = rec.traces["Isoma_mem"][:, 0, 0].numpy()
    floor = int(np.argmax(mem <= 1e-12)) if np.any(mem[:first] <= 1e-12) else first
    assert floor > 0 and np.all(ahp[: floor + 1] == 0.0)
    # Apart from a creep of a few 1e-14 A while the membrane sits at the floor (dpi-model.md).
    assert np.all(ahp[: first + 1] < 5e-14)
    assert ahp[first + 1] > 1e-12


def test_derivatives_have_no_nan_gradients_at_ahp_zero():
    p = Params.from_values()
    state = initial_state(1, 3)
    x = state.Isoma_mem.clone().requires_grad_(True)
    d = derivatives(state._replace(Isoma_mem=x), p)
    sum(v.sum() for v in d).backward()
    assert torch.isfinite(x.grad).all()


def test_threshold_is_strict_and_resets():
    p = Params.from_values()
    state = initial_state(1, 2)
    th = float(p.Isoma_th)
    # Neuron 0 ends the Euler step far above threshold, neuron 1 far below.
    state = state._replace(Isoma_mem=torch.tensor([[5 * th, 1e-12]], dtype=torch.float64))
    spikes, new = dpi_step(state, p, 1e-4)
    assert spikes.tolist() == [[1.0, 0.0]]
    assert new.Isoma_mem[0, 0] == float(p.Isoma_reset)
    assert new.Isoma_ahp[0, 0] == pytest.approx(1e-12 * 4)
    assert int(new.refractory[0, 0]) == 50 and int(new.refractory[0, 1]) == 0


def test_batch_equals_single_runs():
    exp = single_neuron_experiment(weights={"NMDA": 10, "AMPA": 8, "GABA_A": 1, "GABA_B": 2})
    values = torch.tensor([[50e-12], [100e-12], [150e-12]], dtype=torch.float64)
    be = TorchBackend(engine="eager")
    batched = be.run(exp, Params.from_values(Iampa_w0=values), record="all")
    for b in range(3):
        single = be.run(exp, Params.from_values(Iampa_w0=values[b]), record="all")
        np.testing.assert_array_equal(batched.spike_steps(batch=b), single.spike_steps())
        for name in single.traces:
            torch.testing.assert_close(batched.traces[name][:, b], single.traces[name][:, 0], rtol=0, atol=0)


def test_substeps_converge_as_dt_shrinks():
    """Sub-stepping is first-order Euler: the error against a fine reference shrinks
    roughly in proportion to the sub-step."""
    exp = single_neuron_experiment(weights={"NMDA": 1, "AMPA": 1, "GABA_A": 1, "GABA_B": 1}, n_steps=300)
    ref = TorchBackend(engine="eager", substeps=32).run(exp, record=["Inmda", "Isoma_mem"])
    errors = []
    for k in (1, 2, 4):
        rec = TorchBackend(engine="eager", substeps=k).run(exp, record=["Inmda", "Isoma_mem"])
        assert rec.spike_steps().size == ref.spike_steps().size == 0  # sub-threshold: smooth
        errors.append(max(float((rec.traces[k] - ref.traces[k]).abs().max() / ref.traces[k].abs().max())
                          for k in ("Inmda", "Isoma_mem")))
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert errors[-1] < errors[0] / 2.5


def test_unstable_euler_is_detected_and_substeps_fix_it(caplog):
    """A large GABA_A current (nA) with strong excitation makes Euler at 100 us overshoot."""
    exp = single_neuron_experiment(weights={"NMDA": 10, "AMPA": 20, "GABA_A": 2, "GABA_B": 0},
                                   rate=200, n_steps=600)
    p = Params.from_values(Igaba_a_w0="200 pA")
    with caplog.at_level("WARNING"):
        rec = TorchBackend(engine="eager").run(exp, p, record=["Isoma_mem"])
    assert float(rec.traces["Isoma_mem"].min()) < 0
    msg = " ".join(r.getMessage() for r in caplog.records)
    assert "unstable" in msg and "substeps=" in msg
    need = int(msg.split("substeps=")[1].split()[0].rstrip(")"))
    caplog.clear()
    with caplog.at_level("WARNING"):
        fixed = TorchBackend(engine="eager", substeps=need).run(exp, p, record=["Isoma_mem"])
    assert float(fixed.traces["Isoma_mem"].min()) > 0
    assert "unstable" not in " ".join(r.getMessage() for r in caplog.records)


def test_static_check_warns_for_leak_faster_than_dt(caplog):
    exp = _one_input(n_steps=5, spike_steps=())
    with caplog.at_level("WARNING"):
        TorchBackend(engine="eager").run(exp, Params.from_values(Iampa_tau="2 nA"))
    assert any("Iampa_tau" in r.getMessage() and "dt <=" in r.getMessage() for r in caplog.records)


# --- gradients -------------------------------------------------------------------------

def _subthreshold_loss(exp, **values):
    rec = TorchBackend(engine="eager", surrogate="none").run(exp, Params.from_values(**values), record=["Isoma_mem", "Inmda"])
    return torch.log(rec.traces["Isoma_mem"]).mean() + torch.log(rec.traces["Inmda"]).mean()


@pytest.mark.parametrize("name,value", [("Inmda_w0", 100e-12), ("Isoma_dpi_tau", 5e-12), ("Inmda_tau", 2e-12),
                                        ("alpha_soma", 4.0), ("Csoma_mem", 2e-12)])
def test_autograd_matches_finite_differences(name, value):
    """A smooth observable (mean log-current) of a spiking run: spike steps are locally
    constant, so the exact pathwise gradient (surrogate "none") must equal finite differences."""
    exp = single_neuron_experiment(weights={"NMDA": 3, "AMPA": 1, "GABA_A": 1, "GABA_B": 1}, n_steps=150)
    x = torch.tensor(value, dtype=torch.float64, requires_grad=True)
    loss = _subthreshold_loss(exp, **{name: x})
    (g,) = torch.autograd.grad(loss, x)
    h = value * 1e-6
    with torch.no_grad():
        fd = (_subthreshold_loss(exp, **{name: value + h}) - _subthreshold_loss(exp, **{name: value - h})) / (2 * h)
    assert float(g) == pytest.approx(float(fd), rel=1e-5, abs=1e-12 / value)
    assert float(g) != 0


def test_gradcheck_on_tiny_case_per_neuron():
    """float64 gradcheck of per-neuron mismatch parameters through 40 steps."""
    exp = _one_input("NMDA", weight=4, n_steps=40, spike_steps=(3, 17), n_neurons=2)

    def f(w0, tau):
        rec = TorchBackend(engine="eager", surrogate="none").run(exp, Params.from_values(Inmda_w0=w0 * 1e-12, Isoma_dpi_tau=tau * 1e-12),
                                               record=["Isoma_mem"])
        return torch.log(rec.traces["Isoma_mem"]).sum(0)

    w0 = torch.tensor([[80.0, 120.0]], dtype=torch.float64, requires_grad=True)
    tau = torch.tensor([[5.0, 7.0]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(f, (w0, tau), eps=1e-6, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("surrogate", sorted(SURROGATES))
def test_spike_count_gradients_are_nonzero_and_signed(surrogate):
    """More excitation -> more spikes; a higher threshold -> fewer: the surrogate
    gradients of the spike count must say so."""
    exp = single_neuron_experiment(weights={"NMDA": 10, "AMPA": 10, "GABA_A": 1, "GABA_B": 1}, rate=120)
    w0 = torch.tensor(100e-12, dtype=torch.float64, requires_grad=True)
    th = torch.tensor(2000e-12, dtype=torch.float64, requires_grad=True)
    gaba = torch.tensor(100e-12, dtype=torch.float64, requires_grad=True)
    be = TorchBackend(engine="eager", surrogate=surrogate)
    rec = be.run(exp, Params.from_values(Iampa_w0=w0, Isoma_th=th, Igaba_b_w0=gaba))
    count = rec.raster.sum()
    assert float(count.detach()) == rec.spike_step.size > 1
    g_w0, g_th, g_gaba = torch.autograd.grad(count, (w0, th, gaba))
    assert float(g_w0) > 0
    assert float(g_th) < 0
    assert float(g_gaba) < 0


def test_integer_weights_get_straight_through_gradients():
    exp = single_neuron_experiment(weights={"NMDA": 10, "AMPA": 10, "GABA_A": 1, "GABA_B": 1}, rate=120)
    w = torch.tensor([10.0, 10.0, 1.0, 1.0], dtype=torch.float64, requires_grad=True)
    be = TorchBackend(engine="eager")
    rec = be.run(exp, input_weights=w)
    plain = be.run(exp)
    np.testing.assert_array_equal(rec.spike_step, plain.spike_step)
    (g,) = torch.autograd.grad(rec.raster.sum(), w)
    assert float(g[1]) > 0 and float(g[3]) < 0
    # Forward rounds: 10.3 behaves as 10.
    rounded = be.run(exp, input_weights=torch.tensor([10.3, 9.6, 1.2, 0.8], dtype=torch.float64))
    np.testing.assert_array_equal(rounded.spike_step, plain.spike_step)


def test_batched_integer_weights_equal_single_runs():
    exp = single_neuron_experiment(weights={"NMDA": 10, "AMPA": 10, "GABA_A": 1, "GABA_B": 1}, rate=120, n_steps=300)
    w = torch.tensor([[10.0, 10.0, 1.0, 1.0], [10.0, 3.0, 1.0, 4.0]], dtype=torch.float64, requires_grad=True)
    be = TorchBackend(engine="eager")
    rec = be.run(exp, input_weights=w, record=["Iampa"])
    assert rec.batch == 2 and rec.traces["Iampa"].shape == (300, 2, 1)
    for b in range(2):
        single = be.run(exp, input_weights=w[b].detach(), record=["Iampa"])
        np.testing.assert_array_equal(rec.spike_steps(batch=b), single.spike_steps())
        torch.testing.assert_close(rec.traces["Iampa"][:, b], single.traces["Iampa"][:, 0], rtol=0, atol=0)
    (g,) = torch.autograd.grad(rec.traces["Iampa"].sum(), w)
    assert float(g[0, 1]) > 0 and float(g[1, 1]) > 0
    with pytest.raises(ParameterError, match="do not fit"):
        be.run(exp, Params.from_values(Iampa_w0=torch.full((3, 1), 1e-10, dtype=torch.float64)), input_weights=w)


def test_get_surrogate_unknown_name():
    with pytest.raises(ParameterError, match="fast_sigmoid"):
        get_surrogate("fast_sigmoidd")
