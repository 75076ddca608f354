r"""Closed-form first estimates of a target's parameters, per neuron, before any search.

Each estimate comes from one protocol's features and one equation of ``dpi-model.md``; the
other parameters in the equation are taken from the target's own network (its core biases
and the table). They start a fit; they are not the fit (the figures below are measured on
torch-simulated targets with known parameters, ``tests/fitting/test_estimates.py``).

**Synapse time constant** (``kernels`` with traces). Above I0 a DPI current decays as
``dI/dt = -I / tau`` (the gain cancels), ``tau = C_X Ut / (kappa I_X_tau)``. Forward Euler
at step dt multiplies the current by ``1 - dt / tau`` per step, so the fitted continuous
time constant ``tau_fit`` (``SynapticKernels`` ``tau_<syn>``) gives the model's exactly:

    tau = dt / (1 - exp(-dt / tau_fit)),        I_X_tau = C_X Ut / (kappa tau)

``C_X`` and ``I_X_tau`` reach the data only through their ratio: ``C_X`` is the network's.
Exact on a noiseless simulated target (relative error ~1e-12 of float64).

**Weight effect** (``kernels`` with traces). The jump at an input of integer weight w is
``I_X_w0 * alpha_X * w``: ``alpha_X * I_X_w0 = amplitude / w``, reported as that
combination (no protocol separates the factors). Exact up to the I0 floor (< 1e-3).

**Refractory period** (``refractory``): the protocol's estimate ``refractory``, which on a
forward-Euler target is the refractory period in whole steps. Exact to the step.

**Leak and gain** (``fi``). Above I0, without adaptation and positive feedback, the soma obeys

    tau (1 + Ig / I) dI/dt = Iinf - I,   Iinf = alpha (Iin - Itau),  Ig = alpha Itau,
    tau = C Ut / (kappa Itau)

so from reset to threshold (integrating dt = tau (1 + Ig / I) dI / (Iinf - I))

    ISI = refP + tau [ln((Iinf - Ireset) / (Iinf - Ith))
                      + (Ig / Iinf) ln(Ith (Iinf - Ireset) / (Ireset (Iinf - Ith)))],

firing when ``Iin > Itau + Ith / alpha`` (the rheobase). The positive feedback makes the
membrane run away once ``Ipfb(I) > Itau``, i.e. above ``Ith_eff = pfb_th - pfb_norm ln(pfb_gain
/ Itau - 1)``: the estimate uses ``min(Ith, Ith_eff)`` as the threshold. Per neuron, ``(Itau,
alpha)`` are fitted to the measured ISIs (1 / rate of the firing levels) by least squares
in log ISI, started from the closed form of the rheobase and the high-drive slope
(``1 / (ISI - refP) ~ kappa Itau alpha Iin / (C Ut (Ith - Ireset))``). ``refP`` is the refractory
estimate when the target has one, else the network's.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch
from scipy.optimize import least_squares

from dynacal.errors import RecordingError
from dynacal.params import kappa
from dynacal.protocols import get_protocol
from dynacal.protocols.kernels import TRACE_OF
from dynacal.recording import Recording

__all__ = ["Estimate", "first_estimates", "start_values"]

log = logging.getLogger(__name__)


class Estimate(NamedTuple):
    """One first estimate.

    Attributes:
        value: the core value, SI: the median over the neurons with an estimate.
        per_neuron: float (N,), SI, NaN where the data give none.
        source: the protocol and feature it came from.
        combination: for a product of parameters, ``{name: exponent}``; else None.
    """

    value: float
    per_neuron: np.ndarray
    source: str
    combination: dict[str, int] | None = None

    def __float__(self) -> float:
        return float(self.value)


def _recordings(target: Any) -> dict[str, Recording]:
    recs = getattr(target, "recordings", target)
    if not isinstance(recs, Mapping) or not all(isinstance(r, Recording) for r in recs.values()):
        raise RecordingError(f"first_estimates takes a Target or a dict of protocol name -> Recording, not "
                             f"{type(target).__name__}; load one with Target.load(folder).")
    return dict(recs)


def _estimate(per_neuron: np.ndarray, source: str, combination=None) -> Estimate | None:
    per_neuron = np.asarray(per_neuron, dtype=np.float64)
    ok = np.isfinite(per_neuron) & (per_neuron > 0)
    if not ok.any():
        return None
    values = np.where(ok, per_neuron, np.nan)
    return Estimate(float(np.median(values[ok])), values, source, combination)


def _network_values(rec: Recording) -> Mapping[str, np.ndarray]:
    """The recording's own network parameters, name -> (N,) float64 (table and core biases)."""
    p = rec.require_experiment().network.params()
    n = rec.n_neurons
    get = lambda name: np.broadcast_to(getattr(p, name).detach().cpu().numpy()[0], (n,)).astype(np.float64)  # noqa: E731
    values = {name: get(name) for name in (
        "Ut", "Csoma_mem", "alpha_soma", "Isoma_th", "Isoma_reset", "soma_refP", "Isoma_pfb_gain", "Isoma_pfb_th",
        "Isoma_pfb_norm", "Campa", "Cnmda", "Cgaba_a", "Cgaba_b", "I0", "alpha_ahp", "Isoma_ahp_w", "Csoma_ahp",
        "Isoma_ahp_tau")}
    values["kappa"] = np.broadcast_to(kappa(p).detach().cpu().numpy()[0], (n,)).astype(np.float64)
    return values


def _kernel_estimates(rec: Recording) -> dict[str, Estimate]:
    """Synapse leak currents and weight effects from a kernels recording with traces."""
    protocol = get_protocol(rec)
    features = protocol.features(rec)
    net = _network_values(rec)
    out: dict[str, Estimate] = {}
    for syn, weight in zip(protocol.synapses, protocol.weights):
        if TRACE_OF[syn] not in rec.traces:
            continue
        tau_fit = features[f"tau_{syn}"][0]
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            tau = rec.dt / -np.expm1(-rec.dt / tau_fit)  # forward Euler's per-step ratio, undone
            i_tau = net[f"C{syn}"] * net["Ut"] / (net["kappa"] * tau)
        est = _estimate(i_tau, f"kernels: tau_{syn}")
        if est is not None:
            out[f"I{syn}_tau"] = est
        est = _estimate(features[f"amplitude_{syn}"][0] / weight, f"kernels: amplitude_{syn} / weight {weight}",
                        {f"alpha_{syn}": 1, f"I{syn}_w0": 1})
        if est is not None:
            out[f"alpha_{syn}*I{syn}_w0"] = est
    return out


def fi_isi(level: np.ndarray, i_tau: np.ndarray, alpha: np.ndarray, net: Mapping[str, np.ndarray],
           refp: np.ndarray, isi_seen: np.ndarray | None = None) -> np.ndarray:
    """The ISI (s) of the module docstring at DC ``level`` (A); NaN below the rheobase.

    Args:
        level: (..., L) DC; i_tau, alpha, refp: broadcastable to it; net: values of the
            neuron(s) (``_network_values``) broadcastable to it.
        isi_seen: (..., L) s, the measured ISI, which sets the adaptation current at the
            end of the ISI (``J / (exp(ISI / tau_ahp) - 1)``, J the jump); None: no adaptation.
    """
    g = lambda x: np.asarray(net[x])  # noqa: E731
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        tau_ahp = g("Csoma_ahp") * g("Ut") / (g("kappa") * g("Isoma_ahp_tau"))
        # the adaptation current at the end of the ISI, where the slow approach to threshold is
        ahp = 0.0 if isi_seen is None else g("alpha_ahp") * g("Isoma_ahp_w") / np.expm1(isi_seen / tau_ahp)
        leak = i_tau + g("I0") + ahp  # Itau + Iahp + the GABA_A floor: the soma's Isum
        gain, pth, norm = g("Isoma_pfb_gain"), g("Isoma_pfb_th"), g("Isoma_pfb_norm")
        runaway = np.where(gain > leak, pth - norm * np.log(np.maximum(gain / leak - 1.0, 1e-300)), np.inf)
        th, reset = np.minimum(g("Isoma_th"), runaway), g("Isoma_reset")
        tau = g("Csoma_mem") * g("Ut") / (g("kappa") * leak)  # the effective one: tau Itau / Isum
        inf = alpha * i_tau * (level + g("I0") - leak) / leak
        ig = alpha * i_tau
        isi = refp + tau * (np.log((inf - reset) / (inf - th))
                            + ig / inf * np.log(th * (inf - reset) / (reset * (inf - th))))
    return np.where(inf > th, isi, np.nan)


def _fi_start(levels, isi, net, refp, fit_gain: bool):
    """Per neuron the best (Itau, alpha) of a log grid (40 x 16 over the plausible window;
    alpha at the network's value when not ``fit_gain``), in log ISI over the firing levels:
    a start that needs no closed-form guess. (N, L) isi."""
    grid_tau = np.geomspace(1e-13, 1e-9, 40)
    grid_alpha = np.geomspace(0.5, 200.0, 16) if fit_gain else np.array([np.nan])
    t, a = np.meshgrid(grid_tau, grid_alpha, indexing="ij")
    t, a = t.reshape(-1, 1, 1), a.reshape(-1, 1, 1)  # (G, 1, 1) against (N, L)
    nv = {k: np.asarray(v)[:, None] for k, v in net.items()}
    if not fit_gain:
        a = np.broadcast_to(nv["alpha_soma"][None], (t.shape[0], *nv["alpha_soma"].shape))
    model = fi_isi(levels[None], t, a, nv, np.asarray(refp)[:, None], isi)  # (G, N, L)
    ok = np.isfinite(isi)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = np.where(np.isfinite(model), np.log(model) - np.log(isi), 5.0)
    cost = np.where(ok, r ** 2, 0.0).sum(-1)  # (G, N)
    best = cost.argmin(0)
    alpha = a[best, np.arange(best.size), 0] if not fit_gain else a.reshape(-1)[best]
    return t.reshape(-1)[best], alpha


def _fi_estimates(rec: Recording, refp: np.ndarray | None, fit_gain: bool) -> dict[str, Estimate]:
    """Leak ``Isoma_dpi_tau`` and gain ``alpha_soma`` per neuron from the f-I curve."""
    protocol = get_protocol(rec)
    rate = protocol.features(rec)["rate"][0]  # (N, L)
    levels = np.asarray(protocol.levels)
    net = _network_values(rec)
    refp = net["soma_refP"] if refp is None else np.where(np.isfinite(refp), refp, net["soma_refP"])
    with np.errstate(divide="ignore"):
        isi = np.where(rate >= protocol.min_rate, 1.0 / rate, np.nan)
    n = rate.shape[0]
    i_tau, alpha = np.full(n, np.nan), np.full(n, np.nan)
    usable = np.isfinite(isi).sum(1) >= 2
    if not usable.any():
        return {}
    t0, a0 = _fi_start(levels, isi[usable], {k: v[usable] for k, v in net.items()}, refp[usable], fit_gain)
    for j, i in enumerate(np.flatnonzero(usable)):
        i_tau[i], alpha[i] = _fit_neuron(levels, isi[i], {k: v[i] for k, v in net.items()}, refp[i], t0[j], a0[j],
                                         fit_gain)
    out = {}
    for name, values in (("Isoma_dpi_tau", i_tau), ("alpha_soma", alpha))[:2 if fit_gain else 1]:
        est = _estimate(values, "fi: rate per level (ISI of the soma's steady state)")
        if est is not None:
            out[name] = est
    return out


def _fit_neuron(levels, isi, net, refp, i_tau0, alpha0, fit_gain: bool) -> tuple[float, float]:
    """Least squares in log ISI over the firing levels; the start where the fit fails."""
    ok = np.isfinite(isi)
    lv, y = levels[ok], np.log(isi[ok])

    def residual(x):
        alpha = np.exp(x[1]) if fit_gain else alpha0
        model = fi_isi(lv, np.exp(x[0]), alpha, net, refp, np.exp(y))
        # below the model's rheobase: a large but smooth penalty that points up the current
        return np.where(np.isfinite(model), np.log(np.where(np.isfinite(model), model, 1.0)) - y, 5.0)

    x0 = np.log([i_tau0, alpha0][:2 if fit_gain else 1])
    lo, hi = np.log([1e-15, 0.1][:x0.size]), np.log([1e-7, 1000.0][:x0.size])
    try:
        fit = least_squares(residual, x0, bounds=(lo, hi), x_scale=1.0)
        x = fit.x if np.all(np.isfinite(fit.x)) else x0
    except ValueError:  # a start outside the bounds or a NaN residual at the start
        x = x0
    return float(np.exp(x[0])), float(np.exp(x[1])) if fit_gain else float(alpha0)


def first_estimates(target_or_recordings: Any, *, fit_gain: bool = True) -> dict[str, Estimate]:
    """Closed-form first estimates from whatever the target holds (module docstring).

    Args:
        target_or_recordings: a ``Target`` (its ``recordings``) or a dict protocol name ->
            Recording (v2, experiment attached), each of one chip (batch = the protocol's
            conditions).
        fit_gain: estimate ``alpha_soma`` from the f-I curve with the leak (True), or hold
            it at the network's value and estimate the leak alone (when the gain is not
            searched: a 1-parameter fit per neuron is better conditioned).

    Returns:
        name -> :class:`Estimate`, for the parameters the data give: ``I<X>_tau`` and
        ``alpha_<X>*I<X>_w0`` from kernels with traces, ``soma_refP`` from refractory,
        ``Isoma_dpi_tau`` and ``alpha_soma`` from fi. Parameters the target cannot give are
        absent (the log says which protocol would give them).

    Raises:
        RecordingError: not a target or a dict of Recordings; a recording without its protocol.
    """
    recs = _recordings(target_or_recordings)
    out: dict[str, Estimate] = {}
    if "refractory" in recs:
        est = _estimate(get_protocol(recs["refractory"]).features(recs["refractory"])["refractory"][0],
                        "refractory: refractory (max rate)")
        if est is not None:
            out["soma_refP"] = est
    if "kernels" in recs:
        out.update(_kernel_estimates(recs["kernels"]))
    if "fi" in recs:
        refp = out["soma_refP"].per_neuron if "soma_refP" in out else None
        out.update(_fi_estimates(recs["fi"], refp, fit_gain))
    missing = {"fi": ("Isoma_dpi_tau", "alpha_soma"), "refractory": ("soma_refP",),
               "kernels (with traces)": ("Iampa_tau", "alpha_ampa*Iampa_w0")}
    for protocol, names in missing.items():
        lacking = [n for n in names if n not in out]
        if lacking:
            log.info("no first estimate of %s: the target has no usable %s recording", lacking, protocol)
    return out


def start_values(estimates: Mapping[str, Estimate], known: Mapping[str, float]) -> dict[str, float]:
    """Start values for a fit from first estimates.

    A combination (``alpha_ampa*Iampa_w0``) gives its weight factor (``Iampa_w0``) with the
    other factors at their value in ``known`` (e.g. ``alpha_ampa`` from the table): the
    product is what the data fix, so any split that keeps it starts the fit equally well.

    Args:
        estimates: from :func:`first_estimates`.
        known: name -> value (SI) of the other factors of the combinations.

    Returns:
        name -> value (SI): every plain estimate, and the weight of every combination whose
        other factors ``known`` gives.
    """
    out: dict[str, float] = {}
    for name, est in estimates.items():
        if est.combination is None:
            out[name] = est.value
            continue
        solve = next(n for n in est.combination if n.endswith("_w0"))
        others = [n for n in est.combination if n != solve]
        if all(n in known for n in others):
            out[solve] = est.value / float(np.prod([known[n] ** est.combination[n] for n in others]))
    return out
