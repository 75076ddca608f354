"""Spike-frequency adaptation: ISIs, ratio and time constant."""

from __future__ import annotations

import numpy as np
import pytest

from dynacal import Params, get_backend
from dynacal.errors import ParameterError
from dynacal.params import kappa
from dynacal.protocols import Adaptation

PROTOCOL = Adaptation(duration=0.8, steady=0.2)
PROTOCOL_DT = 1e-4  # s, the protocol's step


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


def _ahp_map_isis(p: Params, first_isi, n_steps: int, first_spike: np.ndarray) -> list[np.ndarray]:
    """The ISIs (steps) of the reduced model of adaptation: at a reset the neuron's state is
    (Isoma_reset, A) with A the AHP just after the spike, so the next ISI is G(A), and the AHP
    then decays by the closed form d = 1 - dt / tau_ahp a step and jumps by J = Isoma_ahp_w *
    alpha_ahp: A' = A * d**ISI + J. ``first_isi(A)`` gives G: the first ISI of neurons whose
    first jump is A (before the first spike the AHP is 0)."""
    tau = (p.Csoma_ahp * p.Ut / (kappa(p) * p.Isoma_ahp_tau)).numpy()[0]
    d, jump = 1 - PROTOCOL_DT / tau, float(p.Isoma_ahp_w * p.alpha_ahp)
    a, t, isis = np.full(tau.size, jump), first_spike.copy(), []
    while t.min() < n_steps:
        isi = first_isi(a)
        isis.append(isi)
        t, a = t + isi, a * d ** isi + jump
    seq = np.array(isis)
    return [seq[np.cumsum(seq[:, n]) + first_spike[n] < n_steps, n] for n in range(tau.size)]


def _one_over_e_time(isi: np.ndarray, n_steps: int, first_spike: int, steady_s: float, dt: float) -> float:
    """The protocol's documented tau, from ISIs: when 1/ISI (at each ISI's end) has fallen
    1 - 1/e of the way from the first to the steady rate (mean ISI of the spikes in the last
    ``steady_s``), linearly interpolated."""
    steps = first_spike + np.concatenate([[0], np.cumsum(isi)])
    steady = isi[steps[:-1] >= n_steps - round(steady_s / dt)].mean()
    r0, rss, rate = 1 / isi[0], 1 / steady, 1 / isi
    target = rss + (r0 - rss) / np.e
    k = int(np.argmax(rate <= target))
    t = (steps[1:] - steps[0]) * dt
    return t[k - 1] + (rate[k - 1] - target) / (rate[k - 1] - rate[k]) * (t[k] - t[k - 1])


def test_time_constant_is_the_one_of_the_ahp_map():
    # A reference for the feature that is independent of the protocol: the reduced model of
    # adaptation (the AHP's closed-form decay between spikes and its jump at each spike, and
    # the ISI as a function of the AHP after the spike, measured on single ISIs) gives the
    # whole ISI sequence, and from it the documented 1/e time.
    cap = np.array([2e-12, 4e-12, 8e-12])  # tau_ahp 35, 71, 142 ms
    p = Params.from_values(Csoma_ahp=cap)
    rec, f = _run(p, 3)
    assert rec.dt == PROTOCOL_DT
    single = Adaptation(duration=0.1, steady=0.05).experiment("core0:3")
    backend = get_backend("torch")

    def first_isi(a):
        r = backend.run(single, Params.from_values(Csoma_ahp=cap, Isoma_ahp_w=a / float(p.alpha_ahp)))
        return np.array([np.diff(r.spike_steps(n))[0] for n in range(3)])

    first_spike = np.array([rec.spike_steps(n)[0] for n in range(3)])
    reference = _ahp_map_isis(p, first_isi, rec.n_steps, first_spike)
    tau = f["tau"][0]
    assert np.all(np.diff(tau) > 0), tau  # a slower AHP adapts more slowly
    for n in range(3):
        np.testing.assert_array_equal(np.diff(rec.spike_steps(n)), reference[n])  # the run is the map, step for step
        expected = _one_over_e_time(reference[n], rec.n_steps, first_spike[n], PROTOCOL.steady, rec.dt)
        assert tau[n] == pytest.approx(expected, rel=1e-12)


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
