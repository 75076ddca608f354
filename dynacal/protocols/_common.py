"""What the protocols share: neuron selection, condition batches, inputs, spike counting.

**Neurons.** A protocol measures a set of neurons given as a spec (:func:`layout`):
``"core0"`` (the 256 neurons of Core_0), ``"core2:16"`` (its first 16), ``"chip0"`` (the
1024 neurons of chip 0), comma-joined specs, an int N (the first N neurons of chip 0), or
a :class:`~dynacal.chip.Network` whose neurons and biases are kept (its connections are
dropped: the protocol brings its own inputs).

**Conditions.** A protocol that needs a parameter the stimulus cannot hold (a DC level:
on the chip it is the core bias ``IF_DC_P``, ``Isoma_const`` in the model) lists values of
it per *condition*; its experiment carries them, and the backend turns B candidate sets
into B * L (``backends.base.expand_conditions``: set ``b * L + l`` is candidate b under
condition l). :func:`split_conditions` turns (B * L, ...) results into (B, N, L, ...).

**Inputs.** :func:`input_steps` reads from an experiment the steps in which inputs reach
each neuron through one synapse type, whatever its stimulus and wiring.

**Spikes.** :class:`SpikeIndex` sorts the events of a Recording once and answers
vectorised questions: spikes per window, first spike after a step, rate in a window.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Sequence

import numpy as np

from ..chip import CORES_PER_CHIP, NEURONS_PER_CORE, Connections, Network, synapse_index
from ..errors import NetworkError, ParameterError, RecordingError
from ..params import SYNAPSE_TYPES
from ..recording import Recording
from ..backends.base import expand_conditions  # noqa: F401  (moved there; importable here for now)

__all__ = ["layout", "build_network", "expand_conditions", "split_conditions", "SpikeIndex", "input_steps"]

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

    Every query takes steps (ints), (E,) for every neuron or (N, E) per neuron, and returns
    arrays of shape (B, N, E) for E windows.
    """

    def __init__(self, rec: Recording):
        self.batch, self.n, self.T, self.dt = rec.batch, rec.n_neurons, rec.n_steps, rec.dt
        span = self.T + 1
        self.keys = np.sort((rec.spike_batch * self.n + rec.spike_neuron) * span + rec.spike_step)
        self._base = (np.arange(self.batch * self.n, dtype=np.int64) * span).reshape(self.batch, self.n, 1)

    def _find(self, steps, side="left") -> np.ndarray:
        return np.searchsorted(self.keys, self._base + _grid(steps), side=side)

    def counts(self, start, stop) -> np.ndarray:
        """Spikes with ``start <= step < stop``, int (B, N, E)."""
        return self._find(stop) - self._find(start)

    def first_after(self, start, stop) -> np.ndarray:
        """Steps from ``start`` to the first spike in ``[start, stop)``; NaN if none. (B, N, E)."""
        i = self._find(start)
        found = np.minimum(i, self.keys.size - 1)
        step = self.keys[found] - self._base if self.keys.size else np.zeros_like(i)
        starts = _grid(start)
        ok = (i < self.keys.size) & (step < _grid(stop))
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

    def isi_stats(self, start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        """Mean (s) and coefficient of variation (std / mean, ddof 0) of the inter-spike
        intervals of the spikes in ``[start, stop)``, each (B, N); NaN with fewer than 2
        (mean) or 3 (CV) spikes there."""
        lo, hi = self._find([start])[..., 0].ravel(), self._find([stop])[..., 0].ravel()
        gaps = np.diff(self.keys).astype(np.float64) * self.dt
        cs = np.concatenate([[0.0], np.cumsum(gaps)])
        cs2 = np.concatenate([[0.0], np.cumsum(gaps ** 2)])
        n = np.maximum(hi - lo - 1, 0)  # ISIs of a group: gaps[lo:hi - 1]
        lo, top = np.minimum(lo, cs.size - 1), np.clip(hi - 1, np.minimum(lo, cs.size - 1), cs.size - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            mean = (cs[top] - cs[lo]) / n
            cv = np.sqrt(np.maximum((cs2[top] - cs2[lo]) / n - mean ** 2, 0.0)) / mean
        shape = (self.batch, self.n)
        return np.where(n >= 1, mean, np.nan).reshape(shape), np.where(n >= 2, cv, np.nan).reshape(shape)


def _grid(steps) -> np.ndarray:
    """Window steps as (1, 1, E) for every neuron, or (1, N, E) from (N, E) per neuron."""
    a = np.asarray(steps, dtype=np.int64)
    return a.reshape(1, 1, -1) if a.ndim <= 1 else a.reshape(1, *a.shape[-2:])


def input_steps(experiment, syn_type: int) -> np.ndarray:
    """The steps in which input spikes reach each neuron through synapse type ``syn_type``.

    Read from the experiment's stimulus and input connections, so it holds for any wiring;
    two sources spiking in one step count once (the synapse sees one step of input).

    Returns:
        int64 (N, E), each row sorted, padded with -1 (E: the most of any neuron).
    """
    c, stim, n = experiment.network.inputs, experiment.stimulus, experiment.network.n_neurons
    sel = c.syn_type == syn_type
    order = np.argsort(c.pre[sel], kind="stable")
    pre, post = c.pre[sel][order], c.post[sel][order]
    lo, hi = np.searchsorted(pre, stim.sources, "left"), np.searchsorted(pre, stim.sources, "right")
    count = hi - lo
    ev = np.repeat(np.arange(stim.steps.size), count)
    target = post[np.repeat(lo, count) + np.arange(ev.size) - np.repeat(np.cumsum(count) - count, count)]
    span = int(experiment.n_steps) + 1
    key = np.unique(target * span + stim.steps[ev])  # sorted by neuron, then step
    target, step = key // span, key % span
    per = np.bincount(target, minlength=n)
    out = np.full((n, int(per.max()) if per.size else 0), -1, dtype=np.int64)
    out[target, np.arange(key.size) - np.repeat(np.cumsum(per) - per, per)] = step
    return out
