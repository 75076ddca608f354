"""What the protocols share: neuron specs, conditions, the registry and the lab order."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from dynacal import Chip, Params
from dynacal.errors import NetworkError, ParameterError, RecordingError
from dynacal.params import PARAMETERS
from dynacal.protocols import ORDER, PROTOCOLS, expand_conditions, get_protocol, layout, split_conditions


def test_neuron_specs():
    assert layout("core0").n_neurons == 256 and set(layout("core0").core) == {0}
    net = layout("core2:16")
    assert net.n_neurons == 16 and set(net.core) == {2} and net.neuron_id.tolist() == list(range(16))
    chip = layout("chip0")
    assert chip.n_neurons == 1024 and np.bincount(chip.core).tolist() == [256] * 4
    assert layout("chip1").n_chips == 2 and set(layout("chip1").core) == {4, 5, 6, 7}
    assert layout("core0:4,core1:4").core.tolist() == [0] * 4 + [1] * 4
    assert layout(300).core.tolist() == [0] * 256 + [1] * 44
    for bad, match in (("core", "neuron spec"), ("core0:300", "256"), ("core0,core0", "twice")):
        with pytest.raises(NetworkError, match=match):
            layout(bad)


def test_a_network_keeps_its_neurons_and_biases_but_not_its_connections():
    chip = Chip()
    group = chip.get_neurons(3, "Core_1")
    syn = chip.add_connection(chip.add_inputs(1), group)
    chip.connect(syn, True)
    chip.set_bias({"Isoma_th": "1500 pA"}, "Core_1")
    net = layout(chip.network())
    assert net.n_neurons == 3 and net.n_inputs == 0 and net.inputs.pre.size == 0
    assert float(net.params().Isoma_th.max()) == pytest.approx(1.5e-9)


def test_conditions_make_b_times_l_sets():
    p = Params.from_values(Isoma_dpi_tau=torch.tensor([[4e-12], [6e-12]], dtype=torch.float64),
                           Iampa_w0=np.array([1e-10, 2e-10, 3e-10]))
    q = expand_conditions(p, {"Isoma_const": (1e-10, 2e-10, 3e-10)})
    assert q.shape == (6, 3)
    assert q.Isoma_const[:, 0].tolist() == [1e-10, 2e-10, 3e-10] * 2
    assert q.Isoma_dpi_tau[:, 0].tolist() == [4e-12] * 3 + [6e-12] * 3
    assert q.Iampa_w0.shape == (1, 3)  # shared by every set: left to broadcast
    x = np.arange(6 * 3).reshape(6, 3)
    y = split_conditions(x, 3)
    assert y.shape == (2, 3, 3) and y[1, 2, 0] == x[3, 2]
    with pytest.raises(RecordingError, match="multiple"):
        split_conditions(x, 4)
    with pytest.raises(ParameterError, match="Isoma_cnst"):
        expand_conditions(p, {"Isoma_cnst": (1e-10,)})
    with pytest.raises(ParameterError, match="Isoma_const"):
        expand_conditions(p, {"Isoma_const": (-1.0,)})


def test_registry_order_and_documentation():
    assert set(ORDER) == set(PROTOCOLS) - {"recorded"}  # Recorded fits nothing: not in the lab order
    for name, cls in PROTOCOLS.items():
        protocol = get_protocol(name)
        assert protocol.name == name
        assert all(p in PARAMETERS for p in cls.sensitive_to), name
        assert "Requires:" in inspect.getdoc(cls), name
        if name != "recorded":
            assert protocol.experiment("core0:2").network.n_neurons == 2
    with pytest.raises(ParameterError, match="Did you mean 'fi'"):
        get_protocol("fii")
    with pytest.raises(TypeError):
        get_protocol("fi", nonsense=1)


def test_a_recording_of_another_protocol_is_refused():
    from dynacal import get_backend

    fi, refractory = get_protocol("fi", duration=0.02, settle=0.0), get_protocol("refractory", duration=0.02, settle=0.0)
    rec = refractory.run(get_backend("torch"), "core0:1")
    with pytest.raises(RecordingError, match="'refractory'"):
        fi.features(rec)


def test_a_recording_without_settings_and_of_another_length_is_refused():
    from dynacal import get_backend

    rec = get_protocol("refractory", duration=0.02, settle=0.0).run(get_backend("torch"), "core0:1")
    rec.metadata.pop("protocol")
    rec.experiment = None  # as a recording that says nothing of how it was made
    with pytest.raises(RecordingError, match="settings it was recorded with"):
        get_protocol("refractory", duration=0.03, settle=0.0).features(rec)


def test_spike_index_queries():
    from dynacal import Recording
    from dynacal.protocols import SpikeIndex

    rec = Recording.from_steps("x", 1e-3, 100, 2, 2, [0, 0, 0, 1], [0, 0, 1, 1], [10, 30, 50, 20])
    index = SpikeIndex(rec)
    assert index.counts([0, 20], [25, 100]).tolist() == [[[1, 1], [0, 1]], [[0, 0], [1, 1]]]
    first = index.first_after([0, 40], [60, 60])
    assert first[0, 0, 0] == 10 and np.isnan(first[0, 0, 1])
    assert first[0, 1].tolist() == [50, 10] and np.isnan(first[1, 0]).all()
    assert index.rate(0, 100)[0, 0] == pytest.approx(1 / 0.02)  # one ISI of 20 ms
    assert index.rate(0, 100, "count")[0, 0] == pytest.approx(2 / 0.1)
    assert index.rate(0, 100)[0, 1] == pytest.approx(1 / 0.1)  # one spike: count / window
    assert index.trains(1, 1).tolist() == [20]
    empty = SpikeIndex(Recording.from_steps("x", 1e-3, 100, 1, 2, [], [], []))
    assert empty.counts([0], [100]).sum() == 0 and np.isnan(empty.first_after([0], [100])).all()
    assert empty.rate(0, 100).tolist() == [[0.0, 0.0]]


def test_isi_statistics_of_a_window():
    from dynacal import Recording
    from dynacal.protocols import SpikeIndex

    rec = Recording.from_steps("x", 1e-3, 100, 1, 3, [0] * 7, [0, 0, 0, 0, 1, 1, 2], [10, 20, 40, 90, 5, 50, 7])
    mean, cv = SpikeIndex(rec).isi_stats(0, 80)
    isi = np.array([10e-3, 20e-3])
    assert mean[0, 0] == pytest.approx(isi.mean()) and cv[0, 0] == pytest.approx(isi.std() / isi.mean())
    assert mean[0, 1] == pytest.approx(45e-3) and np.isnan(cv[0, 1])  # one ISI: no CV
    assert np.isnan(mean[0, 2]) and np.isnan(cv[0, 2])
    mean, _ = SpikeIndex(rec).isi_stats(15, 100)
    assert mean[0, 0] == pytest.approx(35e-3)  # the spikes at 20, 40, 90
