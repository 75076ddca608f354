r"""Spike-train and trace distances between a model and a target, per neuron and set.

Every function compares a *model* with a *target* neuron by neuron and returns one value
per model set and neuron. The target is one chip under L conditions (L parameter sets, in
the order of its protocol's conditions); the model is B candidates under the same
conditions, B * L sets, set ``b * L + l`` being candidate b under condition l, which is
compared with target set l (:func:`pair_sets`). L = 1 compares one target set with every
model set; a target with as many sets as the model compares them set by set. The values
here are per model set, shape (B * L, N); ``dynacal.losses`` reduces them over the
conditions to per-neuron losses (B, N) with masks.

- :func:`firing_rate_error`: model rate - target rate (Hz), or relative to the target;
- :func:`isi_statistics`: mean (s) and coefficient of variation of the inter-spike intervals;
- :func:`van_rossum_distance`: in torch and differentiable, on rasters (T, B, N) such as
  ``Recording.raster`` of a differentiable run (:func:`spike_raster` gives the raster of any
  recording). Each train is filtered with ``exp(-t / tau)``; with ``d`` the difference of the
  filtered trains, ``D^2 = (2 / tau) * integral_0^inf d(t)^2 dt``, so one unmatched spike
  gives ``D = 1`` (the normalisation of elephant's ``van_rossum_distance``). With spikes at
  the step times the integral is exact: ``D^2 = (1 - r^2) sum_{k < T-1} d_k^2 + d_{T-1}^2``,
  ``r = exp(-dt / tau)`` and ``d_k`` the filtered difference just after step k;
- :func:`victor_purpura_distance`: the edit distance with cost 1 to add or remove a spike
  and ``q |dt|`` to move one (Victor & Purpura 1996);
- :func:`gamma_coincidence`: Kistler's coincidence factor, ``(N_coinc - 2 nu Delta N_target)
  / (0.5 (N_target + N_model) (1 - 2 nu Delta))`` with nu the model's rate and each model
  spike matched to at most one target spike within +-Delta (1 for identical trains, about
  0 for independent Poisson trains; Kistler et al. 1997, Jolivet et al. 2008);
- :func:`trace_error`: RMS over time of ``ln(model) - ln(target)`` for currents (they span six
  decades), floored at ``floor`` A; in torch and differentiable.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numba
import numpy as np
import torch

from .errors import ParameterError, RecordingError
from .recording import Recording

__all__ = ["Pairing", "pair_sets", "firing_rate_error", "isi_statistics", "spike_raster", "exponential_filter",
           "van_rossum_distance", "van_rossum_squared", "victor_purpura_distance", "gamma_coincidence",
           "trace_error", "trace_error_squared"]


class Pairing(NamedTuple):
    """How the sets of a model recording pair with those of a target.

    Attributes:
        n_candidates: B. n_conditions: L.
        target_set: int64 (B * L,), the target set compared with each model set (``s % L``).
    """

    n_candidates: int
    n_conditions: int
    target_set: np.ndarray


def _declared_conditions(rec: Recording) -> dict | None:
    """The conditions a recording says it was made under: name -> (L,) or (L, N) values,
    from its experiment (schema v2) or its protocol's metadata; None if it does not say."""
    experiment = getattr(rec, "experiment", None)
    if experiment is not None and experiment.conditions:
        return {k: np.asarray(v, dtype=np.float64) for k, v in experiment.conditions.items()}
    # protocols that expand the conditions into the parameters say so in the metadata
    conditions = rec.metadata.get("protocol", {}).get("conditions") if isinstance(rec.metadata, dict) else None
    if conditions is None:  # an experiment without conditions declares one condition
        return None if experiment is None else {}
    return {k: np.asarray(v, dtype=np.float64) for k, v in conditions.items()}


def pair_sets(model: Recording, target: Recording, n_conditions: int | None = None) -> Pairing:
    """Pair the B * L sets of ``model`` with the L sets of ``target`` (module docstring).

    Args:
        model: recording of B * L sets (candidate b, condition l at ``b * L + l``).
        target: recording of L sets, one per condition, or 1 set (L = 1, compared with
            every model set).
        n_conditions: L; default the target's number of sets.

    Raises:
        RecordingError: the recordings are not of the same experiment (neurons, steps,
            dt), the model's sets are not a multiple of L, or both recordings state their
            conditions and these differ (another order, other values).
    """
    if (model.n_neurons, model.n_steps) != (target.n_neurons, target.n_steps) or model.dt != target.dt:
        raise RecordingError(f"model ({model.n_neurons} neurons, {model.n_steps} steps of {model.dt:g} s) and "
                             f"target ({target.n_neurons} neurons, {target.n_steps} steps of {target.dt:g} s) "
                             f"are not recordings of the same experiment.")
    L = target.batch if n_conditions is None else int(n_conditions)
    if target.batch not in (1, L) or L < 1 or model.batch % L:
        raise RecordingError(f"the target has {target.batch} parameter sets and the model {model.batch}; give a "
                             f"target of L sets (one per condition, here L = {L}) and a model of B * L sets "
                             f"(candidate b, condition l at set b * L + l), or a target of 1 set.")
    _check_same_conditions(model, target)
    B = model.batch // L
    return Pairing(B, L, np.tile(np.arange(L, dtype=np.int64), B) if target.batch == L else np.zeros(B * L, np.int64))


def _check_same_conditions(model: Recording, target: Recording) -> None:
    mine, theirs = _declared_conditions(model), _declared_conditions(target)
    if mine is None or theirs is None:
        return
    same = mine.keys() == theirs.keys() and all(
        mine[k].shape == theirs[k].shape and np.allclose(mine[k], theirs[k], rtol=1e-9, atol=0) for k in mine)
    if not same:
        show = lambda c: {k: np.round(v, 15).tolist() for k, v in c.items()}  # noqa: E731
        raise RecordingError(f"the model was run under conditions {show(mine)} and the target under "
                             f"{show(theirs)}; simulate the target's experiment (its conditions, in its order).")


def _pair(model: Recording, target: Recording) -> np.ndarray:
    """The target set of each model set, (B * L,); see :func:`pair_sets`."""
    return pair_sets(model, target).target_set


def _tile_sets(target: torch.Tensor, n_model: int, what: str) -> torch.Tensor:
    """(T, L, ...) target tensor -> (T, B * L, ...): set ``b * L + l`` gets target set l."""
    L = target.shape[1]
    if L == n_model or L == 1:
        return target
    if n_model % L:
        raise ParameterError(f"{what}: the target has {L} sets and the model {n_model}; give L target sets "
                             f"(one per condition) and B * L model sets, or 1 target set.")
    return target.repeat(1, n_model // L, *([1] * (target.ndim - 2)))


def firing_rate_error(model: Recording, target: Recording, *, relative: bool = False) -> np.ndarray:
    """Model rate minus target rate in Hz, (B * L, N) (module docstring); divided by the
    target rate (NaN where it is 0) when ``relative``."""
    target_rates = target.rates()[_pair(model, target)]
    diff = model.rates() - target_rates
    if not relative:
        return diff
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(target_rates > 0, diff / target_rates, np.nan)


def _trains(rec: Recording):
    """Spike times (s) sorted by (set, neuron, time), and offsets (B * N + 1,)."""
    key = rec.spike_batch * rec.n_neurons + rec.spike_neuron
    order = np.lexsort((rec.spike_time, key))
    offsets = np.searchsorted(key[order], np.arange(rec.batch * rec.n_neurons + 1))
    return np.ascontiguousarray(rec.spike_time[order], dtype=np.float64), offsets.astype(np.int64)


def isi_statistics(rec: Recording) -> dict[str, np.ndarray]:
    """``{"mean": ISI mean in s, "cv": ISI std / mean}``, each (B, N); NaN with fewer than 2
    spikes (mean) or 3 spikes (cv). The std is the population one (ddof 0), as elephant's ``cv``."""
    times, offsets = _trains(rec)
    isi = np.diff(times)
    lo, hi = offsets[:-1], offsets[1:] - 1  # ISIs of group g: isi[lo:hi]
    n = np.maximum(hi - lo, 0)
    cs = np.concatenate([[0.0], np.cumsum(isi)])
    cs2 = np.concatenate([[0.0], np.cumsum(isi ** 2)])
    # empty groups at the end start at K, one past the cumulative sums: clip (n = 0 there)
    lo, safe_hi = np.minimum(lo, cs.size - 1), np.minimum(np.maximum(hi, lo), cs.size - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = (cs[safe_hi] - cs[lo]) / n
        var = np.maximum((cs2[safe_hi] - cs2[lo]) / n - mean ** 2, 0.0)
        cv = np.sqrt(var) / mean
    shape = (rec.batch, rec.n_neurons)
    return {"mean": np.where(n >= 1, mean, np.nan).reshape(shape), "cv": np.where(n >= 2, cv, np.nan).reshape(shape)}


def spike_raster(rec: Recording, dtype=torch.float64) -> torch.Tensor:
    """The raster (T, B, N): ``rec.raster`` (with its gradients) when the run kept one,
    else 0/1 from the spike events."""
    if rec.raster is not None:
        return rec.raster
    return torch.as_tensor(rec.dense_spikes(), dtype=dtype)


def exponential_filter(x: torch.Tensor, tau: float, dt: float, *, chunk: int = 4096) -> torch.Tensor:
    """``f_k = sum_{j <= k} x_j exp(-(k - j) dt / tau)`` along the first axis of (T, ...).

    Computed as an FFT convolution (differentiable; columns in chunks to bound memory).
    """
    if not (tau > 0 and dt > 0):
        raise ParameterError(f"tau = {tau} s and dt = {dt} s must be > 0 (e.g. tau = 0.01 for 10 ms).")
    T = x.shape[0]
    flat = x.reshape(T, -1)
    n_fft = 1 << (2 * T - 1).bit_length()
    kernel = torch.exp(-torch.arange(T, dtype=x.dtype, device=x.device) * (dt / tau))
    k_hat = torch.fft.rfft(kernel, n=n_fft)
    parts = [torch.fft.irfft(torch.fft.rfft(flat[:, i:i + chunk], n=n_fft, dim=0) * k_hat[:, None], n=n_fft, dim=0)[:T]
             for i in range(0, flat.shape[1], chunk)]
    out = torch.cat(parts, dim=1) if parts else flat
    return out.reshape(x.shape)


def van_rossum_distance(model: torch.Tensor, target: torch.Tensor, tau: float, dt: float) -> torch.Tensor:
    """Van Rossum distance per set and neuron (module docstring), differentiable in ``model``.

    Args:
        model: spike raster (T, B * L, N), 0/1 or with surrogate gradients.
        target: raster (T, L|1, N) (module docstring: set ``b * L + l`` meets target set l).
        tau: filter time constant in s; dt: step in s.

    Returns:
        Tensor (B * L, N), dimensionless.
    """
    return torch.sqrt(van_rossum_squared(model, target, tau, dt))


def van_rossum_squared(model: torch.Tensor, target: torch.Tensor, tau: float, dt: float) -> torch.Tensor:
    """``D^2`` of :func:`van_rossum_distance`, (B * L, N): smooth where D is 0 (the square
    root's gradient is not), so this is what a gradient fitter minimises."""
    if model.shape[0] != target.shape[0] or model.ndim != target.ndim or model.shape[2:] != target.shape[2:]:
        raise ParameterError(f"rasters of shapes {tuple(model.shape)} and {tuple(target.shape)} do not match; "
                             f"compare recordings of the same experiment.")
    d = exponential_filter(model - _tile_sets(target, model.shape[1], "van_rossum").to(model.dtype), tau, dt)
    r2 = math.exp(-2 * dt / tau)
    sq = d ** 2
    return (1 - r2) * sq[:-1].sum(0) + sq[-1]


@numba.njit(cache=True)
def _vp_pairs(ta, oa, tb, ob, q, out):  # pragma: no cover - compiled
    work = np.empty(0)
    for g in range(out.size):
        a, b = ta[oa[g]:oa[g + 1]], tb[ob[g]:ob[g + 1]]
        m = b.size
        if work.size < 2 * (m + 1):
            work = np.empty(2 * (m + 1))
        prev, cur = work[:m + 1], work[m + 1:2 * (m + 1)]
        for j in range(m + 1):
            prev[j] = j
        for i in range(1, a.size + 1):
            cur[0] = i
            for j in range(1, m + 1):
                cur[j] = min(prev[j] + 1.0, cur[j - 1] + 1.0, prev[j - 1] + q * abs(a[i - 1] - b[j - 1]))
            prev, cur = cur, prev
        out[g] = prev[m]


def _groups(model: Recording, target: Recording):
    """Model trains and the paired target trains, both grouped by (model set, neuron)."""
    sets = _pair(model, target)
    ta, oa = _trains(model)
    tb, ob = _trains(target)
    if target.batch != model.batch:  # target set sets[s] against model set s
        n = target.n_neurons
        groups = (sets[:, None] * n + np.arange(n)).ravel()  # (B * L * N,) target groups
        lo, length = ob[groups], ob[groups + 1] - ob[groups]
        ob = np.concatenate([[0], np.cumsum(length)]).astype(np.int64)
        tb = tb[np.repeat(lo - ob[:-1], length) + np.arange(ob[-1])]
    return ta, oa, tb, ob


def victor_purpura_distance(model: Recording, target: Recording, q: float) -> np.ndarray:
    """Victor-Purpura distance per model set and neuron, (B * L, N) (module docstring).

    Args:
        q: cost per second of moving a spike (1/s); moving by more than ``2 / q`` s costs
            more than deleting and adding it.
    """
    if not q >= 0:
        raise ParameterError(f"q = {q} 1/s must be >= 0 (e.g. 100 for 10 ms resolution).")
    ta, oa, tb, ob = _groups(model, target)
    out = np.zeros(model.batch * model.n_neurons)
    _vp_pairs(ta, oa, tb, ob, float(q), out)
    return out.reshape(model.batch, model.n_neurons)


@numba.njit(cache=True)
def _coincidences(ta, oa, tb, ob, delta, out):  # pragma: no cover - compiled
    for g in range(out.size):
        i, j, hits = oa[g], ob[g], 0
        while i < oa[g + 1] and j < ob[g + 1]:
            if abs(ta[i] - tb[j]) <= delta:
                hits += 1
                i += 1
                j += 1
            elif ta[i] < tb[j]:
                i += 1
            else:
                j += 1
        out[g] = hits


def gamma_coincidence(model: Recording, target: Recording, delta: float = 2e-3) -> np.ndarray:
    """Kistler's coincidence factor per model set and neuron, (B * L, N) (module docstring).

    Args:
        delta: coincidence window in s (+-delta; 2 ms as in Jolivet et al. 2008).

    Returns:
        Gamma (1 = identical, ~0 = chance); NaN when neither train has a spike, and
        meaningless (infinite or of the wrong sign) where the model fires at ``1 / (2
        delta)`` or faster, when chance alone fills every window.
    """
    if not 0 < delta:
        raise ParameterError(f"delta = {delta} s must be > 0 (e.g. 2e-3 for 2 ms).")
    ta, oa, tb, ob = _groups(model, target)
    hits = np.zeros(model.batch * model.n_neurons, dtype=np.int64)
    _coincidences(ta, oa, tb, ob, float(delta) + 1e-12, hits)
    n_model, n_target = np.diff(oa).astype(np.float64), np.diff(ob).astype(np.float64)
    nu = n_model / model.duration
    with np.errstate(divide="ignore", invalid="ignore"):
        gamma = (hits - 2 * nu * delta * n_target) / (0.5 * (n_model + n_target) * (1 - 2 * nu * delta))
    return gamma.reshape(model.batch, model.n_neurons)


def trace_error(model: torch.Tensor | Recording, target: torch.Tensor | Recording, name: str | None = None, *,
                floor: float = 1e-15) -> torch.Tensor:
    """RMS over time of ``ln(max(model, floor)) - ln(max(target, floor))``, differentiable.

    Args:
        model: currents (T, B * L, R) in A, or a Recording (then ``name`` picks the trace).
        target: (T, L|1, R) in A, or a Recording (set ``b * L + l`` meets target set l).
        floor: A; currents below it count as it (the initial ``Isoma_ahp`` is 0).

    Returns:
        Tensor (B * L, R), in units of ln (1 = a factor e everywhere).
    """
    return torch.sqrt(trace_error_squared(model, target, name, floor=floor))


def trace_error_squared(model: torch.Tensor | Recording, target: torch.Tensor | Recording, name: str | None = None,
                        *, floor: float = 1e-15) -> torch.Tensor:
    """The mean square over time behind :func:`trace_error`, (B * L, R) in ln^2: smooth
    where the traces agree (the RMS's square root is not)."""
    if isinstance(model, Recording) or isinstance(target, Recording):
        if name is None:
            raise ParameterError("trace_error on recordings needs name=, e.g. name='Iampa'.")
        model, target = (_trace(r, name) if isinstance(r, Recording) else r for r in (model, target))
    if model.shape[0] != target.shape[0] or model.shape[-1] != target.shape[-1]:
        raise ParameterError(f"traces of shapes {tuple(model.shape)} and {tuple(target.shape)} do not match; "
                             f"record the same neurons with the same record_every.")
    target = _tile_sets(target, model.shape[1], "trace_error")
    f = torch.as_tensor(floor, dtype=model.dtype, device=model.device)
    diff = torch.log(torch.maximum(model, f)) - torch.log(torch.maximum(target.to(model.dtype), f))
    return (diff ** 2).mean(0)


def _trace(rec: Recording, name: str) -> torch.Tensor:
    if name not in rec.traces:
        raise RecordingError(f"trace {name!r} was not recorded; recorded: {sorted(rec.traces) or 'none'}. "
                             f"Run with record=[{name!r}].")
    return rec.traces[name]
