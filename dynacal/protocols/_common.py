"""What the protocols share: neuron selection, condition batches, run, spike counting.

**Neurons.** A protocol measures a set of neurons given as a spec (:func:`layout`):
``"core0"`` (the 256 neurons of Core_0), ``"core2:16"`` (its first 16), ``"chip0"`` (the
1024 neurons of chip 0), comma-joined specs, an int N (the first N neurons of chip 0), or
a :class:`~dynacal.chip.Network` whose neurons and biases are kept (its connections are
dropped: the protocol brings its own inputs).

**Conditions.** A protocol that needs a parameter the experiment cannot hold (a DC level:
on the chip it is the core bias ``IF_DC_P``, ``Isoma_const`` in the model) lists values of
it per *condition*. :func:`expand_conditions` turns B candidate parameter sets into B * L
sets, set ``b * L + l`` being candidate b under condition l; a simulator runs them in one
pass, the board one after another. :func:`split_conditions` undoes it on (B * L, ...) arrays.

**Spikes.** :class:`SpikeIndex` sorts the events of a Recording once and answers
vectorised questions: spikes per window, first spike after a step, rate in a window.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from ..chip import CORES_PER_CHIP, NEURONS_PER_CORE, Connections, Network, synapse_index
from ..errors import NetworkError, ParameterError, RecordingError, unknown_name
from ..experiment import Experiment
from ..params import PARAMETERS, SYNAPSE_TYPES, Params, _check
from ..recording import Recording
from ..backends.base import expand_conditions  # noqa: F401  (moved there; importable here for now)

__all__ = ["Protocol", "layout", "build_network", "expand_conditions", "split_conditions", "SpikeIndex"]

log = logging.getLogger(__name__)
_SPEC = re.compile(r"^(core|chip)_?(\d+)(?::(\d+))?$", re.IGNORECASE)


def layout(neurons: Any = "core0") -> Network:
    """The neurons a protocol measures, as a Network without connections.

    Args:
        neurons: a spec (module docstring), an int, or a Network.

    Raises:
        NetworkError: an unknown spec, or more neurons than the cores hold.
    """
    if isinstance(neurons, Network):
        return dataclasses.replace(neurons, n_inputs=0, inputs=Connections.empty(), recurrent=Connections.empty())
    if isinstance(neurons, (int, np.integer)):
        n = int(neurons)
        if not 1 <= n <= NEURONS_PER_CORE * CORES_PER_CHIP:
            raise NetworkError(f"neurons = {n}: give 1..1024 (one chip), or a spec such as 'chip1'.")
        cores = np.arange(n) // NEURONS_PER_CORE
        return Network(cores.astype(np.int64), np.arange(n, dtype=np.int64) % NEURONS_PER_CORE, 0,
                       Connections.empty(), Connections.empty())
    core, nid = [], []
    for part in str(neurons).replace(" ", "").split(","):
        match = _SPEC.match(part)
        if not match:
            raise NetworkError(f"neurons {part!r} is not a neuron spec; write 'core0' (256 neurons), "
                               f"'core0:16' (the first 16), 'chip0' (1024) or a comma-joined list.")
        kind, index, count = match.group(1).lower(), int(match.group(2)), match.group(3)
        cores = range(index * CORES_PER_CHIP, (index + 1) * CORES_PER_CHIP) if kind == "chip" else [index]
        k = NEURONS_PER_CORE if count is None else int(count)
        if not 1 <= k <= NEURONS_PER_CORE or (kind == "chip" and count is not None):
            raise NetworkError(f"neurons {part!r}: a core has {NEURONS_PER_CORE} neurons; write "
                               f"'core{index}:1'..'core{index}:{NEURONS_PER_CORE}' (no count for a chip).")
        for c in cores:
            core += [c] * k
            nid += list(range(k))
    core_arr = np.asarray(core, dtype=np.int64)
    pairs = core_arr * NEURONS_PER_CORE + np.asarray(nid)
    if np.unique(pairs).size != pairs.size:
        raise NetworkError(f"neurons {neurons!r} names a neuron twice; list each core once.")
    n_chips = int(core_arr.max()) // CORES_PER_CHIP + 1
    return Network(core_arr, np.asarray(nid, dtype=np.int64), 0, Connections.empty(), Connections.empty(),
                   n_chips=n_chips)


def build_network(neurons: Any, n_inputs: int, inputs: Connections | None = None) -> Network:
    """The neurons of ``neurons`` (see :func:`layout`) with ``n_inputs`` sources and ``inputs``."""
    base = layout(neurons)
    return dataclasses.replace(base, n_inputs=int(n_inputs), inputs=inputs or Connections.empty())


def synapse_types_and_weights(synapses: Sequence[str], weights: Sequence[int]) -> tuple[str, ...]:
    """Normalise synapse type names (``"AMPA"`` -> ``"ampa"``) and check one integer weight
    >= 1 (CAM entries) per type; returns the normalised names."""
    syn = tuple(SYNAPSE_TYPES[synapse_index(s)] for s in synapses)
    if len(weights) != len(syn) or any(int(w) != w or w < 1 for w in weights):
        raise ParameterError(f"weights = {weights}: give one integer >= 1 (CAM entries) per synapse "
                             f"type in {syn}.")
    return syn


def all_to_all(n_neurons: int, sources: Sequence[int], syn_types: Sequence[int], weights: Sequence[int]) -> Connections:
    """Every source ``sources[k]`` to every neuron through type ``syn_types[k]``, weight ``weights[k]``."""
    k = len(sources)
    return Connections(np.repeat(np.asarray(sources, dtype=np.int64), n_neurons),
                       np.tile(np.arange(n_neurons, dtype=np.int64), k),
                       np.repeat(np.asarray(syn_types, dtype=np.int64), n_neurons),
                       np.repeat(np.asarray(weights, dtype=np.int64), n_neurons))


def split_conditions(x: np.ndarray, n_conditions: int) -> np.ndarray:
    """(B * L, N, ...) -> (B, N, L, ...): undo :func:`expand_conditions` on a result."""
    bl = x.shape[0]
    if bl % n_conditions:
        raise RecordingError(f"the recording has {bl} parameter sets, not a multiple of the protocol's "
                             f"{n_conditions} conditions; was it made by this protocol?")
    y = x.reshape(bl // n_conditions, n_conditions, *x.shape[1:])
    return np.moveaxis(y, 1, 2)


class SpikeIndex:
    """The spike events of a Recording sorted by (set, neuron, step), for vectorised queries.

    Every query takes steps (ints) and returns arrays of shape (B, N, E) for E windows.
    """

    def __init__(self, rec: Recording):
        self.batch, self.n, self.T, self.dt = rec.batch, rec.n_neurons, rec.n_steps, rec.dt
        span = self.T + 1
        self.keys = np.sort((rec.spike_batch * self.n + rec.spike_neuron) * span + rec.spike_step)
        self._base = (np.arange(self.batch * self.n, dtype=np.int64) * span).reshape(self.batch, self.n, 1)

    def _find(self, steps, side="left") -> np.ndarray:
        steps = np.asarray(steps, dtype=np.int64).reshape(1, 1, -1)
        return np.searchsorted(self.keys, self._base + steps, side=side)

    def counts(self, start, stop) -> np.ndarray:
        """Spikes with ``start <= step < stop``, int (B, N, E)."""
        return self._find(stop) - self._find(start)

    def first_after(self, start, stop) -> np.ndarray:
        """Steps from ``start`` to the first spike in ``[start, stop)``; NaN if none. (B, N, E)."""
        i = self._find(start)
        found = np.minimum(i, self.keys.size - 1)
        step = self.keys[found] - self._base if self.keys.size else np.zeros_like(i)
        starts = np.asarray(start).reshape(1, 1, -1)
        ok = (i < self.keys.size) & (step < np.asarray(stop).reshape(1, 1, -1))
        return np.where(ok, step - starts, np.nan)

    def rate(self, start: int, stop: int, method: str = "isi") -> np.ndarray:
        """Rate (Hz) in ``[start, stop)``, (B, N).

        ``"isi"``: from the mean ISI of the spikes inside when there are at least 2 (not
        quantised by the window; for regular firing under DC), else count / window.
        ``"count"``: count / window (for irregular firing, where a neuron may stop).
        """
        lo, hi = self._find([start])[..., 0], self._find([stop])[..., 0]
        count = hi - lo
        by_count = count / ((stop - start) * self.dt)
        if method == "count" or not self.keys.size:
            return by_count
        last = self.keys.size - 1
        span = self.keys[np.clip(hi - 1, 0, last)] - self.keys[np.clip(lo, 0, last)]
        with np.errstate(divide="ignore", invalid="ignore"):
            isi_rate = (count - 1) / (span * self.dt)
        return np.where(count >= 2, isi_rate, by_count)

    def trains(self, b: int, n: int) -> np.ndarray:
        """Spike steps of neuron n in set b, sorted."""
        base = int(self._base[b, n, 0])
        lo, hi = np.searchsorted(self.keys, [base, base + self.T + 1])
        return self.keys[lo:hi] - base


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Base of the protocols: settings are dataclass fields; subclasses implement
    ``experiment`` and ``features`` and may list ``conditions``.

    Attributes:
        dt: time step in s.
    """

    name: ClassVar[str] = ""
    sensitive_to: ClassVar[tuple[str, ...]] = ()
    record: ClassVar[tuple[str, ...]] = ()  # traces the features need (if the backend has them)
    dt: float = 1e-4

    def experiment(self, neurons: Any = "core0") -> Experiment:  # pragma: no cover - abstract
        raise NotImplementedError

    def features(self, rec: Recording) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        raise NotImplementedError

    def conditions(self) -> dict[str, tuple[float, ...]]:
        """Parameter name -> one value per condition (SI); empty when there is one condition."""
        return {}

    def axis_labels(self) -> dict[str, list[str]]:
        """Feature name -> labels of the last axis of its (B, N, K) array (tables, plots)."""
        return {}

    @property
    def n_conditions(self) -> int:
        c = self.conditions()
        return len(next(iter(c.values()))) if c else 1

    def run_params(self, experiment: Experiment, params: Params | None) -> Params | None:
        """The parameters to run: ``params`` (or the network's) times the conditions."""
        if not self.conditions():
            return params
        base = experiment.network.params() if params is None else params
        return expand_conditions(base, self.conditions())

    def run(self, backend, neurons: Any = "core0", params: Params | None = None, *,
            record_every: int | None = None) -> Recording:
        """Build the experiment, run it on ``backend`` (traces where the backend records
        them) and return the Recording, its metadata carrying the protocol's settings.

        Args:
            backend: an object with ``run`` (see ``dynacal.backends.get_backend``).
            neurons: which neurons (see :func:`layout`).
            params: (B, N)-broadcastable candidate parameters; None = the network's own.
            record_every: trace sampling in steps (default the protocol's own).
        """
        experiment = self.experiment(neurons)
        p = self.run_params(experiment, params)
        traces = getattr(backend, "records_traces", None)
        if not self.record or traces is False:
            rec = backend.run(experiment, p)
        else:
            kwargs = {"record": self.record, "record_every": record_every or self.trace_every()}
            try:
                rec = backend.run(experiment, p, **kwargs)
            except ParameterError:
                if traces:  # it says it records traces: the error is about something else
                    raise
                # a backend that does not say (records_traces absent) and refuses traces, such
                # as the board: run it for spikes only (any other error comes back again)
                log.info("%s refused traces %s; running %s for spikes only", backend.name, self.record, self.name)
                rec = backend.run(experiment, p)
        rec.metadata["protocol"] = self.describe()
        return rec

    def trace_every(self) -> int:
        return 1

    def describe(self) -> dict:
        """JSON-able name, settings and conditions (stored in recording metadata)."""
        return {"name": self.name, "settings": dataclasses.asdict(self),
                "conditions": {k: list(v) for k, v in self.conditions().items()}}

    def check(self, rec: Recording) -> None:
        """Refuse a recording that this protocol did not make."""
        made = rec.metadata.get("protocol", {}).get("name")
        if made not in (None, self.name):
            raise RecordingError(f"this recording was made by protocol {made!r}, not {self.name!r}; "
                                 f"extract its features with the {made!r} protocol.")
        if rec.batch % self.n_conditions:
            split_conditions(np.zeros((rec.batch, 1)), self.n_conditions)  # raises with the message
        steps = self.experiment(1).n_steps
        if (rec.n_steps, rec.dt) != (steps, self.dt):
            raise RecordingError(f"the recording has {rec.n_steps} steps of {rec.dt:g} s; this {self.name} protocol "
                                 f"runs {steps} steps of {self.dt:g} s. Use the settings it was recorded with "
                                 f"(recording.metadata['protocol']['settings']).")
