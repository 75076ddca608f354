r"""Per-neuron losses: a target of L conditions against B candidates x L conditions.

**Pairing.** The target is one chip measured under L conditions (a recording of L sets, in
the order of its protocol's conditions); the model is B candidates simulated under the same
conditions (B * L sets, set ``b * L + l`` = candidate b under condition l, as
``dynacal.experiment.split_sets`` splits them). Every loss compares model set ``b * L + l``
with target set l, neuron by neuron (``metrics.pair_sets``), and reduces over conditions:

    values[b, n] = mean over the conditions l where the target has data of e[b, l, n] ** 2

with ``e`` the error of one condition defined by each loss below (dimensionless unless
said), so ``sqrt(values)`` is an RMS error in the units of ``e``. Where the target has data
and the candidate has none (too few spikes, a failed fit), ``e ** 2`` is ``missing``: the
candidate is penalised, never silently scored, and ``penalised`` says where.

**Result.** A :class:`PerNeuron`: ``values`` float64 tensor (B, N), NaN-free and >= 0, 0 at
masked neurons, with gradients where the model's raster or traces carry them; ``mask`` bool
(N,), True where the target has data in at least one condition; ``reasons``, why the other
neurons are masked (reason -> their indices); ``penalised`` bool (B, N); ``unstable`` bool
(B, N), candidate b Euler-unstable at neuron n in some condition (``Recording.unstable``),
or None when the model does not say. :func:`combine` weighs several losses into one.

The losses (``e`` per condition; "rate" is spikes in the window / its length):

- :func:`rate_loss`: ``e = ln((r_model + rate_floor) / (r_target + rate_floor))`` with
  ``rate_floor`` in Hz (default 1 Hz): a log ratio for firing neurons that stays finite
  for silent ones. Through the surrogate raster when the model has one (differentiable).
- :func:`isi_loss`: ``"mean"``: ``e = ln(isi_model / isi_target)`` (target needs >= 2 spikes;
  a candidate with fewer gets the window's length as its ISI, a lower bound of the ISI it did
  not show); ``"cv"``: ``e = cv_model - cv_target`` (target needs >= 3 spikes, a candidate
  with fewer gets ``missing``).
- :func:`van_rossum_loss`: ``e = D`` (``metrics.van_rossum_distance``; one unmatched spike
  gives 1); differentiable through the raster.
- :func:`victor_purpura_loss`: ``e = D_VP / max(n_target, 1)``, the edit cost per target spike.
- :func:`coincidence_loss`: ``e = clip(1 - Gamma, 0, 2)`` (Kistler's Gamma,
  ``metrics.gamma_coincidence``); a silent target is masked (Gamma needs target spikes); a
  candidate firing at ``1 / (2 delta)`` or faster, where Gamma is undefined, gets ``e = 1``
  (chance) and is penalised.
- :func:`trace_loss`: ``e ** 2`` = mean over time of ``(ln max(I_model, floor) - ln
  max(I_target, floor)) ** 2`` (``metrics.trace_error``); neurons the target (or the model)
  did not trace are masked; differentiable.
- :func:`kernel_loss`: the synaptic kernel of each trace (``features.kernel_fit``):
  ``"tau"``: ``e = ln(tau_model / tau_target)``; ``"amplitude"``: ``e = (a_model -
  a_target) / |a_target|``; a target fit that failed masks the neuron; differentiable.
- :func:`feature_loss`: any protocol feature, target ``(1, N, ...)`` against model ``(B, N,
  ...)`` (the trailing axes count as conditions): ``e = ln(m / t)`` (``scale="log"``) or
  ``(m - t) / scale`` (a float, in the feature's unit); NaN in the target masks.
"""

from __future__ import annotations

from typing import Mapping, NamedTuple

import numpy as np
import torch
from torch import Tensor

from . import metrics
from .errors import ParameterError, RecordingError
from .experiment import split_sets
from .features import kernel_fit, rate
from .recording import Recording

__all__ = ["PerNeuron", "combine", "rate_loss", "isi_loss", "van_rossum_loss", "victor_purpura_loss",
           "coincidence_loss", "trace_loss", "kernel_loss", "feature_loss"]

#: Default ``e ** 2`` of a candidate that shows no value where the target has one: as bad
#: as a log error of 2 (a factor e^2 = 7.4) or a CV error of 2.
MISSING = 4.0


class PerNeuron(NamedTuple):
    """Per-neuron loss of B candidates (module docstring).

    Attributes:
        values: float64 tensor (B, N), >= 0, NaN-free; 0 where ``mask`` is False.
        mask: bool (N,), True where the target has data.
        reasons: why neurons are masked: reason -> int64 neuron indices.
        penalised: bool (B, N), True where ``values`` holds ``missing`` for some condition.
        unstable: bool (B, N) Euler-unstable (set, neuron) of the model in any condition,
            or None when the model recording does not carry it.
    """

    values: Tensor
    mask: np.ndarray
    reasons: dict[str, np.ndarray]
    penalised: np.ndarray
    unstable: np.ndarray | None

    def mean(self) -> Tensor:
        """Mean over the neurons with data, (B,); 0 when none has data."""
        m = torch.as_tensor(self.mask, device=self.values.device)
        return self.values[:, m].sum(1) / max(int(m.sum()), 1)


def _reduce(err2: Tensor, target_ok: np.ndarray, model_ok: Tensor | np.ndarray, missing: float,
            reason: str, unstable: np.ndarray | None) -> PerNeuron:
    """(B, L, N) squared errors -> PerNeuron; ``target_ok`` (L, N), ``model_ok`` (B, L, N)."""
    if not missing >= 0:
        raise ParameterError(f"missing = {missing} must be a finite value >= 0 (the squared error of a "
                             f"candidate without a value), e.g. {MISSING}.")
    t_ok = torch.as_tensor(np.asarray(target_ok, dtype=bool), device=err2.device)
    m_ok = torch.as_tensor(model_ok, device=err2.device).to(torch.bool).expand(err2.shape)
    both = t_ok & m_ok
    safe = torch.where(both, err2, torch.zeros_like(err2))  # NaN-free values and gradients
    e2 = torch.where(both, safe, torch.where(t_ok, torch.full_like(err2, float(missing)), torch.zeros_like(err2)))
    n = t_ok.sum(0)
    values = e2.sum(1) / n.clamp(min=1)
    mask = n.cpu().numpy() > 0
    penalised = (t_ok & ~m_ok).any(1).cpu().numpy()
    reasons = {reason: np.flatnonzero(~mask)} if (~mask).any() else {}
    return PerNeuron(values, mask, reasons, penalised, unstable)


def _unstable(model: Recording, pairing: metrics.Pairing) -> np.ndarray | None:
    u = getattr(model, "unstable", None)
    if u is None:
        return None
    u = np.asarray(u, dtype=bool).reshape(pairing.n_candidates, pairing.n_conditions, -1)
    return u.any(1)


def _split(x: Tensor | np.ndarray, p: metrics.Pairing) -> Tensor:
    """(B * L, N) -> (B, L, N) as a float64 tensor."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    return split_sets(t.to(torch.float64), p.n_conditions)


def _target(x: Tensor | np.ndarray, target: Recording, p: metrics.Pairing) -> Tensor:
    """(L|1, N) target values -> (L, N) float64 tensor."""
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    t = t.detach().to(torch.float64)
    return t.expand(p.n_conditions, *t.shape[1:]) if target.batch == 1 else t


def _steps(rec: Recording, window: tuple[float, float] | None) -> tuple[int, int]:
    if window is None:
        return 0, rec.n_steps
    start, stop = (int(round(w / rec.dt)) for w in window)
    if not 0 <= start < stop <= rec.n_steps:
        raise ParameterError(f"window = {window} s is not inside the run of {rec.duration:g} s; give "
                             f"(t0, t1) with 0 <= t0 < t1 <= {rec.duration:g}.")
    return start, stop


def rate_loss(model: Recording, target: Recording, *, window: tuple[float, float] | None = None,
              rate_floor: float = 1.0, n_conditions: int | None = None) -> PerNeuron:
    """Log rate error per condition (module docstring), (B, N).

    Args:
        model: B * L sets; its ``raster`` (a differentiable run) gives the gradient.
        target: L sets (or 1).
        window: (t0, t1) in s over which the rate is counted; default the whole run.
        rate_floor: Hz added to both rates (> 0).
        n_conditions: L; default the target's number of sets.
    """
    p = metrics.pair_sets(model, target, n_conditions)
    if not rate_floor > 0:
        raise ParameterError(f"rate_floor = {rate_floor} Hz must be > 0, e.g. 1.0.")
    start, stop = _steps(model, window)
    rates = [rate(metrics.spike_raster(r), r.dt, start, stop) if r.raster is not None
             else torch.as_tensor(_window_counts(r, start, stop) / ((stop - start) * r.dt)) for r in (model, target)]
    m, t = _split(rates[0], p), _target(rates[1], target, p)
    err2 = torch.log((m + rate_floor) / (t + rate_floor)) ** 2
    ok = np.ones(t.shape, dtype=bool)
    return _reduce(err2, ok, ok[None], 0.0, "", _unstable(model, p))


def _window_counts(rec: Recording, start: int, stop: int) -> np.ndarray:
    sel = (rec.spike_step >= start) & (rec.spike_step < stop)
    counts = np.zeros((rec.batch, rec.n_neurons))
    np.add.at(counts, (rec.spike_batch[sel], rec.spike_neuron[sel]), 1)
    return counts


def isi_loss(model: Recording, target: Recording, *, statistic: str = "mean", missing: float = MISSING,
             n_conditions: int | None = None) -> PerNeuron:
    """ISI mean (log) or CV error per condition (module docstring), (B, N); not differentiable.

    Args:
        statistic: ``"mean"`` or ``"cv"``.
        missing: ``e ** 2`` of a candidate with too few spikes for the CV.
    """
    p = metrics.pair_sets(model, target, n_conditions)
    if statistic not in ("mean", "cv"):
        raise ParameterError(f"statistic = {statistic!r}: give 'mean' or 'cv'.")
    m = _split(metrics.isi_statistics(model)[statistic], p)
    t = _target(metrics.isi_statistics(target)[statistic], target, p)
    t_ok, m_ok = torch.isfinite(t), torch.isfinite(m)
    t_safe = torch.where(t_ok, t, torch.ones_like(t))
    if statistic == "mean":  # too few spikes: the run's length stands for the ISI not shown
        err2 = torch.log(torch.where(m_ok, m, torch.full_like(m, model.duration)) / t_safe) ** 2
        out = _reduce(err2, t_ok.numpy(), torch.ones_like(m_ok), missing,
                      "target has fewer than 2 spikes in every condition", _unstable(model, p))
        return out._replace(penalised=(t_ok & ~m_ok).any(1).numpy())
    err2 = (torch.where(m_ok, m, torch.zeros_like(m)) - t_safe) ** 2
    return _reduce(err2, t_ok.numpy(), m_ok, missing, "target has fewer than 3 spikes in every condition",
                   _unstable(model, p))


def van_rossum_loss(model: Recording, target: Recording, tau: float, *, n_conditions: int | None = None) -> PerNeuron:
    """Squared van Rossum distance, mean over conditions, (B, N); differentiable through the
    model's raster.

    Args:
        tau: filter time constant in s (e.g. 10e-3).
    """
    p = metrics.pair_sets(model, target, n_conditions)
    d2 = metrics.van_rossum_squared(metrics.spike_raster(model), metrics.spike_raster(target), tau, model.dt)
    m = _split(d2, p)
    ok = np.ones((p.n_conditions, model.n_neurons), dtype=bool)
    return _reduce(m, ok, ok[None], 0.0, "", _unstable(model, p))


def victor_purpura_loss(model: Recording, target: Recording, q: float, *, n_conditions: int | None = None) -> PerNeuron:
    """Victor-Purpura distance per target spike, squared, mean over conditions, (B, N).

    Args:
        q: cost per second of moving a spike, 1/s (e.g. 100 for 10 ms).
    """
    p = metrics.pair_sets(model, target, n_conditions)
    d = _split(metrics.victor_purpura_distance(model, target, q), p)
    n_target = _target(target.spike_counts(), target, p)
    ok = np.ones((p.n_conditions, model.n_neurons), dtype=bool)
    return _reduce((d / n_target.clamp(min=1)) ** 2, ok, ok[None], 0.0, "", _unstable(model, p))


def coincidence_loss(model: Recording, target: Recording, delta: float = 2e-3, *,
                     n_conditions: int | None = None) -> PerNeuron:
    """``(1 - Gamma) ** 2``, mean over conditions, (B, N) (module docstring).

    Args:
        delta: coincidence window in s (+-delta).
    """
    p = metrics.pair_sets(model, target, n_conditions)
    gamma = _split(metrics.gamma_coincidence(model, target, delta), p)
    t_ok = _target(target.spike_counts(), target, p) > 0
    chance = _split(model.spike_counts() / model.duration, p) * (2 * delta) >= 1
    e = torch.where(chance | ~torch.isfinite(gamma), torch.ones_like(gamma), (1 - gamma).clamp(0, 2))
    out = _reduce(e ** 2, t_ok.numpy(), torch.ones_like(t_ok[None]), 0.0,
                  "target silent in every condition", _unstable(model, p))
    return out._replace(penalised=(chance & t_ok).any(1).numpy())


def _traced(model: Recording, target: Recording, name: str, p: metrics.Pairing):
    """Model (T, B * L, R) and target (T, L, R) traces of the neurons both traced, those
    neurons' indices (R,), and the reasons for the others."""
    n = target.n_neurons
    if name not in target.traces:
        return None, None, np.zeros(0, np.int64), {f"target has no {name} trace": np.arange(n)}
    if name not in model.traces:
        raise RecordingError(f"the model has no {name} trace; the target has one: run the model with "
                             f"record=[{name!r}] (and record_every={target.trace_every}).")
    if model.trace_every != target.trace_every or model.traces[name].shape[0] != target.traces[name].shape[0]:
        raise RecordingError(f"{name}: the model's trace has {model.traces[name].shape[0]} samples every "
                             f"{model.trace_every} steps, the target's {target.traces[name].shape[0]} every "
                             f"{target.trace_every}; run the model with record_every={target.trace_every}.")
    common, t_col, m_col = np.intersect1d(target.trace_neurons, model.trace_neurons, return_indices=True)
    reasons = {}
    untraced = np.setdiff1d(np.arange(n), target.trace_neurons)
    if untraced.size:
        reasons[f"target did not trace {name}"] = untraced
    lost = np.setdiff1d(target.trace_neurons, model.trace_neurons)
    if lost.size:
        reasons[f"model did not trace {name}"] = lost
    t = target.traces[name][:, :, torch.as_tensor(t_col)].detach()
    t = t.expand(-1, p.n_conditions, -1) if target.batch == 1 else t
    return model.traces[name][:, :, torch.as_tensor(m_col)], t, common.astype(np.int64), reasons


def _scatter(err2: Tensor, ok: Tensor, cols: np.ndarray, p: metrics.Pairing, n: int):
    """(B, L, R) errors and model-ok flags of neurons ``cols`` -> (B, L, N) and target ok (L, N)."""
    full = torch.zeros(p.n_candidates, p.n_conditions, n, dtype=torch.float64, device=err2.device)
    full_ok = torch.ones(full.shape, dtype=torch.bool, device=err2.device)
    index = torch.as_tensor(cols, device=err2.device)
    full = full.index_copy(2, index, err2.to(torch.float64))
    full_ok = full_ok.index_copy(2, index, ok)
    t_ok = np.zeros((p.n_conditions, n), dtype=bool)
    t_ok[:, cols] = True
    return full, full_ok, t_ok


def trace_loss(model: Recording, target: Recording, name: str, *, floor: float = 1e-15,
               n_conditions: int | None = None) -> PerNeuron:
    """Mean square log-current error of trace ``name`` (e.g. ``"Iampa"``), mean over
    conditions, (B, N) in ln^2; differentiable through the model's traces.

    Args:
        floor: A; currents below it count as it.

    Raises:
        RecordingError: the target has the trace and the model not, or they are sampled differently.
    """
    p = metrics.pair_sets(model, target, n_conditions)
    m, t, cols, reasons = _traced(model, target, name, p)
    n = model.n_neurons
    if m is None:
        zero = torch.zeros(p.n_candidates, p.n_conditions, n, dtype=torch.float64)
        return _reduce(zero, np.zeros((p.n_conditions, n), bool), zero > -1, 0.0, "", None)._replace(reasons=reasons)
    e2 = metrics.trace_error_squared(m, t, floor=floor)  # (B * L, R)
    e2 = e2.reshape(p.n_candidates, p.n_conditions, -1)
    full, ok, t_ok = _scatter(e2, torch.ones_like(e2, dtype=torch.bool), cols, p, n)
    return _reduce(full, t_ok, ok, 0.0, "", _unstable(model, p))._replace(reasons=reasons)


def kernel_loss(model: Recording, target: Recording, name: str, starts, *, what: str = "tau",
                fit_min: float = 2e-12, fit_span: float = 0.05, missing: float = MISSING,
                n_conditions: int | None = None) -> PerNeuron:
    """Kernel time constant (log) or amplitude (relative) error of trace ``name`` (module
    docstring), (B, N); differentiable through the model's traces.

    Args:
        name: synapse trace, e.g. ``"Iampa"``.
        starts: int (E,), first step each input acts in (``SynapticKernels.event_lists()[k] + 1``).
        what: ``"tau"`` or ``"amplitude"``.
        fit_min, fit_span: as in ``SynapticKernels`` (A, s).
        missing: ``e ** 2`` of a candidate whose fit failed.
    """
    if what not in ("tau", "amplitude"):
        raise ParameterError(f"what = {what!r}: give 'tau' or 'amplitude'.")
    p = metrics.pair_sets(model, target, n_conditions)
    m, t, cols, reasons = _traced(model, target, name, p)
    n = model.n_neurons
    if m is None:
        return trace_loss(model, target, name, n_conditions=p.n_conditions)
    fit = lambda x: kernel_fit(x, starts, model.trace_every, model.dt, fit_min=fit_min, fit_span=fit_span)  # noqa: E731
    fm, ft = fit(m), fit(t.to(m.dtype))  # (B * L, R), (L, R)
    tile = lambda x: x.repeat(p.n_candidates, 1)  # noqa: E731  target set l at b * L + l
    if what == "tau":
        t_valid, tt = ft.valid, tile(torch.where(ft.valid, ft.tau, torch.ones_like(ft.tau)))
        err2, m_ok = torch.log(torch.where(fm.valid, fm.tau, tt) / tt) ** 2, fm.valid
    else:
        t_valid = ft.amplitude != 0
        ta = tile(torch.where(t_valid, ft.amplitude, torch.ones_like(ft.amplitude)))
        err2, m_ok = ((fm.amplitude - ta) / ta.abs()) ** 2, torch.ones_like(fm.valid)
    split = lambda x: x.reshape(p.n_candidates, p.n_conditions, -1)  # noqa: E731
    full, ok, t_ok = _scatter(split(err2), split(m_ok), cols, p, n)
    t_ok[:, cols] &= t_valid.cpu().numpy()
    failed = cols[~t_ok[:, cols].any(0)]
    if failed.size:
        reasons[f"kernel fit of {name} failed in the target"] = failed
    return _reduce(full, t_ok, ok, missing, "", _unstable(model, p))._replace(reasons=reasons)


def feature_loss(model: np.ndarray | Tensor, target: np.ndarray | Tensor, *, scale: str | float = "log",
                 missing: float = MISSING) -> PerNeuron:
    """Error of one protocol feature (module docstring), (B, N).

    Args:
        model: the feature of B candidates, (B, N, ...) (a protocol's ``features`` of the model).
        target: the same feature of the target, (1, N, ...).
        scale: ``"log"`` (values > 0; a target value <= 0 or NaN is no data) or a float in
            the feature's unit (``e = (m - t) / scale``; NaN is no data).
        missing: ``e ** 2`` of a candidate with NaN (or <= 0 for ``"log"``) where the target has a value.
    """
    m, t = (x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64)) for x in (model, target))
    m, t = m.to(torch.float64), t.detach().to(torch.float64)
    if m.ndim < 2 or t.shape[0] != 1 or t.shape[1:] != m.shape[1:]:
        raise ParameterError(f"feature shapes: model {tuple(m.shape)} and target {tuple(t.shape)}; give the "
                             f"model's (B, N, ...) and the target's (1, N, ...) (one chip).")
    B, N = m.shape[:2]
    m, t = m.reshape(B, N, -1).transpose(1, 2), t.reshape(N, -1).T  # (B, K, N), (K, N)
    if scale == "log":
        t_ok, m_ok = torch.isfinite(t) & (t > 0), torch.isfinite(m) & (m > 0)
        one = torch.ones((), dtype=torch.float64)
        err2 = torch.log(torch.where(m_ok, m, one) / torch.where(t_ok, t, one)) ** 2
    elif isinstance(scale, (int, float)) and scale > 0:
        t_ok, m_ok = torch.isfinite(t), torch.isfinite(m)
        zero = torch.zeros((), dtype=torch.float64)
        err2 = ((torch.where(m_ok, m, zero) - torch.where(t_ok, t, zero)) / float(scale)) ** 2
    else:
        raise ParameterError(f"scale = {scale!r}: give 'log' or a float > 0 in the feature's unit.")
    return _reduce(err2, t_ok.numpy(), m_ok, missing, "target has no value", None)


def combine(terms: Mapping[str, PerNeuron], weights: Mapping[str, float]) -> PerNeuron:
    """Weighted mean of losses per neuron: ``sum_k w_k v_k / sum_k w_k`` over the terms that
    have data for that neuron (so a neuron without, say, ISI data is scored on the rest);
    a neuron is masked when no term has data for it, its reasons prefixed by the term's name.

    Args:
        terms: name -> PerNeuron, all of the same (B, N).
        weights: name -> weight >= 0 (dimensionless, as the terms' values); every term needs one.
    """
    if not terms or set(terms) - set(weights) or any(not weights[k] >= 0 for k in terms):
        raise ParameterError(f"combine needs a weight >= 0 for each of the terms {sorted(terms)}; got {dict(weights)}.")
    shapes = {tuple(t.values.shape) for t in terms.values()}
    if len(shapes) != 1:
        raise ParameterError(f"terms have different shapes {sorted(shapes)}; compare the same candidates and neurons.")
    total = sum(weights[k] * t.values for k, t in terms.items())
    w = sum(weights[k] * t.mask.astype(np.float64) for k, t in terms.items())
    values = total / torch.as_tensor(np.where(w > 0, w, 1.0), device=total.device)
    mask = w > 0
    # the neurons still masked, with each term's reason
    reasons = {f"{k}: {r}": idx[~mask[idx]] for k, t in terms.items() for r, idx in t.reasons.items()
               if (~mask[idx]).any()}
    penalised = np.logical_or.reduce([t.penalised for t in terms.values()])
    unstable = [t.unstable for t in terms.values() if t.unstable is not None]
    return PerNeuron(values, mask, reasons, penalised, np.logical_or.reduce(unstable) if unstable else None)
