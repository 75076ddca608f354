"""TorchBackend(calibration=...): the simulator runs as a calibrated chip, in the one order of
parameters (defaults, the calibration's core values, the network's biases, mismatch, per-neuron
values, the caller's candidates)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacal import Chip, ChipLayers, Experiment, Stimulus, get_backend
from dynacal.errors import ParameterError, RecordingError

pA = 1e-12


def _experiment():
    """Four neurons of Core_0 on a constant current, and one of Core_1: spike counts depend on the leak."""
    chip = Chip()
    chip.get_neurons(4, "Core_0")
    chip.get_neurons(1, "Core_1")
    chip.set_bias({"Isoma_const": "1 nA"}, "Core_0")
    chip.set_bias({"Isoma_const": "1 nA", "Isoma_th": "2 nA"}, "Core_1")  # over the calibration's core value
    net = chip.network()
    stim = Stimulus(0, np.zeros(0, np.int64), np.zeros(0, np.int64))
    return Experiment(net, stim, 1e-4, 2000, name="calibrated chip")


def _layers():
    return ChipLayers({0: {"Isoma_dpi_tau": 4 * pA}, 1: {"Isoma_th": 1 * 1e-9, "Isoma_dpi_tau": 3 * pA}},
                      {"Isoma_dpi_tau": {0: np.linspace(0.6, 1.8, 256)}}, name="chip 3")


def _same(a, b):
    assert np.array_equal(a.spike_step, b.spike_step) and np.array_equal(a.spike_neuron, b.spike_neuron)
    assert np.array_equal(a.spike_batch, b.spike_batch)
    assert a.traces.keys() == b.traces.keys()
    for name in a.traces:
        assert torch.equal(torch.as_tensor(a.traces[name]), torch.as_tensor(b.traces[name])), name


@pytest.mark.parametrize("engine", ["eager", "fused"])
def test_params_none_runs_the_network_as_the_calibrated_chip(tmp_path, engine):
    exp, layers = _experiment(), _layers()
    path = layers.save(tmp_path / "calibration.json")
    chip = get_backend("torch", engine=engine, calibration=path)
    got = chip.run(exp, None, record=["Isoma_mem"])
    _same(got, get_backend("torch", engine=engine).run(exp, exp.network.params(layers=layers), record=["Isoma_mem"]))
    plain = get_backend("torch", engine=engine).run(exp, None)
    counts = lambda rec: np.bincount(rec.spike_neuron, minlength=5)  # noqa: E731
    assert not np.array_equal(counts(got), counts(plain))  # the calibration changes what the chip does
    assert got.metadata["calibration"] == str(path)
    assert "calibration='" in repr(chip)


def test_candidates_are_laid_over_the_calibration_and_params_run_as_given(tmp_path):
    exp, layers = _experiment(), _layers()
    chip = get_backend("torch", calibration=layers.save(tmp_path / "c.json"))
    candidates = {"Isoma_const": [[400 * pA], [800 * pA]]}  # 2 sets; partial: everything else from the chip's layers
    _same(chip.run(exp, candidates), get_backend("torch").run(exp, exp.network.params(candidates, layers=layers)))
    given = exp.network.params()  # a Params is the caller's: no layer is laid under it
    _same(chip.run(exp, given), get_backend("torch").run(exp, given))


def test_the_calibrated_params_of_an_experiment_are_built_once(tmp_path, monkeypatch):
    exp = _experiment()
    chip = get_backend("torch", calibration=_layers())
    calls = []
    real = type(exp.network).params
    monkeypatch.setattr(type(exp.network), "params", lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    first, second = chip.run(exp), chip.run(exp)
    _same(first, second)
    assert len(calls) == 1


def test_a_calibration_that_is_not_a_chip_is_refused(tmp_path):
    with pytest.raises(ParameterError, match="calibration must be a ChipLayers or the path"):
        get_backend("torch", calibration=3)
    with pytest.raises(RecordingError, match="does not exist"):
        get_backend("torch", calibration=tmp_path / "missing.json")
    with pytest.raises(ParameterError, match="give a Params or None"):
        get_backend("torch").run(_experiment(), {"Isoma_const": 1e-11})  # candidates need a calibration
