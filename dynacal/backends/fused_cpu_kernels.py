r"""Numba kernels of the fused CPU engine: the DPI step in scalar form, and the time loops.

The equations are those of :func:`dynacal.backends.dpi.derivatives` and
:func:`~dynacal.backends.dpi.dpi_step`, the reference, written once more per neuron in the
same order of floating-point operations (so float64 results agree to the last bit except
where ``exp`` rounds differently, about 1 ulp). ``tests/backends/test_fused_cpu.py`` binds
them to the reference: identical spike steps, traces within rounding.

Layout. Neurons of all B parameter sets are *lanes* ``L = b * N + n``. Lanes are grouped in
blocks of at most :data:`BLK`; every block owns one row of the workspace ``ws`` (float,
shape ``(n_blocks, N_ROWS * BLK)``) that holds, for its lanes, the state, the per-lane
parameters (some precomputed exactly as the reference computes them), the input counts
of the current step and the run's checks; row ``r`` of lane ``j`` is ``ws[blk, r * BLK + j]``.
One buffer with fixed row offsets lets LLVM prove that the rows never overlap, so the
inner loop over the lanes of a block vectorises (AVX2/AVX-512) without runtime alias
checks; the loop body has no branches (selects only) and ``exp`` is computed inline
(:func:`_exp`: SLEEF's ``expd_u10``/``expf_u10`` algorithm, max. 1 ulp) because a call to
libm would stop vectorisation. No ``fastmath``: LLVM keeps IEEE semantics and the order
of operations; only ``exp`` uses explicit FMA.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic, overload

__all__ = ["BLK", "N_ROWS", "STATE_ROWS", "init_workspace", "run_feedforward", "run_recurrent",
           "collect_spikes", "exp_dtype"]

#: Lanes per block: one uint64 spike mask per block and step; 32 lanes keep a block's
#: workspace (N_ROWS * 32 * 8 B = 13.5 kB in float64) in the L1 cache.
BLK = 32

# --- workspace rows ---------------------------------------------------------------------
MEM, AHP, NMDA, AMPA, GA, GB = 0, 1, 2, 3, 4, 5          # state (A), as dpi.State
STATE_ROWS = (MEM, AHP, NMDA, AMPA, GA, GB)
REFR = 6          # refractory steps left at the *next* step (already counted down)
CNT = 7           # 7..10: weighted input count of this step per synapse type
SPK = 11          # 1.0 where the lane spiked in this step
UNST = 12         # 1.0 once a state went negative or non-finite
PEAK = 13         # max over steps of Igaba_a + Isoma_ahp (A)
I0, THR, ICONST, STAU, SIG, ASOMA, PGAIN, PTH, PNORM, TAUS1, TAUS0 = range(14, 25)  # soma
AIG, TAUA1, TAUA0, TWOI0 = range(25, 29)                 # adaptation
XIG, XTAU1, XTAU0, XW0, XALPHA = 29, 33, 37, 41, 45      # + synapse type k (0..3)
ITH, IRESET, AHPJ, REFRN = range(49, 53)                 # threshold, reset, refractory
N_ROWS = 53


# --- typed constants, FMA, rint, bit casts ------------------------------------------------

def _f(value, like):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_f, inline="always")
def _f_overload(value, like):
    """``value`` as a constant of ``like``'s float type (float32 runs stay float32)."""
    if like == types.float32:
        return lambda value, like: np.float32(value)
    return lambda value, like: np.float64(value)


@intrinsic
def _fma(typingctx, a, b, c):
    """Fused multiply-add ``a * b + c`` with one rounding (llvm.fma; vectorises)."""
    def codegen(context, builder, signature, args):
        ty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.fma", [ty], ir.FunctionType(ty, [ty, ty, ty]))
        return builder.call(fn, args)
    return a(a, b, c), codegen


@intrinsic
def _rint(typingctx, a):
    """Round to the nearest integer, ties to even (llvm.rint)."""
    def codegen(context, builder, signature, args):
        ty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.rint", [ty], ir.FunctionType(ty, [ty]))
        return builder.call(fn, args)
    return a(a), codegen


@intrinsic
def _as_float(typingctx, bits):
    """Reinterpret int64 bits as float64, int32 bits as float32."""
    out = types.float64 if bits.bitwidth == 64 else types.float32

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], context.get_value_type(out))
    return out(bits), codegen


def _exp64(d):
    # SLEEF xexp (expd_u10, FMA variant): q = rint(d / ln 2); s = d - q ln 2 in two FMA
    # steps; exp(s) by a degree-10 polynomial (Estrin, FMA); scale by 2^q in two halves.
    u = _rint(d * 1.442695040888963407359924681001892137426645954152985934135449406931)
    u = u if u > -2000.0 else -2000.0  # keeps the int conversion defined (NaN, huge |d|)
    u = u if u < 2000.0 else 2000.0
    q = np.int64(u)
    s = _fma(u, -0.69314718055966295651160180568695068359375, d)
    s = _fma(u, -0.28235290563031577122588448175013436025525412068e-12, s)
    s2 = s * s
    s4 = s2 * s2
    s8 = s4 * s4
    hi = _fma(s, 0.2081276378237164457e-8, 0.2511210703042288022e-7)
    p4a = _fma(s2, _fma(s, 0.2755762628169491192e-6, 0.2755723402025388239e-5),
               _fma(s, 0.2480158687479686264e-4, 0.1984126989855865850e-3))
    p4b = _fma(s2, _fma(s, 0.1388888888914497797e-2, 0.8333333333314938210e-2),
               _fma(s, 0.4166666666666602598e-1, 0.1666666666666669072e+0))
    u = _fma(s8, hi, _fma(s4, p4a, p4b))
    u = _fma(u, s, 0.5)
    u = _fma(u, s, 1.0)
    u = _fma(u, s, 1.0)
    h = q >> 1
    u = u * _as_float((h + 1023) << 52) * _as_float((q - h + 1023) << 52)
    u = np.inf if d > 709.78271114955742909217217426 else u
    return 0.0 if d < -1000.0 else u


def _exp32(d):
    # SLEEF xexpf (expf_u10): the same scheme in float32 with a degree-5 polynomial.
    u = _rint(d * np.float32(1.442695040888963407359924681001892137426645954152985934135449406931))
    u = u if u > np.float32(-300.0) else np.float32(-300.0)
    u = u if u < np.float32(300.0) else np.float32(300.0)
    q = np.int32(u)
    s = _fma(u, np.float32(-0.693145751953125), d)
    s = _fma(u, np.float32(-1.428606765330187045e-06), s)
    p = np.float32(0.000198527617612853646278381)
    p = _fma(p, s, np.float32(0.00139304355252534151077271))
    p = _fma(p, s, np.float32(0.00833336077630519866943359))
    p = _fma(p, s, np.float32(0.0416664853692054748535156))
    p = _fma(p, s, np.float32(0.166666671633720397949219))
    p = _fma(p, s, np.float32(0.5))
    p = np.float32(1.0) + _fma(s * s, p, s)
    h = q >> np.int32(1)
    p = p * _as_float((h + np.int32(127)) << np.int32(23)) * _as_float((q - h + np.int32(127)) << np.int32(23))
    p = np.float32(0.0) if d < np.float32(-104.0) else p
    return np.float32(np.inf) if d > np.float32(100.0) else p


def _exp(d):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(_exp, inline="always")
def _exp_overload(d):
    """exp in the dtype of ``d``, vectorisable (no libm call)."""
    if d == types.float32:
        return _exp32
    return _exp64


@njit(cache=True, error_model="numpy")
def exp_dtype(x, out):
    """``out[i] = exp(x[i])`` with the kernels' exp (for tests); x, out float32 or float64."""
    for i in range(x.size):
        out[i] = _exp(x[i])


# --- the DPI step of one lane (reference: dpi.derivatives and dpi.dpi_step) --------------

@njit(inline="always", error_model="numpy")
def _euler_lane(w, j, h):
    """One forward-Euler (sub)step ``x + h * dx/dt`` of lane ``j``; Isoma_mem frozen while
    refractory. Same operations, in the same order, as ``dpi.derivatives``; ``m * a + f * b``
    with a parameter-only ``a``/``b`` is a select (exact for finite values)."""
    i0 = w[I0 * BLK + j]
    one, zero = _f(1.0, i0), _f(0.0, i0)
    imem, iahp = w[MEM * BLK + j], w[AHP * BLK + j]
    inmda, iampa, iga, igb = w[NMDA * BLK + j], w[AMPA * BLK + j], w[GA * BLK + j], w[GB * BLK + j]
    # soma
    m = imem > i0
    mf = one if m else zero
    ff = one - mf
    imem_c = i0 if imem < i0 else imem          # torch.clamp keeps NaN
    imem_c = one if imem_c > one else imem_c
    inmda_dp = inmda / (one + w[THR * BLK + j] / imem_c)
    iin = inmda_dp + iampa - igb + w[ICONST * BLK + j]
    iin_c = i0 if iin < i0 else iin
    iin_c = one if iin_c > one else iin_c
    itau_s = w[STAU * BLK + j] if m else i0
    ig_s = w[SIG * BLK + j] if m else i0
    iahp_s = mf * iahp + ff * i0
    iga_s = mf * iga + ff * i0
    ipfb = w[PGAIN * BLK + j] / (one + _exp(-(imem - w[PTH * BLK + j]) / w[PNORM * BLK + j]))
    ipfb_s = mf * ipfb + ff * i0
    fi0 = ff * i0
    isum = itau_s + iahp_s + iga_s - ipfb_s - fi0
    tau_s = w[TAUS1 * BLK + j] if m else w[TAUS0 * BLK + j]
    d_mem = ((w[ASOMA * BLK + j] * (iin_c - isum) - (isum - fi0) * imem_c / itau_s)
             / (tau_s * (one + ig_s / imem_c)))
    # adaptation: the derivative is 0 where Iahp_s is 0 (the reference's quirk, dpi.py)
    a = iahp > i0
    iahp_g = w[AIG * BLK + j] if a else i0
    tau_a = w[TAUA1 * BLK + j] if a else w[TAUA0 * BLK + j]
    live = iahp_s > zero
    safe = iahp_s if live else one
    d_ahp = (-iahp_g - iahp + (zero if a else w[TWOI0 * BLK + j])) / (tau_a * (one + iahp_g / safe))
    d_ahp = d_ahp if live else zero
    frozen = w[REFR * BLK + j] > zero
    w[MEM * BLK + j] = imem if frozen else imem + h * d_mem
    w[AHP * BLK + j] = iahp + h * d_ahp
    # the four DPI synapses
    for k, ix in enumerate((inmda, iampa, iga, igb)):
        s = ix > i0
        ig = w[(XIG + k) * BLK + j] if s else i0
        tau = w[(XTAU1 + k) * BLK + j] if s else w[(XTAU0 + k) * BLK + j]
        d = (-ix - ig + (zero if s else w[TWOI0 * BLK + j])) / (tau * (ig / ix + one))
        w[(NMDA + k) * BLK + j] = ix + h * d


@njit(inline="always", error_model="numpy")
def _threshold_lane(w, j):
    """Spike if not refractory and ``Isoma_mem > Isoma_th`` (the reference's
    ``(Imem - th) / th > 0``: the same test, without the division). Returns 0 or 1."""
    one, zero = _f(1.0, w[I0 * BLK + j]), _f(0.0, w[I0 * BLK + j])
    spike = (w[MEM * BLK + j] > w[ITH * BLK + j]) & (w[REFR * BLK + j] <= zero)
    w[SPK * BLK + j] = one if spike else zero
    return 1 if spike else 0


@njit(inline="always", error_model="numpy")
def _settle_lane(w, j):
    """Synaptic jumps of this step's counts, reset, refractory count, stability checks."""
    one, zero = _f(1.0, w[I0 * BLK + j]), _f(0.0, w[I0 * BLK + j])
    sf = w[SPK * BLK + j]
    for k in range(4):
        r = (NMDA + k) * BLK + j
        w[r] = w[r] + w[(XW0 + k) * BLK + j] * w[(CNT + k) * BLK + j] * w[(XALPHA + k) * BLK + j]
        w[(CNT + k) * BLK + j] = zero
    iahp = w[AHP * BLK + j] + sf * w[AHPJ * BLK + j]
    imem = w[MEM * BLK + j] * (one - sf) + w[IRESET * BLK + j] * sf
    w[AHP * BLK + j] = iahp
    w[MEM * BLK + j] = imem
    left = (w[REFRN * BLK + j] if sf > zero else w[REFR * BLK + j]) - one
    w[REFR * BLK + j] = zero if left < zero else left
    iga = w[GA * BLK + j]
    bad = ((not imem > zero) | (not iahp >= zero) | (not w[NMDA * BLK + j] > zero)
           | (not w[AMPA * BLK + j] > zero) | (not iga > zero) | (not w[GB * BLK + j] > zero))
    w[UNST * BLK + j] = one if bad else w[UNST * BLK + j]
    v, pk = iga + iahp, w[PEAK * BLK + j]
    w[PEAK * BLK + j] = v if (v > pk) | (v != v) else pk


@njit(inline="always", error_model="numpy")
def _mask(w, nb):
    """Bit j set where lane j spiked in this step."""
    mask = np.uint64(0)
    for j in range(nb):
        if w[SPK * BLK + j] > 0:
            mask |= np.uint64(1) << np.uint64(j)
    return mask


@njit(inline="always", error_model="numpy")
def _record(w, blk, t_rec, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces):
    for e in range(tr_ptr[blk], tr_ptr[blk + 1]):
        for q in range(name_rows.size):
            traces[q, t_rec, tr_b[e], tr_r[e]] = w[name_rows[q] * BLK + tr_j[e]]


@njit(inline="always", error_model="numpy")
def _step_block(w, nb, h, substeps):
    """One whole step of the ``nb`` lanes of a block whose counts are in place; returns
    the number of spikes."""
    nspk = 0
    if substeps == 1:
        for j in range(nb):
            _euler_lane(w, j, h)
            nspk += _threshold_lane(w, j)
            _settle_lane(w, j)
    else:
        for _ in range(substeps):
            for j in range(nb):
                _euler_lane(w, j, h)
        for j in range(nb):
            nspk += _threshold_lane(w, j)
            _settle_lane(w, j)
    return nspk


# --- set-up -------------------------------------------------------------------------------

#: Order of the rows of the packed parameter array ``P`` (35, B * N) given to init_workspace.
PARAM_ORDER = ("kn", "kp", "Ut", "I0", "alpha_soma", "alpha_ahp", "alpha_nmda", "alpha_ampa",
               "alpha_gaba_a", "alpha_gaba_b", "Csoma_mem", "Isoma_dpi_tau", "Isoma_th", "Isoma_reset",
               "Isoma_const", "soma_refP", "Csoma_ahp", "Isoma_ahp_tau", "Isoma_ahp_w", "Isoma_pfb_gain",
               "Isoma_pfb_th", "Isoma_pfb_norm", "Cnmda", "Campa", "Cgaba_a", "Cgaba_b", "Inmda_tau",
               "Iampa_tau", "Igaba_a_tau", "Igaba_b_tau", "Inmda_w0", "Iampa_w0", "Igaba_a_w0",
               "Igaba_b_w0", "Inmda_thr")
(_KN, _KP, _UT, _I0, _ASOMA, _AAHP, _AX, _, _, _, _CMEM, _STAU, _ITH, _IRESET, _ICONST, _REFP, _CAHP,
 _ATAU, _AHPW, _PGAIN, _PTH, _PNORM, _CX, _, _, _, _XTAU, _, _, _, _XW0, _, _, _, _THR) = range(35)


@njit(cache=True, error_model="numpy")
def init_workspace(ws, P, lane0, nvalid, init, dt):
    """Fill every valid lane's parameter rows and initial state.

    Args:
        ws: float (n_blocks, N_ROWS * BLK) workspace, dtype of the run.
        P: (35, B * N) parameters in ``PARAM_ORDER``, SI units, dtype of the run.
        lane0, nvalid: int64 (n_blocks,) first lane and number of lanes of each block.
        init: (6,) initial currents (A) in ``STATE_ROWS`` order.
        dt: time step (s).

    Derived rows are computed as the reference does (``kappa = (kn + kp) / 2``, ``tau =
    C * Ut / (kappa * I_tau)``, ``alpha * I_tau``, ...), so they are bit-identical.
    Returns the largest refractory period in steps (Brian2's rounding, in float64).
    """
    longest = 0.0
    for blk in range(ws.shape[0]):
        w = ws[blk]
        for j in range(nvalid[blk]):
            n = lane0[blk] + j
            i0 = P[_I0, n]
            zero, two = _f(0.0, i0), _f(2.0, i0)
            kap = (P[_KN, n] + P[_KP, n]) / two
            ut = P[_UT, n]
            for r in range(N_ROWS):
                w[r * BLK + j] = zero
            for r in range(6):
                w[r * BLK + j] = init[r]
            w[I0 * BLK + j] = i0
            w[THR * BLK + j] = P[_THR, n]
            w[ICONST * BLK + j] = P[_ICONST, n]
            w[STAU * BLK + j] = P[_STAU, n]
            w[SIG * BLK + j] = P[_ASOMA, n] * P[_STAU, n]
            w[ASOMA * BLK + j] = P[_ASOMA, n]
            w[PGAIN * BLK + j] = P[_PGAIN, n]
            w[PTH * BLK + j] = P[_PTH, n]
            w[PNORM * BLK + j] = P[_PNORM, n]
            w[TAUS1 * BLK + j] = P[_CMEM, n] * ut / (kap * P[_STAU, n])
            w[TAUS0 * BLK + j] = P[_CMEM, n] * ut / (kap * i0)
            w[AIG * BLK + j] = P[_AAHP, n] * P[_ATAU, n]
            w[TAUA1 * BLK + j] = P[_CAHP, n] * ut / (kap * P[_ATAU, n])
            w[TAUA0 * BLK + j] = P[_CAHP, n] * ut / (kap * i0)
            w[TWOI0 * BLK + j] = two * i0
            for k in range(4):
                w[(XIG + k) * BLK + j] = P[_AX + k, n] * P[_XTAU + k, n]
                w[(XTAU1 + k) * BLK + j] = P[_CX + k, n] * ut / (kap * P[_XTAU + k, n])
                w[(XTAU0 + k) * BLK + j] = P[_CX + k, n] * ut / (kap * i0)
                w[(XW0 + k) * BLK + j] = P[_XW0 + k, n]
                w[(XALPHA + k) * BLK + j] = P[_AX + k, n]
            w[ITH * BLK + j] = P[_ITH, n]
            w[IRESET * BLK + j] = P[_IRESET, n]
            w[AHPJ * BLK + j] = P[_AHPW, n] * P[_AAHP, n]
            refr = np.floor((np.float64(P[_REFP, n]) + 1e-3 * dt) / dt)  # dpi.refractory_steps
            longest = max(longest, refr)
            w[REFRN * BLK + j] = _f(refr, i0)
    return longest


@njit(cache=True)
def chunk_events(steps, sources, start, stop, conn_ptr, conn_post, conn_type, conn_w, n_groups,
                 sets_per_block, n_neurons, like):
    """Input events of steps ``[start, stop)`` per event group, sorted by step.

    Args:
        steps, sources: int64 (K,) the stimulus, sorted by step.
        conn_ptr: int64 (S + 1,) input connections by source (CSR): ``conn_post``,
            ``conn_type``, ``conn_w`` (int64) for ``conn_ptr[s]:conn_ptr[s + 1]``.
        n_groups: number of event groups; sets_per_block: 0 when blocks hold one set's
            neurons (group = neuron // BLK), else the sets per block (one group, every
            event repeated for each set of the block).
        like: an array of the run's dtype (for the weights' dtype).

    Returns:
        ``(gptr, ev_t, ev_off, ev_w)``: events of group g are ``gptr[g]:gptr[g + 1]``;
        ``ev_t`` step within the chunk, ``ev_off`` workspace offset of the count
        (``(CNT + type) * BLK + lane``), ``ev_w`` the weight.
    """
    lo = np.searchsorted(steps, start)
    hi = np.searchsorted(steps, stop)
    reps = max(sets_per_block, 1)
    count = np.zeros(n_groups + 1, np.int64)
    for e in range(lo, hi):
        src = sources[e]
        for c in range(conn_ptr[src], conn_ptr[src + 1]):
            g = 0 if sets_per_block else conn_post[c] // BLK
            count[g + 1] += reps
    gptr = np.cumsum(count)
    fill = gptr[:-1].copy()
    ev_t = np.empty(gptr[-1], np.int32)
    ev_off = np.empty(gptr[-1], np.int32)
    ev_w = np.empty(gptr[-1], like.dtype)
    for e in range(lo, hi):
        src = sources[e]
        for c in range(conn_ptr[src], conn_ptr[src + 1]):
            post = conn_post[c]
            g = 0 if sets_per_block else post // BLK
            for r in range(reps):
                lane = r * n_neurons + post if sets_per_block else post % BLK
                i = fill[g]
                ev_t[i] = steps[e] - start
                ev_off[i] = (CNT + conn_type[c]) * BLK + lane
                ev_w[i] = conn_w[c]
                fill[g] = i + 1
    return gptr, ev_t, ev_off, ev_w


# --- time loops ---------------------------------------------------------------------------

@njit(error_model="numpy")
def _feedforward_block(w, blk, nb, e, e_end, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
                       tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks):
    for k in range(n_t):
        if (t0 + k) % every == 0:
            _record(w, blk, (t0 + k) // every, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces)
        while e < e_end and ev_t[e] == k:
            w[ev_off[e]] += ev_w[e]
            e += 1
        nspk = _step_block(w, nb, h, substeps)
        masks[blk, k] = _mask(w, nb) if nspk > 0 else np.uint64(0)


@njit(cache=True, parallel=True, error_model="numpy")
def run_feedforward(ws, lane0, nvalid, group, gptr, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
                    tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks):
    """Advance every block by ``n_t`` steps, neuron-major: blocks in parallel, each running
    all the steps of the chunk (no neuron reads another's spikes).

    Args:
        ws: workspace (n_blocks, N_ROWS * BLK), updated in place.
        lane0, nvalid, group: int64 (n_blocks,) per block: first lane, lanes, event group.
        gptr, ev_t, ev_off, ev_w: this chunk's input events (``chunk_events``).
        n_t: steps in this chunk; t0: global index of its first step.
        h: Euler step ``dt / substeps`` (s), in the run's dtype; substeps: Euler sub-steps.
        every: record the state at the start of global steps ``t % every == 0``.
        tr_ptr, tr_j, tr_b, tr_r: per block (CSR) the recorded lanes and their (set,
            column) in ``traces`` (n_names, T_rec, B, R); name_rows: state row per name.
        masks: uint64 (n_blocks, >= n_t) out: bit j of ``masks[blk, k]`` = lane j spiked.
    """
    for blk in prange(ws.shape[0]):
        g = group[blk]
        _feedforward_block(ws[blk], blk, nvalid[blk], gptr[g], gptr[g + 1], ev_t, ev_off, ev_w, n_t, t0, h,
                           substeps, every, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks)


@njit(cache=True, parallel=True, error_model="numpy")
def run_recurrent(ws, lane0, nvalid, group, gptr, ev_t, ev_off, ev_w, n_t, t0, h, substeps, every,
                  tr_ptr, tr_j, tr_b, tr_r, name_rows, traces, masks,
                  part_ptr, rec_ptr, rec_post, rec_type, rec_w, lane_blk, lane_j, n_neurons):
    """Like :func:`run_feedforward`, time-major, for networks with recurrent connections.

    Each step: Euler and threshold for every lane; then the jumps of this step's spikes
    through the recurrent connections (``rec_ptr`` CSR by presynaptic neuron: post
    neuron, synapse type, weight) into the count rows of their targets in the same set;
    then jumps, reset and checks. Partitions ``part_ptr`` (blocks of whole parameter
    sets) run in parallel; ``lane_blk``/``lane_j`` (B * N,) locate a lane's block and slot.
    """
    for part in prange(part_ptr.size - 1):
        b0, b1 = part_ptr[part], part_ptr[part + 1]
        cur = np.empty(b1 - b0, np.int64)
        for blk in range(b0, b1):
            cur[blk - b0] = gptr[group[blk]]
        for k in range(n_t):
            for blk in range(b0, b1):
                w = ws[blk]
                nb = nvalid[blk]
                if (t0 + k) % every == 0:
                    _record(w, blk, (t0 + k) // every, tr_ptr, tr_j, tr_b, tr_r, name_rows, traces)
                e, e_end = cur[blk - b0], gptr[group[blk] + 1]
                while e < e_end and ev_t[e] == k:
                    w[ev_off[e]] += ev_w[e]
                    e += 1
                cur[blk - b0] = e
                for _ in range(substeps):
                    for j in range(nb):
                        _euler_lane(w, j, h)
                nspk = 0
                for j in range(nb):
                    nspk += _threshold_lane(w, j)
                masks[blk, k] = _mask(w, nb) if nspk > 0 else np.uint64(0)
            for blk in range(b0, b1):
                m = masks[blk, k]
                for j in range(nvalid[blk] if m else 0):
                    if (m >> np.uint64(j)) & np.uint64(1):
                        lane = lane0[blk] + j
                        b = lane // n_neurons
                        pre = lane - b * n_neurons
                        for c in range(rec_ptr[pre], rec_ptr[pre + 1]):
                            tl = b * n_neurons + rec_post[c]
                            ws[lane_blk[tl], (CNT + rec_type[c]) * BLK + lane_j[tl]] += rec_w[c]
            for blk in range(b0, b1):
                w = ws[blk]
                for j in range(nvalid[blk]):
                    _settle_lane(w, j)


@njit(cache=True)
def collect_spikes(masks, n_t, lane0, n_neurons, t0):
    """Spike events of a chunk from the masks, sorted by step, then set, then neuron.

    Returns int64 arrays ``(batch, neuron, step)``.
    """
    total = 0
    for blk in range(masks.shape[0]):
        for k in range(n_t):
            m = masks[blk, k]
            while m:
                m &= m - np.uint64(1)
                total += 1
    sb = np.empty(total, np.int64)
    sn = np.empty(total, np.int64)
    ss = np.empty(total, np.int64)
    i = 0
    for k in range(n_t if total else 0):
        for blk in range(masks.shape[0]):
            m = masks[blk, k]
            j = 0
            while m:
                if m & np.uint64(1):
                    lane = lane0[blk] + j
                    sb[i] = lane // n_neurons
                    sn[i] = lane - sb[i] * n_neurons
                    ss[i] = t0 + k
                    i += 1
                m >>= np.uint64(1)
                j += 1
    return sb, sn, ss
