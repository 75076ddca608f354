r"""Gradients at fused speed on the CPU: forward-mode sensitivities contracted in a second pass.

``TorchBackend(engine="fused")`` (and ``"auto"``) runs here when a parameter requires grad
on the CPU: the returned ``raster`` (T, B, N) and traces (T_rec, B, R) carry a
``torch.autograd.Function`` whose backward gives the gradient of any loss of them with
respect to every parameter that requires grad (per neuron, per set, per core or shared:
the parameters enter expanded to (B, N), and torch sums the expansion).

Design. Neurons of a feed-forward network are independent, so the Jacobian of the outputs
of lane ``L = b * N + n`` with respect to per-lane parameters is block-diagonal: lane L
depends only on its own parameter values. For K parameters, forward mode carries K
tangents per state and lane (the tangent-linear model of :func:`dpi.dpi_step`, written
as partial derivatives of the step in ``cpu_grad_kernels``), with no tape. The loss
is only known after the forward pass, so

1. ``forward``: the plain fused forward (``cpu.simulate``), nothing stored beyond
   its outputs (spike events become the dense raster);
2. ``backward(dL/draster, dL/dtraces)``: one fused pass re-runs the primal with the
   forward's own passes (same spikes, bit for bit) and the K tangents, and contracts them
   on the fly: ``G_k[L] = sum_t dL/dy[t, L] * dy[t, L]/dtheta_k[L]``. Memory: the output
   gradients plus ``7 K + ~20`` rows per lane; no (T, K) tangent history.

The parameter-only terms of the workspace (``tau = C Ut / (kappa I_tau)``, ``alpha I_tau``,
...) are those of :func:`.layout.derive`, in torch (:func:`derived_rows`); their tangents
for each direction come from ``torch.func.jvp`` of that function, so a direction touches
only the rows its parameter enters (a few of 38), and the kernel adds ``partial * dq``
for those only. Spikes: with ``surrogate="none"`` they are constants (the exact
derivative of smooth observables, as in the eager engine); otherwise ``dspike = [not
refractory] * sg(rel) * drel``, ``rel = (Isoma_mem - Isoma_th) / Isoma_th``, with ``sg`` the
eager engine's surrogate (``dpi.SURROGATES``), and ``dspike`` flows into the raster, the
reset and the adaptation jump exactly as autograd would carry it through ``dpi_step``.

Not covered (the eager engine runs instead, or ``engine="fused"`` raises): recurrent
connections (a spike's surrogate derivative would couple lanes) and weights that require
grad; ``soma_refP`` gets no gradient (whole steps, as in the eager engine).
"""

from __future__ import annotations

import dataclasses

import numba
import numpy as np
import torch

from ...experiment import Experiment
from ...params import INITIAL_STATE, PARAMETERS, STATE_NAMES, Params
from . import cpu, layout
from . import cpu_grad_kernels as G
from . import cpu_kernels as K
from .dpi import SURROGATES
from .cpu_events import chunk_events
from .engine import EngineResult, Request

__all__ = ["derived_rows", "supports", "simulate", "SURROGATE_KINDS"]

#: surrogate name -> the kernel's code for its derivative (dpi.SURROGATES gives the scale).
SURROGATE_KINDS = {"none": 0, "fast_sigmoid": 1, "straight_through": 2}
#: Parameters without a gradient: whole refractory steps (``dpi.refractory_steps`` detaches).
NO_GRADIENT = ("soma_refP",)
def derived_rows(p: Params) -> dict[int, torch.Tensor]:
    """The workspace's term rows (``cpu_kernels`` row -> tensor): ``layout.derive`` by row.

    ``refractory_steps`` (whole steps, no gradient) is left out; the kernels' values are
    these (``cpu._pack`` packs the same terms).
    """
    return {K.P0 + layout.index(name): t for name, t in layout.derive(p).items()}


def supports(experiment: Experiment) -> bool:
    """Whether the fused gradient covers this experiment (no recurrent connections)."""
    return experiment.network.recurrent.pre.size == 0


def simulate(experiment: Experiment, p: Params, request: Request, terms: dict | None = None) -> EngineResult:
    """Run ``experiment`` fused, with outputs that carry gradients to ``p`` (contract: :mod:`.engine`).

    Args:
        experiment: a feed-forward experiment (:func:`supports`).
        p: parameters (B|1, N|1); those that require grad get gradients.
        request: as for :func:`.cpu.simulate`, with ``surrogate`` a ``dpi.SURROGATES`` name
            or ``"none"``.
        terms: unused: the terms and their tangents are derived here from ``p``, whose
            graph they need.

    Returns:
        :class:`EngineResult` with the raster (T, B, N), 0./1. floats; raster and traces
        are differentiable.
    """
    n = experiment.network.n_neurons
    b = request.batch or p.shape[0]
    grad_names = tuple(name for name in PARAMETERS if getattr(p, name).requires_grad and name not in NO_GRADIENT)
    expanded = p.expand(b, n)
    run = _Run(experiment, Params(**{f: getattr(expanded, f).detach() for f in PARAMETERS}), grad_names,
               request._replace(surrogate=request.surrogate or "none"))
    raster, *traces = _FusedGrad.apply(run, *(getattr(expanded, name) for name in grad_names))
    out = run.out
    return out._replace(traces=dict(zip(out.traces, traces)), raster=raster)


class _FusedGrad(torch.autograd.Function):
    """Outputs ``(raster, *traces)`` of a fused run; backward by the tangent pass."""

    @staticmethod
    def forward(ctx, run, *tensors):
        ctx.run = run
        return run.forward()

    @staticmethod
    def backward(ctx, g_raster, *g_traces):
        return (None, *ctx.run.gradients(g_raster, g_traces))


@dataclasses.dataclass
class _Run:
    experiment: Experiment
    p: Params            # detached, every tensor (B, N)
    grad_names: tuple
    request: Request
    out: EngineResult | None = None

    def forward(self) -> tuple[torch.Tensor, ...]:
        out = self.out = cpu.simulate(self.experiment, self.p, self.request)
        b, n = self.p.I0.shape
        raster = torch.zeros((int(self.experiment.n_steps), b, n), dtype=self.p.dtype)
        raster[torch.from_numpy(out.spike_step), torch.from_numpy(out.spike_batch),
               torch.from_numpy(out.spike_neuron)] = 1.0
        return (raster, *(out.traces[name] for name in self.request.names))

    def gradients(self, g_raster: torch.Tensor, g_traces) -> list[torch.Tensor]:
        """dL/dtheta (B, N) of each name in ``grad_names``, from dL/d(outputs)."""
        dtype = cpu._NP_DTYPE[self.p.dtype]
        req = self.request
        names, idx = tuple(req.names), np.asarray(req.idx, dtype=np.int64)
        b, n = self.p.I0.shape
        lay = cpu._Layout(b, n)
        ws, lists, n_dir = _workspace(lay, self.p, self.grad_names, dtype, self.experiment.dt)
        flat = lambda t: t.detach().to(self.p.dtype).contiguous().numpy()  # noqa: E731
        graster = flat(g_raster).reshape(int(self.experiment.n_steps), b * n)
        if names:
            gtraces = np.stack([flat(g) for g in g_traces])
        else:
            gtraces = np.zeros((0, 1, 1, 1), dtype=dtype)
        record = (*cpu._trace_map(lay, idx if names else idx[:0]),
                  np.array([STATE_NAMES.index(x) for x in names], dtype=np.int64))
        kind, scale = SURROGATE_KINDS[req.surrogate], SURROGATES.get(req.surrogate, (None, 0.0))[1]
        _run_chunks(self.experiment, lay, ws, dtype, req.every, req.substeps, req.chunk_steps, record,
                    gtraces, graster, n_dir, lists, kind, scale)
        rows = ws.reshape(lay.n_blocks, -1, K.BLK)
        blk, slot = lay.locate(np.arange(b * n, dtype=np.int64))
        acc = rows[blk[None, :], G.TS + 6 * n_dir + np.arange(n_dir)[:, None], slot[None, :]]
        return [torch.from_numpy(acc[d].reshape(b, n).copy()) for d in range(n_dir)]


def _workspace(lay, p: Params, grad_names, dtype, dt: float):
    """The workspace with primal rows (``init_workspace``), zero tangents and the nonzero
    parameter tangents; and the per-direction lists of ``(accumulator, dq row, partial)``."""
    n_dir = len(grad_names)
    tangents = [_row_tangents(p, name) for name in grad_names]
    n_dq = sum(len(t) for t in tangents)
    ws = np.zeros((lay.n_blocks, (G.TS + 7 * n_dir + n_dq) * K.BLK), dtype=dtype)
    init = np.array([INITIAL_STATE[x] for x in STATE_NAMES[:6]], dtype=dtype)
    K.init_workspace(ws, cpu._pack(p, dtype, dt), lay.lane0, lay.nvalid, init)
    rows = ws.reshape(lay.n_blocks, -1, K.BLK)
    blk, slot = lay.locate(np.arange(p.I0.numel(), dtype=np.int64))
    stages = ([], []), ([], [])  # (early sub-steps, last sub-step + post) x (ptr lengths, entries)
    dq_row = G.TS + 7 * n_dir
    for tangent in tangents:
        entries = ([], [])
        for q, value in tangent.items():
            rows[blk, dq_row, slot] = value.reshape(-1).numpy().astype(dtype, copy=False)
            for stage, table in enumerate((G.EULER_INPUTS, G.POST_INPUTS)):
                entries[stage].extend((acc, dq_row, part) for acc, part in table.get(q, ()))
            dq_row += 1
        for stage, part in enumerate((entries[0], entries[0] + entries[1])):  # early sub-steps; the last + post
            stages[stage][0].append(len(part))
            stages[stage][1].extend(part)
    lists = []
    for lengths, entries in stages:
        ptr = np.zeros(n_dir + 1, dtype=np.int64)
        np.cumsum(lengths, out=ptr[1:])
        cols = np.array(entries, dtype=np.int64).reshape(-1, 3).T
        lists += [ptr, *(np.ascontiguousarray(c) for c in cols)]
    return ws, tuple(lists), n_dir


def _row_tangents(p: Params, name: str) -> dict[int, torch.Tensor]:
    """d(row)/d(name) lane by lane for the rows it moves (``torch.func.jvp`` of derived_rows)."""
    value = getattr(p, name)
    _, tangent = torch.func.jvp(lambda x: derived_rows(dataclasses.replace(p, **{name: x})), (value,),
                                (torch.ones_like(value),))
    return {q: t.expand_as(value) for q, t in tangent.items() if bool((t != 0).any())}


def _run_chunks(experiment, lay, ws, dtype, every, substeps, chunk, record, gtraces, graster, n_dir, lists,
                kind, scale):
    stim, T = experiment.stimulus, int(experiment.n_steps)
    conns, like = cpu._input_csr(experiment), np.zeros(0, dtype=dtype)
    h, scale = dtype(experiment.dt / substeps), dtype(scale)
    chunk = max(1, int(chunk))
    parallel = lay.n_blocks > 1 and lay.b * lay.n * T * substeps * max(n_dir, 1) >= cpu._PARALLEL_WORK
    kernel = G.run_grad if parallel else G.run_grad_serial
    previous = numba.set_parallel_chunksize(1)  # as cpu: a busy core does not hold the other up
    try:
        for t0 in range(0, T, chunk):
            n_t = min(chunk, T - t0)
            lo, hi = np.searchsorted(stim.steps, (t0, t0 + n_t))
            inputs = chunk_events(stim.steps, stim.sources, lo, hi, t0, *conns, lay.n_groups, lay.sets_per_block,
                                  lay.n, K.BLK, K.CNT, like)
            kernel(ws, lay.lane0, lay.nvalid, lay.group, *inputs, n_t, t0, h, substeps, every, *record,
                   gtraces, graster, n_dir, lists, kind, scale)
    finally:
        numba.set_parallel_chunksize(previous)
