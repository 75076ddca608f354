"""Topology: the Chip builder, chip limits, per-core biases."""

import numpy as np
import pytest

from dynacal import Chip
from dynacal.chip import FAN_IN, NEURONS_PER_CORE
from dynacal.errors import NetworkError, ParameterError


def test_seed_notebook_verbs_build_the_network():
    chip = Chip()
    neuron = chip.get_neurons(1, "Core_1")
    inputs = chip.add_inputs(4)
    for k, (t, w) in enumerate([("NMDA", 10), ("AMPA", 5), ("GABA_A", 1), ("GABA_B", 2)]):
        syn = chip.add_connection(inputs[k], neuron, synapse_type=t)
        chip.connect(syn, True)
        syn.weight = w
    neuron.set_states({"Isoma_pfb_th": "1000 pA", "Isoma_th": "2000 pA"})
    net = chip.network()
    assert net.n_neurons == 1 and net.n_inputs == 4
    assert net.core.tolist() == [1]
    assert net.inputs.syn_type.tolist() == [0, 1, 2, 3] and net.inputs.weight.tolist() == [10, 5, 1, 2]
    assert float(net.params().Isoma_th) == pytest.approx(2e-9)


def test_core_capacity_and_names():
    chip = Chip()
    chip.get_neurons(200, "Core_0")
    with pytest.raises(NetworkError, match="56 free neurons"):
        chip.get_neurons(100, "Core_0")
    with pytest.raises(NetworkError, match="Core_0..Core_3"):
        chip.get_neurons(1, "Core_4")
    assert len(Chip(n_chips=2).get_neurons(NEURONS_PER_CORE, (1, 3))) == NEURONS_PER_CORE


def test_fan_in_limit_names_the_limit_and_excess():
    chip = Chip()
    n = chip.get_neurons(2, 0)
    inp = chip.add_inputs(3)
    syn = chip.add_connection(inp, n, "AMPA")
    chip.connect(syn, True)
    syn.weight = 30
    with pytest.raises(NetworkError, match=f"fan-in 90 .* limit of {FAN_IN} CAM entries by 26"):
        chip.network()
    free = Chip(enforce_limits=False)
    n = free.get_neurons(1, 0)
    syn = free.add_connection(free.add_inputs(3), n, "AMPA")
    free.connect(syn, True)
    syn.weight = 30
    assert free.network().inputs.weight.sum() == 90


def test_weights_must_be_non_negative_integers():
    chip = Chip()
    syn = chip.add_connection(chip.add_inputs(1), chip.get_neurons(1), "NMDA")
    chip.connect(syn, True)
    for bad in (-1, 1.5, float("nan")):
        with pytest.raises(NetworkError, match="non-negative integers"):
            syn.weight = bad


def test_unknown_synapse_type_and_parameter():
    chip = Chip()
    n = chip.get_neurons(1)
    with pytest.raises(ParameterError, match="GABA_A"):
        chip.add_connection(chip.add_inputs(1), n, "GABAA")
    with pytest.raises(ParameterError, match="Isoma_th"):
        chip.set_bias({"Isoma_thr": 1e-9}, "Core_0")


def test_per_core_biases_expand_to_neurons():
    chip = Chip()
    a = chip.get_neurons(3, "Core_0")
    b = chip.get_neurons(2, "Core_2")
    chip.set_bias({"Isoma_dpi_tau": "5 pA"}, "Core_0")
    chip.set_bias({"Isoma_dpi_tau": "9 pA"}, "Core_2")
    b[1:].set_states({"Isoma_dpi_tau": "11 pA"})
    p = chip.network().params()
    np.testing.assert_allclose(p.Isoma_dpi_tau[0].numpy(), [5e-12] * 3 + [9e-12, 11e-12])
    assert len(a) == 3


def test_connect_patterns():
    chip = Chip()
    src, dst = chip.get_neurons(4, 0), chip.get_neurons(4, 1)
    s1 = chip.add_connection(src, dst, "AMPA")
    chip.connect(s1, "i==j")
    s2 = chip.add_connection(src, dst, "NMDA")
    chip.connect(s2, True, p=0.5, seed=1)
    s3 = chip.add_connection(src, dst, "GABA_B")
    chip.connect(s3, i=[0, 1], j=[3, 2])
    net = chip.network()
    assert len(s1) == 4 and 0 < len(s2) < 16 and len(s3) == 2
    assert net.recurrent.pre.size == len(s1) + len(s2) + 2
    with pytest.raises(NetworkError, match="out of range"):
        chip.connect(s3, i=[9], j=[0])
