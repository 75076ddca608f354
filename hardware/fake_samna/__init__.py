"""A fake ``samna`` for the Dynap-SE1 path: exactly the names dynacal's board backend uses.

The real samna cannot be installed on the project's machines (its PyPI package is an
installer stub) and no board is attached, so the board backend runs in CI against this
module, with a twin board (:mod:`dynacal.hardware.twin`) behind it. :func:`make_samna`
builds one module object per set of boards, so that tests do not share state::

    samna = make_samna([TwinBoard(serial=7)])
    infos = samna.device.get_unopened_devices()
    model = samna.device.open_device(infos[0])

Names provided (as documented by SynSense for Dynap-SE1), exactly those the board backend
uses: ``samna.__version__``; ``samna.device.get_unopened_devices`` (entries with
``device_type_name``, ``serial_number``), ``open_device``, ``close_device``; ``samna.dynapse1``
(:mod:`.dynapse1`: the configuration classes, ``Dynapse1Parameter``, ``Dynapse1SynType``,
``FpgaSpikeEvent``, ``Spike``, ``TimestampWrapEvent``); model methods
``apply_configuration``, ``update_single_parameter``, ``get_source_node``,
``get_dynapse1_api`` (``reset_timestamp``), ``get_fpga_spike_gen`` (``preload_stimulus``,
``set_isi_multiplier``, ``set_variable_isi_mode``, ``set_repeat_mode``, ``start``, ``stop``);
the sink ``samna.BasicSinkNode_dynapse1_dynapse1_event`` (``get_input_channel``,
``get_events``) and the source node's ``add_destination`` / ``remove_destination``.
"""

from __future__ import annotations

import types

from . import dynapse1
from .device import BasicSinkNode, DeviceController

__all__ = ["make_samna"]

#: Version string of the fake (what ``samna.__version__`` reports).
FAKE_VERSION = "0.0.0+dynacal-fake"


def make_samna(boards: list) -> types.ModuleType:
    """A module object that looks like ``samna`` with ``boards`` attached.

    Args:
        boards: board objects (e.g. :class:`~dynacal.hardware.twin.TwinBoard`); an empty
            list is a machine with samna but no board.
    """
    module = types.ModuleType("samna", "fake samna (dynacal.hardware.fake_samna)")
    module.__version__ = FAKE_VERSION
    module.device = DeviceController(boards)
    module.dynapse1 = dynapse1
    module.BasicSinkNode_dynapse1_dynapse1_event = BasicSinkNode
    return module
