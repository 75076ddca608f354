"""The eager engine: the time loop in Python, one :func:`.dpi.dpi_step` per step.

It is the reference every fused kernel is tested against, and the gradient path for what
the fused gradient does not cover (recurrent connections, weights that require grad).
``simulate`` follows the engine contract of :mod:`.engine`.
"""

from __future__ import annotations

import numpy as np
import torch

from ..._progress import Progress
from ...experiment import Experiment
from ...params import Params
from .dpi import Recurrent, dpi_step, get_surrogate, initial_state
from .engine import EngineResult, Request, track_health
from .layout import derive

__all__ = ["simulate", "supports", "round_ste"]


class _RoundSTE(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w):
        return torch.round(w)

    @staticmethod
    def backward(ctx, grad):
        return grad


def round_ste(w: torch.Tensor) -> torch.Tensor:
    """Round to integers forward, identity backward (straight-through estimator)."""
    return _RoundSTE.apply(w)


def supports(experiment: Experiment) -> bool:
    """The eager engine runs every experiment."""
    return True


def simulate(experiment: Experiment, p: Params, request: Request, terms: dict | None = None) -> EngineResult:
    """Run ``experiment`` step by step (see :mod:`.engine` for the contract).

    Args:
        experiment: network, stimulus, dt and length.
        p: parameters (B|1, N|1); with ``request.surrogate`` set, the raster and traces carry
            gradients to those that require grad (and to ``request``'s weights).
        request: names, neurons, every, substeps, chunk_steps, surrogate, batch, weights.
        terms: :func:`.layout.derive` of ``p``, from the backend (None: derived here).

    Returns:
        :class:`EngineResult`; ``raster`` (T, B, N) only when ``request.surrogate`` is set.
    """
    dtype, device = p.dtype, p.device
    dt, T, n = experiment.dt, experiment.n_steps, experiment.network.n_neurons
    b = request.batch or p.shape[0]
    keep_raster = request.surrogate is not None
    state = initial_state(b, n, dtype=dtype, device=device)
    recurrent = _recurrent(experiment, request.recurrent_weights, dtype, device)
    spike_fn = get_surrogate(request.surrogate) if keep_raster else None
    idx_t = torch.as_tensor(request.idx, device=device)
    names, every = request.names, request.every
    traces = {name: [] for name in names}
    events, raster = [], []
    unstable = torch.zeros((b, n), dtype=torch.bool, device=device)
    peak = torch.zeros((b, n), dtype=dtype, device=device)
    step = _stepper(p, terms, dt, recurrent, spike_fn, request.substeps)
    progress = Progress(T, "torch eager")  # a bar only when long and enabled (_progress)
    for t0 in range(0, T, request.chunk_steps):
        t1 = min(T, t0 + request.chunk_steps)
        counts = _counts(experiment, t0, t1, request.input_weights, dtype, device)
        chunk = []
        for k in range(t1 - t0):
            if names and (t0 + k) % every == 0:
                for name in names:
                    traces[name].append(getattr(state, name)[:, idx_t])
            spikes, state = step(state, counts[k])
            chunk.append(spikes)
            track_health(state, unstable, peak)
        stacked = torch.stack(chunk)
        if keep_raster:
            raster.append(stacked)
        nz = torch.nonzero(stacked.detach() > 0)
        events.append((nz[:, 1].cpu().numpy(), nz[:, 2].cpu().numpy(), (nz[:, 0] + t0).cpu().numpy()))
        progress.update(t1 - t0)
    progress.close()
    sb, sn, ss = (np.concatenate(parts) for parts in zip(*events))
    traces = {name: torch.stack(v) for name, v in traces.items()}
    return EngineResult(sb, sn, ss, traces, unstable.cpu(), peak.detach().cpu(),
                        torch.cat(raster) if keep_raster else None)


def _stepper(p: Params, terms, dt: float, recurrent, spike_fn, substeps: int):
    """``step(state, counts) -> (spikes, state)``: :func:`.dpi.dpi_step` with what stays fixed
    (the terms of ``layout.derive``, once per run: a gradient flows through them to ``p``)."""
    terms = derive(p, dt) if terms is None else terms
    refr = terms["refractory_steps"].to(p.device)

    def step(state, counts):
        return dpi_step(state, p, dt, counts, recurrent=recurrent, spike_fn=spike_fn, refr_steps=refr,
                        substeps=substeps, terms=terms)
    return step


def _recurrent(experiment: Experiment, weights: torch.Tensor | None, dtype, device) -> Recurrent | None:
    rec = experiment.network.recurrent
    if rec.pre.size == 0:
        return None
    n = experiment.network.n_neurons
    w = (torch.as_tensor(rec.weight, dtype=dtype, device=device) if weights is None
         else round_ste(weights.to(dtype)))
    target = torch.as_tensor(rec.syn_type * n + rec.post, dtype=torch.long, device=device)
    return Recurrent(torch.as_tensor(rec.pre, dtype=torch.long, device=device), target, w)


def _counts(experiment: Experiment, t0: int, t1: int, weights: torch.Tensor | None, dtype, device) -> torch.Tensor:
    """Weighted input counts (t1 - t0, [B,] 4, N) of steps t0..t1 - 1."""
    if weights is None:
        return experiment.input_counts(t0, t1, dtype=dtype, device=device)
    conns, n = experiment.network.inputs, experiment.network.n_neurons
    raster = torch.as_tensor(experiment.stimulus.dense(t1)[:, t0:t1].T, dtype=dtype, device=device)
    w = round_ste(weights.to(dtype))
    pre = torch.as_tensor(conns.pre, device=device)
    flow = raster[:, pre] * w if w.ndim == 1 else raster[:, None, pre] * w  # (Tc, E) or (Tc, B, E)
    target = torch.as_tensor(conns.syn_type * n + conns.post, dtype=torch.long, device=device)
    out = torch.zeros(flow.shape[:-1] + (4 * n,), dtype=dtype, device=device)
    out = out.index_add(flow.ndim - 1, target, flow)
    return out.view(*flow.shape[:-1], 4, n)
