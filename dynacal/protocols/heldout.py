"""Held-out validation: random Poisson input on all four synapse types, as in the seed.

Not used to fit anything: after a calibration, the simulator and the chip run this
protocol and their spike trains are compared with ``dynacal.metrics`` (rates, ISI
statistics, van Rossum, Victor-Purpura, the coincidence factor). Each neuron gets one
Poisson source per synapse type, drawn from a pool of ``n_sources`` per type (so
neighbouring neurons get different combinations), with the seed notebook's weights.

Features, per parameter set and neuron:

- ``rate`` (B, N), Hz: spikes / duration;
- ``isi_mean`` (B, N), s and ``isi_cv`` (B, N): mean and coefficient of variation of the
  inter-spike intervals (NaN with fewer than 2 and 3 spikes).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..chip import Connections, Network
from ..errors import ParameterError
from ..params import SYNAPSE_TYPES
from ..recording import Recording
from ._common import build_network
from .base import Design, Protocol

__all__ = ["HeldOut"]


@dataclasses.dataclass(frozen=True)
class HeldOut(Protocol):
    """Random Poisson drive on all four synapse types, for validation.

    Requires: a finished calibration (it measures every parameter at once, which is why
    it is held out of the fit and comes last in the lab order).

    Attributes:
        rates: Poisson rate of the sources of each synapse type in Hz, order
            ``SYNAPSE_TYPES``: the seed's 80 Hz for AMPA and GABA_B, NMDA at 20 Hz and
            GABA_A at 5 Hz. At 80 Hz the NMDA weight of 10 drives most neurons to about
            160 Hz, near the refractory limit, which tells little; and a GABA_A weight of 1
            sums to over 1 nA of shunting current within a few spikes, where the soma's
            time constant ``Csoma_mem * Ut / (kappa * Igaba_a)`` falls below the 100 us
            step and forward Euler goes unstable (dpi-model.md) in a quarter of the
            neurons (measured on one core), where the board would not.
        weights: integer weight per synapse type, order ``SYNAPSE_TYPES`` (the seed's
            10, 5, 1, 2).
        n_sources: sources per synapse type.
        duration: length in s.
        seed: seed of the trains and of the neuron-to-source assignment.
        dt: time step in s.
    """

    name: ClassVar[str] = "heldout"
    sensitive_to: ClassVar[tuple[str, ...]] = ()  # every parameter: it is for validation only
    rates: tuple[float, float, float, float] = (20.0, 80.0, 5.0, 80.0)
    weights: tuple[int, int, int, int] = (10, 5, 1, 2)
    n_sources: int = 16
    duration: float = 1.0
    seed: int = 0

    def __post_init__(self):
        if len(self.weights) != 4 or any(int(w) != w or w < 0 for w in self.weights):
            raise ParameterError(f"weights = {self.weights}: give 4 integers >= 0 (CAM entries), order "
                                 f"{SYNAPSE_TYPES}.")
        if len(self.rates) != 4 or not all(0 <= r * self.dt <= 1 for r in self.rates):
            raise ParameterError(f"rates = {self.rates} Hz: give 4 rates in [0, {1 / self.dt:g}] Hz, order "
                                 f"{SYNAPSE_TYPES}.")

    def design(self, neurons: Network) -> Design:
        """Neuron n listens to one random source of each type (weights as in the seed)."""
        from ..stimulus import poisson

        n = build_network(neurons, 0).n_neurons
        rng = np.random.default_rng([self.seed, 1])
        pre = np.concatenate([k * self.n_sources + rng.integers(0, self.n_sources, n) for k in range(4)])
        conns = Connections(pre, np.tile(np.arange(n), 4), np.repeat(np.arange(4), n),
                            np.repeat(np.asarray(self.weights, dtype=np.int64), n))
        keep = conns.weight > 0
        conns = Connections(*(a[keep] for a in conns))
        net = build_network(neurons, 4 * self.n_sources, conns)
        n_steps = int(round(self.duration / self.dt))
        rates = np.repeat(np.asarray(self.rates, dtype=np.float64), self.n_sources)
        stim = poisson(4 * self.n_sources, rates, n_steps, self.dt, seed=[self.seed, 0])
        return Design(net, (stim,), n_steps)

    def extract(self, rec: Recording) -> dict[str, np.ndarray]:
        """``rate`` (B, N) Hz, ``isi_mean`` (B, N) s, ``isi_cv`` (B, N)."""
        from ..metrics import isi_statistics

        stats = isi_statistics(rec)
        return {"rate": rec.rates(), "isi_mean": stats["mean"], "isi_cv": stats["cv"]}
