"""The Triton kernel of the fused GPU engine (imported only by ``cuda.simulate``).

One program advances ``BLOCK`` neurons (flat index ``b * N + n``) through the steps
``t0 .. t1 - 1`` with the whole time loop inside the kernel and the state in registers.
The reference physics is :func:`dynacal.backends.torch_sim.dpi.derivatives` and
:func:`dynacal.backends.torch_sim.dpi.dpi_step`; the equations are written here once more in
Triton form, operation for operation in the same order, and ``tests/backends/
torch_sim/test_cuda.py`` binds the two (same spike steps, traces within rounding). Where a
masked expression of ``dpi.py`` (``m * x + (1 - m) * I0`` with ``m`` in {0, 1}) can
only take two values that do not depend on the state, both come in as terms of
``layout.derive`` (computed once, in torch) and are selected with ``tl.where``: the result is
bit-identical and saves divisions.

This module imports triton at import time: keep every other import of it lazy.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice

from . import layout

__all__ = ["dpi_kernel"]

# Rows of the (len(layout.FLOAT_TERMS), total) parameter tensor, by the terms' names.
_row = lambda name: tl.constexpr(layout.index(name))  # noqa: E731
T_I0, T_ALPHA_SOMA, T_ISOMA_DPI_TAU = _row("I0"), _row("alpha_soma"), _row("Isoma_dpi_tau")
T_ISOMA_TH, T_ISOMA_RESET, T_ISOMA_CONST = _row("Isoma_th"), _row("Isoma_reset"), _row("Isoma_const")
T_AHP_JUMP, T_INMDA_THR = _row("ahp_jump"), _row("Inmda_thr")
T_PFB_GAIN, T_PFB_TH, T_PFB_NORM = _row("Isoma_pfb_gain"), _row("Isoma_pfb_th"), _row("Isoma_pfb_norm")
T_TAU_SOMA, T_TAU_SOMA_I0, T_IG_SOMA = _row("tau_soma"), _row("tau_soma_I0"), _row("Ig_soma")
T_TAU_AHP, T_TAU_AHP_I0, T_IG_AHP = _row("tau_ahp"), _row("tau_ahp_I0"), _row("Ig_ahp")
T_ALPHA_X, T_IG_X, T_W0_X = _row("alpha_nmda"), _row("Ig_nmda"), _row("Inmda_w0")  # + synapse type 0..3
T_TAU_X, T_TAU_X_I0 = _row("tau_nmda"), _row("tau_nmda_I0")


@triton.jit
def _ld(prm_ptr, row: tl.constexpr, total, offs, mask):
    return tl.load(prm_ptr + row * total + offs, mask=mask, other=1.0)


@triton.jit
def _div(a, b, FAST: tl.constexpr):
    # a / b; FAST (float32 on CUDA only): div.approx.f32, 2 ulp like Triton's default
    # div.full.f32 for |b| < 2**126 (always so here) at a third of its instructions
    if FAST:
        return libdevice.fast_dividef(a, b)
    else:
        return a / b


@triton.jit
def _syn(I, I0, Ig_on, tau_on, tau_off, FAST: tl.constexpr):
    # dpi.derivatives, synapse block: s = [I > I0]; Ig_X_s = s alpha I_tau + u I0;
    # tau_X = C Ut / (kappa Itau_X_s); dI/dt = (-I - Ig_X_s + 2 u I0) / (tau_X (Ig_X_s / I + 1))
    s = I > I0
    Ig = tl.where(s, Ig_on, I0)
    tau = tl.where(s, tau_on, tau_off)
    return _div(-I - Ig + tl.where(s, 0.0, 2 * I0), tau * (_div(Ig, I, FAST) + 1), FAST)


@triton.jit
def _clip(x, lo):
    # torch.clamp(x, min=lo, max=1 A); compare-and-select keeps a NaN x NaN, as torch does
    y = tl.where(x < lo, lo, x)
    return tl.where(y > 1.0, 1.0, y)


@triton.jit(do_not_specialize=["total", "N", "t0", "t1", "every", "T_rec", "BU", "U"])
def dpi_kernel(prm_ptr, refr_ptr, h_ptr, counts_ptr, state_ptr, refr_state_ptr, spikes_ptr,
               unstable_ptr, peak_ptr, slot_ptr, trace_ptr,
               total, N, t0, t1, every, T_rec, BU, U,
               SUBSTEPS: tl.constexpr, S0: tl.constexpr, S1: tl.constexpr, S2: tl.constexpr,
               S3: tl.constexpr, S4: tl.constexpr, S5: tl.constexpr, CUDA: tl.constexpr, FAST: tl.constexpr,
               BLOCK: tl.constexpr):
    """Advance neurons ``[pid * BLOCK, (pid + 1) * BLOCK)`` from step t0 to t1.

    Pointers (all contiguous): ``prm`` (P, total) terms of ``layout.FLOAT_TERMS`` (SI);
    ``refr`` (total,) int32 refractory length in steps; ``h`` (1,) Euler step in s;
    ``counts`` (t1 - t0, 4, N) weighted input counts (any integer or float dtype);
    ``state`` (6, total) currents in A and ``refr_state`` (total,) int32 steps left, read
    at t0 and written back at t1; ``spikes`` (t1 - t0, total) uint8 out; ``unstable``
    (total,) uint8 and ``peak`` (total,) A, accumulated; ``slot`` (N,) int32 trace column
    of each neuron (-1: not traced); ``trace`` (names, T_rec, B, U) in A, row ``t // every``.
    ``S0..S5``: trace-buffer row of Isoma_mem, Isoma_ahp, Inmda, Iampa, Igaba_a, Igaba_b,
    or -1 when that state is not recorded. ``CUDA``: compiled for a GPU (libdevice exp;
    False under the interpreter, which has no libdevice); ``FAST``: float32 on a GPU,
    where the per-step divisions use div.approx.f32.
    """
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    mask = offs < total
    n = offs % N
    bidx = offs // N
    h = tl.load(h_ptr)
    total = total.to(tl.int64)  # (P, total) and (6, total) offsets pass 2**31 at 64M neurons
    # the terms of layout.derive, by name (rows of prm in layout.TERMS order)
    I0 = _ld(prm_ptr, T_I0, total, offs, mask)
    alpha_soma = _ld(prm_ptr, T_ALPHA_SOMA, total, offs, mask)
    Isoma_dpi_tau = _ld(prm_ptr, T_ISOMA_DPI_TAU, total, offs, mask)
    Isoma_th = _ld(prm_ptr, T_ISOMA_TH, total, offs, mask)
    Isoma_reset = _ld(prm_ptr, T_ISOMA_RESET, total, offs, mask)
    Isoma_const = _ld(prm_ptr, T_ISOMA_CONST, total, offs, mask)
    ahp_jump = _ld(prm_ptr, T_AHP_JUMP, total, offs, mask)  # Isoma_ahp_w * alpha_ahp
    pfb_gain = _ld(prm_ptr, T_PFB_GAIN, total, offs, mask)
    pfb_th = _ld(prm_ptr, T_PFB_TH, total, offs, mask)
    pfb_norm = _ld(prm_ptr, T_PFB_NORM, total, offs, mask)
    Inmda_thr = _ld(prm_ptr, T_INMDA_THR, total, offs, mask)
    # the two values of each masked term (see the module docstring)
    tau_s_on = _ld(prm_ptr, T_TAU_SOMA, total, offs, mask)
    tau_s_off = _ld(prm_ptr, T_TAU_SOMA_I0, total, offs, mask)
    Ig_s_on = _ld(prm_ptr, T_IG_SOMA, total, offs, mask)
    tau_a_on = _ld(prm_ptr, T_TAU_AHP, total, offs, mask)
    tau_a_off = _ld(prm_ptr, T_TAU_AHP_I0, total, offs, mask)
    Ig_a_on = _ld(prm_ptr, T_IG_AHP, total, offs, mask)
    # synapse types nmda, ampa, gaba_a, gaba_b (SYNAPSE_TYPES) at + 0..3
    a0 = _ld(prm_ptr, T_ALPHA_X, total, offs, mask)
    a1 = _ld(prm_ptr, T_ALPHA_X + 1, total, offs, mask)
    a2 = _ld(prm_ptr, T_ALPHA_X + 2, total, offs, mask)
    a3 = _ld(prm_ptr, T_ALPHA_X + 3, total, offs, mask)
    g0 = _ld(prm_ptr, T_IG_X, total, offs, mask)
    g1 = _ld(prm_ptr, T_IG_X + 1, total, offs, mask)
    g2 = _ld(prm_ptr, T_IG_X + 2, total, offs, mask)
    g3 = _ld(prm_ptr, T_IG_X + 3, total, offs, mask)
    ton0 = _ld(prm_ptr, T_TAU_X, total, offs, mask)
    ton1 = _ld(prm_ptr, T_TAU_X + 1, total, offs, mask)
    ton2 = _ld(prm_ptr, T_TAU_X + 2, total, offs, mask)
    ton3 = _ld(prm_ptr, T_TAU_X + 3, total, offs, mask)
    toff0 = _ld(prm_ptr, T_TAU_X_I0, total, offs, mask)
    toff1 = _ld(prm_ptr, T_TAU_X_I0 + 1, total, offs, mask)
    toff2 = _ld(prm_ptr, T_TAU_X_I0 + 2, total, offs, mask)
    toff3 = _ld(prm_ptr, T_TAU_X_I0 + 3, total, offs, mask)
    w0 = _ld(prm_ptr, T_W0_X, total, offs, mask)
    w1 = _ld(prm_ptr, T_W0_X + 1, total, offs, mask)
    w2 = _ld(prm_ptr, T_W0_X + 2, total, offs, mask)
    w3 = _ld(prm_ptr, T_W0_X + 3, total, offs, mask)
    refr_len = tl.load(refr_ptr + offs, mask=mask, other=0)

    Imem = tl.load(state_ptr + offs, mask=mask, other=1.0)
    Iahp = tl.load(state_ptr + total + offs, mask=mask, other=1.0)
    Inmda = tl.load(state_ptr + 2 * total + offs, mask=mask, other=1.0)
    Iampa = tl.load(state_ptr + 3 * total + offs, mask=mask, other=1.0)
    Iga = tl.load(state_ptr + 4 * total + offs, mask=mask, other=1.0)
    Igb = tl.load(state_ptr + 5 * total + offs, mask=mask, other=1.0)
    refr = tl.load(refr_state_ptr + offs, mask=mask, other=0)
    bad = tl.load(unstable_ptr + offs, mask=mask, other=0).to(tl.int32)
    peak = tl.load(peak_ptr + offs, mask=mask, other=0.0)
    slot = tl.load(slot_ptr + n, mask=mask, other=-1)
    rec_mask = mask & (slot >= 0)
    rec_col = bidx.to(tl.int64) * U + slot

    N4 = N.to(tl.int64) * 4
    # Counts of step t + 1 are loaded while step t computes (the loads do not depend on
    # the state), which hides the memory latency that dominates small networks.
    nxt = t0 + 0 * tl.arange(0, BLOCK) < t1
    cbase = counts_ptr + n
    q0 = tl.load(cbase, mask=mask & nxt, other=0)
    q1 = tl.load(cbase + N, mask=mask & nxt, other=0)
    q2 = tl.load(cbase + 2 * N, mask=mask & nxt, other=0)
    q3 = tl.load(cbase + 3 * N, mask=mask & nxt, other=0)
    for t in range(t0, t1):
        cnt0, cnt1, cnt2, cnt3 = q0, q1, q2, q3
        more = mask & (t + 1 + 0 * tl.arange(0, BLOCK) < t1)
        cnext = cbase + (t + 1 - t0).to(tl.int64) * N4
        q0 = tl.load(cnext, mask=more, other=0)
        q1 = tl.load(cnext + N, mask=more, other=0)
        q2 = tl.load(cnext + 2 * N, mask=more, other=0)
        q3 = tl.load(cnext + 3 * N, mask=more, other=0)
        # 1. record the state at the start of the step (Brian2's "start" slot)
        if t % every == 0:
            row = (t // every).to(tl.int64)
            if S0 >= 0:
                tl.store(trace_ptr + (S0 * T_rec + row) * BU + rec_col, Imem, mask=rec_mask)
            if S1 >= 0:
                tl.store(trace_ptr + (S1 * T_rec + row) * BU + rec_col, Iahp, mask=rec_mask)
            if S2 >= 0:
                tl.store(trace_ptr + (S2 * T_rec + row) * BU + rec_col, Inmda, mask=rec_mask)
            if S3 >= 0:
                tl.store(trace_ptr + (S3 * T_rec + row) * BU + rec_col, Iampa, mask=rec_mask)
            if S4 >= 0:
                tl.store(trace_ptr + (S4 * T_rec + row) * BU + rec_col, Iga, mask=rec_mask)
            if S5 >= 0:
                tl.store(trace_ptr + (S5 * T_rec + row) * BU + rec_col, Igb, mask=rec_mask)
        # 2. forward Euler from the old state (dpi.dpi_step; Isoma_mem frozen while refractory)
        refr = tl.maximum(refr - 1, 0)
        frozen = refr > 0
        for _ in range(SUBSTEPS):
            # dpi.derivatives, soma block
            m = Imem > I0
            mf = m.to(Imem.dtype)
            f = 1 - mf
            Imem_c = _clip(Imem, I0)
            Inmda_dp = _div(Inmda, 1 + _div(Inmda_thr, Imem_c, FAST), FAST)
            Iin_c = _clip(Inmda_dp + Iampa - Igb + Isoma_const, I0)
            Itau_s = tl.where(m, Isoma_dpi_tau, I0)
            Ig_s = tl.where(m, Ig_s_on, I0)
            Iahp_s = mf * Iahp + f * I0
            Iga_s = mf * Iga + f * I0
            if CUDA:
                e = libdevice.exp(_div(-(Imem - pfb_th), pfb_norm, FAST))
            else:
                e = tl.exp(-(Imem - pfb_th) / pfb_norm)
            Ipfb_s = mf * _div(pfb_gain, 1 + e, FAST) + f * I0
            Isum = Itau_s + Iahp_s + Iga_s - Ipfb_s - f * I0
            tau_soma = tl.where(m, tau_s_on, tau_s_off)
            d_mem = _div(alpha_soma * (Iin_c - Isum) - _div((Isum - f * I0) * Imem_c, Itau_s, FAST),
                         tau_soma * (1 + _div(Ig_s, Imem_c, FAST)), FAST)
            # dpi.derivatives, adaptation block (0 where Iahp_s == 0: the Isoma_ahp = 0 quirk)
            a = Iahp > I0
            Iahp_g_s = tl.where(a, Ig_a_on, I0)
            live = Iahp_s > 0
            d_ahp = tl.where(live, _div(-Iahp_g_s - Iahp + tl.where(a, 0.0, 2 * I0),
                                        tl.where(a, tau_a_on, tau_a_off)
                                        * (1 + _div(Iahp_g_s, tl.where(live, Iahp_s, 1.0), FAST)), FAST), 0.0)
            d0 = _syn(Inmda, I0, g0, ton0, toff0, FAST)
            d1 = _syn(Iampa, I0, g1, ton1, toff1, FAST)
            d2 = _syn(Iga, I0, g2, ton2, toff2, FAST)
            d3 = _syn(Igb, I0, g3, ton3, toff3, FAST)
            Imem = tl.where(frozen, Imem, Imem + h * d_mem)
            Iahp = Iahp + h * d_ahp
            Inmda = Inmda + h * d0
            Iampa = Iampa + h * d1
            Iga = Iga + h * d2
            Igb = Igb + h * d3
        # 3. threshold: (Imem - th) / th > 0 in dpi.py, the same as Imem > th for th > 0
        spk = (Imem > Isoma_th) & (refr <= 0)
        sf = spk.to(Imem.dtype)
        tl.store(spikes_ptr + (t - t0).to(tl.int64) * total + offs, spk.to(tl.uint8), mask=mask)
        # 4. synaptic jumps of this step's input spikes: I_X += (I_X_w0 * count) * alpha_X
        Inmda = Inmda + w0 * cnt0.to(Imem.dtype) * a0
        Iampa = Iampa + w1 * cnt1.to(Imem.dtype) * a1
        Iga = Iga + w2 * cnt2.to(Imem.dtype) * a2
        Igb = Igb + w3 * cnt3.to(Imem.dtype) * a3
        # 5. reset and refractory period
        Iahp = Iahp + sf * ahp_jump
        Imem = Imem * (1 - sf) + Isoma_reset * sf
        refr = tl.where(spk, refr_len, refr)
        ok = (Imem > 0) & (Iahp >= 0) & (Inmda > 0) & (Iampa > 0) & (Iga > 0) & (Igb > 0)
        bad = bad | (1 - ok.to(tl.int32))
        shunt = Iga + Iahp  # torch.maximum(peak, shunt): a NaN on either side wins
        peak = tl.where((shunt > peak) | (shunt != shunt), shunt, peak)

    tl.store(state_ptr + offs, Imem, mask=mask)
    tl.store(state_ptr + total + offs, Iahp, mask=mask)
    tl.store(state_ptr + 2 * total + offs, Inmda, mask=mask)
    tl.store(state_ptr + 3 * total + offs, Iampa, mask=mask)
    tl.store(state_ptr + 4 * total + offs, Iga, mask=mask)
    tl.store(state_ptr + 5 * total + offs, Igb, mask=mask)
    tl.store(refr_state_ptr + offs, refr, mask=mask)
    tl.store(unstable_ptr + offs, bad.to(tl.uint8), mask=mask)
    tl.store(peak_ptr + offs, peak, mask=mask)
