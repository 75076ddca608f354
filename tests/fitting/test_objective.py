import numpy as np
import pytest
import torch

from dynacal import get_backend
from dynacal.errors import ParameterError, RecordingError
from dynacal.fitting.objective import DEFAULT_WEIGHTS, UNSTABLE_PENALTY, Objective
from dynacal.fitting.space import SearchSpace

from .synthetic import N, TRUTH, factors, target


@pytest.fixture(scope="module")
def objective():
    t = target()
    return Objective(t, SearchSpace.default(t))


def _truth_and_default(B_default=1):
    core = {k: np.array([v, SearchSpace.default(target()).core[k].default]) for k, v in TRUTH.items()}
    fac = {k: np.stack([f, np.ones(N)]) for k, f in factors().items()}
    return core, fac


def test_truth_scores_zero_and_beats_the_defaults(objective):
    core, fac = _truth_and_default()
    s = objective.evaluate(core, fac)
    assert s.total.shape == (2, N) and s.unstable.shape == (2, N)
    red = s.reduce()
    assert red[0] < 1e-6 < red[1]
    assert {"fi.rate", "fi.isi_mean", "fi.isi_cv", "fi", "refractory.rate", "refractory"} <= set(s.terms)
    assert s.mask.all() and not s.reasons


def test_batch_equals_single_runs(objective):
    core, fac = _truth_and_default()
    both = objective.evaluate(core, fac).total
    for b in range(2):
        one = objective.evaluate({k: v[b:b + 1] for k, v in core.items()}, {k: v[b:b + 1] for k, v in fac.items()})
        assert torch.allclose(one.total[0], both[b])
    chunked = Objective(target(), SearchSpace.default(target()), max_batch=1).evaluate(core, fac).total
    assert torch.allclose(chunked, both)


def test_values_are_core_times_factor(objective):
    core, fac = _truth_and_default()
    v = objective.values(core, fac)
    assert torch.allclose(v["Isoma_dpi_tau"][0], torch.as_tensor(TRUTH["Isoma_dpi_tau"] * factors()["Isoma_dpi_tau"]))
    assert v["soma_refP"].shape == (2, N) and float(v["soma_refP"][0, 3]) == TRUTH["soma_refP"]
    with pytest.raises(ParameterError, match="Csoma_mem"):
        objective.values({"Csoma_mem": [1e-12]})


def test_silent_target_neuron_is_masked_and_listed():
    t = target(silent=3)
    s = Objective(t, SearchSpace.default(t)).evaluate(*_truth_and_default())
    key = [k for k in s.terms["fi"].reasons if "silent" in k]
    assert key and 3 in s.terms["fi"].reasons[key[0]]
    assert not s.terms["fi"].mask[3] and float(s.terms["fi"].values[:, 3].abs().sum()) == 0


class _Unstable:
    """The torch backend, but set 1 of every run is Euler-unstable at neuron 0."""

    name, batched = "unstable-torch", True

    def __init__(self):
        self.inner = get_backend("torch")

    def run(self, experiment, params=None, **kw):
        rec = self.inner.run(experiment, params, **kw)
        u = np.zeros((rec.batch, rec.n_neurons), bool)
        L = experiment.n_conditions
        u[L:2 * L, 0] = True
        rec.unstable = u
        return rec


def test_unstable_candidates_get_the_penalty():
    t = target()
    s = Objective(t, SearchSpace.default(t), backend=_Unstable()).evaluate(*_truth_and_default())
    assert s.unstable[1, 0] and not s.unstable[0].any()
    assert float(s.terms["fi"].values[1, 0]) == UNSTABLE_PENALTY
    assert float(s.total[1, 0]) == UNSTABLE_PENALTY


def test_condition_scale_of_a_board_target():
    t = target(dc_scale=1.3, board=True)
    space = SearchSpace.default(t)
    obj = Objective(t, space)
    core, fac = _truth_and_default()
    core = {k: v[:1].repeat(2) for k, v in core.items()}
    fac = {k: v[:1].repeat(2, 0) for k, v in fac.items()}
    red = obj.evaluate(core, fac, {"Isoma_const": [1.3, 1.0]}).reduce()
    assert red[0] < 1e-6 < red[1]


def test_gradients_reach_the_core_values(objective):
    leak = torch.tensor([TRUTH["Isoma_dpi_tau"] * 0.7], dtype=torch.float64, requires_grad=True)
    s = objective.evaluate({"Isoma_dpi_tau": leak}, {k: torch.as_tensor(f) for k, f in factors().items()})
    s.total.sum().backward()
    assert leak.grad is not None and torch.isfinite(leak.grad).all() and float(leak.grad) != 0


def test_bad_inputs():
    with pytest.raises(RecordingError, match="no recordings"):
        Objective({}, SearchSpace.default(target()))
    with pytest.raises(ParameterError, match="unknown weights"):
        Objective(target(), SearchSpace.default(target()), weights={"rates": 1.0})
    assert set(DEFAULT_WEIGHTS) >= {"rate", "isi_mean", "isi_cv"}
