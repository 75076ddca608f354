r"""Spike-train and trace distances between a model and a target, per neuron and set.

Every function compares a *model* (B parameter sets) with a *target* (1 set, broadcast,
or B sets) neuron by neuron and returns one value per set and neuron, shape (B, N):

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

import numba
import numpy as np
import torch

from .errors import ParameterError, RecordingError
from .recording import Recording

__all__ = ["firing_rate_error", "isi_statistics", "spike_raster", "exponential_filter", "van_rossum_distance",
           "victor_purpura_distance", "gamma_coincidence", "trace_error"]


def _pair(model: Recording, target: Recording) -> None:
    if (model.n_neurons, model.n_steps) != (target.n_neurons, target.n_steps) or model.dt != target.dt:
        raise RecordingError(f"model ({model.n_neurons} neurons, {model.n_steps} steps of {model.dt:g} s) and "
                             f"target ({target.n_neurons} neurons, {target.n_steps} steps of {target.dt:g} s) "
                             f"are not recordings of the same experiment.")
    if target.batch not in (1, model.batch):
        raise RecordingError(f"the target has {target.batch} parameter sets; give 1 (compared with every "
                             f"model set) or the model's {model.batch}.")


def firing_rate_error(model: Recording, target: Recording, *, relative: bool = False) -> np.ndarray:
    """Model rate minus target rate in Hz, (B, N); divided by the target rate (NaN where it
    is 0) when ``relative``."""
    _pair(model, target)
    diff = model.rates() - target.rates()
    if not relative:
        return diff
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(target.rates() > 0, diff / target.rates(), np.nan)


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
    safe_hi = np.maximum(hi, lo)
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
        model: spike raster (T, B, N), 0/1 or with surrogate gradients.
        target: raster (T, B|1, N).
        tau: filter time constant in s; dt: step in s.

    Returns:
        Tensor (B, N), dimensionless.
    """
    if model.shape[0] != target.shape[0] or model.ndim != target.ndim:
        raise ParameterError(f"rasters of shapes {tuple(model.shape)} and {tuple(target.shape)} differ in "
                             f"length; compare recordings of the same experiment.")
    d = exponential_filter(model - target.to(model.dtype), tau, dt)
    r2 = math.exp(-2 * dt / tau)
    sq = d ** 2
    return torch.sqrt((1 - r2) * sq[:-1].sum(0) + sq[-1])


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
    _pair(model, target)
    ta, oa = _trains(model)
    tb, ob = _trains(target)
    if target.batch != model.batch:  # one target set against every model set
        counts = np.diff(ob)
        ob = np.concatenate([[0], np.cumsum(np.tile(counts, model.batch))]).astype(np.int64)
        tb = np.tile(tb, model.batch)
    return ta, oa, tb, ob


def victor_purpura_distance(model: Recording, target: Recording, q: float) -> np.ndarray:
    """Victor-Purpura distance per set and neuron, (B, N).

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
    """Kistler's coincidence factor per set and neuron, (B, N) (module docstring).

    Args:
        delta: coincidence window in s (+-delta; 2 ms as in Jolivet et al. 2008).

    Returns:
        Gamma (1 = identical, ~0 = chance); NaN when neither train has a spike.
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
        model: currents (T, B, R) in A, or a Recording (then ``name`` picks the trace).
        target: (T, B|1, R) in A, or a Recording.
        floor: A; currents below it count as it (the initial ``Isoma_ahp`` is 0).

    Returns:
        Tensor (B, R), in units of ln (1 = a factor e everywhere).
    """
    if isinstance(model, Recording) or isinstance(target, Recording):
        if name is None:
            raise ParameterError("trace_error on recordings needs name=, e.g. name='Iampa'.")
        model, target = (_trace(r, name) if isinstance(r, Recording) else r for r in (model, target))
    if model.shape[0] != target.shape[0] or model.shape[-1] != target.shape[-1]:
        raise ParameterError(f"traces of shapes {tuple(model.shape)} and {tuple(target.shape)} do not match; "
                             f"record the same neurons with the same record_every.")
    f = torch.as_tensor(floor, dtype=model.dtype, device=model.device)
    diff = torch.log(torch.maximum(model, f)) - torch.log(torch.maximum(target.to(model.dtype), f))
    return torch.sqrt((diff ** 2).mean(0))


def _trace(rec: Recording, name: str) -> torch.Tensor:
    if name not in rec.traces:
        raise RecordingError(f"trace {name!r} was not recorded; recorded: {sorted(rec.traces) or 'none'}. "
                             f"Run with record=[{name!r}].")
    return rec.traces[name]
