import json

import numpy as np
import pytest
import torch

from dynacal.errors import CalibrationFailed, ParameterError, RecordingError
from dynacal.fitting import CalibrationResult
from dynacal.fitting.calibrate import CalibrationOptions, calibrate
from dynacal.fitting.objective import Objective
from dynacal.fitting.result import neurons_network
from dynacal.fitting.space import SearchSpace

from .synthetic import N, TRUTH, factors, target

QUICK = dict(n_trials=32, generations=10, batch=16, progress=False)


@pytest.fixture(scope="module")
def hybrid(tmp_path_factory):
    out = tmp_path_factory.mktemp("hybrid")
    return calibrate(target(), options=CalibrationOptions(**QUICK), out=out), out


def _check_recovered(result, core_tol, corr):
    values = result.core_values[0]
    for name in ("Isoma_dpi_tau", "alpha_soma", "soma_refP"):
        assert values[name] == pytest.approx(TRUTH[name], rel=core_tol), name
    for name, f in factors().items():
        effective = result.per_neuron[name]
        truth = TRUTH[name] * f
        assert np.corrcoef(np.log(effective), np.log(truth))[0, 1] > corr, name
        assert np.sqrt(np.mean((effective / truth - 1) ** 2)) < 0.1, name


def test_hybrid_recovers_a_spike_only_chip(hybrid):
    result, out = hybrid
    _check_recovered(result, 0.05, 0.85)
    assert [h["stage"] for h in result.history] == ["estimates", "core-fi", "core-refractory", "neurons", "joint-core",
                                                   "joint-neurons", "rescore"]
    assert result.quality["fi"]["median"] < 0.01 and result.ok.all()
    assert (out / "calibration.json").exists() and (out / "study.db").exists()
    assert CalibrationResult.load(out).core_values[0] == pytest.approx(result.core_values[0])
    assert result.provenance["evaluations"] > 0 and result.provenance["neuron_steps"] > 0


def test_result_params_are_what_the_objective_simulated(hybrid):
    result, _ = hybrid
    space = SearchSpace.default(target())
    obj = Objective(target(), space)
    core = {k: [v] for k, v in result.core_values[0].items() if k in space.core}
    fac = {k: v[0][:N][None] for k, v in result.mismatch.items()}
    simulated = obj.values(core, fac)
    p = result.params(neurons_network(result.neurons))
    for name, v in simulated.items():
        assert torch.allclose(getattr(p, name).reshape(-1).to(torch.float64), v[0], rtol=1e-12), name


@pytest.mark.slow
def test_optuna_fitter_recovers(tmp_path):
    opts = CalibrationOptions(fitter="optuna", sampler="cmaes", n_trials=96, generations=12, batch=16, progress=False)
    result = calibrate(target(), options=opts, out=tmp_path)
    _check_recovered(result, 0.1, 0.8)
    assert [h["stage"] for h in result.history] == ["estimates", "core", "neurons", "rescore"]


class _StopAt:
    def __init__(self, at):
        self.at, self.calls = at, 0

    def __call__(self, evaluate):
        def wrapped(obj, *args, **kw):
            self.calls += 1
            if self.calls == self.at:
                raise KeyboardInterrupt
            return evaluate(obj, *args, **kw)
        return wrapped


@pytest.mark.slow
@pytest.mark.parametrize("at", [4, 9])  # in the second core stage; in the per-neuron stage
def test_resume_after_interruption_gives_the_same_result(tmp_path, monkeypatch, at):
    opts = CalibrationOptions(n_trials=16, generations=4, batch=8, progress=False)
    whole = calibrate(target(), options=opts, out=tmp_path / "whole")
    original = Objective.evaluate
    monkeypatch.setattr(Objective, "evaluate", _StopAt(at)(original))
    with pytest.raises(KeyboardInterrupt):
        calibrate(target(), options=opts, out=tmp_path / "broken")
    monkeypatch.setattr(Objective, "evaluate", original)
    with pytest.raises(ParameterError, match="resume=True"):
        calibrate(target(), options=opts, out=tmp_path / "broken")
    resumed = calibrate(target(), options=CalibrationOptions(**{**opts.to_dict(), "resume": True}),
                        out=tmp_path / "broken")
    assert resumed.core_values == whole.core_values
    for name in whole.mismatch:
        assert np.array_equal(resumed.mismatch[name][0], whole.mismatch[name][0])
    trials = lambda r: [h.get("trials") for h in r.history]  # noqa: E731
    assert trials(resumed) == trials(whole)


def test_budget_too_small_for_one_evaluation():
    with pytest.raises(CalibrationFailed, match="budget_s = 0.001 s is too small"):
        calibrate(target(), options=CalibrationOptions(budget_s=0.001, progress=False))


def test_bad_targets_and_options(tmp_path):
    with pytest.raises(RecordingError, match="no recordings|at least one recording"):
        calibrate({}, options=CalibrationOptions(progress=False))
    (tmp_path / "notes.txt").write_text("not a recording")
    with pytest.raises(RecordingError):
        calibrate(tmp_path, options=CalibrationOptions(progress=False))
    with pytest.raises(ParameterError, match="fitter"):
        CalibrationOptions(fitter="annealing")
    with pytest.raises(ParameterError, match="budget_s"):
        CalibrationOptions(budget_s=-1)


def test_gradient_fitter_runs_and_improves_on_the_defaults():
    result = calibrate(target(), options=CalibrationOptions(fitter="gradient", n_trials=15, progress=False))
    assert [h["stage"] for h in result.history] == ["estimates", "gradient"]
    space = SearchSpace.default(target())
    defaults = Objective(target(), space).evaluate(space.defaults()["core"]).reduce()
    assert np.nanmedian(result.quality["fi"]["per_neuron"]) < float(defaults)
