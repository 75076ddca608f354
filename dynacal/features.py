r"""Differentiable features in torch, for a gradient fitter.

The protocols compute their features in numpy for reports and tables; the functions here
compute the same numbers from tensors and let gradients through: from the raster
(``Recording.raster``, (T, B, N), 0/1 forward with the surrogate gradient of the spike
backward, ``backends/dpi.py``) and from the traces (``Recording.traces``, (T_rec, B, R)
in A). dtype and device follow the inputs; B is any number of parameter sets (B * L in a
conditions run). The distances (van Rossum, log-trace error) live in ``dynacal.metrics``.

- :func:`rate`, Hz, (B, N): spikes in the window ``[start, stop)`` (steps) divided by its
  length, as ``Recording.rates`` and ``SpikeIndex.rate(method="count")``. With
  ``method="isi"`` the value is ``SpikeIndex.rate``'s default (``(n - 1) / (t_last -
  t_first)`` with n >= 2 spikes in the window, else the count rate: what ``FICurve``
  reports) and the gradient is the count rate's, scaled by the ratio of the two rates (a
  straight-through estimate: the span between spikes has no gradient of its own).
- :func:`kernel_fit`, the synaptic kernel of ``protocols/kernels.py`` per traced neuron:
  ``tau`` (s), ``-1 / slope`` of the least-squares line through ``ln I`` over the samples
  after each input (up to ``fit_span`` s, while ``I > fit_min``), averaged over the
  inputs; ``amplitude`` (A), the sample just after the input minus the one before,
  decayed by the fitted per-sample ratio, averaged over the inputs. Smooth in the trace
  values (the choice of samples is not, and carries no gradient).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from .errors import ParameterError

__all__ = ["rate", "KernelFit", "kernel_fit"]


def rate(raster: Tensor, dt: float, start: int = 0, stop: int | None = None, *, method: str = "count") -> Tensor:
    """Firing rate per set and neuron in the window ``[start, stop)`` (module docstring).

    Args:
        raster: spikes (T, B, N), 0/1, with surrogate gradients from a differentiable run.
        dt: step in s. start, stop: window in steps (stop default T).
        method: ``"count"`` or ``"isi"``.

    Returns:
        Tensor (B, N) in Hz.
    """
    T = raster.shape[0]
    stop = T if stop is None else int(stop)
    if not 0 <= start < stop <= T:
        raise ParameterError(f"rate window [{start}, {stop}) steps is not inside the raster's {T} steps; "
                             f"give 0 <= start < stop <= {T}.")
    if method not in ("count", "isi"):
        raise ParameterError(f"method = {method!r}: give 'count' or 'isi'.")
    window = raster[start:stop]
    count = window.sum(0)
    by_count = count / ((stop - start) * dt)
    if method == "count":
        return by_count
    with torch.no_grad():
        fired = window > 0.5
        n = fired.sum(0)
        steps = torch.arange(stop - start, device=raster.device).reshape(-1, *([1] * (raster.ndim - 1)))
        first = torch.where(fired, steps, stop).amin(0)
        last = torch.where(fired, steps, -1).amax(0)
        span = torch.clamp(last - first, min=1).to(raster.dtype) * dt
        ratio = torch.where(n >= 2, (n - 1) / span / torch.clamp(by_count, min=1e-300), 1.0)
    return by_count * ratio


class KernelFit(NamedTuple):
    """Kernel features of the traced neurons, each (B, R).

    Attributes:
        amplitude: A, the jump at the input (mean over inputs).
        tau: s, the decay's time constant (mean over inputs); 0 where not ``valid``.
        valid: bool, every input had at least 2 samples above ``fit_min`` and a falling
            fit (``tau > 0``); where False, ``tau`` is 0 and carries no gradient.
    """

    amplitude: Tensor
    tau: Tensor
    valid: Tensor


def kernel_fit(trace: Tensor, starts, every: int, dt: float, *, fit_min: float = 2e-12,
               fit_span: float = 0.05) -> KernelFit:
    """The synaptic kernel features of ``protocols/kernels.py``, differentiable in ``trace``.

    Args:
        trace: synapse current (T_rec, B, R) in A, sampled every ``every`` steps.
        starts: int (E,), the first step each input acts in (its spike step + 1); each a
            multiple of ``every`` and at least ``every``, so that the sample before it exists.
        every: sampling step of the trace, in steps. dt: step in s.
        fit_min: A, the smallest current used in the fit (above the dark current).
        fit_span: s after the input used in the fit.

    Returns:
        :class:`KernelFit`, each (B, R).

    Raises:
        ParameterError: a start is off the sampling grid or outside the trace.
    """
    starts = np.atleast_1d(np.asarray(starts, dtype=np.int64))
    T_rec = trace.shape[0]
    if starts.size == 0 or np.any(starts % every) or starts.min() < every or starts.max() // every >= T_rec:
        raise ParameterError(f"kernel starts {starts.tolist()[:8]} steps must be multiples of every = {every} "
                             f"steps within the trace's {T_rec * every} steps (after its first sample); "
                             f"record with record_every dividing the protocol's.")
    n_fit = max(2, int(fit_span / (every * dt)) + 1)
    i0 = torch.as_tensor(starts // every, device=trace.device)
    idx = i0[:, None] + torch.arange(n_fit, device=trace.device)  # (E, n_fit)
    inside = idx < T_rec
    seg = trace[idx.clamp(max=T_rec - 1)]  # (E, n_fit, B, R)
    shape = (*inside.shape, *([1] * (trace.ndim - 1)))
    keep = (torch.cumprod(((seg > fit_min) & inside.reshape(shape)).to(torch.int8), dim=1) > 0).detach()
    t = (torch.arange(n_fit, dtype=trace.dtype, device=trace.device) * (every * dt)).reshape(1, -1, *shape[2:])
    y = torch.log(torch.where(keep, seg, torch.ones_like(seg)))
    w = keep.to(trace.dtype)
    m = w.sum(1)
    m_safe = m.clamp(min=1)
    mt, my = (t * w).sum(1) / m_safe, (y * w).sum(1) / m_safe
    dtm = (t - mt[:, None]) * w
    sxx = (dtm ** 2).sum(1)
    enough = m >= 2
    slope = (dtm * (y - my[:, None])).sum(1) / torch.where(enough, sxx, torch.ones_like(sxx))
    falling = enough & (slope < 0)
    ratio = torch.where(enough, torch.exp(slope * (every * dt)), torch.ones_like(slope))
    amplitude = (trace[i0] - trace[i0 - 1] * ratio).mean(0)
    valid = falling.all(0)
    tau = torch.where(valid, (-1.0 / torch.where(falling, slope, -torch.ones_like(slope))).mean(0),
                      torch.zeros_like(slope[0]))
    return KernelFit(amplitude, tau, valid)
