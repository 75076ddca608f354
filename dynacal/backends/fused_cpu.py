"""The fused CPU engine: the whole time loop in numba, several neurons per instruction.

:func:`simulate` is what ``TorchBackend(engine="fused")`` calls on the CPU. It returns
what the eager engine returns (``TorchBackend._run_eager``), computed by the kernels in
:mod:`.fused_cpu_kernels`, whose equations are those of :mod:`.dpi` (the reference) in the
same order of operations.

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

import numpy as np
import torch

from ..errors import ParameterError
from ..experiment import Experiment
from ..params import INITIAL_STATE, Params
from . import fused_cpu_kernels as K
from .fused_cpu_events import chunk_events, collect_spikes

__all__ = ["simulate"]

#: Lane-steps of a chunk from which the parallel kernels are used (about 1 ms of work on one
#: core): waking the worker threads costs tens of microseconds, much more on a busy machine.
_PARALLEL_WORK = 100_000
_NP_DTYPE = {torch.float64: np.float64, torch.float32: np.float32}
# Packed parameters per Params object; an entry is valid while every tensor is the same
# object at the same version (in-place edits bump torch's version counter).
_packed: "weakref.WeakKeyDictionary[Params, tuple]" = weakref.WeakKeyDictionary()


def _pack(p: Params, dtype) -> np.ndarray:
    """(35, B * N) array of the parameters in ``K.PARAM_ORDER``, cached per ``p``."""
    tensors = [getattr(p, name) for name in K.PARAM_ORDER]
    key = tuple((id(t), t._version) for t in tensors)
    hit = _packed.get(p)
    if hit is not None and hit[0] == key:
        return hit[1]
    packed = np.stack([t.detach().reshape(-1).numpy() for t in tensors]).astype(dtype, copy=False)
    _packed[p] = (key, packed)
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
            spb = blk // n
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


def simulate(experiment: Experiment, p: Params, names, idx, every: int, *, substeps: int = 1,
             chunk_steps: int = 1000):
    """Run ``experiment`` with the fused CPU kernels.

    Args:
        experiment: network, stimulus, dt and length.
        p: parameters, every tensor contiguous (B, N), float64 or float32 (the dtype the
            run computes in).
        names: state names to record (``STATE_NAMES`` subset); idx: int64 (R,) recorded
            neurons; every: keep the state at the start of steps ``t % every == 0``.
        substeps: Euler sub-steps per step; chunk_steps: steps whose input events are
            built at once (bounds memory).

    Returns:
        ``(spike_batch, spike_neuron, spike_step, traces, unstable, peak, None)`` as
        ``TorchBackend._run_eager``: int64 (K,) events sorted by step, set, neuron;
        ``traces`` name -> tensor (T_rec, B, R) in A; ``unstable`` bool (B, N) (a state
        went negative or non-finite); ``peak`` (B, N) the largest ``Igaba_a + Isoma_ahp``
        after any step (A).
    """
    dtype = _NP_DTYPE.get(p.I0.dtype)
    if dtype is None:
        raise ParameterError(f"the fused CPU engine computes in float32 or float64, not {p.I0.dtype}.")
    b, n = p.I0.shape
    net, stim = experiment.network, experiment.stimulus
    dt, T = experiment.dt, int(experiment.n_steps)
    layout = _Layout(b, n)
    like = np.zeros(0, dtype=dtype)
    ws = np.empty((layout.n_blocks, K.N_ROWS * K.BLK), dtype=dtype)
    init = np.array([INITIAL_STATE[k] for k in ("Isoma_mem", "Isoma_ahp", "Inmda", "Iampa", "Igaba_a",
                                                "Igaba_b")], dtype=dtype)
    longest = K.init_workspace(ws, _pack(p, dtype), layout.lane0, layout.nvalid, init, float(dt))
    if dtype is np.float32 and longest >= 2 ** 24:
        raise ParameterError(f"soma_refP is {longest:.0f} steps of dt = {dt:g} s, too long to count in "
                             f"float32; use dtype float64 or a larger dt.")
    idx = np.asarray(idx, dtype=np.int64)
    tr_ptr, tr_j, tr_b, tr_r = _trace_map(layout, idx) if names else (np.zeros(layout.n_blocks + 1, np.int64),) + (np.zeros(0, np.int64),) * 3
    name_rows = np.array([K.STATE_ROWS[("Isoma_mem", "Isoma_ahp", "Inmda", "Iampa", "Igaba_a", "Igaba_b").index(x)]
                          for x in names], dtype=np.int64)
    t_rec = -(-T // every)
    traces = np.empty((len(names), t_rec, b, idx.size), dtype=dtype)
    cptr, cpost, ctype, cw = _input_csr(experiment)
    h = dtype(dt / substeps)
    recurrent = net.recurrent.pre.size > 0
    if recurrent:
        rptr, rpost, rtype, rw = _recurrent_csr(experiment, dtype)
        lane_blk, lane_j = layout.locate(np.arange(b * n, dtype=np.int64))
    n_parts = layout.part_ptr.size - 1 if recurrent else layout.n_blocks
    chunk = max(1, int(chunk_steps))
    masks = np.empty((layout.n_blocks, min(chunk, T)), dtype=np.uint64)
    events = []
    for t0 in range(0, T, chunk):
        n_t = min(chunk, T - t0)
        lo, hi = np.searchsorted(stim.steps, (t0, t0 + n_t))
        gptr, ev_t, ev_off, ev_w = chunk_events(stim.steps, stim.sources, lo, hi, t0, cptr, cpost, ctype, cw,
                                                layout.n_groups, layout.sets_per_block, n, K.BLK, K.CNT, like)
        args = (ws, layout.lane0, layout.nvalid, layout.group, gptr, ev_t, ev_off, ev_w, n_t, t0, h, substeps,
                every, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks)
        # threads pay off only with two partitions and enough work to share
        parallel = n_parts > 1 and b * n * n_t * substeps >= _PARALLEL_WORK
        if recurrent:
            run = K.run_recurrent if parallel else K.run_recurrent_serial
            run(*args, layout.part_ptr, rptr, rpost, rtype, rw, lane_blk, lane_j, n)
        else:
            (K.run_feedforward if parallel else K.run_feedforward_serial)(*args)
        events.append(collect_spikes(masks, n_t, layout.lane0, n, t0))
    sb, sn, ss = (np.concatenate(parts) for parts in zip(*events)) if len(events) > 1 else events[0]
    lanes = np.arange(b * n, dtype=np.int64)
    blk, slot = layout.locate(lanes)
    unstable = torch.from_numpy(ws[blk, K.UNST * K.BLK + slot] > 0).reshape(b, n)
    peak = torch.from_numpy(ws[blk, K.PEAK * K.BLK + slot]).reshape(b, n)
    out = {name: torch.from_numpy(traces[q]) for q, name in enumerate(names)}
    return sb, sn, ss, out, unstable, peak, None
