"""Spike-frequency adaptation: ISIs, ratio and time constant."""

from __future__ import annotations

import numpy as np
import pytest

from dynacal import Params, get_backend
from dynacal.errors import ParameterError
from dynacal.params import kappa
from dynacal.protocols import Adaptation

PROTOCOL = Adaptation(duration=0.8, steady=0.2)


def _run(p: Params, n: int):
    rec = PROTOCOL.run(get_backend("torch"), f"core0:{n}", p)
    return rec, PROTOCOL.features(rec)


def test_isis_from_the_spike_trains():
    rec, f = _run(Params.from_values(), 2)
    steps = rec.spike_steps(0)
    isi = np.diff(steps) * rec.dt
    assert f["first_isi"][0, 0] == isi[0]
    late = steps[:-1] >= rec.n_steps - int(round(PROTOCOL.steady / rec.dt))
    assert f["steady_isi"][0, 0] == pytest.approx(isi[late].mean(), rel=1e-12)
    assert f["ratio"][0, 0] == pytest.approx(isi[late].mean() / isi[0], rel=1e-12)
    assert f["ratio"][0, 0] > 1.3  # the default AHP adapts


def test_no_adaptation_without_the_ahp_jump():
    _, f = _run(Params.from_values(Isoma_ahp_w=0.0), 1)
    # every ISI starts from the reset under the same DC: all equal, nothing to time
    assert f["ratio"][0, 0] == pytest.approx(1.0, abs=1e-12) and np.isnan(f["tau"][0, 0])


def test_time_constant_follows_the_ahp():
    cap = np.array([2e-12, 4e-12, 8e-12])
    p = Params.from_values(Csoma_ahp=cap)
    _, f = _run(p, 3)
    tau_ahp = (p.Csoma_ahp * p.Ut / (kappa(p) * p.Isoma_ahp_tau)).numpy()[0]  # 35, 71, 142 ms
    tau = f["tau"][0]
    assert np.all(np.diff(tau) > 0), tau
    # The rate's 1/e time is of the order of the AHP's time constant, not equal to it: it
    # depends on how the rate falls with the AHP current, for which there is no closed form.
    # The physics number, the AHP's own decay, is checked exactly in the next test.
    assert np.all((tau > 0.3 * tau_ahp) & (tau < 1.5 * tau_ahp)), (tau, tau_ahp)


def test_between_spikes_the_ahp_decays_with_its_closed_form_time_constant():
    # Above I0 the DPI's dI/dt = (-Ig - I) / (tau (1 + Ig / I)) is exactly -I / tau
    # (dpi-model.md, Adaptation), tau = Csoma_ahp * Ut / (kappa * Isoma_ahp_tau): forward
    # Euler at dt multiplies the AHP by 1 - dt / tau every step between two spikes.
    cap = np.array([2e-12, 4e-12, 8e-12])
    p = Params.from_values(Csoma_ahp=cap)
    rec = get_backend("torch").run(PROTOCOL.experiment("core0:3"), p, record=["Isoma_ahp"])
    tau_ahp = (p.Csoma_ahp * p.Ut / (kappa(p) * p.Isoma_ahp_tau)).numpy()[0]
    ahp = rec.traces["Isoma_ahp"][:, 0, :].numpy()
    for n in range(3):
        steps = rec.spike_steps(n)
        assert steps.size > 10
        for first, second in ((steps[1], steps[2]), (steps[-2], steps[-1])):  # early and adapted
            between = ahp[first + 2:second, n]
            assert between.size > 20
            np.testing.assert_allclose(between[1:] / between[:-1], 1 - rec.dt / tau_ahp[n], rtol=1e-9)


def test_settings_are_checked():
    with pytest.raises(ParameterError, match="dc"):
        Adaptation(dc=1.0)
    with pytest.raises(ParameterError, match="steady"):
        Adaptation(steady=2.0)
