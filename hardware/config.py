"""Network -> Dynap-SE1 board configuration: placement, CAM entries, SRAM destinations.

:func:`plan_network` turns a :class:`~dynacal.chip.Network` into a :class:`BoardPlan` (plain
numpy arrays) and checks every chip limit before anything is sent to a board;
:func:`write_configuration` fills a samna ``Dynapse1Configuration`` from a plan and bias
codes. The stimulus side (FPGA spike generator) is in :mod:`.fpga`.

How a network lands on the board:

- neuron k of the network sits on chip ``core[k] // 4``, core ``core[k] % 4``, neuron id
  ``neuron_id[k]`` (the ids the :class:`~dynacal.chip.Chip` builder allocated);
- a connection of weight w from source s is w CAM entries ``(listen_core, listen_neuron,
  synapse type)`` of the target, where the source address is the pre neuron's (core, id), or
  for an input the *virtual address* the plan gives it (an address no network neuron uses,
  never (core 0, neuron 0), which is where every unused CAM of a fresh configuration listens);
- unused CAM entries listen to ``null_address``, which nothing ever sends;
- a neuron with recurrent targets gets one SRAM destination per target chip (``core_mask``
  = the target cores, routing bits by :func:`routing_bits`, the vendor's rule); a neuron at
  (core 0, id 0) with targets is refused (fresh CAMs listen to that address); destination 0 is kept for monitoring (as the vendor tools do) unless
  ``reserve_monitor=False``, so at most 3 target chips;
- a CAM entry matches (core, id) but not the chip: two pre neurons with the same (core, id)
  on different chips that reach the same core are an error (aliasing).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import numpy as np

from dynacal.chip import CORES_PER_CHIP, FAN_IN, NEURONS_PER_CORE, Network
from dynacal.errors import NetworkError, unknown_name
from dynacal.params import SYNAPSE_TYPES

from .biasgen import reverse_coarse

__all__ = ["BoardPlan", "plan_network", "write_configuration", "SAMNA_SYN_TYPES", "MAX_CHIPS", "SRAMS",
           "ADDRESSES", "SILENT_CODES", "chip_xy", "routing_bits", "route_target", "wire_codes"]

MAX_CHIPS = 4
SRAMS = 4
ADDRESSES = CORES_PER_CHIP * NEURONS_PER_CORE  # source addresses (core, neuron) of one chip
#: samna's Dynapse1SynType member for each model synapse type (index in SYNAPSE_TYPES).
SAMNA_SYN_TYPES = {"nmda": "NMDA", "ampa": "AMPA", "gaba_a": "GABA_A", "gaba_b": "GABA_B"}
#: Codes (logical coarse, fine) for cores the network does not use: no DC, strong leaks,
#: no synaptic weight, so their neurons stay silent and do not flood the event stream.
SILENT_CODES = {"IF_DC_P": (0, 0), "IF_TAU1_N": (5, 255), "IF_THR_N": (0, 0), "PS_WEIGHT_EXC_F_N": (0, 0),
                "PS_WEIGHT_EXC_S_N": (0, 0), "PS_WEIGHT_INH_F_N": (0, 0), "PS_WEIGHT_INH_S_N": (0, 0)}


def chip_xy(chip: int) -> tuple[int, int]:
    """Position of a chip in the board's 2 x 2 grid (approx.: chip = 2 * y + x)."""
    return chip % 2, chip // 2


def routing_bits(source: int, target: int) -> tuple[int, int, int, int]:
    """SRAM routing bits (sx, sy, dx, dy) from chip ``source`` to chip ``target``.

    The rule of the vendor's netgen (``fake_samna.facts.ROUTING_RULE``): ``sx = xt < xs``,
    ``sy = yt >= ys``, ``dx = |xt - xs|``, ``dy = |yt - ys|``; :func:`route_target` inverts it.
    """
    (xs, ys), (xt, yt) = chip_xy(source), chip_xy(target)
    return int(xt < xs), int(yt >= ys), abs(xt - xs), abs(yt - ys)


def route_target(source: int, sx: int, sy: int, dx: int, dy: int, board_chips: int = MAX_CHIPS) -> int | None:
    """The chip a route with bits (sx, sy, dx, dy) from chip ``source`` reaches, or None when it
    leaves the 2 x 2 grid (the events are lost on the board)."""
    xs, ys = chip_xy(source)
    xt = xs - dx if sx else xs + dx
    yt = ys + dy if sy else ys - dy
    if not (0 <= xt < 2 and 0 <= yt < 2) or 2 * yt + xt >= board_chips:
        return None
    return 2 * yt + xt


def wire_codes(codes: Mapping[Any, Mapping[str, tuple[int, int]]], bit_reversed: bool) -> dict:
    """Logical (coarse, fine) codes -> the codes sent to samna: a bit-reversed DAC gets its 3
    coarse bits reversed on the wire (``biasgen.reverse_coarse``)."""
    if not bit_reversed:
        return {key: dict(values) for key, values in codes.items()}
    return {key: {b: (int(reverse_coarse(c)), int(f)) for b, (c, f) in values.items()} for key, values in codes.items()}


@dataclasses.dataclass(frozen=True, eq=False)
class BoardPlan:
    """Where a network sits on the board. Arrays are int64 unless said otherwise.

    Attributes:
        chip, core, neuron: (N,) chip 0..3, core 0..3 within the chip, neuron id 0..255.
        cam_core, cam_neuron: (N, 64) source address (core, neuron id) each CAM entry listens to.
        cam_type: (N, 64) synapse type index (``SYNAPSE_TYPES`` order).
        dest: (N, 4, 8) SRAM destinations, fields ``DEST_FIELDS`` (in_use as 0/1).
        input_address: (n_inputs,) virtual address 0..1023 (core * 256 + neuron) per input.
        input_route_input, input_route_chip, input_route_mask: (R,) one row per (input,
            target chip): the FPGA event for that input goes to that chip with that core mask.
        null_address: the address unused CAM entries listen to (nothing sends it).
        dummy_address: the address of FPGA filler events (no CAM listens to it).
        cores: sorted (chip, core) pairs the network uses.
        fan_in: (N,) CAM entries used per neuron.
    """

    chip: np.ndarray
    core: np.ndarray
    neuron: np.ndarray
    cam_core: np.ndarray
    cam_neuron: np.ndarray
    cam_type: np.ndarray
    dest: np.ndarray
    input_address: np.ndarray
    input_route_input: np.ndarray
    input_route_chip: np.ndarray
    input_route_mask: np.ndarray
    null_address: int
    dummy_address: int
    cores: tuple
    fan_in: np.ndarray

    DEST_FIELDS = ("in_use", "target_chip_id", "virtual_core_id", "core_mask", "sx", "sy", "dx", "dy")

    @property
    def n_neurons(self) -> int:
        return int(self.chip.size)

    def global_ids(self) -> np.ndarray:
        """(N,) board-wide neuron ids ``chip * 1024 + core * 256 + neuron``."""
        return self.chip * ADDRESSES + self.core * NEURONS_PER_CORE + self.neuron

    def summary(self) -> dict:
        """A small JSON-able description for recording metadata."""
        return {"n_neurons": self.n_neurons, "cores": [list(c) for c in self.cores],
                "n_inputs": int(self.input_address.size), "n_input_routes": int(self.input_route_input.size),
                "max_fan_in": int(self.fan_in.max()) if self.fan_in.size else 0,
                "srams_in_use": int(self.dest[..., 0].sum()), "null_address": self.null_address,
                "dummy_address": self.dummy_address}


def plan_network(network: Network, *, board_chips: int = MAX_CHIPS, reserve_monitor: bool = True,
                 zero_address: str = "refuse") -> BoardPlan:
    """Place a network on the board and check every chip limit.

    Args:
        network: the frozen network.
        board_chips: chips on the board (a Dynap-SE1 dev kit has 4).
        reserve_monitor: keep SRAM destination 0 for monitoring (3 routes per neuron).
        zero_address: a neuron at (core 0, id 0) with recurrent targets: ``"refuse"``
            (NetworkError), ``"warn"`` (log a warning) or ``"allow"``.

    Raises:
        NetworkError: naming the limit: chips on the board, neuron ids, fan-in (64 CAM
            entries), SRAM destinations (4, or 3 with monitoring), source-address aliasing,
            free virtual addresses for the inputs.
    """
    if zero_address not in ("refuse", "warn", "allow"):
        raise unknown_name("zero_address", zero_address, ("refuse", "warn", "allow"))
    n = network.n_neurons
    chip, core = np.divmod(network.core.astype(np.int64), CORES_PER_CHIP)
    nid = network.neuron_id.astype(np.int64)
    if n and int(chip.max()) >= board_chips:
        raise NetworkError(f"the network uses chip {int(chip.max())} but the board has {board_chips} chips "
                           f"(limit: chips 0..{board_chips - 1}); move the neurons to Core_0..Core_{4 * board_chips - 1}.")
    if n and (nid.min() < 0 or nid.max() >= NEURONS_PER_CORE):
        raise NetworkError(f"neuron id {int(nid.max())} is outside 0..{NEURONS_PER_CORE - 1} (256 neurons per core).")
    key = chip * ADDRESSES + core * NEURONS_PER_CORE + nid
    if np.unique(key).size != n:
        raise NetworkError("two network neurons sit on the same (chip, core, neuron id); each silicon neuron "
                           "can be used once.")
    inp, rec = network.inputs, network.recurrent
    fan_in = np.bincount(np.concatenate([inp.post, rec.post]), weights=np.concatenate([inp.weight, rec.weight]),
                         minlength=n).astype(np.int64)
    if n and fan_in.max() > FAN_IN:
        k = int(fan_in.argmax())
        raise NetworkError(f"fan-in limit: neuron {k} (chip {int(chip[k])}, core {int(core[k])}, id {int(nid[k])}) "
                           f"needs {int(fan_in[k])} CAM entries (sum of its input weights), over the limit of "
                           f"{FAN_IN} per neuron by {int(fan_in[k]) - FAN_IN}; lower its input weights.")
    dest = _destinations(network, chip, core, nid, reserve_monitor)
    zero = [int(k) for k in np.flatnonzero((core == 0) & (nid == 0) & (dest[:, :, 0].sum(1) > 0))]
    if zero and zero_address != "allow":
        k = zero[0]
        message = (f"neuron {k} sits at chip {int(chip[k])} core 0 id 0 and has recurrent targets; on a fresh chip "
                   f"every unused CAM entry listens to (core 0, neuron 0) as NMDA, so its spikes would drive every "
                   f"unconnected neuron of its target cores (the vendor's netgen warns of this). Leave id 0 of core 0 "
                   f"unused (take one more neuron with get_neurons and drop the first), or pass "
                   f"zero_address='allow' to run it anyway.")
        if zero_address == "refuse":
            raise NetworkError(message)
        logging.getLogger(__name__).warning(message)
    # inputs get addresses no network neuron has (CAMs cannot tell an input from a neuron with
    # the same address); (core 0, neuron 0) is where unused CAMs of a fresh configuration listen
    used = set((core * NEURONS_PER_CORE + nid).tolist()) | {0}
    free = [a for a in range(ADDRESSES) if a not in used]
    need = network.n_inputs + 2
    if len(free) < need:
        raise NetworkError(f"virtual address limit: {network.n_inputs} inputs need {network.n_inputs} source addresses "
                           f"(core, neuron) that no network neuron uses, plus 2 reserved; only {len(free) - 2} of "
                           f"{ADDRESSES} are free. Use fewer inputs or fewer neuron ids (the ids repeat on every chip).")
    input_address = np.asarray(free[:network.n_inputs], dtype=np.int64)
    null_address, dummy_address = free[network.n_inputs], free[network.n_inputs + 1]
    cam_core = np.full((n, FAN_IN), null_address // NEURONS_PER_CORE, dtype=np.int64)
    cam_neuron = np.full((n, FAN_IN), null_address % NEURONS_PER_CORE, dtype=np.int64)
    cam_type = np.full((n, FAN_IN), SYNAPSE_TYPES.index("gaba_b"), dtype=np.int64)
    src_addr = np.concatenate([input_address[inp.pre], core[rec.pre] * NEURONS_PER_CORE + nid[rec.pre]])
    post = np.concatenate([inp.post, rec.post])
    stype = np.concatenate([inp.syn_type, rec.syn_type])
    weight = np.concatenate([inp.weight, rec.weight])
    rep = np.repeat(np.arange(post.size), weight)
    post_r = post[rep]
    order = np.argsort(post_r, kind="stable")
    rep, post_r = rep[order], post_r[order]
    first = np.searchsorted(post_r, post_r, side="left")
    slot = np.arange(post_r.size) - first
    cam_core[post_r, slot] = src_addr[rep] // NEURONS_PER_CORE
    cam_neuron[post_r, slot] = src_addr[rep] % NEURONS_PER_CORE
    cam_type[post_r, slot] = stype[rep]
    routes = {}
    for i, j in zip(inp.pre.tolist(), inp.post.tolist()):
        routes.setdefault((i, int(chip[j])), 0)
        routes[(i, int(chip[j]))] |= 1 << int(core[j])
    items = sorted(routes.items())
    cores = tuple(sorted({(int(c), int(k)) for c, k in zip(chip.tolist(), core.tolist())}))
    return BoardPlan(chip, core, nid, cam_core, cam_neuron, cam_type, dest, input_address,
                     np.asarray([k[0] for k, _ in items], dtype=np.int64),
                     np.asarray([k[1] for k, _ in items], dtype=np.int64),
                     np.asarray([m for _, m in items], dtype=np.int64), int(null_address), int(dummy_address),
                     cores, fan_in)


def _destinations(network: Network, chip, core, nid, reserve_monitor: bool) -> np.ndarray:
    n, rec = network.n_neurons, network.recurrent
    dest = np.zeros((n, SRAMS, len(BoardPlan.DEST_FIELDS)), dtype=np.int64)
    masks: dict[int, dict[int, int]] = {}
    for i, j in zip(rec.pre.tolist(), rec.post.tolist()):
        per_chip = masks.setdefault(i, {})
        per_chip[int(chip[j])] = per_chip.get(int(chip[j]), 0) | (1 << int(core[j]))
    first, limit = (1, SRAMS - 1) if reserve_monitor else (0, SRAMS)
    reach: dict[tuple[int, int], dict[int, int]] = {}  # target (chip, core) -> address -> pre neuron
    for i, per_chip in sorted(masks.items()):
        if len(per_chip) > limit:
            raise NetworkError(
                f"SRAM destination limit: neuron {i} (chip {int(chip[i])}, core {int(core[i])}, id {int(nid[i])}) "
                f"sends to {len(per_chip)} chips {sorted(per_chip)}, over the limit of {limit} destinations per "
                f"neuron ({SRAMS} SRAMs{', one kept for monitoring' if reserve_monitor else ''}); keep its targets "
                f"on fewer chips{' or pass reserve_monitor=False' if reserve_monitor else ''}.")
        xs, ys = chip_xy(int(chip[i]))
        for slot, (target, mask) in enumerate(sorted(per_chip.items()), start=first):
            xt, yt = chip_xy(target)
            dest[i, slot] = (1, target, int(core[i]), mask, *routing_bits(int(chip[i]), target))
            address = int(core[i]) * NEURONS_PER_CORE + int(nid[i])
            for k in range(CORES_PER_CHIP):
                if mask >> k & 1:
                    other = reach.setdefault((target, k), {}).setdefault(address, i)
                    if other != i:
                        raise NetworkError(
                            f"source aliasing: neurons {other} (chip {int(chip[other])}) and {i} (chip {int(chip[i])}) "
                            f"both have address (core {int(core[i])}, id {int(nid[i])}) and both send to chip {target} "
                            f"core {k}; a CAM entry cannot tell chips apart. Give one of them another neuron id.")
    return dest


def write_configuration(plan: BoardPlan, dynapse1: Any, codes: Mapping[tuple[int, int], Mapping[str, tuple[int, int]]],
                        *, silent_codes: Mapping[str, tuple[int, int]] = SILENT_CODES, config: Any = None):
    """Fill a samna ``Dynapse1Configuration`` from a plan and bias codes.

    Args:
        plan: from :func:`plan_network`.
        dynapse1: the ``samna.dynapse1`` module (real or fake).
        codes: (chip, core) -> bias name -> (logical coarse, fine) for the used cores.
        silent_codes: biases set on every core of the board that the network does not use.
        config: a configuration to fill (default: a new ``Dynapse1Configuration()``).

    Returns:
        The configuration object.
    """
    config = dynapse1.Dynapse1Configuration() if config is None else config
    syn_enum = [getattr(dynapse1.Dynapse1SynType, SAMNA_SYN_TYPES[t]) for t in SYNAPSE_TYPES]
    for k in range(plan.n_neurons):
        neuron = config.chips[int(plan.chip[k])].cores[int(plan.core[k])].neurons[int(plan.neuron[k])]
        synapses = neuron.synapses
        for s in range(FAN_IN):
            syn = synapses[s]
            syn.listen_core_id = int(plan.cam_core[k, s])
            syn.listen_neuron_id = int(plan.cam_neuron[k, s])
            syn.syn_type = syn_enum[int(plan.cam_type[k, s])]
        destinations = neuron.destinations
        for d in range(SRAMS):
            row = plan.dest[k, d]
            if row[0]:
                target = destinations[d]
                for name, value in zip(BoardPlan.DEST_FIELDS, row.tolist()):
                    setattr(target, name, bool(value) if name == "in_use" else int(value))
    for chip in range(MAX_CHIPS):
        for core in range(CORES_PER_CHIP):
            values = codes.get((chip, core), silent_codes)
            param_map = config.chips[chip].cores[core].parameter_group.param_map
            for name, (coarse, fine) in values.items():
                param_map[name].coarse_value = int(coarse)
                param_map[name].fine_value = int(fine)
    return config
