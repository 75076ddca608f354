"""The fused CPU engine: the whole time loop in numba, several neurons per instruction.

:func:`simulate` is what ``TorchBackend(engine="fused")`` calls on the CPU. It returns
what the eager engine returns (the contract of :mod:`.engine`), computed by the kernels in
:mod:`.cpu_kernels`, whose equations are those of :mod:`.dpi` (the reference) in the
same order of operations, on the terms of :mod:`.layout`.

How it runs (see the kernels' module docstring for the data layout):

- Lanes (one per neuron and parameter set) are packed in blocks of ``BLK`` (32) lanes.
  Without recurrent connections the blocks are independent: numba's ``prange`` spreads
  them over the cores and each block runs every step of a chunk with its state in the L1
  cache (neuron-major). With recurrent connections every step needs all spikes of the
  step: a time-major loop, parallel over parameter sets only.
- Input spikes are not expanded into dense ``(T, 4, N)`` counts (320 MB per 1000 steps
  at 10,000 neurons in float64): per chunk of ``chunk_steps`` steps, each block gets the
  list of its input events, sorted by step.
- Spikes come back as one uint64 mask per block and step, turned into events at the end
  of each chunk.

JIT: the kernels are compiled on first use per dtype (a few seconds) and cached on disk
(``cache=True``), so later processes load them in well under a second.
"""

from __future__ import annotations

import weakref

import numba
import numpy as np
import torch

from ...errors import ParameterError
from ...experiment import Experiment
from ...params import INITIAL_STATE, PARAMETERS, STATE_NAMES, Params
from . import cpu_kernels as K
from . import layout
from .cpu_events import chunk_events, collect_spikes
from .engine import EngineResult, Request, tensor_versions

__all__ = ["simulate", "supports"]

#: Lane-steps of a chunk from which the parallel kernels are used (about 1 ms of work on one
#: core): waking the worker threads costs tens of microseconds, much more on a busy machine.
_PARALLEL_WORK = 100_000
_NP_DTYPE = {torch.float64: np.float64, torch.float32: np.float32}
# Packed parameters per Params object; an entry is valid while every tensor is the same
# object at the same version (in-place edits bump torch's version counter).
_packed: "weakref.WeakKeyDictionary[Params, tuple]" = weakref.WeakKeyDictionary()


def _pack(p: Params, dtype, dt: float, terms: dict | None = None) -> np.ndarray:
    """(len(layout.TERMS), B * N) array of the terms (``layout.derive``), cached per ``p`` and dt.

    Args:
        p: parameters, every tensor (B, N).
        terms: ``layout.derive(p, dt)`` when the caller has it (the backend computes it once).
    """
    key = tensor_versions([getattr(p, name) for name in PARAMETERS])
    hit = _packed.get(p)
    if hit is not None and key is not None and hit[0] == (key, dt):
        return hit[1]
    terms = layout.derive(p, dt) if terms is None else terms
    b, n = p.I0.shape
    packed = np.stack([terms[name].detach().expand(b, n).reshape(-1).numpy() for name in layout.TERMS])
    packed = packed.astype(dtype, copy=False)
    if key is not None:
        _packed[p] = ((key, dt), packed)
    return packed


class _Layout:
    """Blocks of lanes (lane ``L = b * N + n``), contiguous in lane order.

    ``N >= BLK``: each parameter set has ``ceil(N / BLK)`` blocks of its neurons; the
    blocks of one neuron range share one list of input events (``group``). ``N < BLK``:
    a block holds ``BLK // N`` whole sets, and one event list serves all blocks.
    """

    def __init__(self, b: int, n: int):
        blk = K.BLK
        if n >= blk:
            self.sets_per_block = 0
            per_set = -(-n // blk)
            first = np.arange(per_set, dtype=np.int64) * blk
            self.lane0 = (np.arange(b, dtype=np.int64)[:, None] * n + first[None, :]).ravel()
            self.nvalid = np.tile(np.minimum(blk, n - first), b)
            self.group = np.tile(np.arange(per_set, dtype=np.int64), b)
            self.n_groups = per_set
            self.part_ptr = np.arange(b + 1, dtype=np.int64) * per_set  # one partition per set
        else:
            spb = blk // max(n, 1)
            self.sets_per_block = spb
            n_blocks = -(-b // spb)
            self.lane0 = np.arange(n_blocks, dtype=np.int64) * spb * n
            self.nvalid = np.minimum(spb, b - np.arange(n_blocks) * spb).astype(np.int64) * n
            self.group = np.zeros(n_blocks, dtype=np.int64)
            self.n_groups = 1
            self.part_ptr = np.arange(n_blocks + 1, dtype=np.int64)
        self.b, self.n = b, n

    @property
    def n_blocks(self) -> int:
        return self.lane0.size

    def locate(self, lanes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Block and slot of each lane."""
        if self.sets_per_block:
            width = self.sets_per_block * self.n
            return lanes // width, lanes % width
        per_set = self.n_groups
        b, n = lanes // self.n, lanes % self.n
        return b * per_set + n // K.BLK, n % K.BLK


def _input_csr(experiment: Experiment):
    """Input connections sorted by source: (ptr (S + 1,), post, type, weight), int64."""
    conns, n_src = experiment.network.inputs, experiment.network.n_inputs
    order = np.argsort(conns.pre, kind="stable")
    ptr = np.zeros(n_src + 1, dtype=np.int64)
    np.cumsum(np.bincount(conns.pre, minlength=n_src), out=ptr[1:])
    return ptr, conns.post[order], conns.syn_type[order], conns.weight[order]


def _recurrent_csr(experiment: Experiment, like):
    rec, n = experiment.network.recurrent, experiment.network.n_neurons
    order = np.argsort(rec.pre, kind="stable")
    ptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(rec.pre, minlength=n), out=ptr[1:])
    return ptr, rec.post[order], rec.syn_type[order], rec.weight[order].astype(like)


def _trace_map(layout: _Layout, idx: np.ndarray):
    """Per block (CSR) the recorded lanes: slot, set, column in the traces."""
    b, n = layout.b, layout.n
    r = idx.size
    lanes = (np.arange(b, dtype=np.int64)[:, None] * n + idx[None, :]).ravel()
    blk, slot = layout.locate(lanes)
    order = np.argsort(blk, kind="stable")
    ptr = np.zeros(layout.n_blocks + 1, dtype=np.int64)
    np.cumsum(np.bincount(blk, minlength=layout.n_blocks), out=ptr[1:])
    sets = np.repeat(np.arange(b, dtype=np.int64), r)
    cols = np.tile(np.arange(r, dtype=np.int64), b)
    return ptr, slot[order], sets[order], cols[order]


def simulate(experiment: Experiment, p: Params, request: Request, terms: dict | None = None) -> EngineResult:
    """Run ``experiment`` with the fused CPU kernels (the contract of :mod:`.engine`).

    Args:
        experiment: network, stimulus, dt and length.
        p: parameters, every tensor contiguous (B, N), float64 or float32 (the dtype the
            run computes in).
        request: names, idx, every, substeps and chunk_steps are used (no gradients here:
            :mod:`.cpu_grad`).
        terms: ``layout.derive(p, experiment.dt)``, from the backend (None: derived here).

    Returns:
        :class:`EngineResult` without a raster.

    Raises:
        ParameterError: a dtype other than float32/float64, or (float32) a refractory
            period of 2^24 steps or more.
    """
    dtype = _NP_DTYPE.get(p.I0.dtype)
    if dtype is None:
        raise ParameterError(f"the fused CPU engine computes in float32 or float64, not {p.I0.dtype}.")
    b, n = p.I0.shape
    names, every = tuple(request.names), request.every
    layout_ = _Layout(b, n)
    ws = _workspace(layout_, _pack(p, dtype, experiment.dt, terms), dtype, experiment.dt)
    idx = np.asarray(request.idx, dtype=np.int64)
    traces = np.empty((len(names), -(-int(experiment.n_steps) // every), b, idx.size), dtype=dtype)
    record = (*_trace_map(layout_, idx if names else idx[:0]),
              np.array([K.STATE_ROWS[STATE_NAMES.index(x)] for x in names], dtype=np.int64), traces)
    sb, sn, ss = _run_chunks(experiment, layout_, ws, dtype, every, request.substeps,
                             max(1, int(request.chunk_steps)), record)
    blk, slot = layout_.locate(np.arange(b * n, dtype=np.int64))
    unstable = torch.from_numpy(ws[blk, K.UNST * K.BLK + slot] > 0).reshape(b, n)
    peak = torch.from_numpy(ws[blk, K.PEAK * K.BLK + slot]).reshape(b, n)
    return EngineResult(sb, sn, ss, {x: torch.from_numpy(traces[q]) for q, x in enumerate(names)}, unstable, peak)


def supports(experiment: Experiment) -> bool:
    """The fused CPU forward runs every experiment (recurrent connections time-major)."""
    return True


def _workspace(lay: _Layout, packed: np.ndarray, dtype, dt: float) -> np.ndarray:
    """The kernels' workspace with the terms (``_pack``) and the initial state filled in."""
    ws = np.empty((lay.n_blocks, K.N_ROWS * K.BLK), dtype=dtype)
    init = np.array([INITIAL_STATE[x] for x in STATE_NAMES[:6]], dtype=dtype)
    K.init_workspace(ws, packed, lay.lane0, lay.nvalid, init)
    longest = float(packed[-1].max()) if packed.size else 0.0  # refractory_steps, the last term
    if dtype is np.float32 and longest >= 2 ** 24:
        raise ParameterError(f"soma_refP is {longest:.0f} steps of dt = {dt:g} s, too long to count in "
                             f"float32 (2^24 steps at most); use dtype float64 or a larger dt.")
    return ws


class _Chunks:
    """The kernels' inputs that stay the same through a run; :meth:`run` advances the state
    in the workspace by the steps ``t0:t0 + n_t`` and returns their spike events."""

    def __init__(self, experiment: Experiment, layout: _Layout, ws, dtype, every, substeps, record, chunk):
        b, n = layout.b, layout.n
        self.experiment, self.layout, self.ws, self.every, self.substeps = experiment, layout, ws, every, substeps
        self.record, self.like = record, np.zeros(0, dtype=dtype)
        self.conns = _input_csr(experiment)
        self.h = dtype(experiment.dt / substeps)  # as torch rounds a Python float against float32 tensors
        self.rec = None
        if experiment.network.recurrent.pre.size:
            self.rec = (layout.part_ptr, *_recurrent_csr(experiment, dtype), *layout.locate(np.arange(b * n)), n)
        self.n_parts = layout.part_ptr.size - 1 if self.rec else layout.n_blocks
        self.masks = np.empty((min(chunk, int(experiment.n_steps)), layout.n_blocks), dtype=np.uint64)

    def run(self, t0: int, n_t: int):
        lay, stim = self.layout, self.experiment.stimulus
        lo, hi = np.searchsorted(stim.steps, (t0, t0 + n_t))
        inputs = chunk_events(stim.steps, stim.sources, lo, hi, t0, *self.conns, lay.n_groups, lay.sets_per_block,
                              lay.n, K.BLK, K.CNT, self.like)
        args = (self.ws, lay.lane0, lay.nvalid, lay.group, *inputs, n_t, t0, self.h, self.substeps, self.every,
                *self.record, self.masks)
        # threads pay off only with two partitions and enough work to share
        parallel = self.n_parts > 1 and lay.b * lay.n * n_t * self.substeps >= _PARALLEL_WORK
        if self.rec is not None:
            (K.run_recurrent if parallel else K.run_recurrent_serial)(*args, *self.rec)
        else:
            (K.run_feedforward if parallel else K.run_feedforward_serial)(*args)
        return collect_spikes(self.masks, n_t, lay.lane0, lay.n, t0)


def _run_chunks(experiment: Experiment, layout: _Layout, ws, dtype, every, substeps, chunk, record):
    """All steps, ``chunk`` at a time (the state stays in ``ws``); returns the spike events."""
    chunks, T = _Chunks(experiment, layout, ws, dtype, every, substeps, record, chunk), int(experiment.n_steps)
    # Threads take blocks one at a time (numba's default splits them evenly up front): on a
    # shared machine a core busy elsewhere then does not hold the other one up (1.0 s
    # instead of 1.6 s for 10,000 neurons x 1 s against one busy process on 2 cores).
    previous = numba.set_parallel_chunksize(1)
    try:
        events = [chunks.run(t0, min(chunk, T - t0)) for t0 in range(0, T, chunk)]
    finally:
        numba.set_parallel_chunksize(previous)
    return tuple(np.concatenate(parts) for parts in zip(*events)) if len(events) > 1 else events[0]
