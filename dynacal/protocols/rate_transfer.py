"""Input-rate transfer: Poisson input rate on one synapse type -> output rate per neuron.

The run is a sequence of segments: first a baseline with no input, then for each synapse
type and each input rate one segment of ``segment`` s in which that type's source fires a
Poisson train at that rate into every neuron, each followed by a ``gap`` s of silence so
the synapse current decays. All neurons and all (type, rate) pairs are measured in one
run; all neurons get the same trains (seeded), so differences between neurons are
mismatch. A baseline DC (``dc``, a condition) makes the neurons fire, so that inhibition
shows as a lower rate.

With ``separate_runs=True`` the baseline and every (type, rate) pair are separate runs from
the fresh state instead (conditions, as a board measures one input rate after another):
each lasts ``max(baseline, segment)`` s with the input from its start (the same trains),
and ``gap`` is not used.

Features, per parameter set and neuron:

- ``baseline`` (B, N), Hz: the rate in the baseline segment, after ``settle`` s;
- ``rate_<syn>`` (B, N, K), Hz: the output rate at each of the K input rates of that type
  (``rates``, or its entry in ``rates_by_type``), measured after
  ``settle`` s of each segment (spike count / window);
- ``gain_<syn>`` (B, N), Hz/Hz: least-squares slope of output against input rate.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..chip import synapse_index
from ..errors import ParameterError
from ..chip import Network
from ..params import SYNAPSE_TYPES
from ..recording import Recording
from ..stimulus import Stimulus, poisson
from ._common import SpikeIndex, all_to_all, build_network, split_conditions, synapse_types_and_weights
from .base import Design, Protocol

__all__ = ["RateTransfer"]


@dataclasses.dataclass(frozen=True)
class RateTransfer(Protocol):
    """Output rate against Poisson input rate, per synapse type, every neuron at once.

    Requires: the soma (f-I curve, refractory, adaptation) and the synaptic kernels
    calibrated first: the output rate depends on all of them, and what is left to fit
    here is the weights (``I*_w0``), which come last in the lab order.

    Attributes:
        synapses: synapse types measured.
        weights: integer weight of each type's input (CAM entries).
        rates: input rates in Hz, increasing.
        rates_by_type: ``(type, rates)`` pairs overriding ``rates`` for some types. GABA_A
            stops at 15 Hz by default: with a weight of 1 it silences most neurons by 20 Hz,
            and a Poisson train of 20 Hz or more sums to over 1 nA of shunting current in
            some neurons (with the mismatch of the shipped recordings), where forward
            Euler at dt = 100 us goes unstable (dpi-model.md).
        segment: s per (type, rate) segment; settle: s ignored at its start.
        gap: s of silence after each segment; baseline: s of the first, input-free segment.
        dc: baseline DC in A (a condition), or None to keep the network's ``Isoma_const``.
        seed: seed of the Poisson trains.
        separate_runs: the baseline and each (type, rate) as a run of its own (module
            docstring), or all segments in one run (False).
        dt: time step in s.
    """

    name: ClassVar[str] = "rate_transfer"
    sensitive_to: ClassVar[tuple[str, ...]] = (
        "Inmda_w0", "Iampa_w0", "Igaba_a_w0", "Igaba_b_w0", "Inmda_tau", "Iampa_tau", "Igaba_a_tau",
        "Igaba_b_tau", "Inmda_thr", "Isoma_dpi_tau", "alpha_soma")
    synapses: tuple[str, ...] = SYNAPSE_TYPES
    weights: tuple[int, ...] = (1, 8, 1, 1)
    rates: tuple[float, ...] = (2.0, 5.0, 10.0, 20.0, 50.0)
    rates_by_type: tuple[tuple[str, tuple[float, ...]], ...] = (("gaba_a", (1.0, 2.0, 5.0, 10.0, 15.0)),)
    segment: float = 0.4
    settle: float = 0.05
    gap: float = 0.1
    baseline: float = 0.4
    dc: float | None = 7e-10
    seed: int = 0
    separate_runs: bool = False

    def __post_init__(self):
        syn = synapse_types_and_weights(self.synapses, self.weights)
        object.__setattr__(self, "synapses", syn)
        if not 0 <= self.settle < self.segment:
            raise ParameterError(f"settle = {self.settle} s must be in [0, segment = {self.segment} s).")
        by_type = {SYNAPSE_TYPES[synapse_index(t)]: r for t, r in self.rates_by_type}
        object.__setattr__(self, "rates_by_type", tuple((t, _check_rates(r, self.dt)) for t, r in by_type.items()))
        object.__setattr__(self, "rates", _check_rates(self.rates, self.dt))

    def rates_of(self, syn: str) -> tuple[float, ...]:
        """Input rates (Hz) of synapse type ``syn``."""
        return dict(self.rates_by_type).get(syn, self.rates)

    def conditions(self) -> dict[str, tuple[float, ...]]:
        return {} if self.dc is None else {"Isoma_const": (float(self.dc),) * self.n_conditions}

    @property
    def n_conditions(self) -> int:
        """1, or with separate runs 1 + the number of (type, rate) pairs (baseline first)."""
        return 1 + sum(len(self.rates_of(s)) for s in self.synapses) if self.separate_runs else 1

    def axis_labels(self) -> dict[str, list[str]]:
        return {f"rate_{syn}": [f"{x:g}Hz" for x in self.rates_of(syn)] for syn in self.synapses}

    def segments(self) -> list[np.ndarray]:
        """First step of each segment, one int array (K,) per synapse type, in order."""
        seg, gap = int(round(self.segment / self.dt)), int(round(self.gap / self.dt))
        start, out = int(round(self.baseline / self.dt)) + gap, []
        for syn in self.synapses:
            k = len(self.rates_of(syn))
            out.append(start + np.arange(k) * (seg + gap))
            start += k * (seg + gap)
        return out

    def design(self, neurons: Network) -> Design:
        """One source per synapse type to every neuron; Poisson trains per segment."""
        types = [SYNAPSE_TYPES.index(s) for s in self.synapses]
        k, n = len(types), neurons.n_neurons
        net = build_network(neurons, k, all_to_all(n, range(k), types, [int(w) for w in self.weights]))
        seg = int(round(self.segment / self.dt))
        trains = [[poisson(1, rate, seg, self.dt, seed=[self.seed, i, j]).steps for j, rate in
                   enumerate(self.rates_of(syn))] for i, syn in enumerate(self.synapses)]
        if self.separate_runs:
            runs = [Stimulus(k)] + [Stimulus(k, steps, np.full(steps.size, i))
                                    for i in range(k) for steps in trains[i]]
            return Design(net, tuple(runs), max(seg, int(round(self.baseline / self.dt))))
        starts = self.segments()
        steps = [trains[i][j] + starts[i][j] for i in range(k) for j in range(len(trains[i]))]
        sources = [np.full(trains[i][j].size, i) for i in range(k) for j in range(len(trains[i]))]
        n_steps = int(starts[-1][-1]) + seg + int(round(self.gap / self.dt))
        return Design(net, (Stimulus(k, np.concatenate(steps), np.concatenate(sources)),), n_steps)

    def extract(self, rec: Recording) -> dict[str, np.ndarray]:
        """``baseline`` (B, N) Hz, ``rate_<syn>`` (B, N, K) Hz, ``gain_<syn>`` (B, N)."""
        index = SpikeIndex(rec)
        L = self.n_conditions
        seg, settle = int(round(self.segment / rec.dt)), int(round(self.settle / rec.dt))
        base = split_conditions(index.rate(settle, int(round(self.baseline / rec.dt)), "count"), L)
        out = {"baseline": base[..., 0]}
        if self.separate_runs:
            per_run = split_conditions(index.rate(settle, seg, "count"), L)  # (B, N, L)
        first = 1
        for i, syn in enumerate(self.synapses):
            x = np.asarray(self.rates_of(syn))
            if self.separate_runs:
                rate = per_run[..., first:first + x.size]
                first += x.size
            else:
                rate = np.stack([index.rate(int(s) + settle, int(s) + seg, "count") for s in self.segments()[i]],
                                axis=-1)
                rate = split_conditions(rate, L)[..., 0, :]
            out[f"rate_{syn}"] = rate
            xc = x - x.mean()
            out[f"gain_{syn}"] = ((rate - rate.mean(-1, keepdims=True)) * xc).sum(-1) / (xc ** 2).sum()
        return out


def _check_rates(rates, dt: float) -> tuple[float, ...]:
    r = np.asarray(rates, dtype=np.float64)
    if r.ndim != 1 or r.size < 2 or np.any(np.diff(r) <= 0) or r[0] <= 0 or r[-1] * dt > 1:
        raise ParameterError(f"rates = {tuple(rates)} Hz must be at least 2 increasing rates in "
                             f"(0, {1 / dt:g}] Hz.")
    return tuple(float(x) for x in r)
