"""Topology of Dynap-SE1 chips: neurons on cores, connections with integer weights.

A board has chips; a chip has 4 cores of 256 neurons. Biases are shared by the neurons of
a core; each neuron listens through 64 CAM entries, so the weights of its inputs (the
number of CAM entries per pair) add up to at most 64. :class:`Chip` is the builder with
the verbs of the Brian2 DynapSE simulator (``get_neurons``, ``add_connection``,
``connect``, ``weight``, ``set_bias``); :class:`Network` is the frozen result that every
backend runs.

>>> chip = Chip()
>>> neurons = chip.get_neurons(2, "Core_1")
>>> inputs = chip.add_inputs(1)
>>> syn = chip.add_connection(inputs, neurons, synapse_type="AMPA")
>>> chip.connect(syn, True)
>>> syn.weight = 3
>>> chip.network().n_neurons
2
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch

from ._checks import index_array as _index_array, integer as _integer
from .errors import NetworkError, ParameterError, unknown_name
from .params import PARAMETERS, SYNAPSE_TYPES, Params, to_tensor, check_values

__all__ = ["Chip", "Network", "Connections", "NeuronGroup", "InputGroup", "Synapses",
           "NEURONS_PER_CORE", "CORES_PER_CHIP", "FAN_IN", "synapse_index", "parse_core"]

NEURONS_PER_CORE = 256
CORES_PER_CHIP = 4
FAN_IN = 64  # CAM entries per neuron: the sum of a neuron's input weights
# bounds that keep a typo (1e9 chips or inputs) from exhausting memory; far above any board
MAX_CHIPS = 1024
MAX_INPUTS = 1 << 20


def synapse_index(name: str) -> int:
    """Index of a synapse type in ``SYNAPSE_TYPES``; accepts "NMDA", "gaba_a", "GABA_A"."""
    key = str(name).lower()
    if key not in SYNAPSE_TYPES:
        raise unknown_name("synapse type", str(name), [s.upper() for s in SYNAPSE_TYPES])
    return SYNAPSE_TYPES.index(key)


def parse_core(core: Any, n_cores: int) -> int:
    """Global core index from ``"Core_5"``, ``5`` or ``(chip, core)``."""
    names = f"'Core_0'..'Core_{n_cores - 1}', 0..{n_cores - 1} or (chip, core)"
    if isinstance(core, str):
        head, _, num = core.partition("_")
        if head.lower() != "core" or not num.isdigit():
            raise NetworkError(f"core {core!r} is not a core name; write 'Core_0'..'Core_{n_cores - 1}'.")
        index = int(num)
    elif isinstance(core, tuple) and len(core) == 2:
        chip = _integer(core[0], "core (chip, core): chip", fix=f"write {names}")
        within = _integer(core[1], "core (chip, core): core", high=CORES_PER_CHIP - 1, fix=f"write {names}")
        index = chip * CORES_PER_CHIP + within
    else:
        index = _integer(core, "core", fix=f"write {names}")
    if not 0 <= index < n_cores:
        raise NetworkError(f"core {core!r} does not exist: this board has {n_cores} cores "
                           f"(Core_0..Core_{n_cores - 1}); add chips with Chip(n_chips=...).")
    return index


class Connections(NamedTuple):
    """Connections as parallel int64 arrays of length E: source index (an input source or
    a neuron), target neuron, synapse type index, integer weight."""

    pre: np.ndarray
    post: np.ndarray
    syn_type: np.ndarray
    weight: np.ndarray

    @classmethod
    def empty(cls) -> "Connections":
        z = np.zeros(0, dtype=np.int64)
        return cls(z, z, z, z)

    @classmethod
    def concat(cls, parts: list["Connections"]) -> "Connections":
        if not parts:
            return cls.empty()
        return cls(*(np.concatenate([getattr(c, f) for c in parts]).astype(np.int64) for f in cls._fields))


@dataclasses.dataclass(frozen=True, eq=False)
class Network:
    """A frozen network: what every backend runs.

    Attributes:
        core: int64 (N,), global core index of each neuron (chip * 4 + core).
        neuron_id: int64 (N,), id of each neuron within its core (0..255).
        n_inputs: number of input spike sources.
        inputs: connections from input sources to neurons.
        recurrent: connections between neurons.
        core_biases: core index -> {parameter name: SI value} shared by that core.
        neuron_values: parameter name -> float64 (N,) per-neuron overrides (NaN = unset).
        n_chips: number of chips on the board.
        enforce_limits: whether the chip's fan-in limit was enforced.
    """

    core: np.ndarray
    neuron_id: np.ndarray
    n_inputs: int
    inputs: Connections
    recurrent: Connections
    core_biases: Mapping[int, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    neuron_values: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    n_chips: int = 1
    enforce_limits: bool = True

    def __post_init__(self):
        self.validate()

    @property
    def n_neurons(self) -> int:
        return int(len(self.core))

    def validate(self) -> None:
        """Check indices, weights and the fan-in limit; raise :class:`NetworkError`."""
        n = self.n_neurons
        for label, conns, n_pre in (("input", self.inputs, self.n_inputs), ("recurrent", self.recurrent, n)):
            if len(conns.pre) and (conns.pre.min() < 0 or conns.pre.max() >= n_pre):
                raise NetworkError(f"{label} connection from source {int(conns.pre.max())}, but only "
                                   f"{n_pre} sources exist.")
            if len(conns.post) and (conns.post.min() < 0 or conns.post.max() >= n):
                raise NetworkError(f"{label} connection to neuron {int(conns.post.max())}, but the "
                                   f"network has {n} neurons.")
            if len(conns.weight) and conns.weight.min() < 0:
                raise NetworkError(f"{label} connection weight {int(conns.weight.min())} is negative; "
                                   f"weights count CAM entries and must be integers >= 0 (use a GABA "
                                   f"synapse type for inhibition).")
        if self.enforce_limits:
            fan_in = np.bincount(np.concatenate([self.inputs.post, self.recurrent.post]),
                                 weights=np.concatenate([self.inputs.weight, self.recurrent.weight]),
                                 minlength=n)
            if n and fan_in.max() > FAN_IN:
                worst = int(fan_in.argmax())
                raise NetworkError(
                    f"neuron {worst} (core {int(self.core[worst])}, id {int(self.neuron_id[worst])}) "
                    f"has fan-in {int(fan_in[worst])} (sum of its input weights), over the chip's "
                    f"limit of {FAN_IN} CAM entries by {int(fan_in[worst]) - FAN_IN}; lower the weights, "
                    f"or pass enforce_limits=False for a pure simulation.")

    def params(self, candidates: Mapping[str, Any] | None = None, *, layers=None, base: Params | None = None,
               dtype=torch.float64, device="cpu") -> Params:
        """The parameters this network runs with, in the one order of :mod:`dynacal.params`:
        table defaults, a calibration's core values (``layers``), this network's core biases,
        the calibration's mismatch factors, this network's per-neuron values, then the
        caller's ``candidates``, which always win.

        Args:
            candidates: the values you set, name -> a scalar or string with unit, (N,),
                (B, N), (B, 1), or per core ``{core: value or (B,) values}`` (core as
                ``5``, ``"Core_5"`` or ``(chip, core)``).
            layers: a :class:`~dynacal.layers.ChipLayers` (what a calibration found).
            base: deprecated (a warning says so): a Params that replaces the table defaults
                only; pass the values you set as ``candidates`` instead.
            dtype, device: of every tensor.

        Returns:
            :class:`Params` (B|1, N|1); names no layer sets stay scalars; candidate tensors
            keep their gradients.

        Raises:
            ParameterError: unknown names (closest match first), wrong shapes, NaN, values
                in the wrong unit, per-core values for a core this network does not use.

        >>> chip = Chip()
        >>> _ = chip.get_neurons(2, "Core_0")
        >>> chip.set_bias({"Isoma_th": "2 nA"}, "Core_0")
        >>> chip.network().params({"Isoma_th": [1e-9, 3e-9]}).Isoma_th.tolist()
        [[1e-09, 3e-09]]
        """
        from .layers import network_params  # layers imports this module
        return network_params(self, candidates, layers=layers, base=base, dtype=dtype, device=device)


class NeuronGroup:
    """Neurons allocated on one core: global indices into the network."""

    def __init__(self, chip: "Chip", indices: np.ndarray, core: int):
        self.chip, self.indices, self.core = chip, indices, core

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item) -> "NeuronGroup":
        try:
            picked = np.atleast_1d(self.indices[item])
        except IndexError as exc:
            raise NetworkError(f"NeuronGroup[{item!r}]: {exc}; index with whole numbers, slices or masks of its "
                               f"{len(self)} members.") from exc
        return NeuronGroup(self.chip, picked, self.core)

    def set_states(self, values: Mapping[str, Any]) -> None:
        """Set per-neuron parameter values (as ``DPI_neuron.set_states`` in DynapSE)."""
        self.chip._set_neuron_values(self.indices, values)

    def __repr__(self) -> str:
        return f"NeuronGroup({len(self)} neurons on Core_{self.core})"


class InputGroup:
    """Input spike sources (FPGA spike generators on the board)."""

    def __init__(self, indices: np.ndarray):
        self.indices = indices

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, item) -> "InputGroup":
        try:
            picked = np.atleast_1d(self.indices[item])
        except IndexError as exc:
            raise NetworkError(f"InputGroup[{item!r}]: {exc}; index with whole numbers, slices or masks of its "
                               f"{len(self)} members.") from exc
        return InputGroup(picked)

    def __repr__(self) -> str:
        return f"InputGroup({len(self)} sources)"


class Synapses:
    """A pathway of one synapse type from sources to neurons; ``connect`` then ``weight``."""

    def __init__(self, source, target: NeuronGroup, syn_type: int):
        self.source, self.target, self.syn_type = source, target, syn_type
        self.i = np.zeros(0, dtype=np.int64)  # local source index per connection
        self.j = np.zeros(0, dtype=np.int64)  # local target index per connection
        self._weight = np.zeros(0, dtype=np.int64)

    @property
    def weight(self) -> np.ndarray:
        """Integer weight per connection (number of CAM entries)."""
        return self._weight

    @weight.setter
    def weight(self, value) -> None:
        # the fan-in limit (64 per neuron) is checked by Network.validate, which names the neuron;
        # here only counts that int64 holds exactly (1e30 wrapped to a negative weight)
        top = 2 ** 31
        fix = "weights count CAM entries: non-negative integers"
        if not len(self.i):
            raise NetworkError(f"weight set on a pathway with no connections yet (it would be lost); call "
                               f"chip.connect(synapses, ...) first, then set .weight.")
        try:
            w = np.asarray(value)
            w = np.broadcast_to(w, self.i.shape)
        except ValueError as exc:
            raise NetworkError(f"weight has shape {np.shape(value)} for {len(self.i)} connections; give one "
                               f"value or one per connection ({fix}).") from exc
        if w.dtype.kind not in "iuf" or w.dtype.kind == "b":
            raise NetworkError(f"weight = {value!r} is not a number ({w.dtype}); {fix}, e.g. syn.weight = 3.")
        wf = w.astype(np.float64)
        bad = ~np.isfinite(wf) | (wf != np.round(wf)) | (wf < 0) | (wf > top)
        if bad.any():
            raise NetworkError(f"weight {float(wf[bad][0]):g} is not allowed; {fix} (a neuron's input weights add up "
                               f"to at most {FAN_IN} on the chip; use a GABA synapse type for inhibition).")
        self._weight = wf.astype(np.int64).copy()

    def connections(self) -> Connections:
        n = len(self.i)
        return Connections(self.source.indices[self.i], self.target.indices[self.j],
                           np.full(n, self.syn_type, dtype=np.int64), self._weight)

    def __len__(self) -> int:
        return len(self.i)


class Chip:
    """Builder of a :class:`Network` with the DynapSE simulator's verbs.

    Args:
        n_chips: chips on the board (4 cores of 256 neurons each).
        enforce_limits: enforce the fan-in limit of 64 CAM entries per neuron (turn off
            only for pure simulation).
    """

    def __init__(self, n_chips: int = 1, *, enforce_limits: bool = True):
        n_chips = _integer(n_chips, "n_chips", low=1, high=MAX_CHIPS,
                           fix=f"a board has 1..4 chips; a simulation up to {MAX_CHIPS}")
        if not isinstance(enforce_limits, (bool, np.bool_)):
            raise NetworkError(f"enforce_limits = {enforce_limits!r} must be True or False.")
        enforce_limits = bool(enforce_limits)
        self.n_chips, self.enforce_limits = n_chips, enforce_limits
        self._used = np.zeros(n_chips * CORES_PER_CHIP, dtype=np.int64)
        self._core: list[int] = []
        self._nid: list[int] = []
        self._n_inputs = 0
        self._synapses: list[Synapses] = []
        self._core_biases: dict[int, dict[str, float]] = {}
        self._neuron_values: dict[str, dict[int, float]] = {}

    @property
    def n_cores(self) -> int:
        return self.n_chips * CORES_PER_CHIP

    def get_neurons(self, n: int, core: Any = "Core_0") -> NeuronGroup:
        """Allocate ``n`` free neurons on ``core`` ("Core_k", k, or (chip, core))."""
        index = parse_core(core, self.n_cores)
        n = _integer(n, "get_neurons n", fix=f"ask for 0..{NEURONS_PER_CORE} neurons")
        free = int(NEURONS_PER_CORE - self._used[index])
        if n > free:
            raise NetworkError(f"Core_{index} has {free} free neurons of {NEURONS_PER_CORE}; "
                               f"{n} requested, {n - free} too many: use another core.")
        start = len(self._core)
        ids = np.arange(self._used[index], self._used[index] + n)
        self._used[index] += n
        self._core += [index] * n
        self._nid += ids.tolist()
        return NeuronGroup(self, np.arange(start, start + n, dtype=np.int64), index)

    def add_inputs(self, n: int) -> InputGroup:
        """Add ``n`` input spike sources (columns of the stimulus)."""
        n = _integer(n, "add_inputs n", high=MAX_INPUTS - self._n_inputs,
                     fix=f"give the number of input sources, e.g. add_inputs(4); at most {MAX_INPUTS} in all")
        start = self._n_inputs
        self._n_inputs += n
        return InputGroup(np.arange(start, start + n, dtype=np.int64))

    def add_connection(self, source, target: NeuronGroup, synapse_type: str = "AMPA") -> Synapses:
        """A pathway from ``source`` (InputGroup or NeuronGroup) to ``target``."""
        if not isinstance(target, NeuronGroup):
            raise NetworkError(f"target must be a NeuronGroup from get_neurons, not {type(target).__name__}.")
        if not isinstance(source, (NeuronGroup, InputGroup)):
            raise NetworkError("source must be an InputGroup (add_inputs) or a NeuronGroup (get_neurons).")
        syn = Synapses(source, target, synapse_index(synapse_type))
        self._synapses.append(syn)
        return syn

    def connect(self, synapses: Synapses, condition: Any = True, *, i=None, j=None,
                p: float | None = None, seed: int | None = None) -> None:
        """Create connections: ``True`` (all to all), ``"i==j"`` (one to one), explicit
        ``i``/``j`` arrays, or probability ``p`` (seeded). New connections get weight 1."""
        if not isinstance(synapses, Synapses):
            raise NetworkError(f"connect needs the Synapses from chip.add_connection, not {type(synapses).__name__}.")
        ns, nt = len(synapses.source), len(synapses.target)
        if p is not None:
            pv = p.item() if isinstance(p, np.ndarray) and p.ndim == 0 else p
            if isinstance(pv, (bool, np.bool_)) or not isinstance(pv, numbers.Real) or not 0 <= pv <= 1:
                raise NetworkError(f"connect p = {p!r} is a probability: give a number in 0..1.")
            if condition is not True or i is not None or j is not None:
                raise NetworkError("connect p= draws from all pairs: use it with condition True, not with "
                                   "'i==j' or i=/j=.")
        if seed is not None:
            seed = _integer(seed, "connect seed", fix="give an integer >= 0 or None")
        if i is not None or j is not None:
            if i is None or j is None:
                raise NetworkError("connect needs both i= and j= (source and target index per connection).")
            ii, jj = _index_array(i, "connect i", ns), _index_array(j, "connect j", nt)
            try:
                ii, jj = np.broadcast_arrays(ii, jj)
            except ValueError as exc:
                raise NetworkError(f"connect i and j have shapes {np.shape(i)} and {np.shape(j)}, which do not "
                                   f"broadcast; give one target per source index.") from exc
        elif isinstance(condition, str) and condition.replace(" ", "") in ("i==j", "one_to_one"):
            if ns != nt:
                raise NetworkError(f"one-to-one needs equal sizes; source has {ns}, target {nt}.")
            ii = jj = np.arange(ns)
        elif condition is True:
            ii, jj = (a.ravel() for a in np.meshgrid(np.arange(ns), np.arange(nt), indexing="ij"))
            if p is not None:
                keep = np.random.default_rng(seed).random(ii.size) < p
                ii, jj = ii[keep], jj[keep]
        else:
            raise NetworkError(f"connect condition {condition!r} is not supported; use True, 'i==j', "
                               f"i=/j= arrays or p=.")
        synapses.i = np.concatenate([synapses.i, ii.ravel()]).astype(np.int64)
        synapses.j = np.concatenate([synapses.j, jj.ravel()]).astype(np.int64)
        synapses._weight = np.concatenate([synapses._weight, np.ones(ii.size, dtype=np.int64)])

    def set_bias(self, values: Mapping[str, Any], core: Any = "Core_0") -> None:
        """Set parameters shared by all neurons of ``core`` (SI floats or "5 pA" strings)."""
        index = parse_core(core, self.n_cores)
        self._core_biases.setdefault(index, {}).update(self._parse(values))

    def _parse(self, values: Mapping[str, Any]) -> dict[str, float]:
        if not isinstance(values, Mapping):
            raise ParameterError(f"values = {values!r} is a {type(values).__name__}; give a mapping "
                                 f"{{name: value}}, e.g. {{'Isoma_th': '2 nA'}}.")
        out = {}
        for name, value in values.items():
            if name not in PARAMETERS:
                raise unknown_name("parameter", name, PARAMETERS)
            t = to_tensor(name, value, torch.float64, "cpu")
            if t.numel() != 1:
                raise ParameterError(f"{name}: a bias or state set here is one value; got shape {tuple(t.shape)}.")
            check_values(name, t, text=value)
            out[name] = float(t)
        return out

    def _set_neuron_values(self, indices: np.ndarray, values: Mapping[str, Any]) -> None:
        for name, value in self._parse(values).items():
            store = self._neuron_values.setdefault(name, {})
            for k in indices.tolist():
                store[k] = value

    def network(self) -> Network:
        """Freeze the current topology into a :class:`Network` (checks chip limits)."""
        n = len(self._core)
        inputs = Connections.concat([s.connections() for s in self._synapses if isinstance(s.source, InputGroup)])
        rec = Connections.concat([s.connections() for s in self._synapses if isinstance(s.source, NeuronGroup)])
        neuron_values = {}
        for name, store in self._neuron_values.items():
            arr = np.full(n, np.nan)
            arr[list(store)] = list(store.values())
            neuron_values[name] = arr
        return Network(core=np.asarray(self._core, dtype=np.int64), neuron_id=np.asarray(self._nid, dtype=np.int64),
                       n_inputs=self._n_inputs, inputs=inputs, recurrent=rec,
                       core_biases={k: dict(v) for k, v in self._core_biases.items()},
                       neuron_values=neuron_values, n_chips=self.n_chips, enforce_limits=self.enforce_limits)
