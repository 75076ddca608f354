"""SRAM routing between chips (the vendor's netgen rule) and the fresh CAM state of the chip:
the twin routes by the sx/sy/dx/dy bits, so a wrongly signed route loses its spikes."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest

from dynacal import Chip, Experiment, get_backend, poisson
from dynacal.errors import NetworkError
from dynacal.hardware import config
from dynacal.hardware.config import chip_xy, plan_network, route_target, routing_bits

pytestmark = pytest.mark.hardware

PAIRS = list(itertools.permutations(range(4), 2))  # the 12 ordered chip pairs


def _relay(source_chip: int, target_chip: int, *, source_core: int = 1, source_id: int = 0, n_steps: int = 1500):
    """A driven neuron on one chip relaying to a neuron on another, both strongly weighted."""
    chip = Chip(n_chips=4)
    if source_id:
        chip.get_neurons(source_id, f"Core_{4 * source_chip + source_core}")  # skip the first ids
    src = chip.get_neurons(1, f"Core_{4 * source_chip + source_core}")
    dst = chip.get_neurons(1, f"Core_{4 * target_chip + 2}")
    inp = chip.add_inputs(1)
    for pre, post in ((inp, src), (src, dst)):
        s = chip.add_connection(pre, post, "AMPA")
        chip.connect(s, True)
        s.weight = 16
    for core in (4 * source_chip + source_core, 4 * target_chip + 2):
        chip.set_bias({"Iampa_w0": "400 pA"}, f"Core_{core}")
    net = chip.network()
    return Experiment(net, poisson(1, 300, n_steps, 1e-4, seed=1), 1e-4, n_steps)


@pytest.mark.parametrize("source, target", PAIRS)
def test_the_routing_bits_follow_the_netgen_rule(source, target):
    (xs, ys), (xt, yt) = chip_xy(source), chip_xy(target)
    sx, sy, dx, dy = routing_bits(source, target)
    assert (sx, sy, dx, dy) == (int(xt < xs), int(yt >= ys), abs(xt - xs), abs(yt - ys))
    assert route_target(source, sx, sy, dx, dy) == target
    plan = plan_network(_relay(source, target).network)
    row = plan.dest[0, 1]  # SRAM 0 is kept for monitoring
    assert row.tolist() == [1, target, 1, 1 << 2, sx, sy, dx, dy]  # every field, not only the first ones


def test_every_ordered_chip_pair_relays_spikes_on_the_twin():
    backend = get_backend("twin")
    for source, target in PAIRS:
        rec = backend.run(_relay(source, target))
        counts = rec.spike_counts()[0]
        assert counts[0] > 5, f"chip {source}: the driven neuron is silent"
        assert counts[1] > 0, f"route chip {source} -> chip {target}: no spike arrived"
        assert backend.twin.last_run.lost_routes == 0


def test_a_wrongly_signed_route_loses_its_spikes(monkeypatch):
    def old_rule(source, target):  # what the backend computed before: sx = xt > xs, sy = yt > ys
        (xs, ys), (xt, yt) = chip_xy(source), chip_xy(target)
        return int(xt > xs), int(yt > ys), abs(xt - xs), abs(yt - ys)

    monkeypatch.setattr(config, "routing_bits", old_rule)
    backend = get_backend("twin")
    for source, target in PAIRS:
        rec = backend.run(_relay(source, target))
        counts = rec.spike_counts()[0]
        assert counts[0] > 5
        if chip_xy(source)[0] != chip_xy(target)[0]:  # x differs: the route leaves the grid
            assert counts[1] == 0 and backend.twin.last_run.lost_routes == 1, (source, target)
        else:
            assert counts[1] > 0, (source, target)


def test_a_recurrent_sender_at_core_0_id_0_is_refused_with_the_fix():
    exp = _relay(0, 1, source_core=0)
    with pytest.raises(NetworkError, match=r"chip 0 core 0 id 0 and has recurrent targets; on a fresh chip every "
                                           r"unused CAM entry listens to \(core 0, neuron 0\) as NMDA.*Leave id 0"):
        get_backend("twin").run(exp)
    plan = plan_network(_relay(0, 1, source_core=0, source_id=1).network)  # the fix: id 0 left unused
    assert plan.neuron.tolist() == [0, 1, 0] and plan.dest[0].sum() == 0 and plan.dest[1, 1, 0] == 1


def test_the_twin_simulates_what_a_sender_at_core_0_id_0_does_to_fresh_neurons(caplog):
    exp = _relay(0, 1, source_core=0)
    with caplog.at_level(logging.WARNING):
        rec = get_backend("twin", zero_address="warn").run(exp)
    assert "core 0 id 0" in caplog.text
    stats = rec.metadata["board"]["sets"]["0"]
    # the 255 unconfigured neurons of chip 1 core 2 hear it through 64 fresh NMDA entries each
    assert stats["n_other_neurons"] > 100
    moved = get_backend("twin").run(_relay(0, 1, source_core=0, source_id=1))
    assert moved.metadata["board"]["sets"]["0"]["n_other_neurons"] < stats["n_other_neurons"] / 10
    np.testing.assert_array_equal(rec.spike_counts()[0] > 0, [True, True])
    assert (moved.spike_counts()[0][1:] > 0).all()  # the relay still works from id 1
