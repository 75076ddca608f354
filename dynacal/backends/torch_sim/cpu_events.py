"""Events of the fused CPU engine: input spikes per block, output spikes from bit masks.

Input: per chunk of steps, every input spike is expanded through its source's
connections into (step, workspace offset of the count, weight) and grouped by the block
of lanes it reaches, each group sorted by step, so that a block walks its own list while
it runs through the steps. Output: the kernels leave one uint64 per block and step whose
bit j says that lane j spiked; :func:`collect_spikes` turns them into events.

These functions take the kernels' layout constants as arguments (numba's disk cache would
not notice a change of constants imported from another file).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit
from numba.extending import intrinsic

__all__ = ["chunk_events", "collect_spikes"]


@intrinsic
def _popcount(typingctx, x):
    """Number of set bits (llvm.ctpop)."""
    def codegen(context, builder, signature, args):
        ty = args[0].type
        return builder.call(builder.module.declare_intrinsic("llvm.ctpop", [ty], ir.FunctionType(ty, [ty])), args)
    return x(x), codegen


@intrinsic
def _lowest_bit(typingctx, x):
    """Index of the lowest set bit of a non-zero integer (llvm.cttz)."""
    def codegen(context, builder, signature, args):
        ty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.cttz", [ty], ir.FunctionType(ty, [ty, ir.IntType(1)]))
        return builder.call(fn, [args[0], ir.Constant(ir.IntType(1), 1)])
    return x(x), codegen


@njit(cache=True)
def chunk_events(steps, sources, lo, hi, start, conn_ptr, conn_post, conn_type, conn_w, n_groups,
                 sets_per_block, n_neurons, blk, cnt_row, like):
    """Input events of the stimulus spikes ``lo:hi`` (the chunk's steps, from ``start``)
    per event group, sorted by step.

    Args:
        steps, sources: int64 (K,) the stimulus, sorted by step.
        conn_ptr: int64 (S + 1,) input connections by source (CSR): ``conn_post``,
            ``conn_type``, ``conn_w`` (int64) for ``conn_ptr[s]:conn_ptr[s + 1]``.
        n_groups: number of event groups; sets_per_block: 0 when blocks hold one set's
            neurons (group = neuron // blk), else the sets per block (one group, every
            event repeated for each set of the block); n_neurons: N.
        blk, cnt_row: the kernels' lanes per block and first count row.
        like: an array of the run's dtype (for the weights' dtype).

    Returns:
        ``(gptr, ev_t, ev_off, ev_w)``: events of group g are ``gptr[g]:gptr[g + 1]``;
        ``ev_t`` step within the chunk, ``ev_off`` workspace offset of the count
        (``(cnt_row + type) * blk + lane``), ``ev_w`` the weight.
    """
    reps = max(sets_per_block, 1)
    count = np.zeros(n_groups + 1, np.int64)
    for e in range(lo, hi):
        src = sources[e]
        for c in range(conn_ptr[src], conn_ptr[src + 1]):
            g = 0 if sets_per_block else conn_post[c] // blk
            count[g + 1] += reps
    gptr = count
    for g in range(n_groups):
        gptr[g + 1] += gptr[g]
    fill = gptr[:-1].copy()
    ev_t = np.empty(gptr[-1], np.int32)
    ev_off = np.empty(gptr[-1], np.int32)
    ev_w = np.empty(gptr[-1], like.dtype)
    for e in range(lo, hi):
        src = sources[e]
        for c in range(conn_ptr[src], conn_ptr[src + 1]):
            post = conn_post[c]
            g = 0 if sets_per_block else post // blk
            for r in range(reps):
                lane = r * n_neurons + post if sets_per_block else post % blk
                i = fill[g]
                ev_t[i] = steps[e] - start
                ev_off[i] = (cnt_row + conn_type[c]) * blk + lane
                ev_w[i] = conn_w[c]
                fill[g] = i + 1
    return gptr, ev_t, ev_off, ev_w


@njit(cache=True)
def collect_spikes(masks, n_t, lane0, n_neurons, t0):
    """Spike events of a chunk, sorted by step, then set, then neuron.

    Args:
        masks: uint64 (>= n_t, n_blocks): bit j of ``masks[k, blk]`` = lane j of block
            ``blk`` spiked in step ``t0 + k``; lane0: int64 (n_blocks,) first lane of
            each block (lane = set * n_neurons + neuron).

    Returns int64 arrays ``(batch, neuron, step)``.
    """
    total = 0
    for k in range(n_t):
        for blk in range(masks.shape[1]):
            total += _popcount(masks[k, blk])
    sb = np.empty(total, np.int64)
    sn = np.empty(total, np.int64)
    ss = np.empty(total, np.int64)
    i = 0
    for k in range(n_t if total else 0):
        for blk in range(masks.shape[1]):
            m = masks[k, blk]
            b0 = lane0[blk] // n_neurons if m else 0
            n0 = lane0[blk] - b0 * n_neurons
            while m:
                b, n = b0, n0 + np.int64(_lowest_bit(m))
                if n >= n_neurons:  # blocks of several sets
                    b, n = b + n // n_neurons, n % n_neurons
                sb[i], sn[i], ss[i] = b, n, t0 + k
                i += 1
                m &= m - np.uint64(1)
    return sb, sn, ss
