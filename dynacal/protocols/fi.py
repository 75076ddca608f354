"""The f-I curve: DC input -> firing rate of every neuron; rheobase and slope.

Every DC level is a condition (``Isoma_const``, the core bias ``IF_DC_P`` on the chip), so
all neurons are measured at all levels in one run of L parameter sets; with
``separate_runs=True`` each level is a run of its own from the fresh state (as the board
measures them, one after another), which gives the same rates. The rate of a level is measured after ``settle`` s, from the mean ISI
of the spikes in the window (``SpikeIndex.rate``), so it is not quantised by the window.

Features, each per parameter set and neuron:

- ``rate`` (B, N, L), Hz: the rate at each level;
- ``rheobase`` (B, N), A: the DC at which the rate reaches ``min_rate``, interpolated in
  log current between the last level below and the first level at or above it; NaN when
  no level reaches it, or the first level already does (lower ``levels[0]``);
- ``slope`` (B, N), Hz/A: least-squares slope of rate against DC over the first
  ``n_slope`` levels from the one that reaches ``min_rate``; NaN with fewer than 2.
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

__all__ = ["FICurve"]


@dataclasses.dataclass(frozen=True)
class FICurve(Protocol):
    """Firing rate against DC input, every neuron at every level.

    Requires: nothing calibrated before; no synaptic input (the protocol gives none). First
    in the lab order: rheobase and slope set the soma's leak (``Isoma_dpi_tau``) and gain
    (``alpha_soma``), which every later protocol's output rate depends on.

    Attributes:
        levels: DC currents in A, increasing (one condition each).
        duration: length of the run in s; settle: s ignored at its start.
        min_rate: Hz, the rate that defines the rheobase.
        n_slope: levels used for the slope.
        separate_runs: one run per level from the fresh state (True), or all levels as
            parameter sets of one run (False).
        dt: time step in s.
    """

    name: ClassVar[str] = "fi"
    sensitive_to: ClassVar[tuple[str, ...]] = (
        "Isoma_dpi_tau", "alpha_soma", "Csoma_mem", "Isoma_th", "Isoma_pfb_gain", "Isoma_pfb_th",
        "Isoma_pfb_norm", "soma_refP", "Isoma_ahp_w", "Isoma_ahp_tau")
    levels: tuple[float, ...] = tuple(float(x) for x in np.geomspace(100e-12, 10e-9, 12))
    duration: float = 0.5
    settle: float = 0.1
    min_rate: float = 5.0
    n_slope: int = 3
    separate_runs: bool = False

    def __post_init__(self):
        lv = np.asarray(self.levels, dtype=np.float64)
        if lv.ndim != 1 or lv.size < 2 or np.any(np.diff(lv) <= 0) or lv[0] <= 0:
            raise ParameterError(f"levels = {self.levels} must be at least 2 increasing DC currents > 0 A, "
                                 f"e.g. 100e-12..10e-9 (100 pA .. 10 nA).")
        if lv.max() >= 1e-3:
            raise ParameterError(f"levels reach {lv.max():g} A; it looks like pA given as A: pass e.g. 5e-10.")
        if not 0 <= self.settle < self.duration:
            raise ParameterError(f"settle = {self.settle} s must be in [0, duration = {self.duration} s).")
        object.__setattr__(self, "levels", tuple(float(x) for x in lv))

    def conditions(self) -> dict[str, tuple[float, ...]]:
        return {"Isoma_const": self.levels}

    def axis_labels(self) -> dict[str, list[str]]:
        return {"rate": [f"{x * 1e12:.4g}pA" for x in self.levels]}

    def design(self, neurons: Network) -> Design:
        """No input spikes; the DC comes with the conditions."""
        return Design(neurons, (Stimulus(0),), int(round(self.duration / self.dt)))

    def extract(self, rec: Recording) -> dict[str, np.ndarray]:
        """``rate`` (B, N, L) Hz, ``rheobase`` (B, N) A, ``slope`` (B, N) Hz/A."""
        start = int(round(self.settle / rec.dt))
        rate = split_conditions(SpikeIndex(rec).rate(start, rec.n_steps), self.n_conditions)
        rheobase, slope = _rheobase_slope(rate, np.asarray(self.levels), self.min_rate, self.n_slope)
        return {"rate": rate, "rheobase": rheobase, "slope": slope}


def _rheobase_slope(rate: np.ndarray, levels: np.ndarray, min_rate: float, n_slope: int):
    L = levels.size
    firing = rate >= min_rate
    first = np.argmax(firing, axis=-1)
    ok = firing.any(axis=-1) & (first > 0)
    k = np.clip(first, 1, L - 1)
    r_hi = np.take_along_axis(rate, k[..., None], -1)[..., 0]
    r_lo = np.take_along_axis(rate, (k - 1)[..., None], -1)[..., 0]
    log_lv = np.log(levels)
    frac = np.clip((min_rate - r_lo) / np.where(r_hi > r_lo, r_hi - r_lo, 1.0), 0.0, 1.0)
    rheobase = np.where(ok, np.exp(log_lv[k - 1] + frac * (log_lv[k] - log_lv[k - 1])), np.nan)
    # slope: least squares over levels first .. first + n_slope - 1 (those that exist)
    idx = first[..., None] + np.arange(n_slope)
    valid = (idx < L) & firing.any(axis=-1)[..., None]
    x = np.where(valid, levels[np.clip(idx, 0, L - 1)], 0.0)
    y = np.where(valid, np.take_along_axis(rate, np.clip(idx, 0, L - 1), -1), 0.0)
    n = valid.sum(-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        mx, my = x.sum(-1) / n, y.sum(-1) / n
        sxy = np.where(valid, (x - mx[..., None]) * (y - my[..., None]), 0.0).sum(-1)
        sxx = np.where(valid, (x - mx[..., None]) ** 2, 0.0).sum(-1)
        slope = np.where(n >= 2, sxy / sxx, np.nan)
    return rheobase, slope
