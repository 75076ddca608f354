"""The gradient fitter: bounded transforms, NaN / unstable safety, recovery of known
per-neuron parameters through the simulator (slow), from traces and from spikes only."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dynacal import get_backend
from dynacal.errors import ParameterError
from dynacal.fitting import Objective, Parameter, SearchSpace, Target
from dynacal.fitting.gradient import Bounded, fit_gradient
from dynacal.fitting.spike_time import Score, SpikeTimeObjective
from dynacal.protocols import FICurve, RateTransfer, SynapticKernels


def par(low, high, log=True, default=None, name="Isoma_dpi_tau"):
    """A plain object with a Parameter's fields (the fitter reads only these)."""
    return SimpleNamespace(name=name, low=low, high=high, log=log, default=default)


class Quadratic:
    """An objective with a known optimum: per neuron (ln(core * f_n) - ln t_n)^2, and optional
    regions where a neuron's loss is NaN or its candidate unstable (the Score's contract)."""

    def __init__(self, truth, nan_above=None, unstable_above=None):
        self.truth = torch.as_tensor(truth, dtype=torch.float64)
        self.n_neurons = self.truth.numel()
        self.nan_above, self.unstable_above = nan_above or {}, unstable_above or {}
        self.calls = 0

    def evaluate(self, core, factors=None, scales=None):
        self.calls += 1
        value = core.get("Isoma_dpi_tau", torch.ones(1, dtype=torch.float64)).reshape(-1, 1)
        if factors:
            value = value * factors["Isoma_dpi_tau"]
        total = (torch.log(value) - torch.log(self.truth)) ** 2
        unstable = np.zeros(tuple(total.shape), bool)
        v = value.detach()
        for n, limit in self.nan_above.items():
            if float(v[0, n]) > limit:  # NaN in the value and the gradient, as a blown-up run gives
                total = total.index_put((torch.tensor([0]), torch.tensor([n])), total[0, n] * float("nan"))
        for n, limit in self.unstable_above.items():
            unstable[0, n] = float(v[0, n]) > limit
        return Score(total, {}, unstable)


def test_bounded_transform_stays_inside_and_round_trips():
    b = Bounded("Isoma_dpi_tau", 1e-13, 1e-10)
    z = torch.tensor([-1e6, -30.0, 0.0, 30.0, 1e6], dtype=torch.float64)
    v = b.value(z)
    assert torch.all(v >= 1e-13) and torch.all(v <= 1e-10) and torch.all(torch.isfinite(v))
    np.testing.assert_allclose(b.value(b.z_of([3e-12, 5e-11])).numpy(), [3e-12, 5e-11], rtol=1e-12)
    # a unit step in z moves ln v by 1 in the middle of the window (the learning rate's unit)
    mid = b.z_of(np.sqrt(1e-13 * 1e-10))
    np.testing.assert_allclose(float(torch.log(b.value(mid + 1e-6)) - torch.log(b.value(mid))) / 1e-6, 1.0, rtol=1e-4)
    lin = Bounded("soma_refP", 0.0, 0.01, log_scale=False)
    np.testing.assert_allclose(lin.value(lin.z_of([0.004])).numpy(), [0.004], rtol=1e-12)
    with pytest.raises(ParameterError, match="low < high"):
        Bounded("x", 1.0, 1.0)
    with pytest.raises(ParameterError, match="low > 0"):
        Bounded("x", 0.0, 1.0)


@pytest.mark.parametrize("method", ["adam", "lbfgs"])
def test_core_and_factors_share_one_optimiser(method):
    truth = 5e-12 * np.array([0.5, 0.8, 1.0, 1.3, 2.0, 3.0])
    space = SimpleNamespace(core={"Isoma_dpi_tau": par(1e-13, 1e-10, default=2e-11)},
                            mismatch={"Isoma_dpi_tau": par(0.2, 5.0)}, scales={})
    fit = fit_gradient(Quadratic(truth), space, steps=300 if method == "adam" else 30, lr=0.1, method=method)
    value = fit.core["Isoma_dpi_tau"] * fit.factors["Isoma_dpi_tau"]
    np.testing.assert_allclose(value, truth, rtol=1e-3)
    assert fit.valid.all() and fit.history[-1]["best"] < 1e-6


def test_bounds_are_respected():
    truth = np.array([0.05, 1.0, 20.0])  # outside the factor window 0.2..5 for two neurons
    space = SimpleNamespace(core={}, mismatch={"Isoma_dpi_tau": par(0.2, 5.0)}, scales={})
    obj = Quadratic(truth)
    fit = fit_gradient(obj, space, steps=400, lr=0.2)
    f = fit.factors["Isoma_dpi_tau"]
    assert np.all(f >= 0.2) and np.all(f <= 5.0)
    np.testing.assert_allclose(f, [0.2, 1.0, 5.0], rtol=1e-2)  # at the bounds (the sigmoid flattens there), free inside
    np.testing.assert_array_equal(fit.at_bound["Isoma_dpi_tau"], [True, False, True])


def test_nan_and_unstable_candidates_do_not_poison_the_fit():
    """Neuron 0 turns NaN above 1.5 (its optimum is 2), neuron 1 unstable above 1.5: the
    others reach their optimum, the core is not dragged, and the bad ones stay valid."""
    truth = np.array([2.0, 2.0, 0.7, 1.0, 1.4])
    obj = Quadratic(truth, nan_above={0: 1.5}, unstable_above={1: 1.5})
    space = SimpleNamespace(core={}, mismatch={"Isoma_dpi_tau": par(0.2, 5.0)}, scales={})
    fit = fit_gradient(obj, space, steps=300, lr=0.1)
    f = fit.factors["Isoma_dpi_tau"]
    np.testing.assert_allclose(f[2:], truth[2:], rtol=1e-3)
    assert np.all(np.isfinite(f)) and np.all(f[:2] <= 1.5) and np.all(f[:2] > 1.3)
    assert fit.valid.all() and np.all(np.isfinite(fit.loss))
    assert max(h["n_bad"] for h in fit.history) >= 1  # the bad regions were visited and refused


def test_takes_the_search_space_of_fitting_space():
    truth = 5e-12 * np.array([0.5, 1.0, 2.0])
    space = SearchSpace(core={"Isoma_dpi_tau": Parameter("Isoma_dpi_tau", 1e-12, 1e-10, default=5e-12)},
                        mismatch={"Isoma_dpi_tau": Parameter("Isoma_dpi_tau", 0.3, 3.0, level="neuron")})
    fit = fit_gradient(Quadratic(truth), space, steps=300, lr=0.1)
    np.testing.assert_allclose(fit.core["Isoma_dpi_tau"] * fit.factors["Isoma_dpi_tau"], truth, rtol=1e-3)
    assert 1e-12 <= fit.core["Isoma_dpi_tau"] <= 1e-10


def test_stops_on_budget_and_refuses_bad_arguments():
    space = SimpleNamespace(core={}, mismatch={"Isoma_dpi_tau": par(0.2, 5.0)}, scales={})
    fit = fit_gradient(Quadratic(np.ones(3)), space, steps=10 ** 6, budget_s=0.3)
    assert fit.stopped == "budget" and 1 <= len(fit.history) < 10 ** 6 and fit.history[-1]["time_s"] < 0.6
    with pytest.raises(ParameterError, match="adam"):
        fit_gradient(Quadratic(np.ones(3)), space, method="sgd")
    with pytest.raises(ParameterError, match="budget_s"):
        fit_gradient(Quadratic(np.ones(3)), space, budget_s=0)
    with pytest.raises(ParameterError, match="lr for Isoma_dpi_tau"):
        fit_gradient(Quadratic(np.ones(3)), space, lr={"Isoma_dpi_tau": -1})
    with pytest.raises(ParameterError, match="no start value"):
        fit_gradient(Quadratic(np.ones(3)), SimpleNamespace(core={"Isoma_dpi_tau": par(1e-13, 1e-10)}))


# --- recovery through the simulator (slow) ------------------------------------------------

N = 16
FI = FICurve(levels=tuple(np.geomspace(200e-12, 5e-9, 6)), duration=0.3, settle=0.05)


def _chip(second):
    """A simulated chip with per-neuron leak and AMPA weight; its fi and ``second`` recordings."""
    rng = np.random.default_rng(2)
    truth = {"Isoma_dpi_tau": 5e-12 * rng.lognormal(0, 0.3, N), "Iampa_w0": 100e-12 * rng.lognormal(0, 0.3, N)}
    recs = {}
    for protocol in (FI, second):
        exp = protocol.experiment(f"core0:{N}")
        with torch.no_grad():
            recs[protocol.name] = protocol.run_experiment(get_backend("torch"), exp, exp.network.params(truth))
    return truth, recs


SPACE = SimpleNamespace(core={}, mismatch={"Isoma_dpi_tau": par(0.2, 5.0), "Iampa_w0": par(0.2, 5.0)}, scales={})
BASE = {"Isoma_dpi_tau": 5e-12, "Iampa_w0": 100e-12}


def _errors(fit, truth):
    return {k: fit.factors[k] * BASE[k] / truth[k] - 1 for k in BASE}


@pytest.mark.slow
def test_recovers_leak_and_ampa_weight_from_a_traced_target():
    """f-I spikes and the AMPA trace of a kernel run: the trace pins the weight, the spike
    times the leak. From factors 1 (30 % spread), 120 Adam steps."""
    truth, recs = _chip(SynapticKernels(synapses=("ampa",), weights=(8,)))
    fit = fit_gradient(SpikeTimeObjective(recs), SPACE, steps=120, lr=0.1)
    err = _errors(fit, truth)
    print({k: (float(np.sqrt(np.mean(e ** 2))), float(np.abs(e).max())) for k, e in err.items()})
    assert fit.valid.all()
    # measured: leak RMS 0.37 % (max 1.1 %), weight RMS 0.73 % (max 2.2 %); the trace fixes the
    # weight exactly, the rest is where 120 steps of the decaying rate leave the optimiser
    assert np.sqrt(np.mean(err["Isoma_dpi_tau"] ** 2)) < 0.005 and np.abs(err["Isoma_dpi_tau"]).max() < 0.015
    assert np.sqrt(np.mean(err["Iampa_w0"] ** 2)) < 0.01 and np.abs(err["Iampa_w0"]).max() < 0.03


@pytest.mark.slow
def test_recovers_leak_and_ampa_weight_from_spikes_only():
    """f-I and a rate transfer on AMPA, spikes only; the leak starts from its first
    estimate (estimates.py, the gain held). The weight reaches the output rate weakly
    (Poisson input, 0.25 s windows): it is the looser figure."""
    from dynacal.fitting.estimates import first_estimates

    rt = RateTransfer(synapses=("ampa",), weights=(8,), rates=(20.0, 50.0, 100.0), segment=0.3, baseline=0.3,
                      gap=0.05, dc=3e-10)
    truth, recs = _chip(rt)
    assert not any(r.traces for r in recs.values())
    est = first_estimates(recs, fit_gain=False)
    start = {"factors": {"Isoma_dpi_tau": est["Isoma_dpi_tau"].per_neuron / BASE["Isoma_dpi_tau"]}}
    fit = fit_gradient(SpikeTimeObjective(recs), SPACE, start, steps=60, lr=0.1)
    err = _errors(fit, truth)
    print({k: (float(np.sqrt(np.mean(e ** 2))), float(np.abs(e).max())) for k, e in err.items()})
    assert fit.valid.all()
    # measured: leak RMS 0.40 % (max 1.6 %), weight RMS 5.5 % (max 11 %)
    assert np.sqrt(np.mean(err["Isoma_dpi_tau"] ** 2)) < 0.005 and np.abs(err["Isoma_dpi_tau"]).max() < 0.02
    assert np.sqrt(np.mean(err["Iampa_w0"] ** 2)) < 0.06 and np.abs(err["Iampa_w0"]).max() < 0.12
    assert np.corrcoef(fit.factors["Iampa_w0"], truth["Iampa_w0"])[0, 1] > 0.95


@pytest.mark.slow
def test_crossing_time_gradients_beat_the_surrogate_on_the_objectives_own_score():
    """The decision behind SpikeTimeObjective: a spike-only target (tests/fitting/synthetic.py,
    f-I + refractory, 12 neurons, leak and gain factors), 40 Adam steps from factors 1, both
    scored by fitting.objective.Objective at the end. Measured: 0.029 (crossing times) vs
    0.227 (the Objective's own surrogate-raster gradients, which stall)."""
    from . import synthetic as syn

    target = Target(recordings=dict(syn.target()), source="torch")
    space = SearchSpace(core={}, mismatch={k: Parameter(k, 0.3, 3.0, level="neuron") for k in ("Isoma_dpi_tau",
                                                                                              "alpha_soma")})
    reference = Objective(target, space)
    scores = {}
    for name, objective in (("surrogate", Objective(target, space)), ("crossing", SpikeTimeObjective(target))):
        fit = fit_gradient(objective, space, steps=40, lr=0.1)
        with torch.no_grad():
            score = reference.evaluate({}, {k: torch.as_tensor(v)[None] for k, v in fit.factors.items()})
        scores[name] = float(score.total.mean())
    assert scores["crossing"] < 0.05 and scores["crossing"] < scores["surrogate"] / 4


@pytest.mark.slow
def test_lbfgs_recovers_the_leak_from_fi_spikes():
    """L-BFGS (strong Wolfe) on the crossing-time objective: 16 leak factors from spikes of
    an f-I curve, from factors 1, 20 steps. Measured: RMS 0.17 %, 15 neurons within 4e-4, one
    stuck at 0.7 % (loss 1.5e-5, where the gradient, which leaves out the adaptation's
    feedback, vanishes first: spike_time docstring)."""
    truth, recs = _chip(SynapticKernels(synapses=("ampa",), weights=(8,)))
    space = SimpleNamespace(core={}, mismatch={"Isoma_dpi_tau": par(0.2, 5.0)}, scales={})
    fit = fit_gradient(SpikeTimeObjective({"fi": recs["fi"]}), space, steps=20, method="lbfgs")
    err = fit.factors["Isoma_dpi_tau"] * BASE["Isoma_dpi_tau"] / truth["Isoma_dpi_tau"] - 1
    assert fit.valid.all() and np.sqrt(np.mean(err ** 2)) < 0.002 and np.abs(err).max() < 0.008
    assert np.sort(np.abs(err))[-2] < 5e-4
