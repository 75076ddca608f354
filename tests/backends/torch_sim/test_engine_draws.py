"""Engine conformance at seeded random parameter draws (issue 11 item 2).

At the table's defaults all gains are 4 and all base weights 100 pA, so an engine that
used one gain or weight in place of another would still agree with the reference. Here
every parameter is drawn per neuron, within plausible ranges around its default, with no
two gains, weights, leak currents or capacitances equal; eager and fused CPU must then
give identical spike steps, traces within rounding, and the same gradients.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacal import Experiment, Params, poisson
from dynacal.params import PARAMETERS

from .test_cpu import _dc, _network, assert_agree, run_engines
from .test_cpu_grad import DIFFERENTIABLE, assert_same_gradients
from .test_cuda import assert_same, interpreted_kernel, run_both  # noqa: F401 (a fixture)

#: name -> (low, high) of the draw, uniform in log space; defaults elsewhere x [0.7, 1.4].
RANGES = {"kn": (0.6, 0.85), "kp": (0.55, 0.75), "Ut": (24e-3, 27e-3), "I0": (0.8e-12, 1.2e-12),
          **{name: (2.0, 6.0) for name in PARAMETERS if name.startswith("alpha_")},
          "Isoma_th": (1.5e-9, 3e-9), "Isoma_reset": (1.1e-12, 1.5e-12), "soma_refP": (1e-3, 5e-3),
          "Isoma_const": (1e-12, 2e-12), "Isoma_ahp_w": (0.2e-12, 2e-12), "Isoma_pfb_th": (0.7e-9, 1.2e-9),
          "Igaba_a_w0": (10e-12, 40e-12), "Inmda_thr": (0.5e-12, 2e-12)}
#: groups inside which no two values may be equal
DISTINCT = (tuple(n for n in PARAMETERS if n.startswith("alpha_")), tuple(n for n in PARAMETERS if n.endswith("_w0")),
            tuple(n for n in PARAMETERS if n.endswith("_tau")), ("Csoma_mem", "Csoma_ahp", "Cnmda", "Campa", "Cgaba_a",
                                                                 "Cgaba_b"))


def draw(seed: int, n: int) -> dict[str, np.ndarray]:
    """Per-neuron values of every parameter, log-uniform in ``RANGES`` (else 0.7..1.4 x default)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, spec in PARAMETERS.items():
        lo, hi = RANGES.get(name, (0.7 * spec.default, 1.4 * spec.default))
        out[name] = np.exp(rng.uniform(np.log(lo), np.log(hi), n))
    return out


def _experiment(seed: int, n: int = 4, steps: int = 600):
    rng = np.random.default_rng(100 + seed)
    stim = _dc(poisson(4, 150, steps, 1e-4, seed=seed), rng.uniform(0.2e-9, 3e-9, n))
    return Experiment(_network(n, [("NMDA", 4), ("AMPA", 6), ("GABA_A", 1), ("GABA_B", 2)]), stim, 1e-4, steps)


@pytest.mark.parametrize("seed", range(4))
def test_draws_are_distinct_where_it_matters(seed):
    values = draw(seed, 4)
    for group in DISTINCT:
        for k in range(4):
            column = [values[name][k] for name in group]
            assert len(set(column)) == len(group), group


@pytest.mark.parametrize("seed", range(4))
def test_eager_and_fused_agree_at_random_draws(seed):
    exp = _experiment(seed)
    p = Params.from_values(draw(seed, 4))
    fused, eager = run_engines(exp, p)
    assert eager[0].size >= 4                     # it spikes
    assert_agree(fused, eager)
    # the draw matters: the defaults give other spikes
    default, _ = run_engines(exp, names=())
    assert not np.array_equal(default[2], eager[2])


@pytest.mark.parametrize("seed,surrogate", [(0, "none"), (1, "fast_sigmoid"), (2, "straight_through")])
def test_same_gradients_at_random_draws(seed, surrogate):
    exp = _experiment(seed, steps=400)
    base = Params.from_values(draw(seed, 4))
    rec, g = assert_same_gradients(
        exp, base, DIFFERENTIABLE,
        lambda r: torch.log(r.traces["Isoma_mem"]).sum() + torch.log(r.traces["Igaba_a"]).sum() + r.raster.sum(),
        surrogate=surrogate, record=("Isoma_mem", "Igaba_a"))
    assert rec.spike_step.size >= 2
    assert sum(bool((v != 0).any()) for v in g.values()) >= 25


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside triton's interpreter
@pytest.mark.parametrize("seed", [0, 3])
def test_triton_kernel_in_interpreter_agrees_at_random_draws(interpreted_kernel, seed):
    """The fused CUDA kernel (Triton, run by its CPU interpreter) at the same draws."""
    exp = _experiment(seed, n=3, steps=200)
    fused, _, eager = run_both(exp, Params.from_values(draw(seed, 3)), dtype=torch.float64, device="cpu",
                               idx=np.arange(3))
    assert eager[0].size >= 2
    assert_same(fused, eager, rtol=1e-12)
