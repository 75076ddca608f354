"""Stimulus generators, input counts and experiment hashing."""

import json

import numpy as np
import pytest
import torch

from dynacal import Chip, Experiment, Stimulus, poisson, regular
from dynacal.errors import ParameterError, RecordingError
from dynacal.experiment import split_sets


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


# --- conditions, protocol, as data ---------------------------------------------------------

def _fixed():
    """A small experiment with every part of a network (core biases, per-neuron values,
    inputs and recurrent connections) and a DC."""
    chip = Chip()
    nrn = chip.get_neurons(3, "Core_1")
    syn = chip.add_connection(chip.add_inputs(2), nrn, "NMDA")
    chip.connect(syn, True)
    syn.weight = [1, 2, 3, 4, 5, 6]
    chip.set_bias({"Isoma_th": 2e-9}, "Core_1")
    nrn[0:1].set_states({"Isoma_dpi_tau": 3e-12})
    rec = chip.add_connection(nrn, nrn, "AMPA")
    chip.connect(rec, "i==j")
    stim = Stimulus(2, steps=[1, 1, 4, 9], sources=[0, 1, 1, 0], dc=[1e-12, 0.0, 2e-12])
    return Experiment(chip.network(), stim, 1e-4, 50, "fixed")


def test_hash_of_an_experiment_without_conditions_is_unchanged():
    e = _fixed()
    # Regression value: _fixed()'s hash as computed by main's code before conditions existed
    # (/work/main at ab4aa4e, `Experiment(...).content_hash()`); a change here breaks every
    # shipped recording's match in the replay backend.
    assert e.content_hash() == "3e65181e03af3786a980ef53d53577549a60ad42e9c75f271df381a3be59b975"
    same = Experiment(e.network, e.stimulus, e.dt, e.n_steps, conditions={}, condition_stimuli=(),
                      protocol={"name": "fi", "settings": {"levels": [1e-10]}})
    assert same.content_hash() == e.content_hash()  # empty conditions and the protocol are not hashed
    with_c = Experiment(e.network, Stimulus(2), e.dt, e.n_steps, conditions={"Isoma_const": [1e-12, 2e-12]})
    other = Experiment(e.network, Stimulus(2), e.dt, e.n_steps, conditions={"Isoma_const": [1e-12, 3e-12]})
    plain = Experiment(e.network, Stimulus(2), e.dt, e.n_steps)
    assert len({with_c.content_hash(), other.content_hash(), plain.content_hash()}) == 3
    stims = (Stimulus(2, steps=[3], sources=[0]), Stimulus(2, steps=[4], sources=[0]))
    cs = Experiment(e.network, stims[0], e.dt, e.n_steps, condition_stimuli=stims)
    cs2 = Experiment(e.network, stims[0], e.dt, e.n_steps, condition_stimuli=(stims[0], stims[0]))
    assert cs.content_hash() != cs2.content_hash() != plain.content_hash()


def test_conditions_are_checked():
    e = _fixed()
    net, s = e.network, Stimulus(2)
    with pytest.raises(ParameterError, match="Did you mean 'Isoma_const'"):
        Experiment(net, s, 1e-4, 10, conditions={"Isoma_cnst": [1e-12]})
    with pytest.raises(ParameterError, match="different lengths"):
        Experiment(net, s, 1e-4, 10, conditions={"Isoma_const": [1e-12, 2e-12], "Isoma_th": [1e-9]})
    with pytest.raises(ParameterError, match=r"\(L, 3\)"):
        Experiment(net, s, 1e-4, 10, conditions={"Isoma_const": np.ones((2, 4)) * 1e-12})
    with pytest.raises(ParameterError, match="pA given as A"):
        Experiment(net, s, 1e-4, 10, conditions={"Isoma_const": [5.0]})
    with pytest.raises(ParameterError, match="one place only"):
        Experiment(net, e.stimulus, 1e-4, 10, conditions={"Isoma_const": [1e-12]})
    with pytest.raises(ParameterError, match="different lengths"):
        Experiment(net, s, 1e-4, 10, conditions={"Isoma_th": [1e-9]}, condition_stimuli=(s, s))
    with pytest.raises(ParameterError, match=r"condition_stimuli\[1\] has 3 sources"):
        Experiment(net, s, 1e-4, 10, condition_stimuli=(s, Stimulus(3)))
    with pytest.raises(ParameterError, match="protocol"):
        Experiment(net, s, 1e-4, 10, protocol={"settings": {}})
    with pytest.raises(ParameterError, match="JSON-able"):
        Experiment(net, s, 1e-4, 10, protocol={"name": "p", "settings": {"f": print}})
    canonical = Experiment(net, s, 1e-4, 10, protocol={"name": "p", "settings": {"levels": (1e-10, np.float64(2e-10)),
                                                                                 "n": np.int64(3)}})
    assert canonical.protocol == {"name": "p", "settings": {"levels": [1e-10, 2e-10], "n": 3}}


def test_n_conditions_condition_and_split_sets():
    e = _fixed()
    stims = (Stimulus(2, steps=[3], sources=[0]), Stimulus(2, steps=[4], sources=[1]), Stimulus(2))
    per_neuron = np.array([[1e-9, 2e-9, 3e-9], [4e-9, 5e-9, 6e-9], [7e-9, 8e-9, 9e-9]])
    x = Experiment(e.network, stims[0], 1e-4, 50, "x", conditions={"Isoma_th": per_neuron, "Isoma_dpi_tau":
                   [1e-12, 2e-12, 3e-12]}, condition_stimuli=stims, protocol={"name": "p", "settings": {"a": 1}})
    assert x.n_conditions == 3 and e.n_conditions == 1
    c1 = x.condition(1)
    assert c1.stimulus is stims[1] and c1.n_conditions == 1 and not c1.condition_stimuli
    np.testing.assert_array_equal(c1.conditions["Isoma_th"], per_neuron[1:2])
    assert c1.conditions["Isoma_dpi_tau"].tolist() == [2e-12] and c1.protocol == x.protocol
    assert x.condition(1) is c1 and x.condition(-1) is x.condition(2)  # cached
    with pytest.raises(ParameterError, match="has 3"):
        x.condition(3)
    a = np.arange(12).reshape(6, 2)
    assert split_sets(a, 3).shape == (2, 3, 2) and split_sets(a, 3)[1, 2].tolist() == a[5].tolist()
    assert split_sets(torch.arange(6.0), 3)[1].tolist() == [3.0, 4.0, 5.0]
    with pytest.raises(ParameterError, match="cannot be split into 4"):
        split_sets(a, 4)


def _rich():
    e = _fixed()
    stims = (Stimulus(2, steps=[3, 7], sources=[0, 1]), Stimulus(2, dc=[1e-12, 2e-12, 0.0]))
    return Experiment(e.network, stims[0], 1e-4, 50, "rich", conditions={"Isoma_th": [1e-9, 3e-9]},
                      condition_stimuli=stims, protocol={"name": "fi", "settings": {"levels": [1e-10, 2e-10]}})


@pytest.mark.parametrize("make", [_fixed, _rich])
def test_to_dict_and_files_give_the_same_experiment(make, tmp_path):
    e = make()
    text = json.dumps(e.to_dict(), allow_nan=False)  # strict JSON: NaN of unset neuron values as null
    for back in (Experiment.from_dict(json.loads(text)), Experiment.load(e.save(tmp_path / "e.h5"))):
        assert back.content_hash() == e.content_hash()
        assert back.name == e.name and back.protocol == e.protocol and back.n_conditions == e.n_conditions
        assert back.network.enforce_limits == e.network.enforce_limits and back.network.n_chips == e.network.n_chips
        np.testing.assert_array_equal(back.network.neuron_values["Isoma_dpi_tau"],
                                      e.network.neuron_values["Isoma_dpi_tau"])
        assert back.network.core_biases == e.network.core_biases


def test_damaged_experiment_data_is_refused(tmp_path):
    d = _fixed().to_dict()
    del d["network"]["core"]
    with pytest.raises(RecordingError, match="'core'"):
        Experiment.from_dict(d)
    d = _fixed().to_dict()
    d["stimulus"]["sources"] = [0, 1, 1, 5]
    with pytest.raises(RecordingError, match="'stimulus'.*out of range"):
        Experiment.from_dict(d)
    with pytest.raises(RecordingError, match="does not exist"):
        Experiment.load(tmp_path / "none.h5")
    path = _fixed().save(tmp_path / "e.h5")
    import h5py
    with h5py.File(path, "a") as f:
        del f["experiment/network/inputs/weight"]
    with pytest.raises(RecordingError, match="damaged"):
        Experiment.load(path)
