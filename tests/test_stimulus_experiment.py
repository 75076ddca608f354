"""Stimulus generators, input counts and experiment hashing."""

import numpy as np
import pytest

from dynacal import Chip, Experiment, Stimulus, poisson, regular
from dynacal.errors import ParameterError


def _net(n_inputs=2, n=3, weights=(1, 2, 3, 4, 5, 6)):
    chip = Chip()
    neurons = chip.get_neurons(n, "Core_1")
    syn = chip.add_connection(chip.add_inputs(n_inputs), neurons, "NMDA")
    chip.connect(syn, True)
    syn.weight = list(weights)
    return chip.network()


def test_poisson_is_seeded_and_has_the_rate():
    a = poisson(50, 80.0, 10000, 1e-4, seed=3)
    b = poisson(50, 80.0, 10000, 1e-4, seed=3)
    np.testing.assert_array_equal(a.steps, b.steps)
    rate = a.steps.size / (50 * 1.0)
    assert rate == pytest.approx(80, rel=0.05)
    assert not np.array_equal(a.steps, poisson(50, 80.0, 10000, 1e-4, seed=4).steps)


def test_regular_and_dense_round_trip():
    s = regular(2, 1000.0, 30, 1e-4)
    dense = s.dense(30)
    assert dense[:, ::10].all() and dense.sum() == 6
    again = Stimulus.from_dense(dense)
    np.testing.assert_array_equal(again.steps, s.steps)


def test_bad_stimuli():
    with pytest.raises(ParameterError, match="twice in step"):
        Stimulus(1, steps=[3, 3], sources=[0, 0])
    with pytest.raises(ParameterError, match="out of range"):
        Stimulus(1, steps=[3], sources=[1])
    with pytest.raises(ParameterError, match="0 or 1"):
        Stimulus.from_dense(np.array([[0, 2]]))
    with pytest.raises(ParameterError, match="pA given as A"):
        Stimulus(1, dc=[5.0])
    with pytest.raises(ParameterError, match="rate"):
        poisson(1, 2e4, 10, 1e-4)


def test_input_counts_sum_weights_of_spiking_sources():
    net = _net()
    stim = Stimulus(2, steps=[1, 1, 4], sources=[0, 1, 1])
    exp = Experiment(net, stim, 1e-4, 6)
    counts = exp.input_counts()
    assert counts.shape == (6, 4, 3)
    # Source 0 -> neurons with weights 1, 2, 3; source 1 -> 4, 5, 6 (connect(True) is i-major).
    assert counts[1, 0].tolist() == [5.0, 7.0, 9.0]
    assert counts[4, 0].tolist() == [4.0, 5.0, 6.0]
    assert counts[:, 1:].sum() == 0 and counts[[0, 2, 3, 5]].sum() == 0
    assert exp.input_counts(4, 6)[0, 0].tolist() == [4.0, 5.0, 6.0]


def test_experiment_checks_and_hash():
    net = _net()
    stim = poisson(2, 50, 100, 1e-4, seed=0)
    e1 = Experiment(net, stim, 1e-4, 100)
    assert e1.content_hash() == Experiment(_net(), poisson(2, 50, 100, 1e-4, seed=0), 1e-4, 100).content_hash()
    assert e1.content_hash() != Experiment(net, poisson(2, 50, 100, 1e-4, seed=1), 1e-4, 100).content_hash()
    assert e1.content_hash() != Experiment(_net(weights=(1, 2, 3, 4, 5, 7)), stim, 1e-4, 100).content_hash()
    with pytest.raises(ParameterError, match="2 inputs"):
        Experiment(net, poisson(3, 50, 100, 1e-4), 1e-4, 100)
    with pytest.raises(ParameterError, match="looks like ms"):
        Experiment(net, stim, 100.0, 100)
    assert Experiment.from_duration(net, stim, 1e-4, 0.01).n_steps == 100
