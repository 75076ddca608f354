"""``samna.dynapse1`` of the fake: the configuration and event classes, as documented.

Names, constructors and attributes follow samna's documented Dynap-SE1 API (Dynapse1Configuration
with chips / cores / neurons / 64 synapses / 4 destinations / parameter_group.param_map,
Dynapse1Parameter, Dynapse1SynType, FpgaSpikeEvent, Spike, TimestampWrapEvent). Only what
dynacal's board backend uses is here. A configuration creates its 4 x 4 x 256 neurons on
first access, so that an untouched configuration costs nothing (the real one is C++).
"""

from __future__ import annotations

import enum

from ..biasgen import BIAS_NAMES

__all__ = ["Dynapse1SynType", "Dynapse1Parameter", "Dynapse1ParameterGroup", "Dynapse1Synapse",
           "Dynapse1Destination", "Dynapse1Neuron", "Dynapse1Core", "Dynapse1Chip", "Dynapse1Configuration",
           "FpgaSpikeEvent", "StrictFpgaSpikeEvent", "Spike", "TimestampWrapEvent"]


class Dynapse1SynType(enum.IntEnum):
    """Synapse types; values as samna's enum (approx., ``dynapse1-hardware.md``)."""

    GABA_B = 0
    GABA_A = 1
    NMDA = 2
    AMPA = 3


class Dynapse1Parameter:
    """One bias: ``param_name``, ``coarse_value`` (0..7), ``fine_value`` (0..255)."""

    def __init__(self, param_name: str = "", coarse_value: int = 0, fine_value: int = 0):
        self.param_name, self.coarse_value, self.fine_value = param_name, int(coarse_value), int(fine_value)

    def __repr__(self) -> str:
        return f"Dynapse1Parameter({self.param_name!r}, {self.coarse_value}, {self.fine_value})"


class Dynapse1ParameterGroup:
    """The 25 biases of a core: ``param_map[name]`` -> :class:`Dynapse1Parameter`."""

    def __init__(self):
        self.param_map = {name: Dynapse1Parameter(name, 0, 0) for name in BIAS_NAMES}
        self.chip_id = 0
        self.core_id = 0


class Dynapse1Synapse:
    """A CAM entry: listens to (``listen_core_id``, ``listen_neuron_id``) with ``syn_type``."""

    # the chip's fresh state (facts.FRESH_CAM): every entry listens to (core 0, neuron 0) as NMDA
    def __init__(self, syn_type=Dynapse1SynType.NMDA, listen_neuron_id: int = 0, listen_core_id: int = 0):
        self.syn_type, self.listen_neuron_id, self.listen_core_id = syn_type, listen_neuron_id, listen_core_id


class Dynapse1Destination:
    """An SRAM entry: where a neuron's spikes are routed."""

    def __init__(self, target_chip_id: int = 0, in_use: bool = False, virtual_core_id: int = 0, core_mask: int = 0,
                 sx: int = 0, sy: int = 0, dx: int = 0, dy: int = 0):
        self.target_chip_id, self.in_use, self.virtual_core_id, self.core_mask = target_chip_id, in_use, virtual_core_id, core_mask
        self.sx, self.sy, self.dx, self.dy = sx, sy, dx, dy


class Dynapse1Neuron:
    """A neuron: 64 ``synapses`` and 4 ``destinations``."""

    def __init__(self, chip_id: int = 0, core_id: int = 0, neuron_id: int = 0):
        self.chip_id, self.core_id, self.neuron_id = chip_id, core_id, neuron_id
        self.synapses = [Dynapse1Synapse() for _ in range(64)]
        self.destinations = [Dynapse1Destination() for _ in range(4)]


class _LazyNeurons:
    """256 neurons created on first access (a list to the caller)."""

    def __init__(self, chip_id: int, core_id: int):
        self._chip, self._core = chip_id, core_id
        self._made: dict[int, Dynapse1Neuron] = {}

    def __len__(self) -> int:
        return 256

    def __getitem__(self, index: int) -> Dynapse1Neuron:
        index = int(index)
        if not -256 <= index < 256:
            raise IndexError(f"neuron index {index} out of range 0..255")
        index %= 256
        if index not in self._made:
            self._made[index] = Dynapse1Neuron(self._chip, self._core, index)
        return self._made[index]

    def __iter__(self):
        return (self[i] for i in range(256))

    def touched(self) -> dict[int, Dynapse1Neuron]:
        """Neurons that were accessed (the others hold the power-up defaults)."""
        return self._made


class Dynapse1Core:
    def __init__(self, chip_id: int = 0, core_id: int = 0):
        self.chip_id, self.core_id = chip_id, core_id
        self.neurons = _LazyNeurons(chip_id, core_id)
        self.parameter_group = Dynapse1ParameterGroup()
        self.parameter_group.chip_id, self.parameter_group.core_id = chip_id, core_id


class Dynapse1Chip:
    def __init__(self, chip_id: int = 0):
        self.chip_id = chip_id
        self.cores = [Dynapse1Core(chip_id, k) for k in range(4)]


class Dynapse1Configuration:
    """The whole board: 4 ``chips`` of 4 ``cores`` of 256 neurons."""

    def __init__(self):
        self.chips = [Dynapse1Chip(c) for c in range(4)]


class FpgaSpikeEvent:
    """An FPGA spike-generator event: ``core_mask`` (4 bits), ``neuron_id`` (address 0..1023),
    ``target_chip``, ``isi`` (units of the ISI multiplier, 16 bits)."""

    def __init__(self, core_mask: int = 0, neuron_id: int = 0, target_chip: int = 0, isi: int = 0):
        self.core_mask, self.neuron_id, self.target_chip, self.isi = core_mask, neuron_id, target_chip, isi


class StrictFpgaSpikeEvent(FpgaSpikeEvent):
    """``FpgaSpikeEvent`` as current samna has it: built with no arguments, then the fields are
    set (``facts.FPGA_EVENT_CONSTRUCTOR``); positional arguments raise ``TypeError``."""

    def __init__(self):
        super().__init__()


class Spike:
    """An output spike; ``timestamp`` in us (32-bit counter of the FPGA)."""

    def __init__(self, chip_id: int = 0, core_id: int = 0, neuron_id: int = 0, timestamp: int = 0):
        self.chip_id, self.core_id, self.neuron_id, self.timestamp = chip_id, core_id, neuron_id, timestamp

    def __repr__(self) -> str:
        return f"Spike(chip {self.chip_id}, core {self.core_id}, neuron {self.neuron_id}, t {self.timestamp} us)"


class TimestampWrapEvent:
    """The FPGA's us counter wrapped around; ``timestamp`` in us (the counter after the wrap)."""

    def __init__(self, timestamp: int = 0):
        self.timestamp = timestamp

    def __repr__(self) -> str:
        return f"TimestampWrapEvent({self.timestamp})"
