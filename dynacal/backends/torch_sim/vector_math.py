"""Vectorisable math for numba kernels: typed constants, FMA, and ``exp`` without libm.

LLVM vectorises a loop only if every call in it has a vector form. ``math.exp`` becomes a
call to libm's scalar ``exp``, which has none unless numba runs on an SVML-patched LLVM
with Intel's SVML library (``intel-cmplr-lib-rt``); the llvmlite wheels here are not
patched. :func:`exp` is therefore written out in arithmetic (range reduction by ln 2, a
Taylor polynomial, scaling by a power of two), with FMA through the ``llvm.fma``
intrinsic, which vectorises. It is within 1 ulp of the correctly rounded result, as libm's
and PyTorch's exp are, so results may differ from theirs by 1 ulp
(``tests/backends/test_vector_math.py`` checks it).

:func:`typed` gives a constant in the float type of another value, so that float32
kernels stay float32 (numba types a Python float literal as float64).
"""

from __future__ import annotations

import hashlib
import math
from decimal import Decimal, getcontext
from pathlib import Path

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic, overload

__all__ = ["typed", "exp", "exp_array", "source_sha256"]

getcontext().prec = 60


def source_sha256() -> str:
    """SHA-256 of this file: kernels that compile this math in pin it (numba's disk cache
    only notices changes of the kernel's own file)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def typed(value, like):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(typed, inline="always")
def _typed_overload(value, like):
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


# exp(x) = 2^q exp(s) with q = rint(x / ln 2), s = x - q ln 2 in [-ln2/2, ln2/2] (ln 2 split
# in a high and a low part, each product exact inside an FMA), exp(s) by its Taylor series
# (Horner with FMA; degree 13 in float64, 7 in float32: truncation error below 1e-17 /
# 1e-8), and 2^q applied in two halves so that neither factor overflows.
_LN2 = Decimal("0.693147180559945309417232121458176568075500134360255254120680")
_LN2_HI = float(_LN2)
_LN2_LO = float(_LN2 - Decimal(_LN2_HI))
_LN2_HI32 = float(np.float32(_LN2))
_LN2_LO32 = float(np.float32(_LN2 - Decimal(_LN2_HI32)))
_INV_LN2 = float(1 / _LN2)
_C64 = tuple(1.0 / math.factorial(k) for k in range(14))
_C32 = tuple(float(np.float32(1.0 / math.factorial(k))) for k in range(8))
_MAX64, _MIN64 = 709.782712893384, -745.2   # exp overflows / underflows to 0 beyond
_MAX32, _MIN32 = 88.72283, -103.98


def _exp64(d):
    u = _rint(d * _INV_LN2)
    u = u if u > -1100.0 else -1100.0  # keeps the int conversion defined (NaN, huge |d|)
    u = u if u < 1100.0 else 1100.0
    q = np.int64(u)
    s = _fma(u, -_LN2_HI, d)
    s = _fma(u, -_LN2_LO, s)
    p = _C64[13]
    for k in range(12, -1, -1):
        p = _fma(p, s, _C64[k])
    h = q >> 1
    p = p * _as_float((h + 1023) << 52) * _as_float((q - h + 1023) << 52)
    p = np.inf if d > _MAX64 else p
    return 0.0 if d < _MIN64 else p


def _exp32(d):
    u = _rint(d * np.float32(_INV_LN2))
    u = u if u > np.float32(-160.0) else np.float32(-160.0)
    u = u if u < np.float32(160.0) else np.float32(160.0)
    q = np.int32(u)
    s = _fma(u, np.float32(-_LN2_HI32), d)
    s = _fma(u, np.float32(-_LN2_LO32), s)
    p = np.float32(_C32[7])
    for k in range(6, -1, -1):
        p = _fma(p, s, np.float32(_C32[k]))
    h = q >> 1
    # numba computes int32 arithmetic in int64: cast back so that the bits become a float32
    p = p * _as_float(np.int32((h + 127) << 23)) * _as_float(np.int32((q - h + 127) << 23))
    p = np.float32(np.inf) if d > np.float32(_MAX32) else p
    return np.float32(0.0) if d < np.float32(_MIN32) else p


def exp(d):  # pragma: no cover - replaced by the overload in compiled code
    raise NotImplementedError


@overload(exp)
def _exp_overload(d):
    """exp in the dtype of ``d``, vectorisable (no libm call)."""
    if d == types.float32:
        return _exp32
    return _exp64


@njit(cache=True, error_model="numpy")
def exp_array(x, out):
    """``out[i] = exp(x[i])`` for float32 or float64 arrays ``x``, ``out`` (for tests)."""
    for i in range(x.size):
        out[i] = exp(x[i])
