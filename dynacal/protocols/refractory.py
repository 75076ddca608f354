"""The refractory period: strong DC -> maximum rate -> refractory period estimate.

Under a DC far above rheobase the membrane crosses threshold within a step or two of the
end of the refractory period, so the inter-spike interval is the refractory period plus a
short integration time t_int that falls as 1/I. Two strong levels I1 < I2 (conditions, as
in the f-I curve) remove it: ISI(I) = refP + c / I gives

    refP = (I2 * ISI2 - I1 * ISI1) / (I2 - I1)

clipped to [0, min ISI]. On a forward-Euler simulator with a DC strong enough to cross
in one step (about 2 uA at the defaults) both ISIs equal the refractory period in whole
steps (``floor(soma_refP / dt)`` as Brian2 rounds it), and so does the estimate.

Features, per parameter set and neuron:

- ``isi`` (B, N, 2), s: mean ISI at each level after ``settle``;
- ``max_rate`` (B, N), Hz: the rate at the strongest level;
- ``refractory`` (B, N), s: the estimate above (NaN with fewer than 2 spikes at a level).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..errors import ParameterError
from ..chip import Network
from ..recording import Recording
from ..stimulus import Stimulus
from ._common import SpikeIndex, split_conditions
from .base import Design, Protocol

__all__ = ["Refractory"]


@dataclasses.dataclass(frozen=True)
class Refractory(Protocol):
    """Refractory period from the maximum rate under two strong DC levels.

    Requires: nothing calibrated (the estimate does not depend on leak or gain as long as
    the levels drive the neuron to its maximum rate); after the f-I curve in the lab order,
    which tells whether the levels are strong enough (the two ISIs should be close).

    Attributes:
        levels: two DC currents in A, increasing (defaults 3 uA and 10 uA).
        duration: length in s; settle: s ignored at the start.
        separate_runs: one run per level from the fresh state (as the board), or both
            levels as parameter sets of one run (False).
        dt: time step in s.
    """

    name: ClassVar[str] = "refractory"
    sensitive_to: ClassVar[tuple[str, ...]] = ("soma_refP",)
    levels: tuple[float, float] = (3e-6, 1e-5)
    duration: float = 0.2
    settle: float = 0.02
    separate_runs: bool = False

    def __post_init__(self):
        lv = tuple(float(x) for x in self.levels)
        if len(lv) != 2 or not 0 < lv[0] < lv[1]:
            raise ParameterError(f"levels = {self.levels} must be two increasing DC currents in A, e.g. "
                                 f"(3e-6, 1e-5) (3 uA, 10 uA).")
        if not 0 <= self.settle < self.duration:
            raise ParameterError(f"settle = {self.settle} s must be in [0, duration = {self.duration} s).")
        object.__setattr__(self, "levels", lv)

    def conditions(self) -> dict[str, tuple[float, ...]]:
        return {"Isoma_const": self.levels}

    def axis_labels(self) -> dict[str, list[str]]:
        return {"isi": [f"{x * 1e6:.4g}uA" for x in self.levels]}

    def design(self, neurons: Network) -> Design:
        """No input spikes; the DC comes with the conditions."""
        return Design(neurons, (Stimulus(0),), int(round(self.duration / self.dt)))

    def extract(self, rec: Recording) -> dict[str, np.ndarray]:
        """``isi`` (B, N, 2) s, ``max_rate`` (B, N) Hz, ``refractory`` (B, N) s."""
        start = int(round(self.settle / rec.dt))
        index = SpikeIndex(rec)
        rate = split_conditions(index.rate(start, rec.n_steps), 2)
        counts = split_conditions(index.counts([start], [rec.n_steps])[..., 0], 2)
        with np.errstate(divide="ignore"):
            isi = np.where(counts >= 2, 1.0 / rate, np.nan)
        i1, i2 = self.levels
        estimate = (i2 * isi[..., 1] - i1 * isi[..., 0]) / (i2 - i1)
        refractory = np.clip(estimate, 0.0, np.nanmin(isi, axis=-1, initial=np.inf))
        return {"isi": isi, "max_rate": rate[..., 1], "refractory": refractory}
