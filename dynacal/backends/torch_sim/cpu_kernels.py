r"""Numba kernels of the fused CPU engine: the DPI step in scalar form, and the time loops.

The equations are those of :func:`dynacal.backends.torch_sim.dpi.derivatives` and
:func:`~dynacal.backends.torch_sim.dpi.dpi_step`, the reference, written once more per neuron with
the same floating-point operations in the same order, so that float64 and float32 results
are bit-identical to the eager engine's except where ``exp`` rounds differently (by 1 ulp,
rarely visible). ``tests/backends/torch_sim/test_cpu.py`` binds them to the reference:
identical spike steps, traces within rounding, in every regime.

Layout. The neurons of all B parameter sets are *lanes* ``L = b * N + n``, grouped in
blocks of at most :data:`BLK` contiguous lanes. Every block owns one row of the workspace
``ws`` (shape ``(n_blocks, N_ROWS * BLK)``, the run's dtype): for its lanes the state, the
per-lane parameters (derived ones precomputed as the reference computes them), the input
counts of the current step and the run's checks; row ``r`` of lane ``j`` is at ``r * BLK +
j``. With one buffer and constant row offsets LLVM proves that rows never overlap, so the
loops over the lanes of a block vectorise (AVX2 / AVX-512: 4-8 float64 lanes per
instruction) without runtime alias checks. What keeps them vectorised (checked by
``tests/backends/test_vector_math.py``): no branches in the loop body (selects; values are
loaded before they are selected), no libm call (``vector_math.exp``), unsigned indices
(:func:`_ix`; numba's negative-index wraparound is a select between addresses), and no
array passed to a call inside the loop (the per-lane math takes scalars). No ``fastmath``:
LLVM keeps IEEE semantics and the order of operations.
A step of a block is three loops over its lanes: Euler (per sub-step), threshold, and
jumps + reset + checks; recurrent jumps go between the second and the third.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from numba import njit, prange

from . import layout, vector_math
from .vector_math import exp, typed

__all__ = ["BLK", "N_ROWS", "STATE_ROWS", "P0", "init_workspace", "run_feedforward",
           "run_feedforward_serial", "run_recurrent", "run_recurrent_serial"]

log = logging.getLogger(__name__)

# numba's disk cache notices changes of this file only. The math compiled in from
# vector_math.py and the rows compiled in from layout.py are pinned by their hashes: an edit
# there has to update these lines (which invalidates the cache); until then the kernels
# are compiled afresh in every process.
_PINNED = {"vector_math.py": "55bb29ef941a724e5266494aa95b179b7055e09e5460f84dc06fad5ecbe8b16a",
           "layout.py": "99670967c7cad7736124edfa5002241645fdc5c2b75f8ac35083c10e83f0db78"}


def source_sha256(name: str) -> str:
    """SHA-256 of a file of this package (``name`` as in ``_PINNED``)."""
    return hashlib.sha256((Path(__file__).parent / name).read_bytes()).hexdigest()


def pins_hold(pinned: dict[str, str], module: str) -> bool:
    """Whether every file in ``pinned`` still has its pinned hash (then the kernels of
    ``module`` may use numba's disk cache); logs which pins to update when not."""
    held = all(source_sha256(name) == sha for name, sha in pinned.items())
    if not held:
        log.warning("a file that dynacal.backends.torch_sim.%s compiles in changed since it was pinned: its "
                    "kernels are not cached on disk; update _PINNED to %s.", module,
                    {name: source_sha256(name) for name in pinned})
    return held


_CACHE = pins_hold(_PINNED, "cpu_kernels")

#: Lanes per block: one uint64 spike mask per block and step; 32 lanes keep a block's
#: workspace (N_ROWS * 32 * 8 B = 13.5 kB in float64) in the L1 cache.
BLK = 32

# --- workspace rows ---------------------------------------------------------------------
MEM, AHP, NMDA, AMPA, GA, GB = 0, 1, 2, 3, 4, 5          # state (A), as dpi.State
STATE_ROWS = (MEM, AHP, NMDA, AMPA, GA, GB)
REFR = 6          # refractory steps left at the *next* step (already counted down)
CNT = 7           # 7..10: weighted input count of this step per synapse type
SPK = 11          # 1.0 where the lane spiked in this step
UNST = 12         # 1.0 once a state went negative or non-finite (engine.track_health)
PEAK = 13         # max over steps of Igaba_a + Isoma_ahp (A)
#: The parameter-only terms (layout.TERMS) follow, one row each, in their order.
P0 = 14
_t = lambda name: P0 + layout.index(name)  # noqa: E731
I0, THR, ICONST, STAU, SIG, ASOMA = (_t(x) for x in ("I0", "Inmda_thr", "Isoma_const", "Isoma_dpi_tau", "Ig_soma",
                                                     "alpha_soma"))
PGAIN, PTH, PNORM, TAUS1, TAUS0 = (_t(x) for x in ("Isoma_pfb_gain", "Isoma_pfb_th", "Isoma_pfb_norm", "tau_soma",
                                                   "tau_soma_I0"))
AIG, TAUA1, TAUA0, TWOI0 = (_t(x) for x in ("Ig_ahp", "tau_ahp", "tau_ahp_I0", "two_I0"))
# synapse type k (SYNAPSE_TYPES order) at + k
XIG, XTAU1, XTAU0, XW0, XALPHA = (_t(x) for x in ("Ig_nmda", "tau_nmda", "tau_nmda_I0", "Inmda_w0", "alpha_nmda"))
ITH, IRESET, AHPJ, REFRN = (_t(x) for x in ("Isoma_th", "Isoma_reset", "ahp_jump", "refractory_steps"))
N_ROWS = P0 + len(layout.TERMS)


@njit
def _ix(row, j):
    """Index of lane ``j`` of workspace row ``row``, unsigned: numba then emits no
    negative-index wraparound, which would stop the loops from vectorising."""
    return np.uint64(row * BLK + j)


# --- the DPI step (reference: dpi.derivatives and dpi.dpi_step) -------------------------
# Scalar functions inside loops over the lanes of a block; only the loops touch arrays, so
# nothing is reference-counted per lane. The soma's is inlined by numba ("always"): it is
# above LLVM's inlining threshold, and a call in the loop would stop vectorisation.

@njit(inline="always", error_model="numpy")
def _soma_derivatives(imem, iahp, inmda, iampa, iga, igb, i0, thr, iconst, stau, sig, asoma, pgain, pth,
                      pnorm, taus1, taus0, aig, taua1, taua0, twoi0):
    """``(dIsoma_mem/dt, dIsoma_ahp/dt)`` (A/s): the operations of ``dpi.derivatives`` in
    the same order, its masks as the same selects. Parameter-only terms come precomputed
    as the reference computes them: ``stau`` = Isoma_dpi_tau, ``sig`` = alpha_soma *
    Isoma_dpi_tau, ``taus1``/``taus0`` = tau_soma for Itau_s = Isoma_dpi_tau / I0, and
    likewise ``aig``, ``taua1``, ``taua0`` for the AHP; ``twoi0`` = 2 * I0."""
    one, zero = typed(1.0, i0), typed(0.0, i0)
    m = imem > i0
    imem_c = i0 if imem < i0 else imem          # torch.clamp: NaN stays NaN
    imem_c = one if imem_c > one else imem_c
    inmda_dp = inmda / (one + thr / imem_c)
    iin = inmda_dp + iampa - igb + iconst
    iin_c = i0 if iin < i0 else iin
    iin_c = one if iin_c > one else iin_c
    itau_s = stau if m else i0
    ig_s = sig if m else i0
    iahp_s = iahp if m else i0
    iga_s = iga if m else i0
    ipfb = pgain / (one + exp(-(imem - pth) / pnorm))
    ipfb_s = ipfb if m else i0
    fi0 = zero if m else i0
    isum = itau_s + iahp_s + iga_s - ipfb_s - fi0
    tau_s = taus1 if m else taus0
    d_mem = (asoma * (iin_c - isum) - (isum - fi0) * imem_c / itau_s) / (tau_s * (one + ig_s / imem_c))
    # adaptation: 0 where Iahp_s is 0 (the reference's quirk, see dpi.derivatives)
    a = iahp > i0
    iahp_g = aig if a else i0
    live = iahp_s > zero
    d_ahp = ((-iahp_g - iahp + (zero if a else twoi0))
             / ((taua1 if a else taua0) * (one + iahp_g / (iahp_s if live else one))))
    return d_mem, (d_ahp if live else zero)


@njit(error_model="numpy")
def _synapse_derivative(ix, i0, ig_on, tau_on, tau_off, twoi0):
    """dI_X/dt (A/s) of a DPI synapse; ``ig_on = alpha_X * I_X_tau``, ``tau_on``/``tau_off``
    its time constant for Itau = I_X_tau / I0."""
    s = ix > i0
    ig = ig_on if s else i0
    tau = tau_on if s else tau_off
    return (-ix - ig + (typed(0.0, i0) if s else twoi0)) / (tau * (ig / ix + typed(1.0, i0)))


@njit(error_model="numpy")
def _euler_pass(w, nb, h):
    """One forward-Euler (sub)step ``x + h * dx/dt`` of lanes ``0..nb-1``; Isoma_mem stays
    while refractory."""
    for j in range(nb):
        i0, imem, iahp = w[_ix(I0, j)], w[_ix(MEM, j)], w[_ix(AHP, j)]
        inmda, iampa, iga, igb = w[_ix(NMDA, j)], w[_ix(AMPA, j)], w[_ix(GA, j)], w[_ix(GB, j)]
        twoi0 = w[_ix(TWOI0, j)]
        d_mem, d_ahp = _soma_derivatives(
            imem, iahp, inmda, iampa, iga, igb, i0, w[_ix(THR, j)], w[_ix(ICONST, j)], w[_ix(STAU, j)],
            w[_ix(SIG, j)], w[_ix(ASOMA, j)], w[_ix(PGAIN, j)], w[_ix(PTH, j)], w[_ix(PNORM, j)],
            w[_ix(TAUS1, j)], w[_ix(TAUS0, j)], w[_ix(AIG, j)], w[_ix(TAUA1, j)], w[_ix(TAUA0, j)], twoi0)
        w[_ix(MEM, j)] = imem if w[_ix(REFR, j)] > typed(0.0, i0) else imem + h * d_mem
        w[_ix(AHP, j)] = iahp + h * d_ahp
        for k in range(4):
            ix = w[_ix(NMDA + k, j)]
            d = _synapse_derivative(ix, i0, w[_ix(XIG + k, j)], w[_ix(XTAU1 + k, j)],
                                    w[_ix(XTAU0 + k, j)], twoi0)
            w[_ix(NMDA + k, j)] = ix + h * d


@njit(error_model="numpy")
def _threshold_pass(w, nb):
    """Spikes of lanes ``0..nb-1``: not refractory and ``Isoma_mem > Isoma_th`` (the
    reference's ``(Imem - th) / th > 0``, the same test without the division). Writes the
    SPK row; returns the number of spikes."""
    nspk = 0
    for j in range(nb):
        th, zero = w[_ix(ITH, j)], typed(0.0, w[_ix(ITH, j)])
        spike = (w[_ix(MEM, j)] > th) & (w[_ix(REFR, j)] <= zero)
        w[_ix(SPK, j)], nspk = (typed(1.0, th), nspk + 1) if spike else (zero, nspk)
    return nspk


@njit(error_model="numpy")
def _settle_pass(w, nb):
    """Jumps of this step's counts (``I_X += I_X_w0 * count * alpha_X``), reset, refractory
    count, and the stability checks (``UNST``, ``PEAK``) of lanes ``0..nb-1``."""
    for j in range(nb):
        one, zero = typed(1.0, w[_ix(I0, j)]), typed(0.0, w[_ix(I0, j)])
        sf = w[_ix(SPK, j)]
        for k in range(4):
            r = _ix(NMDA + k, j)
            w[r] = w[r] + w[_ix(XW0 + k, j)] * w[_ix(CNT + k, j)] * w[_ix(XALPHA + k, j)]
            w[_ix(CNT + k, j)] = zero
        iahp = w[_ix(AHP, j)] + sf * w[_ix(AHPJ, j)]
        imem = w[_ix(MEM, j)] * (one - sf) + w[_ix(IRESET, j)] * sf
        w[_ix(AHP, j)] = iahp
        w[_ix(MEM, j)] = imem
        # loads first, then selects: a load inside a conditional stops vectorisation
        refrn, refr, unst = w[_ix(REFRN, j)], w[_ix(REFR, j)], w[_ix(UNST, j)]
        left = (refrn if sf > zero else refr) - one
        w[_ix(REFR, j)] = zero if left < zero else left
        iga = w[_ix(GA, j)]
        bad = ((not imem > zero) | (not iahp >= zero) | (not w[_ix(NMDA, j)] > zero)
               | (not w[_ix(AMPA, j)] > zero) | (not iga > zero) | (not w[_ix(GB, j)] > zero))
        w[_ix(UNST, j)] = one if bad else unst
        v, pk = iga + iahp, w[_ix(PEAK, j)]
        w[_ix(PEAK, j)] = v if (v > pk) | (v != v) else pk


@njit(error_model="numpy")
def _mask(w, nb):
    """Bit j set where lane j spiked in this step."""
    mask = np.uint64(0)
    for j in range(nb):
        if w[_ix(SPK, j)] > 0:
            mask |= np.uint64(1) << np.uint64(j)
    return mask


@njit(error_model="numpy")
def _record(w, blk, t_rec, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces):
    for e in range(tr_ptr[blk], tr_ptr[blk + 1]):
        for q in range(name_rows.size):
            traces[q, t_rec, tr_b[e], tr_r[e]] = w[name_rows[q] * BLK + tr_j[e]]


# --- set-up -------------------------------------------------------------------------------

@njit(cache=_CACHE, error_model="numpy")
def init_workspace(ws, P, lane0, nvalid, init):
    """Fill every valid lane's term rows and initial state.

    Args:
        ws: float (n_blocks, N_ROWS * BLK) workspace, dtype of the run.
        P: (len(layout.TERMS), B * N) the terms of ``layout.derive`` in their order, SI
            units (``refractory_steps`` as a whole number), dtype of the run.
        lane0, nvalid: int64 (n_blocks,) first lane and number of lanes of each block.
        init: (6,) initial currents (A) in ``STATE_ROWS`` order.
    """
    for blk in range(ws.shape[0]):
        w = ws[blk]
        for j in range(nvalid[blk]):
            n = lane0[blk] + j
            zero = typed(0.0, P[0, n])
            for r in range(N_ROWS):
                w[_ix(r, j)] = zero
            for r in range(6):
                w[_ix(r, j)] = init[r]
            for r in range(P.shape[0]):
                w[_ix(P0 + r, j)] = P[r, n]


# --- time loops (parallel, and serial for small runs: waking threads costs more) ---------

_LOOP_ARGS = """
    Args:
        ws: workspace (n_blocks, N_ROWS * BLK), updated in place.
        lane0, nvalid, group: int64 (n_blocks,) per block: first lane, lanes, event group.
        gptr, ev_t, ev_off, ev_w: this chunk's input events (``fused_cpu_events.chunk_events``).
        n_t: steps in this chunk; t0: global index of its first step.
        h: Euler step ``dt / substeps`` (s), in the run's dtype; substeps: Euler sub-steps.
        every: record the state at the start of global steps ``t % every == 0``.
        tr_ptr, tr_j, tr_b, tr_r: per block (CSR) the recorded lanes and their (set,
            column) in ``traces`` (n_names, T_rec, B, R); name_rows: state row per name.
        masks: uint64 (>= n_t, n_blocks) out: bit j of ``masks[k, blk]`` = lane j spiked.
"""


@njit(error_model="numpy")
def _feedforward_block(w, blk, nb, e, e_end, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
                       tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks):
    """All ``n_t`` steps of one block (its events ``e:e_end``)."""
    for k in range(n_t):
        if (t0 + k) % every == 0:
            _record(w, blk, (t0 + k) // every, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces)
        while e < e_end and ev_t[e] == k:
            w[ev_off[e]] += ev_w[e]
            e += 1
        for _ in range(substeps):
            _euler_pass(w, nb, h)
        nspk = _threshold_pass(w, nb)
        _settle_pass(w, nb)
        masks[k, blk] = _mask(w, nb) if nspk > 0 else np.uint64(0)


@njit(cache=_CACHE, parallel=True, error_model="numpy")
def run_feedforward(ws, lane0, nvalid, group, gptr, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
                    tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks):
    for blk in prange(ws.shape[0]):
        g = group[blk]
        _feedforward_block(ws[blk], blk, nvalid[blk], gptr[g], gptr[g + 1], ev_t, ev_off, ev_w, n_t, t0, h,
                           substeps, every, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks)


@njit(cache=_CACHE, error_model="numpy")
def run_feedforward_serial(ws, lane0, nvalid, group, gptr, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
                           tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks):
    for blk in range(ws.shape[0]):
        g = group[blk]
        _feedforward_block(ws[blk], blk, nvalid[blk], gptr[g], gptr[g + 1], ev_t, ev_off, ev_w, n_t, t0, h,
                           substeps, every, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks)


run_feedforward.__doc__ = run_feedforward_serial.__doc__ = (
    """Advance every block by ``n_t`` steps, neuron-major: each block runs all the steps of
    the chunk (no neuron reads another's spikes); blocks in parallel (``_serial``: in turn).
""" + _LOOP_ARGS)


@njit(error_model="numpy")
def _recurrent_part(ws, b0, b1, lane0, nvalid, group, gptr, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
                    tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks,
                    rec_ptr, rec_post, rec_type, rec_w, lane_blk, lane_j, n_neurons):
    """All ``n_t`` steps of the blocks ``b0:b1`` (whole parameter sets), time-major."""
    cur = np.empty(b1 - b0, np.int64)
    for blk in range(b0, b1):
        cur[blk - b0] = gptr[group[blk]]
    for k in range(n_t):
        for blk in range(b0, b1):
            w, nb = ws[blk], nvalid[blk]
            if (t0 + k) % every == 0:
                _record(w, blk, (t0 + k) // every, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces)
            e, e_end = cur[blk - b0], gptr[group[blk] + 1]
            while e < e_end and ev_t[e] == k:
                w[ev_off[e]] += ev_w[e]
                e += 1
            cur[blk - b0] = e
            for _ in range(substeps):
                _euler_pass(w, nb, h)
            nspk = _threshold_pass(w, nb)
            masks[k, blk] = _mask(w, nb) if nspk > 0 else np.uint64(0)
        for blk in range(b0, b1):  # this step's spikes jump through the recurrent connections
            m = masks[k, blk]
            for j in range(nvalid[blk] if m else 0):
                if (m >> np.uint64(j)) & np.uint64(1):
                    b = (lane0[blk] + j) // n_neurons
                    pre = lane0[blk] + j - b * n_neurons
                    for c in range(rec_ptr[pre], rec_ptr[pre + 1]):
                        tl = b * n_neurons + rec_post[c]
                        ws[lane_blk[tl], (CNT + rec_type[c]) * BLK + lane_j[tl]] += rec_w[c]
        for blk in range(b0, b1):
            _settle_pass(ws[blk], nvalid[blk])


@njit(cache=_CACHE, parallel=True, error_model="numpy")
def run_recurrent(ws, lane0, nvalid, group, gptr, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
                  tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks,
                  part_ptr, rec_ptr, rec_post, rec_type, rec_w, lane_blk, lane_j, n_neurons):
    for part in prange(part_ptr.size - 1):
        _recurrent_part(ws, part_ptr[part], part_ptr[part + 1], lane0, nvalid, group, gptr, ev_t, ev_off, ev_w,
                        n_t, t0, h, substeps, every, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks,
                        rec_ptr, rec_post, rec_type, rec_w, lane_blk, lane_j, n_neurons)


@njit(cache=_CACHE, error_model="numpy")
def run_recurrent_serial(ws, lane0, nvalid, group, gptr, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
                         tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks,
                         part_ptr, rec_ptr, rec_post, rec_type, rec_w, lane_blk, lane_j, n_neurons):
    for part in range(part_ptr.size - 1):
        _recurrent_part(ws, part_ptr[part], part_ptr[part + 1], lane0, nvalid, group, gptr, ev_t, ev_off, ev_w,
                        n_t, t0, h, substeps, every, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks,
                        rec_ptr, rec_post, rec_type, rec_w, lane_blk, lane_j, n_neurons)


run_recurrent.__doc__ = run_recurrent_serial.__doc__ = (
    """Like ``run_feedforward``, time-major, for networks with recurrent connections.

    Each step: Euler and threshold of every lane; then this step's spikes jump through the
    recurrent connections (``rec_ptr``: CSR by presynaptic neuron of post neuron, synapse
    type, weight) into the count rows of their targets in the same set; then jumps, reset
    and checks. Partitions ``part_ptr`` (blocks of whole parameter sets) run in parallel
    (``_serial``: in turn); ``lane_blk``/``lane_j`` (B * N,) locate each lane.
""" + _LOOP_ARGS)
