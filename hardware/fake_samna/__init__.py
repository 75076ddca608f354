"""A fake ``samna`` for the Dynap-SE1 path: exactly the names dynacal's board backend uses.

The real samna cannot be installed on the project's machines (its PyPI package is an
installer stub) and no board is attached, so the board backend runs in CI against this
module, with a twin board (:mod:`dynacal.hardware.twin`) behind it. :func:`make_samna`
builds one module object per set of boards, so that tests do not share state::

    samna = make_samna([TwinBoard(serial=7)])
    infos = samna.device.get_unopened_devices()
    model = samna.device.open_device(infos[0])

Two flavours. ``strict=True`` (the default, used by the tests): only the API forms current
public code uses, as listed with their sources in :mod:`.facts`: the event sink is wired by
``samna.graph.EventFilterGraph`` (``sequential([source, sink])``, ``start()``, ``stop()``;
the source node has no ``add_destination``), ``FpgaSpikeEvent()`` takes no arguments,
``serial_number`` is a string, ISIs are ``< 65535``. ``strict=False`` is an older samna: no
``samna.graph``, ``source.add_destination(sink.get_input_channel())``, positional
``FpgaSpikeEvent`` arguments, integer serials. Both have the chip's fresh state (every CAM
listens to (core 0, neuron 0) as NMDA).

Names provided (as documented by SynSense for Dynap-SE1): ``samna.__version__``;
``samna.device.get_unopened_devices`` (entries with ``device_type_name``,
``serial_number``), ``open_device``, ``close_device``; ``samna.dynapse1`` (:mod:`.dynapse1`);
model methods ``apply_configuration``, ``get_configuration``, ``update_single_parameter``,
``get_source_node``, ``get_dynapse1_api`` (``reset_timestamp``), ``get_fpga_spike_gen``
(``preload_stimulus``, ``set_isi_multiplier``, ``set_variable_isi_mode``,
``set_repeat_mode``, ``start``, ``stop``); the sink
``samna.BasicSinkNode_dynapse1_dynapse1_event`` (``get_events``); ``samna.graph`` (strict).
"""

from __future__ import annotations

import types

from . import dynapse1
from .device import BasicSinkNode, DeviceController, EventFilterGraph

__all__ = ["make_samna"]

#: Version string of the fake (what ``samna.__version__`` reports).
FAKE_VERSION = "0.0.0+dynacal-fake"


def make_samna(boards: list, *, strict: bool = True) -> types.ModuleType:
    """A module object that looks like ``samna`` with ``boards`` attached.

    Args:
        boards: board objects (e.g. :class:`~dynacal.hardware.twin.TwinBoard`); an empty
            list is a machine with samna but no board.
        strict: current samna's API only (see the module doc); False: an older samna.
    """
    module = types.ModuleType("samna", "fake samna (dynacal.hardware.fake_samna)")
    module.__version__ = FAKE_VERSION + ("" if strict else "-legacy")
    module.device = DeviceController(boards, strict)
    if strict:
        module.dynapse1 = types.SimpleNamespace(**{n: getattr(dynapse1, n) for n in dynapse1.__all__})
        module.dynapse1.FpgaSpikeEvent = dynapse1.StrictFpgaSpikeEvent
        module.graph = types.SimpleNamespace(EventFilterGraph=EventFilterGraph)
    else:
        module.dynapse1 = dynapse1
    module.BasicSinkNode_dynapse1_dynapse1_event = BasicSinkNode
    return module
