"""The device side of the fake samna: device discovery, the Dynapse1 model, the FPGA spike
generator, the event source node and sink nodes, with a board object behind them.

A *board* (duck-typed; :class:`dynacal.hardware.twin.TwinBoard` is the one we have) provides
``device_type_name``, ``serial_number``, ``present`` (listed by the device controller),
``check(generation)`` (raises ``RuntimeError`` once it is gone, or for a handle opened
before the device re-enumerated), ``generation`` (counts opens), ``now_s`` (its clock, s),
``configure(state)``, ``set_bias(chip, core, name, coarse, fine)``, ``reset_timestamp()``,
``play(fpga_arrays, multiplier)`` -> list of (arrival time s, event), ``stop_generator()``
and ``opened`` (bool). Every model method first calls ``check()``, as calls on a vanished
USB device fail on the real driver.
"""

from __future__ import annotations

import bisect
import dataclasses
from typing import Any

import numpy as np

from ..biasgen import BIAS_NAMES
from . import dynapse1 as dyn
from . import facts

__all__ = ["ConfigState", "snapshot", "restore", "DeviceInfo", "DeviceController", "Dynapse1Model",
           "BasicSinkNode", "SourceNode", "LegacySourceNode", "EventFilterGraph"]

_BIAS_INDEX = {name: i for i, name in enumerate(BIAS_NAMES)}
_DEST_FIELDS = ("in_use", "target_chip_id", "virtual_core_id", "core_mask", "sx", "sy", "dx", "dy")


@dataclasses.dataclass
class ConfigState:
    """A configuration as arrays. ``codes``: int64 (4, 4, 25, 2) coarse/fine per chip, core and
    bias (``BIAS_NAMES`` order); ``ids``: (M,) global ids (chip * 1024 + core * 256 + neuron)
    of the neurons that differ from power-up; ``cams``: (M, 64, 3) listen core, listen
    neuron, synapse-type value; ``dests``: (M, 4, 8) SRAM fields in ``_DEST_FIELDS`` order."""

    codes: np.ndarray
    ids: np.ndarray
    cams: np.ndarray
    dests: np.ndarray

    @classmethod
    def power_up(cls) -> "ConfigState":
        return cls(np.zeros((4, 4, len(BIAS_NAMES), 2), np.int64), np.zeros(0, np.int64),
                   np.zeros((0, 64, 3), np.int64), np.zeros((0, 4, 8), np.int64))

    def copy(self) -> "ConfigState":
        return ConfigState(self.codes.copy(), self.ids.copy(), self.cams.copy(), self.dests.copy())


def snapshot(config: dyn.Dynapse1Configuration) -> ConfigState:
    """The arrays of a configuration object (only neurons that were touched are read)."""
    state = ConfigState.power_up()
    ids, cams, dests = [], [], []
    for chip in config.chips:
        for core in chip.cores:
            for name, p in core.parameter_group.param_map.items():
                if name in _BIAS_INDEX:
                    state.codes[chip.chip_id, core.core_id, _BIAS_INDEX[name]] = (p.coarse_value, p.fine_value)
            for nid, neuron in sorted(core.neurons.touched().items()):
                cam = np.array([(s.listen_core_id, s.listen_neuron_id, int(s.syn_type)) for s in neuron.synapses],
                               dtype=np.int64)
                dest = np.array([[int(getattr(d, f)) for f in _DEST_FIELDS] for d in neuron.destinations],
                                dtype=np.int64)
                if cam.any() or dest.any():
                    ids.append(chip.chip_id * 1024 + core.core_id * 256 + nid)
                    cams.append(cam)
                    dests.append(dest)
    if ids:
        state.ids, state.cams, state.dests = np.asarray(ids), np.stack(cams), np.stack(dests)
    return state


def restore(state: ConfigState) -> dyn.Dynapse1Configuration:
    """A configuration object holding ``state`` (what samna's ``get_configuration`` would return)."""
    config = dyn.Dynapse1Configuration()
    for chip in range(4):
        for core in range(4):
            pm = config.chips[chip].cores[core].parameter_group.param_map
            for name, i in _BIAS_INDEX.items():
                pm[name].coarse_value, pm[name].fine_value = (int(v) for v in state.codes[chip, core, i])
    for gid, cam, dest in zip(state.ids.tolist(), state.cams, state.dests):
        chip, rest = divmod(gid, 1024)
        neuron = config.chips[chip].cores[rest // 256].neurons[rest % 256]
        for s, (lc, ln, t) in zip(neuron.synapses, cam.tolist()):
            s.listen_core_id, s.listen_neuron_id, s.syn_type = lc, ln, dyn.Dynapse1SynType(t)
        for d, row in zip(neuron.destinations, dest.tolist()):
            for f, v in zip(_DEST_FIELDS, row):
                setattr(d, f, bool(v) if f == "in_use" else v)
    return config


class BasicSinkNode:
    """``samna.BasicSinkNode_dynapse1_dynapse1_event``: a buffer of events; ``get_events()``
    returns (and removes) the events that have arrived by the board's clock."""

    def __init__(self):
        self._arrival: list[float] = []
        self._events: list[Any] = []
        self._board = None

    def get_input_channel(self) -> "BasicSinkNode":
        return self

    def _push(self, timed: list[tuple[float, Any]]) -> None:
        for arrival, event in timed:
            k = bisect.bisect_right(self._arrival, arrival)
            self._arrival.insert(k, arrival)
            self._events.insert(k, event)

    def _retract(self, events: set[int]) -> None:
        """Remove buffered events by identity (the twin's spikes that were never fired)."""
        keep = [i for i, e in enumerate(self._events) if id(e) not in events]
        self._events = [self._events[i] for i in keep]
        self._arrival = [self._arrival[i] for i in keep]

    def get_events(self) -> list:
        now = self._board.now_s if self._board is not None else float("inf")
        k = bisect.bisect_right(self._arrival, now)
        out = self._events[:k]
        del self._events[:k], self._arrival[:k]
        return out


class SourceNode:
    """The model's event source (current samna): every event of the board goes to each sink of
    a started graph (:class:`EventFilterGraph`); there is no ``add_destination``."""

    def __init__(self, board):
        self._board = board
        self._sinks: list[BasicSinkNode] = []

    def _attach(self, sink: BasicSinkNode) -> None:
        sink._board = self._board
        if sink not in self._sinks:
            self._sinks.append(sink)

    def _detach(self, sink: BasicSinkNode) -> None:
        if sink in self._sinks:
            self._sinks.remove(sink)

    def _emit(self, timed: list[tuple[float, Any]]) -> None:
        for sink in self._sinks:
            sink._push(timed)

    def _retract(self, events: list) -> None:
        ids = {id(e) for e in events}
        for sink in self._sinks:
            sink._retract(ids)


class LegacySourceNode(SourceNode):
    """The event source of older samna versions: sinks are wired with ``add_destination``."""

    def add_destination(self, channel: BasicSinkNode) -> None:
        self._attach(channel)

    def remove_destination(self, channel: BasicSinkNode) -> None:
        self._detach(channel)


class EventFilterGraph:
    """``samna.graph.EventFilterGraph``: ``sequential([source, sink])`` wires a model's source
    node to a sink; events flow only between ``start()`` and ``stop()``."""

    def __init__(self):
        self._pairs: list[tuple[SourceNode, BasicSinkNode]] = []
        self._running = False

    def sequential(self, nodes: list) -> list:
        if len(nodes) != 2 or not isinstance(nodes[0], SourceNode) or not isinstance(nodes[1], BasicSinkNode):
            raise TypeError("the fake graph connects [model.get_source_node(), BasicSinkNode_dynapse1_dynapse1_event()]")
        self._pairs.append((nodes[0], nodes[1]))
        if self._running:
            nodes[0]._attach(nodes[1])
        return list(nodes)

    def start(self) -> bool:
        self._running = True
        for source, sink in self._pairs:
            source._attach(sink)
        return True

    def stop(self) -> None:
        self._running = False
        for source, sink in self._pairs:
            source._detach(sink)

    def is_running(self) -> bool:
        return self._running


class Dynapse1Interface:
    """``model.get_dynapse1_api()``: here only ``reset_timestamp``."""

    def __init__(self, model: "Dynapse1Model"):
        self._model = model

    def reset_timestamp(self) -> None:
        self._model._check()
        self._model._board.reset_timestamp()


class Dynapse1FpgaSpikeGen:
    """``model.get_fpga_spike_gen()``: preload events, set the ISI multiplier, start, stop."""

    def __init__(self, model: "Dynapse1Model"):
        self._model = model
        self._events: list = []
        self._multiplier, self._repeat, self._variable, self._running = 1, False, False, False

    def _check(self):
        self._model._check()

    def preload_stimulus(self, events: list) -> None:
        self._check()
        if len(events) > 2 ** 15 - 1:
            raise RuntimeError(f"stimulus of {len(events)} events exceeds the FPGA memory")
        top = facts.ISI_LIMIT if self._model._strict else 2 ** 16  # strict: the vendor's isi < 65535
        for e in events:
            if self._model._strict and not all(type(getattr(e, f)) is int for f in facts.FPGA_EVENT_FIELDS):
                raise TypeError(f"FpgaSpikeEvent fields must be Python ints, got "
                                f"{[type(getattr(e, f)).__name__ for f in facts.FPGA_EVENT_FIELDS]}")
            if not (0 <= e.isi < top and 0 <= e.neuron_id < 1024 and 0 <= e.core_mask < 16 and 0 <= e.target_chip < 4):
                raise RuntimeError(f"FpgaSpikeEvent field out of range (isi {e.isi}, neuron_id {e.neuron_id})")
        self._events = list(events)

    def set_isi_multiplier(self, multiplier: int) -> None:
        self._check()
        self._multiplier = int(multiplier)

    def set_repeat_mode(self, repeat: bool) -> None:
        self._check()
        self._repeat = bool(repeat)

    def set_variable_isi_mode(self, enabled: bool) -> None:
        self._check()
        self._variable = bool(enabled)

    def start(self) -> None:
        self._check()
        if self._running:
            return
        if self._repeat or not self._variable:
            raise RuntimeError("the fake FPGA spike generator plays variable-ISI stimuli once "
                               "(set_variable_isi_mode(True), set_repeat_mode(False))")
        arrays = tuple(np.asarray([getattr(e, f) for e in self._events], dtype=np.int64)
                       for f in ("core_mask", "neuron_id", "target_chip", "isi"))
        self._running = True
        self._model._source._emit(self._model._board.play(arrays, self._multiplier))

    def stop(self) -> None:
        self._check()
        self._running = False
        self._model._board.stop_generator()


class Dynapse1Model:
    """What ``samna.device.open_device`` returns for a Dynap-SE1 kit."""

    def __init__(self, board, strict: bool = True):
        self._board, self._strict = board, bool(strict)
        self._generation = board.generation
        self._check()
        self._source = SourceNode(board) if strict else LegacySourceNode(board)
        board.retract = self._source._retract  # the twin takes back spikes a reconfiguration prevented
        self._api = Dynapse1Interface(self)
        self._gen = Dynapse1FpgaSpikeGen(self)

    def _check(self) -> None:
        self._board.check(self._generation)

    def apply_configuration(self, new_config: dyn.Dynapse1Configuration) -> None:
        self._check()
        self._board.configure(snapshot(new_config))

    def update_single_parameter(self, parameter: dyn.Dynapse1Parameter, chip_id: int, core_id: int) -> None:
        self._check()
        name = parameter.param_name
        if name not in _BIAS_INDEX:
            raise RuntimeError(f"unknown parameter name {name!r}")
        c, f = int(parameter.coarse_value), int(parameter.fine_value)
        if not (0 <= c < 8 and 0 <= f < 256):
            raise RuntimeError(f"parameter {name} value ({c}, {f}) out of range")
        self._board.set_bias(int(chip_id), int(core_id), name, c, f)

    def get_configuration(self) -> dyn.Dynapse1Configuration:
        """The configuration the device holds (what was applied, with live bias changes)."""
        self._check()
        return restore(self._board.state)

    def get_source_node(self) -> SourceNode:
        self._check()
        return self._source

    def get_dynapse1_api(self) -> Dynapse1Interface:
        self._check()
        return self._api

    def get_fpga_spike_gen(self) -> Dynapse1FpgaSpikeGen:
        self._check()
        return self._gen


@dataclasses.dataclass
class DeviceInfo:
    """An entry of ``get_unopened_devices()``."""

    device_type_name: str
    serial_number: Any  # str in current samna (facts.SERIAL_TYPE), int in the lenient fake
    _board: Any = dataclasses.field(repr=False, default=None)


class DeviceController:
    """``samna.device``: ``get_unopened_devices``, ``open_device``, ``close_device``."""

    def __init__(self, boards: list, strict: bool = True):
        self._boards, self._strict = list(boards), bool(strict)

    def get_unopened_devices(self) -> list[DeviceInfo]:
        serial = facts.SERIAL_TYPE if self._strict else (lambda s: s)
        return [DeviceInfo(b.device_type_name, serial(b.serial_number), b) for b in self._boards
                if b.present and not b.opened]

    def open_device(self, info: DeviceInfo) -> Dynapse1Model:
        board = info._board
        if board is None or not board.present or board.opened:
            raise RuntimeError(f"device {info.device_type_name} (serial {info.serial_number}) cannot be opened: "
                               f"not connected or already open")
        board.opened = True
        board.generation += 1
        return Dynapse1Model(board, self._strict)

    def close_device(self, model: Dynapse1Model) -> None:
        if model._generation == model._board.generation:  # a handle from before a reconnect is stale
            model._board.opened = False
