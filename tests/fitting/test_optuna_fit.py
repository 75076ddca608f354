import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from dynacal.errors import ParameterError
from dynacal.fitting.objective import Objective
from dynacal.fitting.optuna_fit import core_search, make_sampler, neuron_search
from dynacal.fitting.space import SearchSpace

from .synthetic import TRUTH, factors, target


@pytest.fixture(scope="module")
def setup():
    t = target()
    space = SearchSpace.default(t)
    return Objective(t, space), space


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_core_search_recovers_leak_and_gain(setup, sampler):
    obj, space = setup
    names = {k: space.core[k] for k in ("Isoma_dpi_tau", "alpha_soma")}
    out = core_search(obj, names, fixed={"soma_refP": TRUTH["soma_refP"]}, factors=factors(), sampler=sampler,
                      n_trials=128, batch=16, seed=1)
    assert len(out.trials) == 128
    assert out.trials[0][0]["core:Isoma_dpi_tau"] == pytest.approx(space.core["Isoma_dpi_tau"].default)  # defaults first
    assert out.core["Isoma_dpi_tau"] == pytest.approx(TRUTH["Isoma_dpi_tau"], rel=0.1)
    assert out.core["alpha_soma"] == pytest.approx(TRUTH["alpha_soma"], rel=0.1)
    assert out.loss < 0.01 < out.trials[0][1]


class _Interrupting:
    """The objective, but Ctrl-C in the ``at``-th evaluation (after the trials were asked)."""

    def __init__(self, obj, at):
        self.obj, self.at, self.calls, self.n_neurons = obj, at, 0, obj.n_neurons

    def evaluate(self, *args):
        self.calls += 1
        if self.calls == self.at:
            raise KeyboardInterrupt
        return self.obj.evaluate(*args)


def _complete(storage, name="core"):
    study = optuna.load_study(study_name=name, storage=storage)
    return study, [t.params for t in study.get_trials(states=(TrialState.COMPLETE,))]


@pytest.mark.parametrize("sampler", ["tpe", "cmaes"])
def test_resume_after_interruption_loses_and_repeats_nothing(setup, tmp_path, sampler):
    obj, space = setup
    names = {k: space.core[k] for k in ("Isoma_dpi_tau", "alpha_soma")}
    kw = dict(fixed={"soma_refP": TRUTH["soma_refP"]}, factors=factors(), sampler=sampler, n_trials=40, batch=8)
    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    core_search(obj, names, storage=whole, **kw)
    broken = f"sqlite:///{tmp_path / 'broken.db'}"
    with pytest.raises(KeyboardInterrupt):
        core_search(_Interrupting(obj, 3), names, storage=broken, **kw)
    study, _ = _complete(broken)
    assert len(study.get_trials(states=(TrialState.RUNNING,))) == 8  # the asked batch, left running
    out = core_search(obj, names, storage=broken, **kw)
    study, resumed = _complete(broken)
    _, reference = _complete(whole)
    assert resumed == reference  # same trials, same order: none lost
    assert len({tuple(sorted(p.items())) for p in resumed}) == len(resumed) == 40  # none repeated
    assert len(study.trials) == 40 and not study.get_trials(states=(TrialState.RUNNING,))  # told in place
    assert out.core == core_search(obj, names, storage=whole, **kw).core


def test_neuron_search_finds_factors_and_resumes(setup, tmp_path):
    obj, space = setup
    core = {**space.defaults()["core"], **TRUTH}
    res = neuron_search(obj, space, core, batch=16, generations=12, seed=3)
    for name in ("Isoma_dpi_tau", "alpha_soma"):
        assert np.corrcoef(np.log(res.factors[name]), np.log(factors()[name]))[0, 1] > 0.8
    assert res.loss.shape == (obj.n_neurons,) and res.generations == 12
    ckpt = tmp_path / "n.npz"
    neuron_search(obj, space, core, batch=16, generations=6, seed=3, checkpoint=ckpt)
    again = neuron_search(obj, space, core, batch=16, generations=12, seed=3, checkpoint=ckpt)
    for name in res.factors:
        assert np.array_equal(again.factors[name], res.factors[name])


def test_bad_arguments(setup):
    obj, space = setup
    with pytest.raises(ParameterError, match="sampler"):
        make_sampler("random", 0)
    with pytest.raises(ParameterError, match="n_trials or a deadline"):
        core_search(obj, {"alpha_soma": space.core["alpha_soma"]})
    with pytest.raises(ParameterError, match="at least 4"):
        neuron_search(obj, space, {}, batch=2, generations=1)
