"""One engine conformance suite (issue 11 item 2): every engine of the torch simulator, through
the contract of ``torch_sim.engine``, against the eager reference on the same input.

Engines: the fused CPU kernels; the fused CUDA kernel under Triton's CPU interpreter
(``TRITON_INTERPRET=1``, where triton is installed); the compiled CUDA kernel on a GPU
(``gpu`` marker). Regimes: those of ``dpi-model.md`` (sub-threshold, the seed drive, each
synapse type, adaptation, refractory periods per set, Euler-unstable shunting, sub-steps).
Parameters: the table's defaults, and seeded random draws in which no two gains, weights,
leaks or capacitances are equal (at the defaults all gains are 4 and all weights 100 pA, so
an engine that read one in place of another would pass). What must hold: identical spike
events and unstable flags; traces and the shunt peak within rounding (1e-12 relative in
float64; where Euler is unstable only the spikes and flags for the GPU, whose FMAs and exp
round otherwise). Gradients of the fused CPU engine: the same as eager autograd (1e-6).
"""

from __future__ import annotations

import importlib
import importlib.util

import numpy as np
import pytest
import torch

from dynacal import STATE_NAMES, Experiment, Params, poisson
from dynacal.backends.base import resolve_params
from dynacal.backends.torch_sim import Request, cpu, cuda, eager, layout

from .test_cpu import _dc, _network
from .test_cpu_grad import DIFFERENTIABLE, gradients
from .test_engine_draws import draw

HAS_TRITON = importlib.util.find_spec("triton") is not None
HAS_GPU = HAS_TRITON and torch.cuda.is_available()


def _regime(name: str, n_steps: int):
    """(experiment, table values, request options) of a regime of dpi-model.md on 3 neurons."""
    n, dt = 3, 1e-4
    weights = {"seed": [("NMDA", 10), ("AMPA", 5), ("GABA_A", 1), ("GABA_B", 2)],
               "subthreshold": [("NMDA", 1), ("AMPA", 1)],
               "synapse_types": [("NMDA", 6), ("AMPA", 6), ("GABA_A", 2), ("GABA_B", 3)],
               "adaptation": [("AMPA", 4)], "refractory": [("AMPA", 8)], "unstable": [("AMPA", 8), ("GABA_A", 20)],
               "substeps": [("NMDA", 10), ("AMPA", 5), ("GABA_A", 1), ("GABA_B", 2)]}[name]
    rate = {"subthreshold": 40.0}.get(name, 300.0)
    dc = {"adaptation": [1.5e-9, 2.5e-9, 4e-9], "refractory": [3e-9, 6e-9, 9e-9], "synapse_types": [1e-9, 2e-9, 4e-9],
          "unstable": [2e-9, 2e-9, 2e-9]}.get(name, [0.3e-9, 1e-9, 2e-9] if name != "subthreshold" else [1e-12] * 3)
    values = {"adaptation": {"Isoma_ahp_w": 40e-12, "Isoma_ahp_tau": 3e-12},
              "refractory": {"soma_refP": np.array([[5e-4], [1.7e-3]])},
              "synapse_types": {"Igaba_a_w0": 20e-12}, "unstable": {"Igaba_a_w0": 1e-9}}.get(name, {})
    stim = _dc(poisson(len(weights), rate, n_steps, dt, seed=7), dc)
    exp = Experiment(_network(n, weights), stim, dt, n_steps)
    return exp, values, {"substeps": 3} if name == "substeps" else {}


REGIMES = ("seed", "subthreshold", "synapse_types", "adaptation", "refractory", "unstable", "substeps")
DRAWS = ("defaults", 0, 1)


def _params(exp: Experiment, values: dict, which, device="cpu") -> Params:
    """The regime's values over the defaults or over a seeded draw (per neuron)."""
    base = {} if which == "defaults" else {k: v for k, v in draw(which, exp.network.n_neurons).items()
                                           if k not in ("Isoma_const",)}
    return resolve_params(exp, Params.from_values({**base, **values}), device=device)


def _run(engine: str, exp: Experiment, p: Params, request: Request):
    b, n = p.shape[0], exp.network.n_neurons
    if engine == "eager":
        return eager.simulate(exp, p, request)
    module = cpu if engine == "cpu" else cuda
    return module.simulate(exp, p.expand(b, n), request, layout.derive(p.expand(b, n), exp.dt))


def assert_conform(got, want, *, rtol=1e-12, stable_only=False):
    """The contract: identical events and flags; traces and peak within ``rtol``."""
    for field in ("spike_batch", "spike_neuron", "spike_step"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)
    assert torch.equal(got.unstable.cpu(), want.unstable.cpu())
    keep = ~want.unstable if stable_only else torch.ones_like(want.unstable)
    assert got.traces.keys() == want.traces.keys()
    for name, trace in want.traces.items():
        assert got.traces[name].shape == trace.shape, name
        torch.testing.assert_close(got.traces[name].cpu()[:, keep], trace.cpu()[:, keep], rtol=rtol,
                                   atol=1e-24, equal_nan=True, msg=name)
    torch.testing.assert_close(got.peak.cpu()[keep], want.peak.cpu()[keep], rtol=rtol, atol=0.0, equal_nan=True)
    assert got.raster is None


@pytest.fixture
def interpreted():
    """The CUDA kernel module re-imported under TRITON_INTERPRET=1 (CPU tensors), restored after."""
    if not HAS_TRITON:
        pytest.skip("triton is not installed (pip install triton)")
    module = importlib.import_module("dynacal.backends.torch_sim._cuda_kernel")
    mp = pytest.MonkeyPatch()
    mp.setenv("TRITON_INTERPRET", "1")
    importlib.reload(module)
    yield
    mp.undo()
    importlib.reload(module)


@pytest.mark.parametrize("which", DRAWS)
@pytest.mark.parametrize("regime", REGIMES)
def test_fused_cpu_conforms(regime, which):
    exp, values, options = _regime(regime, 400)
    p = _params(exp, values, which)
    request = Request(STATE_NAMES, np.arange(3), 1, **options)
    want = _run("eager", exp, p, request)
    assert_conform(_run("cpu", exp, p, request), want)
    spiking = regime != "subthreshold"
    assert (want.spike_step.size > 0) == spiking, (regime, want.spike_step.size)
    if regime == "unstable":
        assert bool(want.unstable.any())


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # raised inside triton's interpreter
@pytest.mark.parametrize("which", DRAWS)
@pytest.mark.parametrize("regime", REGIMES)
def test_fused_cuda_under_the_triton_interpreter_conforms(interpreted, regime, which):
    # the interpreter runs each step in Python (about 0.1 s per sub-step of 3 neurons): short runs
    exp, values, options = _regime(regime, 50 if regime == "substeps" else 120)
    p = _params(exp, values, which)
    request = Request(STATE_NAMES, np.arange(3), 2, chunk_steps=50, **options)
    assert_conform(_run("cuda", exp, p, request), _run("eager", exp, p, request))


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_GPU, reason="needs a CUDA GPU and triton")
@pytest.mark.parametrize("which", DRAWS)
@pytest.mark.parametrize("regime", REGIMES)
def test_fused_cuda_on_a_gpu_conforms(regime, which):
    exp, values, options = _regime(regime, 1000)
    p = _params(exp, values, which, device="cuda")
    request = Request(STATE_NAMES, np.arange(3), 1, **options)
    want = _run("eager", exp, _params(exp, values, which), request)  # the CPU reference
    assert_conform(_run("cuda", exp, p, request), want, rtol=1e-10, stable_only=True)


@pytest.mark.parametrize("which", ("defaults", 2))
@pytest.mark.parametrize("regime,surrogate", [("subthreshold", "none"), ("seed", "fast_sigmoid"),
                                              ("adaptation", "straight_through"), ("substeps", "none")])
def test_fused_cpu_gradients_conform(regime, surrogate, which):
    """The same spikes, and the same sensitivities ``theta * dL/dtheta`` of every parameter to
    1e-6 of the largest (a gradient that is rounding noise against the others, such as
    dL/dalpha_nmda = 3e-19 beside Iampa_w0 * dL/dIampa_w0 = 900, is compared at that scale)."""
    exp, values, options = _regime(regime, 300)
    base = Params.from_values({**({} if which == "defaults" else
                                  {k: v for k, v in draw(which, 3).items() if k != "Isoma_const"}), **values})
    loss = lambda r: (torch.log(r.traces["Isoma_mem"]).sum() + torch.log(r.traces["Iampa"]).sum()  # noqa: E731
                      + r.raster.sum())
    runs = [gradients(engine, exp, base, DIFFERENTIABLE, loss, surrogate=surrogate, record=("Isoma_mem", "Iampa"),
                      **options) for engine in ("eager", "fused")]
    (want, g_want), (got, g_got) = runs
    assert (want.metadata["engine"], got.metadata["engine"]) == ("eager", "fused")
    np.testing.assert_array_equal(got.spike_step, want.spike_step)
    np.testing.assert_array_equal(got.spike_neuron, want.spike_neuron)
    sens = {name: (getattr(base, name) * g_want[name], getattr(base, name) * g_got[name]) for name in DIFFERENTIABLE}
    scale = max(float(w.abs().max()) for w, _ in sens.values())
    assert scale > 0
    for name, (w, g) in sens.items():
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=1e-6, atol=1e-6 * scale, err_msg=name)
    assert sum(bool((w != 0).any()) for w, _ in sens.values()) >= 15  # most parameters matter
