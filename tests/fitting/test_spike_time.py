"""Crossing-time gradients of spike-only rates (fitting/spike_time.py) against finite
differences, and the loss's handling of silent and nearly silent windows."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacal import get_backend
from dynacal.errors import ParameterError, RecordingError
from dynacal.fitting.spike_time import SpikeTimeObjective, isi_rate, isi_rate_loss
from dynacal.protocols import FICurve

FI = FICurve(levels=(3e-10, 1e-9, 3e-9), duration=0.3, settle=0.05)
START = int(round(FI.settle / FI.dt))


def run(log_tau, *, ahp_w=0.0, grad=False):
    exp = FI.experiment(f"core0:{log_tau.size}")
    x = torch.tensor(log_tau[None], requires_grad=grad)
    p = exp.network.params({"Isoma_dpi_tau": torch.exp(x), "Isoma_ahp_w": ahp_w})
    rec = get_backend("torch", surrogate="none").run(exp, p, record=("Isoma_mem",), record_every=1)
    return x, p, rec


def test_rate_value_is_the_protocols_and_gradient_matches_finite_differences():
    """Without adaptation the ISI is a smooth function of the leak: the crossing-time
    gradient agrees with central differences (h = 0.1: the Euler ISI is whole steps) within
    their quantisation, about 15 %; the surrogate of the raster does not (module docstring)."""
    lx = np.log(5e-12 * np.array([0.6, 1.0, 1.6, 2.4]))
    x, p, rec = run(lx, grad=True)
    rate, drive = isi_rate(rec, p.Isoma_th, START)
    np.testing.assert_allclose(rate.detach().numpy(), FI.features(rec)["rate"][0].T, rtol=2e-3)
    assert torch.all(torch.isfinite(drive))
    rate[1].sum().backward()
    h = 0.1
    with torch.no_grad():
        fd = (FI.features(run(lx + h)[2])["rate"][0, :, 1] - FI.features(run(lx - h)[2])["rate"][0, :, 1]) / (2 * h)
    np.testing.assert_allclose(x.grad.numpy()[0], fd, rtol=0.2)
    assert np.all(np.sign(x.grad.numpy()[0]) == np.sign(fd))


def test_loss_zero_at_the_target_and_counts_silent_windows():
    lx = np.log(5e-12 * np.array([0.6, 1.0, 1.6, 2.4]))
    _, p, target = run(lx)
    x, p, model = run(lx, grad=True)
    loss = isi_rate_loss(model, target, p.Isoma_th, window=(FI.settle, FI.duration))
    # the model's rate uses the sub-step phases, the target's whole steps: 1e-4 apart
    np.testing.assert_allclose(loss.values.detach().numpy(), 0.0, atol=1e-7)
    # a much leakier candidate (silent at the lowest level where the target fires) is
    # penalised, and a small step against its gradient lowers every neuron's loss
    far = lx + 1.0
    x, p, model = run(far, grad=True)
    loss = isi_rate_loss(model, target, p.Isoma_th, window=(FI.settle, FI.duration))
    assert torch.all(loss.values > 0.01)
    loss.values.sum().backward()
    _, p, stepped = run(far - 0.05 * np.sign(x.grad.numpy()[0]))
    after = isi_rate_loss(stepped, target, p.Isoma_th, window=(FI.settle, FI.duration)).values
    assert torch.all(after < loss.values.detach())


def test_objective_refuses_a_surrogate_backend_and_mixed_neurons():
    _, _, rec = run(np.log(np.array([5e-12, 6e-12])))
    with pytest.raises(ParameterError, match="surrogate"):
        SpikeTimeObjective({"fi": rec}, backend=get_backend("torch"))
    _, _, other = run(np.log(np.array([5e-12, 6e-12, 7e-12])))
    with pytest.raises(RecordingError, match="different numbers of neurons"):
        SpikeTimeObjective({"fi": rec, "other": other})
    with pytest.raises(RecordingError, match="Isoma_mem of every neuron"):
        isi_rate(get_backend("torch").run(rec.experiment), torch.tensor(2e-9))
