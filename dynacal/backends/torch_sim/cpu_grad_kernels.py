r"""Numba kernels of the fused CPU gradient: the tangent-linear DPI step, K directions per lane.

What :mod:`.fused_cpu_grad` calls to contract the output gradients of a run with the
sensitivities of its states to K per-lane parameters. The primal step is the fused
forward's own (``fused_cpu_kernels._euler_pass``, ``_threshold_pass``, ``_settle_pass``),
so the spike steps are those of the forward pass bit for bit; this file adds, per lane:

1. *partials* of the step at the current state (derivatives of ``dIsoma_mem/dt``,
   ``dIsoma_ahp/dt``, ``dI_X/dt`` with respect to the states and to the parameter-only
   terms of the workspace, the threshold's and reset's coefficients), computed once per
   lane-step by reverse differentiation of the scalar expressions of ``dpi.derivatives``
   (every select and clamp passes its derivative to the side it selects, as torch's
   ``where`` and ``clamp`` do);
2. per direction ``d``: ``acc += partial * dq`` for the few (partial, parameter-tangent)
   pairs that direction touches (lists built once per run: a direction moves 1-20 of the
   38 parameter rows), then the tangent of the Euler step, the threshold (surrogate), the
   jumps and the reset, and the contraction ``G[d] += dL/draster * dspike`` (traces: at
   their record steps, ``G[d] += dL/dtrace * dstate``).

Layout: the rows of ``fused_cpu_kernels`` (``0 .. K.N_ROWS - 1``, filled by its
``init_workspace``), then the rows below, then the tangents ``TS + s * n_dir + d`` of the
six states, the gradient accumulators ``TS + 6 * n_dir + d`` and the nonzero parameter
tangents (compact, rows named in the lists). Row ``r`` of lane ``j`` is ``r * BLK + j``.
Each pass is a branch-free loop over the lanes of a block, as in ``fused_cpu_kernels``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from . import cpu_kernels as K
from .vector_math import exp, typed

__all__ = ["P_MEM", "P_AHP", "P_X", "CM", "CTH", "SP", "JW0", "JA", "ACC_MEM", "ACC_AHP", "ACC_X", "ACC_DS", "ACC2_MEM", "ACC2_AHP", "ACC2_X",
           "TS", "EULER_INPUTS", "POST_INPUTS", "run_grad", "run_grad_serial"]

# numba's disk cache notices changes of this file only, and these kernels compile in the
# primal passes of cpu_kernels (with what it pins): all are pinned by hash.
_PINNED = {"cpu_kernels.py": "0b58c39a845472d09ea88917d95823a68da2512b9a69d8d7a49a84f9dc224166", **K._PINNED}
source_sha256 = K.source_sha256
_CACHE = K.pins_hold(_PINNED, "cpu_grad_kernels")

BLK = K.BLK
# --- rows after the primal ones --------------------------------------------------------
_R = K.N_ROWS
#: d(dIsoma_mem/dt) by: the 6 states (STATE_ROWS order), then I0, THR, ICONST, STAU, SIG,
#: ASOMA, PGAIN, PTH, PNORM, TAUS1, TAUS0 (the workspace's parameter rows).
P_MEM = _R
#: d(dIsoma_ahp/dt) by: Isoma_ahp, then I0, AIG, TAUA1, TAUA0, TWOI0.
P_AHP = _R + 17
#: d(dI_X/dt) of synapse k at ``P_X + 6 k`` by: I_X, then I0, XIG + k, XTAU1 + k, XTAU0 + k, TWOI0.
P_X = _R + 23
CM = _R + 47     # dspike / dIsoma_mem (surrogate; 0 while refractory)
CTH = _R + 48    # dspike / dIsoma_th
SP = _R + 49     # the spike (0/1): d(reset) / dIsoma_reset and d(jump) / d(AHPJ)
RMI = _R + 50    # Isoma_reset - Isoma_mem before the reset: d(Isoma_mem after) / dspike
JW0 = _R + 51    # + k: d(jump of I_X) / d(I_X_w0) = count * alpha_X
JA = _R + 55     # + k: d(jump of I_X) / d(alpha_X) = I_X_w0 * count
ACC_MEM, ACC_AHP, ACC_X, ACC_DS = _R + 59, _R + 60, _R + 61, _R + 65  # per direction: sum partial * dq
GR = _R + 66     # dL/draster of this step
ACC2_MEM, ACC2_AHP, ACC2_X = _R + 67, _R + 68, _R + 69  # the same for the reset and jumps (not times h)
FRZ = _R + 73    # 1 where Isoma_mem was frozen in this step (REFR before the settle pass counts down)
TS = _R + 74     # first tangent row

#: Parameter row -> (accumulator, partial row) pairs of the Euler step: whatever a
#: direction moves in a parameter row enters these accumulators through these partials.
EULER_INPUTS: dict[int, tuple[tuple[int, int], ...]] = {
    K.I0: ((ACC_MEM, P_MEM + 6), (ACC_AHP, P_AHP + 1), *((ACC_X + k, P_X + 6 * k + 1) for k in range(4))),
    **{row: ((ACC_MEM, P_MEM + 7 + i),) for i, row in enumerate(
        (K.THR, K.ICONST, K.STAU, K.SIG, K.ASOMA, K.PGAIN, K.PTH, K.PNORM, K.TAUS1, K.TAUS0))},
    K.AIG: ((ACC_AHP, P_AHP + 2),), K.TAUA1: ((ACC_AHP, P_AHP + 3),), K.TAUA0: ((ACC_AHP, P_AHP + 4),),
    K.TWOI0: ((ACC_AHP, P_AHP + 5), *((ACC_X + k, P_X + 6 * k + 5) for k in range(4))),
    **{K.XIG + k: ((ACC_X + k, P_X + 6 * k + 2),) for k in range(4)},
    **{K.XTAU1 + k: ((ACC_X + k, P_X + 6 * k + 3),) for k in range(4)},
    **{K.XTAU0 + k: ((ACC_X + k, P_X + 6 * k + 4),) for k in range(4)},
}
#: The same for threshold, jumps and reset.
POST_INPUTS: dict[int, tuple[tuple[int, int], ...]] = {
    K.ITH: ((ACC_DS, CTH),), K.IRESET: ((ACC2_MEM, SP),), K.AHPJ: ((ACC2_AHP, SP),),
    **{K.XW0 + k: ((ACC2_X + k, JW0 + k),) for k in range(4)},
    **{K.XALPHA + k: ((ACC2_X + k, JA + k),) for k in range(4)},
}


@njit
def _ix(row, j):
    """Unsigned index of lane j of row ``row`` (as ``fused_cpu_kernels._ix``)."""
    return np.uint64(row * BLK + j)


# --- partials (reverse differentiation of dpi.derivatives, lane by lane) ----------------

@njit(inline="always", error_model="numpy")
def _clamp_grads(x, lo, g):
    """Gradient of ``clamp(x, lo, 1)`` to x and to lo, as torch.clamp passes it."""
    zero = typed(0.0, x)
    inside = (x >= lo) & (x <= typed(1.0, x))
    return (g if inside else zero), (g if x < lo else zero)


@njit(inline="always", error_model="numpy")
def _soma_partials(imem, iahp, inmda, iampa, iga, igb, i0, thr, iconst, stau, sig, asoma, pgain, pth, pnorm,
                   taus1, taus0):
    """d(dIsoma_mem/dt) by the 6 states and 11 parameter rows (the ``P_MEM`` order)."""
    one, zero = typed(1.0, i0), typed(0.0, i0)
    # forward, as fused_cpu_kernels._soma_derivatives (with reciprocals: these values only
    # weight tangents, the primal step is the forward's own)
    m = imem > i0
    imem_c = i0 if imem < i0 else imem
    imem_c = one if imem_c > one else imem_c
    r_imc = one / imem_c
    den1 = one + thr * r_imc
    r_den1 = one / den1
    inmda_dp = inmda * r_den1
    iin = inmda_dp + iampa - igb + iconst
    iin_c = i0 if iin < i0 else iin
    iin_c = one if iin_c > one else iin_c
    itau_s = stau if m else i0
    r_itau = one / itau_s
    ig_s = sig if m else i0
    iahp_s = iahp if m else i0
    iga_s = iga if m else i0
    r_pn = one / pnorm
    e = exp(-(imem - pth) * r_pn)
    r_e = one / (one + e)
    ipfb = pgain * r_e
    ipfb_s = ipfb if m else i0
    fi0 = zero if m else i0
    isum = itau_s + iahp_s + iga_s - ipfb_s - fi0
    tau_s = taus1 if m else taus0
    q = imem_c * r_itau
    num = asoma * (iin_c - isum) - (isum - fi0) * q
    den = tau_s * (one + ig_s * r_imc)
    r_den = one / den
    d_mem = num * r_den
    # backward
    g_num, g_den = r_den, -d_mem * r_den
    g_asoma = g_num * (iin_c - isum)
    g_iin_c = g_num * asoma
    g_isum = -g_num * asoma - g_num * q
    g_fi0 = g_num * q - g_isum
    g_imem_c = -g_num * (isum - fi0) * r_itau - g_den * tau_s * ig_s * r_imc * r_imc
    g_itau_s = g_num * (isum - fi0) * q * r_itau + g_isum
    g_tau_s = g_den * (one + ig_s * r_imc)
    g_ig_s = g_den * tau_s * r_imc
    g_ipfb = -g_isum if m else zero
    # below the floor I0 takes the place of fi0, ipfb_s, iga_s, iahp_s, ig_s and itau_s
    g_i0 = zero if m else (g_fi0 - g_isum + g_isum + g_isum + g_ig_s + g_itau_s)
    # exp(z), z = -(imem - pth) / pnorm; 1 - 1 / (1 + e) = e / (1 + e) without inf / inf
    g_z = -g_ipfb * ipfb * (one - r_e)
    g_iin, g_i0_in = _clamp_grads(iin, i0, g_iin_c)
    g_den1 = -g_iin * inmda_dp * r_den1
    g_imem_c = g_imem_c - g_den1 * thr * r_imc * r_imc
    g_imem, g_i0_mem = _clamp_grads(imem, i0, g_imem_c)
    g_state = g_isum if m else zero
    return (g_imem - g_z * r_pn, g_state, g_iin * r_den1, g_iin, g_state, -g_iin,
            g_i0 + g_i0_in + g_i0_mem, g_den1 * r_imc, g_iin, g_itau_s if m else zero, g_ig_s if m else zero,
            g_asoma, g_ipfb * r_e, g_z * r_pn, g_z * (imem - pth) * r_pn * r_pn,
            g_tau_s if m else zero, zero if m else g_tau_s)


@njit(inline="always", error_model="numpy")
def _ahp_partials(imem, iahp, i0, aig, taua1, taua0, twoi0):
    """d(dIsoma_ahp/dt) by Isoma_ahp, I0, AIG, TAUA1, TAUA0, TWOI0 (0 where the reference's
    quirk makes dIsoma_ahp/dt 0)."""
    one, zero = typed(1.0, i0), typed(0.0, i0)
    m = imem > i0
    iahp_s = iahp if m else i0
    a = iahp > i0
    iahp_g = aig if a else i0
    live = iahp_s > zero
    safe = iahp_s if live else one
    tau_a = taua1 if a else taua0
    den = tau_a * (one + iahp_g / safe)
    d_ahp = (-iahp_g - iahp + (zero if a else twoi0)) / den
    g_num = one / den if live else zero
    g_den = -d_ahp / den if live else zero
    g_iahp_g = -g_num + g_den * tau_a / safe
    g_iahp_s = -g_den * tau_a * iahp_g / (safe * safe)
    g_tau_a = g_den * (one + iahp_g / safe)
    return (-g_num + (g_iahp_s if m else zero), (zero if m else g_iahp_s) + (zero if a else g_iahp_g),
            g_iahp_g if a else zero, g_tau_a if a else zero, zero if a else g_tau_a, zero if a else g_num)


@njit(inline="always", error_model="numpy")
def _synapse_partials(ix, i0, ig_on, tau_on, tau_off, twoi0):
    """d(dI_X/dt) by I_X, I0, XIG, XTAU1, XTAU0, TWOI0 of one synapse type."""
    one, zero = typed(1.0, i0), typed(0.0, i0)
    s = ix > i0
    ig = ig_on if s else i0
    tau = tau_on if s else tau_off
    den = tau * (ig / ix + one)
    d = (-ix - ig + (zero if s else twoi0)) / den
    g_num, g_den = one / den, -d / den
    g_ig = -g_num + g_den * tau / ix
    g_tau = g_den * (ig / ix + one)
    return (-g_num - g_den * tau * ig / (ix * ix), zero if s else g_ig, g_ig if s else zero,
            g_tau if s else zero, zero if s else g_tau, zero if s else g_num)


@njit(error_model="numpy")
def _euler_partials(w, nb):
    """The ``P_MEM``, ``P_AHP`` and ``P_X`` rows of lanes ``0..nb-1`` at the current state."""
    for j in range(nb):
        i0, imem, iahp = w[_ix(K.I0, j)], w[_ix(K.MEM, j)], w[_ix(K.AHP, j)]
        out = _soma_partials(
            imem, iahp, w[_ix(K.NMDA, j)], w[_ix(K.AMPA, j)], w[_ix(K.GA, j)], w[_ix(K.GB, j)], i0,
            w[_ix(K.THR, j)], w[_ix(K.ICONST, j)], w[_ix(K.STAU, j)], w[_ix(K.SIG, j)], w[_ix(K.ASOMA, j)],
            w[_ix(K.PGAIN, j)], w[_ix(K.PTH, j)], w[_ix(K.PNORM, j)], w[_ix(K.TAUS1, j)], w[_ix(K.TAUS0, j)])
        (w[_ix(P_MEM, j)], w[_ix(P_MEM + 1, j)], w[_ix(P_MEM + 2, j)], w[_ix(P_MEM + 3, j)], w[_ix(P_MEM + 4, j)],
         w[_ix(P_MEM + 5, j)], w[_ix(P_MEM + 6, j)], w[_ix(P_MEM + 7, j)], w[_ix(P_MEM + 8, j)], w[_ix(P_MEM + 9, j)],
         w[_ix(P_MEM + 10, j)], w[_ix(P_MEM + 11, j)], w[_ix(P_MEM + 12, j)], w[_ix(P_MEM + 13, j)],
         w[_ix(P_MEM + 14, j)], w[_ix(P_MEM + 15, j)], w[_ix(P_MEM + 16, j)]) = out
        out2 = _ahp_partials(imem, iahp, i0, w[_ix(K.AIG, j)], w[_ix(K.TAUA1, j)], w[_ix(K.TAUA0, j)],
                             w[_ix(K.TWOI0, j)])
        (w[_ix(P_AHP, j)], w[_ix(P_AHP + 1, j)], w[_ix(P_AHP + 2, j)], w[_ix(P_AHP + 3, j)], w[_ix(P_AHP + 4, j)],
         w[_ix(P_AHP + 5, j)]) = out2
    for k in range(4):
        for j in range(nb):
            out3 = _synapse_partials(w[_ix(K.NMDA + k, j)], w[_ix(K.I0, j)], w[_ix(K.XIG + k, j)],
                                     w[_ix(K.XTAU1 + k, j)], w[_ix(K.XTAU0 + k, j)], w[_ix(K.TWOI0, j)])
            r = P_X + 6 * k
            (w[_ix(r, j)], w[_ix(r + 1, j)], w[_ix(r + 2, j)], w[_ix(r + 3, j)], w[_ix(r + 4, j)],
             w[_ix(r + 5, j)]) = out3


@njit(error_model="numpy")
def _post_partials(w, nb, sg_kind, sg_scale):
    """Threshold, jump and reset coefficients of lanes ``0..nb-1`` (after the threshold pass,
    before the settle pass). ``sg_kind``: 0 none, 1 fast sigmoid, 2 straight-through."""
    for j in range(nb):
        imem, th, ireset = w[_ix(K.MEM, j)], w[_ix(K.ITH, j)], w[_ix(K.IRESET, j)]
        refr, spk = w[_ix(K.REFR, j)], w[_ix(K.SPK, j)]
        one, zero = typed(1.0, th), typed(0.0, th)
        x = abs((imem - th) / th)
        fast = one / ((one + sg_scale * x) * (one + sg_scale * x))
        straight = one if x < sg_scale else zero
        sg = fast if sg_kind == 1 else (straight if sg_kind == 2 else zero)
        c = sg if refr <= zero else zero
        w[_ix(CM, j)] = c / th
        w[_ix(CTH, j)] = -(c / th) * (imem / th)
        w[_ix(SP, j)] = spk
        w[_ix(RMI, j)] = ireset - imem
        w[_ix(FRZ, j)] = one if refr > zero else zero
    for k in range(4):
        for j in range(nb):
            cnt = w[_ix(K.CNT + k, j)]
            w[_ix(JW0 + k, j)] = cnt * w[_ix(K.XALPHA + k, j)]
            w[_ix(JA + k, j)] = w[_ix(K.XW0 + k, j)] * cnt


# --- tangents, one direction at a time ------------------------------------------------

@njit(error_model="numpy")
def _param_pass(w, nb, lo, hi, acc, part, dq):
    """``acc += partial * dq`` for the list entries ``lo:hi`` (rows)."""
    for e in range(lo, hi):
        a, p, q = acc[e], part[e], dq[e]
        for j in range(nb):
            w[_ix(a, j)] += w[_ix(p, j)] * w[_ix(q, j)]


@njit(error_model="numpy")
def _euler_tangent(w, nb, h, d, n_dir):
    """Tangent of one Euler (sub)step in direction d: ``t += h * (A t + acc)``."""
    tm, ta = TS + d, TS + n_dir + d
    for j in range(nb):
        zero = typed(0.0, h)
        t = w[_ix(tm, j)]
        dm = (w[_ix(P_MEM, j)] * t + w[_ix(P_MEM + 1, j)] * w[_ix(ta, j)] + w[_ix(ACC_MEM, j)])
        for s in range(4):
            dm += w[_ix(P_MEM + 2 + s, j)] * w[_ix(TS + (2 + s) * n_dir + d, j)]
        w[_ix(tm, j)] = t if w[_ix(K.REFR, j)] > zero else t + h * dm
        x = w[_ix(ta, j)]
        w[_ix(ta, j)] = x + h * (w[_ix(P_AHP, j)] * x + w[_ix(ACC_AHP, j)])
        w[_ix(ACC_MEM, j)] = zero
        w[_ix(ACC_AHP, j)] = zero
    for k in range(4):
        tx = TS + (2 + k) * n_dir + d
        for j in range(nb):
            x = w[_ix(tx, j)]
            w[_ix(tx, j)] = x + h * (w[_ix(P_X + 6 * k, j)] * x + w[_ix(ACC_X + k, j)])
            w[_ix(ACC_X + k, j)] = typed(0.0, h)


@njit(error_model="numpy")
def _step_tangent(w, nb, h, d, n_dir):
    """Tangent of the last Euler (sub)step, the threshold, jumps and reset in direction d,
    in one pass; ``G[d] += dL/draster * dspike``."""
    tm, ta, g = TS + d, TS + n_dir + d, TS + 6 * n_dir + d
    for j in range(nb):
        one, zero = typed(1.0, h), typed(0.0, h)
        t = w[_ix(tm, j)]
        x = w[_ix(ta, j)]
        dm = w[_ix(P_MEM, j)] * t + w[_ix(P_MEM + 1, j)] * x + w[_ix(ACC_MEM, j)]
        for s in range(4):
            dm += w[_ix(P_MEM + 2 + s, j)] * w[_ix(TS + (2 + s) * n_dir + d, j)]
        t = t if w[_ix(FRZ, j)] > zero else t + h * dm
        x = x + h * (w[_ix(P_AHP, j)] * x + w[_ix(ACC_AHP, j)])
        ds = w[_ix(CM, j)] * t + w[_ix(ACC_DS, j)]
        w[_ix(g, j)] += w[_ix(GR, j)] * ds
        w[_ix(tm, j)] = t * (one - w[_ix(SP, j)]) + ds * w[_ix(RMI, j)] + w[_ix(ACC2_MEM, j)]
        w[_ix(ta, j)] = x + ds * w[_ix(K.AHPJ, j)] + w[_ix(ACC2_AHP, j)]
        w[_ix(ACC_MEM, j)] = zero
        w[_ix(ACC_AHP, j)] = zero
        w[_ix(ACC_DS, j)] = zero
        w[_ix(ACC2_MEM, j)] = zero
        w[_ix(ACC2_AHP, j)] = zero
    for k in range(4):
        tx = TS + (2 + k) * n_dir + d
        for j in range(nb):
            x = w[_ix(tx, j)]
            w[_ix(tx, j)] = x + h * (w[_ix(P_X + 6 * k, j)] * x + w[_ix(ACC_X + k, j)]) + w[_ix(ACC2_X + k, j)]
            w[_ix(ACC_X + k, j)] = typed(0.0, h)
            w[_ix(ACC2_X + k, j)] = typed(0.0, h)


@njit(error_model="numpy")
def _contract_traces(w, blk, t_rec, tr_ptr, tr_j, tr_b, tr_r, name_rows, gtraces, n_dir):
    """``G[d] += dL/dtrace * dstate`` for the lanes of ``blk`` recorded at this step."""
    for e in range(tr_ptr[blk], tr_ptr[blk + 1]):
        j = tr_j[e]
        for q in range(name_rows.size):
            gq = gtraces[q, t_rec, tr_b[e], tr_r[e]]
            for d in range(n_dir):
                w[(TS + 6 * n_dir + d) * BLK + j] += gq * w[(TS + name_rows[q] * n_dir + d) * BLK + j]


@njit(error_model="numpy")
def _grad_block(w, blk, l0, nb, e, e_end, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
                tr_ptr, tr_j, tr_b, tr_r, name_rows, gtraces, graster, n_dir, lists, sg_kind, sg_scale):
    """All ``n_t`` steps of one block: primal (the forward's passes) and tangents."""
    p1, a1, q1, r1, p3, a3, q3, r3 = lists
    for k in range(n_t):
        if (t0 + k) % every == 0:
            _contract_traces(w, blk, (t0 + k) // every, tr_ptr, tr_j, tr_b, tr_r, name_rows, gtraces, n_dir)
        while e < e_end and ev_t[e] == k:
            w[ev_off[e]] += ev_w[e]
            e += 1
        for j in range(nb):
            w[_ix(GR, j)] = graster[t0 + k, l0 + j]
        for sub in range(substeps):
            _euler_partials(w, nb)
            K._euler_pass(w, nb, h)
            for d in range(n_dir if sub < substeps - 1 else 0):  # the last one goes with the threshold
                _param_pass(w, nb, p1[d], p1[d + 1], a1, r1, q1)
                _euler_tangent(w, nb, h, d, n_dir)
        K._threshold_pass(w, nb)
        _post_partials(w, nb, sg_kind, sg_scale)
        K._settle_pass(w, nb)
        for d in range(n_dir):
            _param_pass(w, nb, p3[d], p3[d + 1], a3, r3, q3)
            _step_tangent(w, nb, h, d, n_dir)


@njit(cache=_CACHE, parallel=True, error_model="numpy")
def run_grad(ws, lane0, nvalid, group, gptr, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
             tr_ptr, tr_j, tr_b, tr_r, name_rows, gtraces, graster, n_dir, lists, sg_kind, sg_scale):
    for blk in prange(ws.shape[0]):
        g = group[blk]
        _grad_block(ws[blk], blk, lane0[blk], nvalid[blk], gptr[g], gptr[g + 1], ev_t, ev_off, ev_w, n_t, t0, h,
                    substeps, every, tr_ptr, tr_j, tr_b, tr_r, name_rows, gtraces, graster, n_dir, lists,
                    sg_kind, sg_scale)


@njit(cache=_CACHE, error_model="numpy")
def run_grad_serial(ws, lane0, nvalid, group, gptr, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
                    tr_ptr, tr_j, tr_b, tr_r, name_rows, gtraces, graster, n_dir, lists, sg_kind, sg_scale):
    for blk in range(ws.shape[0]):
        g = group[blk]
        _grad_block(ws[blk], blk, lane0[blk], nvalid[blk], gptr[g], gptr[g + 1], ev_t, ev_off, ev_w, n_t, t0, h,
                    substeps, every, tr_ptr, tr_j, tr_b, tr_r, name_rows, gtraces, graster, n_dir, lists,
                    sg_kind, sg_scale)


run_grad.__doc__ = run_grad_serial.__doc__ = """Advance every block by ``n_t`` steps with tangents
    (blocks in parallel; ``_serial``: in turn), accumulating ``G`` in the workspace.

    Args: as ``fused_cpu_kernels.run_feedforward`` for the primal (``ws`` with this file's
        rows), plus ``gtraces`` (n_names, T_rec, B, R) and ``graster`` (T, B * N): the
        gradients of the loss by the outputs; ``n_dir``: directions; ``lists``: CSR by direction
        of (accumulator, dq row, partial row), first of the Euler sub-steps before the
        last, then of the last one with threshold, jumps and reset; ``sg_kind``/``sg_scale``: the surrogate.
"""
