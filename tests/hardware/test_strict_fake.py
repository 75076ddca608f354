"""The strict fake samna (current samna's API only) and the backend's use of it: graph-wired
sink with a detected fallback, no-argument FpgaSpikeEvent, string serials, isi < 65535,
the chip's fresh CAM state; the facts it follows are listed with sources in one place."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from dynacal.hardware.fake_samna import dynapse1 as dyn_mod
from dynacal.hardware.fake_samna import facts, make_samna
from dynacal.hardware.fpga import MAX_ISI
from dynacal.hardware.samna_board import BoardBackend
from dynacal.hardware.twin import TwinBoard, twin_backend

from .conftest import small_experiment

pytestmark = pytest.mark.hardware


def test_the_strict_fake_has_only_current_api_forms():
    samna = make_samna([TwinBoard(7)])
    info = samna.device.get_unopened_devices()[0]
    assert info.serial_number == "7" and isinstance(info.serial_number, facts.SERIAL_TYPE)
    with pytest.raises(TypeError):
        samna.dynapse1.FpgaSpikeEvent(1, 2, 0, 10)  # positional arguments: older samna only
    model = samna.device.open_device(info)
    assert not hasattr(model.get_source_node(), "add_destination")
    sink = samna.BasicSinkNode_dynapse1_dynapse1_event()
    graph = samna.graph.EventFilterGraph()
    graph.sequential([model.get_source_node(), sink])
    assert model.get_source_node()._sinks == []  # nothing flows before start()
    graph.start()
    assert model.get_source_node()._sinks == [sink]
    graph.stop()
    assert model.get_source_node()._sinks == []


def test_the_strict_fake_refuses_an_isi_of_65535_and_numpy_fields():
    samna = make_samna([TwinBoard(7)])
    gen = samna.device.open_device(samna.device.get_unopened_devices()[0]).get_fpga_spike_gen()
    ev = samna.dynapse1.FpgaSpikeEvent()
    ev.core_mask, ev.neuron_id, ev.target_chip, ev.isi = 1, 5, 0, facts.ISI_LIMIT
    with pytest.raises(RuntimeError, match="out of range"):
        gen.preload_stimulus([ev])
    ev.isi = np.int64(10)
    with pytest.raises(TypeError, match="Python ints"):
        gen.preload_stimulus([ev])
    ev.isi = MAX_ISI
    gen.preload_stimulus([ev])
    assert MAX_ISI == facts.ISI_LIMIT - 1


def test_the_fresh_cam_state_is_the_chips():
    syn = dyn_mod.Dynapse1Synapse()
    assert (syn.listen_core_id, syn.listen_neuron_id, syn.syn_type.name) == facts.FRESH_CAM


def test_the_backend_runs_against_the_strict_fake_with_a_graph_sink():
    backend = twin_backend()
    rec = backend.run(small_experiment(n_steps=1000))
    meta = rec.metadata
    assert meta["board"]["sink_wiring"] == "graph" and meta["samna_version"] == "0.0.0+dynacal-fake"
    assert meta["serial"] == "20231" and rec.spike_time.size > 0
    assert backend._link._graph.is_running()
    graph = backend._link._graph
    backend.close()
    assert not graph.is_running() and not backend.twin.opened


def test_an_older_samna_is_detected_and_wired_with_add_destination(caplog):
    with caplog.at_level(logging.INFO, logger="dynacal.hardware.samna_device"):
        backend = twin_backend(strict=False)
        strict = twin_backend()
        exp = small_experiment(n_steps=1000)
        old, new = backend.run(exp), strict.run(exp)
    assert "has no samna.graph" in caplog.text
    assert old.metadata["board"]["sink_wiring"] == "add_destination"
    assert old.metadata["samna_version"].endswith("-legacy")
    np.testing.assert_array_equal(old.spike_step, new.spike_step)  # the same chip, the same events
    backend.close()


def test_a_serial_is_found_whether_given_as_int_or_str():
    for serial in (20231, "20231"):
        backend = BoardBackend(samna_module=make_samna([TwinBoard(20231)]), serial=serial)
        assert str(backend._link.find(unavailable=False).serial_number) == "20231"


def test_the_facts_name_their_sources():
    names = [f.name for f in facts.FACTS]
    assert len(names) == len(set(names)) >= 10
    known = {"samna-docs", "ctxctl", "rockpool", "sinabs", "libcaer", "paper"}
    for fact in facts.FACTS:
        assert fact.sources and set(fact.sources) <= known and fact.meaning, fact.name
    assert {"first_isi", "start_latency", "timestamp_periods_us"} <= {f.name for f in facts.FACTS if not f.certain}
