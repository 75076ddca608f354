r"""Gradients of spike-only observables from the exact pathwise derivative of the membrane.

Measured (``benchmarks/gradient_fit.py``, ``tests/fitting/test_gradient.py``): the surrogate
gradient of a spike count through a run of many spikes is useless for fitting. Each reset
multiplies the tangent by the surrogate's slope times ``(Ireset - Isoma_th) / Isoma_th``, so
over tens of spikes the gradient of a rate by ``ln Isoma_dpi_tau`` reaches 1e13..1e51 with
either sign (fast_sigmoid) or 1e2..1e10 with random signs (straight_through), where finite
differences give +40..+80 Hz per unit of log.

What works: run with ``surrogate="none"`` (spikes fixed, exact pathwise derivatives of the
states, reset to ``Isoma_reset``) and record ``Isoma_mem`` every step. A spike in step k
means the membrane, ``a`` at the start of step k (the trace's sample k), crossed threshold
during the step; the log-linear growth of the step before (``b`` = sample k - 1) places the
crossing at the fraction

    phi = ln(Isoma_th / a) / ln(a / b)      (clipped to [0, 1]; no gradient where clipped)

so the spike time ``t = (k + phi) dt`` moves continuously with the parameters
(``dt / dp = -(d ln a / dp) / (d ln a / dt)``, the implicit-function derivative of the
crossing). The values use the phases too (they differ from the protocols' whole-step
rates by about 1e-4 relative). The pathwise derivative restarts at every reset (the reset step is fixed), so
``d phi_j`` is the derivative of the j-th interval from its reset to its crossing: the
mean ISI of the spikes in a window gets the value ``(t_last - t_first) / (n - 1)`` and the
gradient ``dt * mean_j d phi_j`` over the intervals. With fewer than 2 spikes in the
window the rate is the count rate (as ``SpikeIndex.rate`` falls back for the target), and a
silent candidate where the target fires gets ``ln(Isoma_th / max_t Isoma_mem)`` (> 0) added
to its error, whose gradient raises the membrane towards threshold.

- :func:`isi_rate`: (B, N) Hz, the rate ``1 / mean ISI`` with that gradient.
- :func:`isi_rate_loss`: ``e = ln((r_model + floor) / (r_target + floor))`` per condition, as
  ``dynacal.losses.rate_loss``, with the target's rate from ``SpikeIndex.rate`` (the mean
  ISI, what ``FICurve`` reports), a :class:`~dynacal.losses.PerNeuron`.
- :class:`SpikeTimeObjective`: the objective the gradient fitter uses (``evaluate(core,
  factors, scales) -> Score`` as ``fitting/objective.py``): per recording of the target the
  ISI-rate loss in each of its protocol's windows, and where the target has synapse traces
  the log-trace error of each (``losses.trace_loss``'s definition, smooth: a synapse does
  not spike), all weighted 1 (``losses.combine``).

Limit (measured, ``benchmarks/gradient_fit.py``): with adaptation on, the interval's
derivative holds the AHP's jumps at their steps, so it leaves out the feedback of an
earlier spike on the adaptation current; at the table's defaults the gradient of an f-I
rate by ``ln Isoma_dpi_tau`` is 0.9..3.8x the finite difference (the sign is right).
Without adaptation it agrees with finite differences within their step quantisation
(about 15 %, ``tests/fitting/test_spike_time.py``).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from typing import Any, Mapping, NamedTuple

from dynacal import get_backend, losses, metrics
from dynacal.errors import ParameterError, RecordingError
from dynacal.experiment import split_sets
from dynacal.protocols import SpikeIndex, get_protocol
from dynacal.protocols.kernels import TRACE_OF
from dynacal.recording import Recording

__all__ = ["isi_rate", "isi_rate_loss", "RECORD", "SpikeTimeObjective", "Score", "windows"]

#: What the model run needs: ``record=RECORD, record_every=1`` (and ``surrogate="none"``).
RECORD = ("Isoma_mem",)


def _membrane(rec: Recording) -> Tensor:
    if "Isoma_mem" not in rec.traces or rec.trace_every != 1 or len(rec.trace_neurons) != rec.n_neurons:
        raise RecordingError("isi_rate needs the model's Isoma_mem of every neuron at every step: run it with "
                             "record=('Isoma_mem',), record_every=1 (and surrogate='none').")
    return rec.traces["Isoma_mem"]  # (T, S, N)


def isi_rate(rec: Recording, threshold: Tensor, start: int = 0, stop: int | None = None) -> tuple[Tensor, Tensor]:
    """Rate from the mean ISI of the spikes in ``[start, stop)`` steps, with the gradient of
    the crossing times (module docstring).

    Args:
        rec: the model's run (S sets, N neurons), ``Isoma_mem`` traced every step.
        threshold: ``Isoma_th`` (S or 1, N or 1) in A (the params the run used).
        start, stop: window in steps.

    Returns:
        ``(rate, drive)``: rate (S, N) Hz, NaN where fewer than 2 spikes; drive (S, N),
        ``ln(max_t Isoma_mem / Isoma_th)`` over the window (< 0: silent), differentiable.
    """
    v = _membrane(rec)
    T, S, N = v.shape
    stop = T if stop is None else int(stop)
    th = threshold.to(v.dtype).expand(S, N)
    sel = (rec.spike_step >= max(start, 1)) & (rec.spike_step < stop)
    k, s, n = (np.asarray(x)[sel].astype(np.int64) for x in (rec.spike_step, rec.spike_batch, rec.spike_neuron))
    order = np.lexsort((k, n, s))
    k, s, n = k[order], s[order], n[order]
    kt, st, nt = (torch.as_tensor(x, device=v.device) for x in (k, s, n))
    a, b = v[kt, st, nt].clamp(min=1e-300), v[kt - 1, st, nt].clamp(min=1e-300)
    growth = torch.log(a / b)
    raw = torch.log(th[st, nt] / a) / torch.where(growth > 0, growth, torch.ones_like(growth))
    inside = (growth > 0) & (raw >= 0) & (raw <= 1)
    phi = torch.where(inside, raw, raw.detach().clamp(0, 1) * (growth > 0))
    first = np.ones(k.size, dtype=bool)
    first[1:] = (s[1:] != s[:-1]) | (n[1:] != n[:-1])
    flat = torch.as_tensor(s * N + n, device=v.device)
    count = torch.zeros(S * N, dtype=v.dtype, device=v.device).index_add_(0, flat, torch.ones_like(phi))
    # the value with the phases too: smooth, so a line search sees what the gradient says (in
    # whole steps, as SpikeIndex counts, the loss is flat within a step and zero on a plateau
    # around the truth that is 0.6 % wide for a fast neuron)
    t = (kt.to(v.dtype) + phi.detach()) * rec.dt
    t_first = torch.full((S * N,), np.inf, dtype=v.dtype, device=v.device).scatter_reduce(0, flat, t, "amin")
    t_last = torch.full((S * N,), -np.inf, dtype=v.dtype, device=v.device).scatter_reduce(0, flat, t, "amax")
    later = torch.as_tensor(~first, device=v.device)
    shift = torch.where(later, phi - phi.detach(), torch.zeros_like(phi)) * rec.dt
    grad_part = torch.zeros(S * N, dtype=v.dtype, device=v.device).index_add_(0, flat, shift)
    two = count >= 2
    intervals = torch.where(two, count - 1, torch.ones_like(count))
    mean_isi = torch.where(two, (t_last - t_first) / intervals + grad_part / intervals, torch.ones_like(count))
    rate = torch.where(two, 1.0 / mean_isi, torch.full_like(count, float("nan"))).reshape(S, N)
    drive = torch.log(v[start:stop].amax(0).clamp(min=1e-300) / th)
    return rate, drive


def _counts(rec: Recording, start: int, stop: int) -> np.ndarray:
    sel = (rec.spike_step >= start) & (rec.spike_step < stop)
    counts = np.zeros((rec.batch, rec.n_neurons))
    np.add.at(counts, (rec.spike_batch[sel], rec.spike_neuron[sel]), 1)
    return counts


def isi_rate_loss(model: Recording, target: Recording, threshold: Tensor, *,
                  window: tuple[float, float] | None = None, rate_floor: float = 1.0,
                  n_conditions: int | None = None) -> losses.PerNeuron:
    """Log rate error per condition through the crossing-time gradient, (B, N).

    Args:
        model: B * L sets, ``Isoma_mem`` traced every step (:data:`RECORD`).
        target: L sets (or 1), spikes only is enough.
        threshold: the model's ``Isoma_th`` (B * L or 1, N or 1), A.
        window: (t0, t1) s; default the whole run.
        rate_floor: Hz added to both rates.
    """
    p = metrics.pair_sets(model, target, n_conditions)
    start, stop = losses._steps(model, window)
    th = torch.as_tensor(threshold)
    if th.shape[0] == p.n_candidates and p.n_conditions > 1:  # per candidate -> per set b * L + l
        th = th.repeat_interleave(p.n_conditions, 0)
    r_model, drive = isi_rate(model, th, start, stop)
    r_target = torch.as_tensor(SpikeIndex(target).rate(start, stop), dtype=torch.float64)
    m, d = split_sets(r_model.to(torch.float64), p.n_conditions), split_sets(drive.to(torch.float64), p.n_conditions)
    t = r_target.expand(p.n_conditions, -1) if target.batch == 1 else r_target
    t = t.expand_as(m)
    # fewer than 2 spikes: the count rate, as SpikeIndex.rate falls back for the target
    length = (stop - start) * model.dt
    counts = torch.as_tensor(_counts(model, start, stop), dtype=torch.float64)
    c = split_sets(counts, p.n_conditions)
    fired = torch.isfinite(m)
    value = torch.where(fired, m, c / length)
    e = torch.log((value + rate_floor) / (t + rate_floor))
    # silent candidate, firing target: the membrane's distance to threshold gives the gradient
    e = torch.where((c == 0) & (t > 0), e - torch.relu(-d), e)
    ok = np.ones(tuple(t.shape[1:]), dtype=bool)
    return losses._reduce(e ** 2, ok, ok[None], 0.0, "", losses._unstable(model, p))


class Score(NamedTuple):
    """As ``fitting/objective.py``'s: ``total`` (B, N) tensor, ``terms`` name -> PerNeuron,
    ``unstable`` bool (B, N)."""

    total: Tensor
    terms: dict[str, losses.PerNeuron]
    unstable: np.ndarray


def windows(rec: Recording) -> list[tuple[float, float]]:
    """The windows (s) in which a protocol's rates are measured: after ``settle`` for the
    DC protocols, each segment of a rate transfer, else the whole run."""
    try:
        protocol = get_protocol(rec)
    except RecordingError:
        return [(0.0, rec.duration)]
    end, settle = rec.duration, float(getattr(protocol, "settle", 0.0))
    if protocol.name == "rate_transfer":
        if protocol.separate_runs:
            return [(settle, protocol.segment)]
        out = [(settle, protocol.baseline)]
        for starts in protocol.segments():
            out += [(float(s) * rec.dt + settle, float(s) * rec.dt + protocol.segment) for s in starts]
        return out
    return [(settle, end)]


class SpikeTimeObjective:
    """A differentiable objective from a target's recordings (module docstring).

    Args:
        target: a Target (``recordings``) or a dict name -> Recording (one chip each).
        backend: a torch backend with ``surrogate="none"`` (default: that, engine "auto").
        rate_floor: Hz, as :func:`isi_rate_loss`.
        traces: use the target's synapse traces where it has them (False: spikes only).

    The candidates' parameters are built as ``fitting/objective.py`` builds them: value
    [b, n] = core[b] x factor[b, n], a factor alone multiplying the experiment's own value.
    """

    def __init__(self, target: Any, *, backend=None, rate_floor: float = 1.0, traces: bool = True):
        recs = getattr(target, "recordings", target)
        if not isinstance(recs, Mapping) or not recs:
            raise RecordingError("SpikeTimeObjective needs a Target or a non-empty dict name -> Recording.")
        self.recordings = dict(recs)
        self.backend = backend or get_backend("torch", surrogate="none")
        if getattr(self.backend, "surrogate", "none") != "none":
            raise ParameterError(f"the backend's surrogate is {self.backend.surrogate!r}: the crossing-time "
                                 f"gradient needs exact pathwise derivatives; pass get_backend('torch', "
                                 f"surrogate='none').")
        sizes = {r.require_experiment().network.n_neurons for r in self.recordings.values()}
        if len(sizes) != 1:
            raise RecordingError(f"the recordings hold different numbers of neurons {sorted(sizes)}; give "
                                 f"recordings of the same neurons.")
        self.n_neurons = sizes.pop()
        self.rate_floor, self.use_traces = float(rate_floor), bool(traces)

    def _params(self, experiment, core, factors):
        base = experiment.network.params()
        cands = {}
        for name in set(core) | set(factors):
            value = core[name].reshape(-1, 1) if name in core else getattr(base, name)
            cands[name] = value * factors[name] if name in factors else value.expand(-1, self.n_neurons)
        return experiment.network.params(cands)

    def evaluate(self, core: Mapping[str, Tensor], factors: Mapping[str, Tensor] | None = None,
                 scales: Mapping[str, Tensor] | None = None) -> Score:
        """Per-neuron total (B, N) of B candidates, with gradients (module docstring)."""
        if scales:
            raise ParameterError(f"SpikeTimeObjective fits no condition scales (got {sorted(scales)}); use "
                                 f"fitting.objective.Objective for board targets.")
        core = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in core.items()}
        factors = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in (factors or {}).items()}
        terms = {}
        for name, target in self.recordings.items():
            terms.update(self._terms(name, target, core, factors))
        combined = losses.combine(terms, {k: 1.0 for k in terms})
        B = combined.values.shape[0]
        unstable = combined.unstable if combined.unstable is not None else np.zeros((B, self.n_neurons), bool)
        return Score(combined.values, terms, unstable)

    def _terms(self, name, target, core, factors) -> dict[str, losses.PerNeuron]:
        experiment = target.require_experiment()
        params = self._params(experiment, core, factors)
        traced = [t for t in TRACE_OF.values() if t in target.traces] if self.use_traces else []
        model = self.backend.run(experiment, params, record=RECORD + tuple(traced), record_every=1)
        out = {}
        for i, window in enumerate(windows(target)):
            out[f"{name}:rate{i}"] = isi_rate_loss(model, target, params.Isoma_th, window=window,
                                                   rate_floor=self.rate_floor)
        for trace in traced:
            out[f"{name}:{trace}"] = _trace_term(model, target, trace)
        return out


def _trace_term(model: Recording, target: Recording, name: str) -> losses.PerNeuron:
    """``losses.trace_loss`` for a model traced every step and a target every k steps."""
    p = metrics.pair_sets(model, target)
    every, cols = target.trace_every, np.asarray(target.trace_neurons)
    m = model.traces[name][::every][: target.traces[name].shape[0]][:, :, torch.as_tensor(cols)]
    t = target.traces[name].detach()
    t = t.expand(-1, p.n_conditions, -1) if target.batch == 1 else t
    e2 = metrics.trace_error_squared(m, t).reshape(p.n_candidates, p.n_conditions, -1)
    full = torch.zeros(p.n_candidates, p.n_conditions, model.n_neurons, dtype=torch.float64)
    full = full.index_copy(2, torch.as_tensor(cols), e2.to(torch.float64))
    t_ok = np.zeros((p.n_conditions, model.n_neurons), bool)
    t_ok[:, cols] = True
    return losses._reduce(full, t_ok, np.ones((1, *t_ok.shape), bool), 0.0, f"target did not trace {name}",
                          losses._unstable(model, p))
