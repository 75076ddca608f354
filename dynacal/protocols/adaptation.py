"""Spike-frequency adaptation: a DC step -> first and steady-state ISI, ratio, time constant.

The DC (one condition, ``Isoma_const``) is on from t = 0, the neuron starting at rest:
the step. Each spike adds ``Isoma_ahp_w * alpha_ahp`` to the adaptation current, which
shunts the membrane, so the ISIs lengthen towards a steady state with about the AHP's
time constant ``Csoma_ahp * Ut / (kappa * Isoma_ahp_tau)``.

Features, per parameter set and neuron (NaN where there are too few spikes):

- ``first_isi`` (B, N), s: between the first and second spike;
- ``steady_isi`` (B, N), s: mean ISI of the spikes in the last ``steady`` s;
- ``ratio`` (B, N): ``steady_isi / first_isi`` (1 without adaptation);
- ``tau`` (B, N), s: time from the first spike until the instantaneous rate 1/ISI (taken
  at the end of each ISI) has fallen by 1 - 1/e of the way from the first to the steady
  rate, interpolated linearly; NaN when the ratio is below 1.05 (no adaptation to time).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..errors import ParameterError
from ..chip import Network
from ..recording import Recording
from ..stimulus import Stimulus
from ._common import SpikeIndex
from .base import Design, Protocol

__all__ = ["Adaptation"]


@dataclasses.dataclass(frozen=True)
class Adaptation(Protocol):
    """ISIs lengthening under a DC step.

    Requires: the soma's leak and gain (f-I curve) and refractory period calibrated: the
    ISIs depend on them as much as on the adaptation parameters this protocol is for.

    Attributes:
        dc: DC step in A (default 1 nA, about 2-3 times rheobase at the defaults).
        duration: length in s; steady: the last s that define the steady state.
        dt: time step in s.
    """

    name: ClassVar[str] = "adaptation"
    sensitive_to: ClassVar[tuple[str, ...]] = ("Isoma_ahp_w", "Isoma_ahp_tau", "alpha_ahp", "Csoma_ahp",
                                               "Isoma_dpi_tau", "alpha_soma")
    dc: float = 1e-9
    duration: float = 1.0
    steady: float = 0.3

    def __post_init__(self):
        if not 0 < self.dc < 1e-3:
            raise ParameterError(f"dc = {self.dc:g} A must be a current > 0 A and well below 1 mA, e.g. 1e-9 (1 nA).")
        if not 0 < self.steady < self.duration:
            raise ParameterError(f"steady = {self.steady} s must be in (0, duration = {self.duration} s).")

    def conditions(self) -> dict[str, tuple[float, ...]]:
        return {"Isoma_const": (float(self.dc),)}

    def design(self, neurons: Network) -> Design:
        """No input spikes; the DC comes with the condition."""
        return Design(neurons, (Stimulus(0),), int(round(self.duration / self.dt)))

    def extract(self, rec: Recording) -> dict[str, np.ndarray]:
        """``first_isi``, ``steady_isi`` (s), ``ratio``, ``tau`` (s), each (B, N)."""
        index = SpikeIndex(rec)
        out = {k: np.full((rec.batch, rec.n_neurons), np.nan) for k in ("first_isi", "steady_isi", "ratio", "tau")}
        start = rec.n_steps - int(round(self.steady / rec.dt))
        for b in range(rec.batch):
            for n in range(rec.n_neurons):
                steps = index.trains(b, n)
                if steps.size < 2:
                    continue
                isi = np.diff(steps) * rec.dt
                late = steps[:-1] >= start  # ISIs with both spikes in the steady window
                out["first_isi"][b, n] = isi[0]
                if late.any():
                    steady = float(isi[late].mean())
                    out["steady_isi"][b, n] = steady
                    out["ratio"][b, n] = steady / isi[0]
                    out["tau"][b, n] = _decay_time(steps, isi, steady, rec.dt)
        return out


def _decay_time(steps: np.ndarray, isi: np.ndarray, steady: float, dt: float) -> float:
    """Time (s) after the first spike at which 1/ISI crosses the 1/e point between the
    first and the steady rate (interpolated); NaN without adaptation."""
    r0, rss = 1.0 / isi[0], 1.0 / steady
    if steady / isi[0] < 1.05:
        return np.nan
    target = rss + (r0 - rss) / np.e
    rate = 1.0 / isi
    t = (steps[1:] - steps[0]) * dt
    below = np.nonzero(rate <= target)[0]
    if not below.size or below[0] == 0:
        return np.nan
    k = below[0]
    frac = (rate[k - 1] - target) / (rate[k - 1] - rate[k])
    return float(t[k - 1] + frac * (t[k] - t[k - 1]))
