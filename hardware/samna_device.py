"""The samna side of the board backend: finding, opening and closing the device, wiring the
event sink, and building FPGA events, in the API forms of the installed samna.

- The event sink is wired as current samna does it (``fake_samna.facts.SINK_WIRING``): a
  ``samna.graph.EventFilterGraph`` with ``sequential([model.get_source_node(), sink])``,
  started on connect and stopped on close. A samna without ``samna.graph`` (older versions)
  is detected and wired with ``source.add_destination(sink.get_input_channel())``; which
  one was used goes into the recording's metadata (``sink_wiring``), with samna's version.
- ``serial_number`` is a string in current samna: serials are compared as strings.
- ``FpgaSpikeEvent`` is built with no arguments and its fields are set (as every public
  script does), as Python ints.
- A device that is gone is waited for with a bounded exponential backoff
  (``reconnect_timeout_s``) before an attempt counts as failed.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from dynacal.errors import BackendUnavailable, BoardError

from .biasmap import LEAK_BIASES
from .config import write_configuration
from .samna_detect import TWIN_HINT

__all__ = ["DeviceLink", "fpga_events", "apply_setting", "discharge"]

log = logging.getLogger(__name__)


def _parameter(dyn, bias: str, code) -> Any:
    """A ``Dynapse1Parameter`` with (coarse, fine) as given (wire convention)."""
    return dyn.Dynapse1Parameter(bias, int(code[0]), int(code[1]))


def apply_setting(model: Any, dyn: Any, plan, wire: dict, applied: tuple | None) -> tuple:
    """Apply a plan with bias codes (wire convention): the whole configuration when the plan
    changed, else only the biases that differ. Returns the new ``applied`` (plan, codes)."""
    if applied is None or applied[0] is not plan:
        model.apply_configuration(write_configuration(plan, dyn, wire))
    else:
        for key, codes in wire.items():
            for bias, code in codes.items():
                if applied[1][key][bias] != code:
                    model.update_single_parameter(_parameter(dyn, bias, code), *key)
    return plan, wire


def discharge(model: Any, dyn: Any, plan, wire: dict, sleep: Callable[[float], None], seconds: float) -> None:
    """Every leak bias of the used cores to (7, 255) for ``seconds``, then back to ``wire``."""
    for chip, core in plan.cores:
        for bias in LEAK_BIASES:
            model.update_single_parameter(_parameter(dyn, bias, (7, 255)), chip, core)
    sleep(seconds)
    for chip, core in plan.cores:
        for bias in LEAK_BIASES:
            model.update_single_parameter(_parameter(dyn, bias, wire[(chip, core)][bias]), chip, core)


def fpga_events(dynapse1: Any, sched) -> list:
    """``FpgaSpikeEvent`` objects for a schedule: no-argument constructor, fields set as ints."""
    out = []
    for mask, nid, chip, isi in zip(sched.core_mask.tolist(), sched.neuron_id.tolist(), sched.target_chip.tolist(),
                                    sched.isi.tolist()):
        ev = dynapse1.FpgaSpikeEvent()
        ev.core_mask, ev.neuron_id, ev.target_chip, ev.isi = int(mask), int(nid), int(chip), int(isi)
        out.append(ev)
    return out


class DeviceLink:
    """One Dynap-SE1 kit through samna: open, wire the sink, close, re-open.

    Args:
        samna: the samna module (real or fake). device_name: its device type name.
        serial: the board to use (compared as a string; None: the first found).
        sleep: the clock to wait on. reconnect_timeout_s: how long to wait for a device that
            is gone (backoff 0.1 s, doubling, at most 2 s between looks).
    """

    def __init__(self, samna: Any, device_name: str, serial: Any, sleep: Callable[[float], None],
                 reconnect_timeout_s: float = 5.0):
        self.samna, self.device_name, self.serial = samna, device_name, serial
        self._sleep, self.reconnect_timeout_s = sleep, float(reconnect_timeout_s)
        self.model = self.sink = self._graph = None
        self.wiring = "graph" if hasattr(getattr(samna, "graph", None), "EventFilterGraph") else "add_destination"
        self.version = str(getattr(samna, "__version__", "unknown"))
        self.waited_s = 0.0  # time spent waiting for a device that was gone

    def find(self, *, unavailable: bool):
        """The ``DeviceInfo`` of our board (raises BackendUnavailable or BoardError)."""
        try:
            infos = list(self.samna.device.get_unopened_devices())
        except Exception as exc:
            raise (BackendUnavailable if unavailable else BoardError)(
                f"samna could not list devices: {type(exc).__name__}: {exc}.") from exc
        want_serial = None if self.serial is None else str(self.serial)
        match = [i for i in infos if i.device_type_name == self.device_name
                 and (want_serial is None or str(i.serial_number) == want_serial)]
        if match:
            return match[0]
        seen = ", ".join(f"{i.device_type_name} (serial {i.serial_number})" for i in infos) or "none"
        want = self.device_name + (f" with serial {self.serial}" if self.serial is not None else "")
        if unavailable:
            raise BackendUnavailable(f"samna is installed but no {want} is attached (unopened devices: {seen}); "
                                     f"connect the board, or close the program that holds it. {TWIN_HINT}")
        raise BoardError(f"the {want} is no longer connected (unopened devices: {seen}); check the USB cable "
                         f"and power, then run again (measured sets are kept).")

    def _wait_for_device(self):
        """The device info, waiting with a bounded backoff for a device that re-enumerates."""
        waited, pause = 0.0, 0.1
        while True:
            try:
                return self.find(unavailable=False)
            except BoardError:
                if waited >= self.reconnect_timeout_s:
                    raise
                step = min(pause, self.reconnect_timeout_s - waited)
                log.info("the %s is not there; looking again in %.2f s", self.device_name, step)
                self._sleep(step)
                waited += step
                self.waited_s += step
                pause = min(2 * pause, 2.0)

    def open(self) -> bool:
        """Open the device if it is not open; returns True when it was (re)opened."""
        if self.model is not None:
            return False
        info = self._wait_for_device()
        try:
            self.model = self.samna.device.open_device(info)
            self.sink = self.samna.BasicSinkNode_dynapse1_dynapse1_event()
            source = self.model.get_source_node()
            if self.wiring == "graph":
                self._graph = self.samna.graph.EventFilterGraph()
                self._graph.sequential([source, self.sink])
                self._graph.start()
            else:
                log.info("samna %s has no samna.graph: wiring the event sink with add_destination (older samna)",
                         self.version)
                source.add_destination(self.sink.get_input_channel())
        except Exception as exc:
            self.drop()
            raise BoardError(f"samna could not open the {self.device_name}: {type(exc).__name__}: {exc}.") from exc
        self.serial = info.serial_number if self.serial is None else self.serial
        return True

    def drop(self) -> None:
        """Forget the device handle (after a failure); the next :meth:`open` re-opens it."""
        model, graph = self.model, self._graph
        self.model = self.sink = self._graph = None
        if graph is not None:
            try:
                graph.stop()
            except Exception as exc:  # a graph of a vanished device may not stop cleanly
                log.debug("stopping the event graph: %s", exc)
        if model is not None:
            try:
                self.samna.device.close_device(model)
            except Exception as exc:  # a vanished device cannot be closed cleanly
                log.debug("closing a failed device: %s", exc)

    def close(self) -> None:
        """Unwire the sink and close the device (safe to call twice)."""
        if self.model is not None and self.sink is not None and self.wiring == "add_destination":
            try:
                self.model.get_source_node().remove_destination(self.sink.get_input_channel())
            except Exception as exc:
                log.debug("removing the event sink: %s", exc)
        self.drop()
