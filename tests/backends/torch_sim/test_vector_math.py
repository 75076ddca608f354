"""vector_math: the exp of the fused CPU kernels, and the vectorisation it exists for."""

from __future__ import annotations

import math
import re
from decimal import Decimal, localcontext

import numpy as np
import pytest

from dynacal.backends.torch_sim import cpu_kernels as fused_cpu_kernels, vector_math


def _ulps(got, exact, dtype):
    """|got - exact| in units of the last place of ``dtype`` at ``exact``."""
    return np.abs(got.astype(np.float64) - exact) / np.spacing(np.abs(exact).astype(dtype)).astype(np.float64)


@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (-60.0, 60.0), (-700.0, 700.0)])
def test_exp_float64_within_one_ulp(lo, hi):
    x = np.random.default_rng(0).uniform(lo, hi, 5000)
    got = np.empty_like(x)
    vector_math.exp_array(x, got)
    with localcontext() as ctx:
        ctx.prec = 40
        exact = [Decimal(float(v)).exp() for v in x]
    err = [abs(Decimal(float(g)) - e) / Decimal(float(np.spacing(float(e)))) for g, e in zip(got, exact)]
    assert max(err) <= 1


@pytest.mark.parametrize("lo,hi", [(-1.0, 1.0), (-60.0, 60.0), (-100.0, 88.0)])
def test_exp_float32_within_one_ulp(lo, hi):
    x = np.random.default_rng(1).uniform(lo, hi, 20000).astype(np.float32)
    got = np.empty_like(x)
    vector_math.exp_array(x, got)
    exact = np.exp(x.astype(np.float64))  # float64 is exact enough to grade float32
    keep = exact > np.finfo(np.float32).tiny
    assert _ulps(got[keep], exact[keep], np.float32).max() <= 1.0


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_exp_special_values(dtype):
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e5, -1e5, 1.0], dtype=dtype)
    got = np.empty_like(x)
    vector_math.exp_array(x, got)
    assert np.isnan(got[0])
    np.testing.assert_array_equal(got[1:7], np.array([np.inf, 0.0, 1.0, 1.0, np.inf, 0.0], dtype=dtype))
    assert float(got[7]) == pytest.approx(math.e, rel=float(np.finfo(dtype).eps))


def test_kernels_pin_the_current_vector_math():
    """numba's disk cache only sees cpu_kernels.py: after an edit of vector_math.py or
    layout.py, update ``_PINNED`` there (the kernels are not cached until then)."""
    assert fused_cpu_kernels._PINNED["vector_math.py"] == vector_math.source_sha256()
    for name, sha in fused_cpu_kernels._PINNED.items():
        assert fused_cpu_kernels.source_sha256(name) == sha, name
    assert fused_cpu_kernels._CACHE


def test_lane_loops_are_vectorised():
    """The lane loops of a step run several neurons per instruction: packed arithmetic on
    ymm/zmm registers (any x86 CPU with AVX). A regression here (a branch, a libm call, a
    negative-index check in the loop) costs a factor 4-8 in speed."""
    import llvmlite.binding as llvm
    if not llvm.get_host_cpu_features().get("avx", False):
        pytest.skip("no AVX on this CPU")
    K = fused_cpu_kernels
    w = np.zeros(K.N_ROWS * K.BLK)
    K._euler_pass(w, K.BLK, 1e-4)
    K._settle_pass(w, K.BLK)
    asm = "\n".join(K._euler_pass.inspect_asm().values())
    assert len(re.findall(r"vdivpd\s+.*%[yz]mm", asm)) >= 17  # every division of the step, packed
    asm = "\n".join(K._settle_pass.inspect_asm().values())
    assert len(re.findall(r"vmulpd\s+.*%[yz]mm", asm)) >= 10  # jumps and reset, packed
