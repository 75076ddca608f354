"""Network -> board configuration: placement, CAM entries, SRAM routes, and every limit."""

from __future__ import annotations

import numpy as np
import pytest

from dynacal import Chip
from dynacal.chip import Connections, Network
from dynacal.errors import NetworkError
from dynacal.hardware.biasmap import params_to_codes
from dynacal.hardware.config import SILENT_CODES, plan_network, write_configuration
from dynacal.hardware.fake_samna import dynapse1 as dyn
from dynacal.hardware.fake_samna.device import restore, snapshot
from dynacal.params import SYNAPSE_TYPES

from .conftest import small_network


def test_plan_places_neurons_and_writes_cam_entries_and_routes():
    net = small_network()
    plan = plan_network(net)
    assert plan.chip.tolist() == [0] * 12 + [1] * 3
    assert plan.core.tolist() == [1] * 8 + [2] * 4 + [1] * 3
    assert plan.neuron.tolist() == list(range(8)) + list(range(4)) + list(range(3))
    assert plan.cores == ((0, 1), (0, 2), (1, 1))
    # inputs get addresses no network neuron uses, and never (core 0, neuron 0)
    used = set((plan.core * 256 + plan.neuron).tolist())
    assert 0 not in plan.input_address and not used & set(plan.input_address.tolist())
    assert plan.null_address not in used | set(plan.input_address.tolist()) | {plan.dummy_address}
    # neuron 0 of Core_1: 4 inputs x (3 AMPA + 2 NMDA) + 4 GABA_B from Core_2 = 24 CAM entries
    assert plan.fan_in[0] == 24 and plan.fan_in[4] == 20
    addr = plan.cam_core[0] * 256 + plan.cam_neuron[0]
    for k, a in enumerate(plan.input_address.tolist()):
        got = plan.cam_type[0][addr == a]
        assert sorted(got.tolist()) == sorted([SYNAPSE_TYPES.index("ampa")] * 3 + [SYNAPSE_TYPES.index("nmda")] * 2)
    for j in range(4):  # Core_2 neuron j -> GABA_B, weight 1
        assert plan.cam_type[0][addr == 2 * 256 + j].tolist() == [SYNAPSE_TYPES.index("gaba_b")]
    assert np.sum(addr == plan.null_address) == 64 - 24
    # routes: a Core_1 neuron sends to chip 0 (core 2) and chip 1 (core 1); SRAM 0 is kept for monitoring
    d = plan.dest[0]
    assert d[0].tolist() == [0] * 8
    assert d[1, :4].tolist() == [1, 0, 1, 0b0100] and d[2, :4].tolist() == [1, 1, 1, 0b0010]
    assert plan.dest[12].sum() == 0  # chip 1 neurons send nowhere
    # inputs go to chip 0 core 1 only
    assert plan.input_route_chip.tolist() == [0] * 4 and plan.input_route_mask.tolist() == [0b0010] * 4


def test_written_configuration_holds_the_plan_and_the_codes():
    net = small_network()
    plan = plan_network(net)
    codes = params_to_codes({k: {} for k in plan.cores}).codes
    config = write_configuration(plan, dyn, codes)
    state = snapshot(config)
    assert state.ids.tolist() == plan.global_ids().tolist()
    np.testing.assert_array_equal(state.cams[:, :, 0], plan.cam_core)
    np.testing.assert_array_equal(state.cams[:, :, 1], plan.cam_neuron)
    want_enum = [int(getattr(dyn.Dynapse1SynType, n)) for n in ("NMDA", "AMPA", "GABA_A", "GABA_B")]
    np.testing.assert_array_equal(state.cams[:, :, 2], np.asarray(want_enum)[plan.cam_type])
    np.testing.assert_array_equal(state.dests, plan.dest)
    pm = config.chips[0].cores[1].parameter_group.param_map
    assert (pm["IF_TAU1_N"].coarse_value, pm["IF_TAU1_N"].fine_value) == codes[(0, 1)]["IF_TAU1_N"]
    silent = config.chips[3].cores[0].parameter_group.param_map["IF_DC_P"]
    assert (silent.coarse_value, silent.fine_value) == SILENT_CODES["IF_DC_P"]
    # the configuration survives the copy samna's get_configuration makes
    again = snapshot(restore(state))
    np.testing.assert_array_equal(again.cams, state.cams)
    np.testing.assert_array_equal(again.codes, state.codes)


def _network(n, posts, weights, core=None, n_chips=1, rec=None):
    core = np.zeros(n, np.int64) + 1 if core is None else np.asarray(core)
    nid = np.zeros(n, np.int64)
    for c in np.unique(core):
        nid[core == c] = np.arange(int((core == c).sum()))
    inputs = Connections(np.zeros(len(posts), np.int64), np.asarray(posts), np.ones(len(posts), np.int64),
                         np.asarray(weights))
    return Network(core=core, neuron_id=nid, n_inputs=1, inputs=inputs, recurrent=rec or Connections.empty(),
                   n_chips=n_chips, enforce_limits=False)


def test_fan_in_over_64_names_the_limit():
    with pytest.raises(NetworkError, match=r"fan-in limit: neuron 1 .* needs 65 CAM entries .* limit of 64 per "
                                           r"neuron by 1"):
        plan_network(_network(2, [0, 1], [64, 65]))


def test_more_target_chips_than_srams_names_the_limit():
    core = [0, 4, 8, 12]  # one neuron on each chip (the sender sits at core 0 id 0: allowed here)

    def net(targets):
        rec = Connections(np.zeros(len(targets), np.int64), np.asarray(targets), np.ones(len(targets), np.int64),
                          np.ones(len(targets), np.int64))
        return _network(4, [0], [1], core=core, n_chips=4, rec=rec)

    three, four = net([1, 2, 3]), net([0, 1, 2, 3])
    assert plan_network(three, zero_address="allow").dest[0, :, 0].tolist() == [0, 1, 1, 1]  # SRAM 0: monitor
    with pytest.raises(NetworkError, match=r"SRAM destination limit: neuron 0 .* sends to 4 chips \[0, 1, 2, 3\], "
                                           r"over the limit of 3 destinations per neuron \(4 SRAMs, one kept for "
                                           r"monitoring\)"):
        plan_network(four, zero_address="allow")
    assert plan_network(four, reserve_monitor=False, zero_address="allow").dest[0, :, 0].tolist() == [1, 1, 1, 1]


def test_source_aliasing_and_board_size_and_addresses_name_their_limits():
    chip = Chip(n_chips=2)
    a0 = chip.get_neurons(1, "Core_1")   # chip 0, core 1, id 0
    a1 = chip.get_neurons(1, "Core_5")   # chip 1, core 1, id 0: the same address
    target = chip.get_neurons(1, "Core_2")
    for pre in (a0, a1):
        chip.connect(chip.add_connection(pre, target, "AMPA"), True)
    with pytest.raises(NetworkError, match=r"source aliasing: .* both have address \(core 1, id 0\) .* CAM entry "
                                           r"cannot tell chips apart"):
        plan_network(chip.network())
    big = Chip(n_chips=5)
    big.get_neurons(1, "Core_17")
    with pytest.raises(NetworkError, match=r"uses chip 4 but the board has 4 chips"):
        plan_network(big.network())
    many = Chip()
    for k in range(4):
        many.get_neurons(256, f"Core_{k}")
    many.add_inputs(1)
    with pytest.raises(NetworkError, match=r"virtual address limit: 1 inputs need 1 source addresses"):
        plan_network(many.network())
