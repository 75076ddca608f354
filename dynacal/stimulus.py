"""Input spike trains and DC input, with seeded generators.

A :class:`Stimulus` holds input spikes as an event list (step, source), sorted by step,
at most one spike per source and step (as a Brian2 SpikeGeneratorGroup or the board's
FPGA generator), and an optional per-neuron DC current that sets ``Isoma_const``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np

from ._checks import integer
from .errors import ParameterError

__all__ = ["Stimulus", "poisson", "regular"]

_BLOCK = 1 << 22  # random numbers per block of a Poisson draw (32 MiB)
_MAX_DRAWS = 10 ** 11  # source-steps a generator accepts: 1024 sources x 10 000 s at 0.1 ms
_MAX_EVENTS = 1 << 28  # spikes of one regular train set (2 x 2 GiB of int64)


@dataclasses.dataclass(frozen=True, eq=False)
class Stimulus:
    """Input of an experiment.

    Attributes:
        n_sources: number of input sources.
        steps: int64 (K,), the time step of each input spike, sorted.
        sources: int64 (K,), the source of each input spike.
        dc: float64 (N,) DC current per neuron in A (replaces ``Isoma_const``), or None.
    """

    n_sources: int
    steps: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    sources: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    dc: np.ndarray | None = None

    def __post_init__(self):
        object.__setattr__(self, "n_sources", integer(self.n_sources, "n_sources", error=ParameterError,
                                                      fix="give the number of input sources"))
        steps, sources = _events(self.steps, "steps"), _events(self.sources, "sources")
        if steps.shape != sources.shape:
            raise ParameterError(f"steps has {steps.size} events but sources has {sources.size}; "
                                 f"give one source per spike step.")
        if steps.size and (steps.min() < 0 or sources.min() < 0 or sources.max() >= self.n_sources):
            raise ParameterError(f"input events out of range: steps must be >= 0 and sources in "
                                 f"0..{self.n_sources - 1}.")
        order = np.lexsort((sources, steps))
        steps, sources = steps[order], sources[order]
        if steps.size > 1:
            dup = (np.diff(steps) == 0) & (np.diff(sources) == 0)
            if dup.any():
                k = int(np.argmax(dup))
                raise ParameterError(f"source {int(sources[k])} spikes twice in step {int(steps[k])}; a "
                                     f"source emits at most one spike per step (raise the weight instead).")
        object.__setattr__(self, "steps", steps)
        object.__setattr__(self, "sources", sources)
        if self.dc is not None:
            try:
                dc = np.asarray(self.dc, dtype=np.float64).ravel()
            except (TypeError, ValueError) as exc:
                raise ParameterError(f"dc = {self.dc!r} is not an array of currents in A (one per neuron).") from exc
            if not dc.size or not np.all(np.isfinite(dc)) or dc.min() < 0:
                raise ParameterError("dc must be finite, non-negative currents in A (one per neuron).")
            if dc.max() >= 1e-3:
                raise ParameterError(f"dc = {dc.max():g} A is implausibly large; it looks like pA given as "
                                     f"A: pass {dc.max() * 1e-12:g}.")
            object.__setattr__(self, "dc", dc)

    @classmethod
    def from_dense(cls, raster, dc=None) -> "Stimulus":
        """From a dense raster of shape (n_sources, n_steps); non-zero = a spike."""
        r = np.asarray(raster)
        if r.ndim != 2:
            raise ParameterError(f"input raster has shape {r.shape}; expected (n_sources, n_steps).")
        if not np.all(np.isin(r, (0, 1))):
            raise ParameterError("input raster must hold 0 or 1 (one spike per source and step).")
        sources, steps = np.nonzero(r)
        return cls(n_sources=r.shape[0], steps=steps, sources=sources, dc=dc)

    def dense(self, n_steps: int) -> np.ndarray:
        """The raster as uint8 of shape (n_sources, n_steps)."""
        n_steps = integer(n_steps, "n_steps", error=ParameterError, fix="give the raster's length in steps")
        r = np.zeros((self.n_sources, n_steps), dtype=np.uint8)
        keep = self.steps < n_steps
        r[self.sources[keep], self.steps[keep]] = 1
        return r

    def summary(self) -> dict:
        """A small JSON-able description for recording metadata."""
        return {"n_sources": int(self.n_sources), "n_spikes": int(self.steps.size),
                "dc_mean_A": None if self.dc is None else float(self.dc.mean())}


def poisson(n_sources: int, rate_hz, n_steps: int, dt: float, *, seed: int | None = 0,
            start_step: int = 0, stop_step: int | None = None) -> Stimulus:
    """Bernoulli-per-step Poisson trains (as the seed notebook: spike if U < rate * dt).

    Args:
        n_sources: number of independent sources.
        rate_hz: rate in Hz, scalar or (n_sources,).
        n_steps: length in steps; dt: step in s.
        seed: seed of numpy's generator (same seed, same trains).
        start_step, stop_step: spikes only in [start_step, stop_step).
    """
    n_sources, n_steps, dt = _train_args(n_sources, n_steps, dt)
    try:
        given = np.asarray(rate_hz, dtype=np.float64)
        rate = np.broadcast_to(given, (n_sources,))
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"rate_hz = {rate_hz!r} must be a rate in Hz, a scalar or one per source "
                             f"({n_sources}).") from exc
    given = given.ravel()  # checked as given: a bad rate for 0 sources is still a mistake
    bad = ~np.isfinite(given) | (given < 0) | (given * dt > 1)
    if bad.any():
        raise ParameterError(f"rate_hz = {float(given[bad][0]):g} Hz must be finite and in 0..{1 / dt:g} Hz for "
                             f"dt = {dt:g} s (at most one spike per step).")
    start_step = integer(start_step, "start_step", error=ParameterError, high=n_steps,
                         fix=f"spikes start in a step of 0..{n_steps}")
    stop = n_steps if stop_step is None else integer(stop_step, "stop_step", error=ParameterError, low=start_step,
                                                     high=n_steps, fix=f"give start_step..n_steps = "
                                                     f"{start_step}..{n_steps}, or None")
    try:
        rng = np.random.default_rng(seed)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"seed = {seed!r} must be None, an integer >= 0 or a list of them: {exc}.") from exc
    # drawn in blocks of steps: the same stream as one (n_steps, n_sources) draw, in bounded memory
    rows = max(1, _BLOCK // max(1, n_sources))
    parts_steps, parts_sources = [], []
    for t0 in range(0, n_steps if n_sources else 0, rows):
        mask = rng.random((min(rows, n_steps - t0), n_sources)) < rate * dt
        step, source = np.nonzero(mask)
        keep = (step + t0 >= start_step) & (step + t0 < stop)
        parts_steps.append(step[keep] + t0)
        parts_sources.append(source[keep])
    cat = (lambda parts: np.concatenate(parts) if parts else np.zeros(0, np.int64))
    return Stimulus(n_sources, cat(parts_steps), cat(parts_sources))


def regular(n_sources: int, rate_hz: float, n_steps: int, dt: float, *, first_step: int = 0) -> Stimulus:
    """Regular trains: every source spikes every ``round(1 / (rate * dt))`` steps."""
    n_sources, n_steps, dt = _train_args(n_sources, n_steps, dt)
    rate = rate_hz.item() if isinstance(rate_hz, np.ndarray) and rate_hz.ndim == 0 else rate_hz
    if isinstance(rate, (bool, np.bool_)) or not isinstance(rate, numbers.Real) or not 0 < rate * dt <= 1:
        raise ParameterError(f"rate_hz = {rate_hz!r} must be a number in Hz, > 0 and at most 1 / dt = "
                             f"{1 / dt:g} Hz.")
    first_step = integer(first_step, "first_step", error=ParameterError, fix="give a step >= 0")
    rate_hz = float(rate)
    period = max(1, int(round(1.0 / (rate_hz * dt))))
    n_events = max(0, -(-(n_steps - first_step) // period)) * n_sources
    if n_events > _MAX_EVENTS:
        raise ParameterError(f"regular trains of {n_events:.3g} spikes ({n_sources} sources x {n_steps} steps at "
                             f"{rate_hz:g} Hz) exceed {_MAX_EVENTS:.3g}; shorten the stimulus or split it into "
                             f"condition stimuli.")
    times = np.arange(first_step, n_steps, period)
    steps = np.repeat(times, n_sources)
    sources = np.tile(np.arange(n_sources), times.size)
    return Stimulus(n_sources, steps, sources)


def _events(values, name: str) -> np.ndarray:
    """Event steps or sources as int64 (K,): whole numbers (ParameterError otherwise, not a
    silent truncation of 2.5 to 2)."""
    try:
        a = np.asarray(values).ravel()
        if a.dtype.kind == "f":
            bad = ~np.isfinite(a) | (a != np.round(a)) | (np.abs(a) > 2.0 ** 62)  # 2**62: int64 holds it
            if bad.any():
                raise ParameterError(f"{name} holds {float(a[bad][0]):g}; give whole numbers (int64).")
        if a.dtype.kind not in "iuf" or a.dtype.kind == "b":
            if a.size:
                raise ParameterError(f"{name} has dtype {a.dtype}; give whole numbers (int64).")
        return a.astype(np.int64)
    except (TypeError, ValueError, OverflowError) as exc:
        if isinstance(exc, ParameterError):
            raise
        raise ParameterError(f"{name} = {values!r} is not an array of whole numbers: {exc}.") from exc


def _train_args(n_sources, n_steps, dt) -> tuple[int, int, float]:
    """The shared arguments of the generators, checked."""
    n_sources = integer(n_sources, "n_sources", error=ParameterError, fix="give the number of input sources")
    n_steps = integer(n_steps, "n_steps", error=ParameterError, fix="give the length in steps, e.g. 10000")
    if n_steps * max(1, n_sources) > _MAX_DRAWS:
        raise ParameterError(f"{n_sources} sources x {n_steps} steps = {n_steps * max(1, n_sources):.3g} source-steps "
                             f"exceed {_MAX_DRAWS:.0e} (hours of drawing); shorten the stimulus or split it into "
                             f"condition stimuli.")
    dtv = dt.item() if isinstance(dt, np.ndarray) and dt.ndim == 0 else dt
    if isinstance(dtv, (bool, np.bool_)) or not isinstance(dtv, numbers.Real) or not math.isfinite(dtv) or dtv <= 0:
        raise ParameterError(f"dt = {dt!r} must be the time step in s, a positive number (e.g. 1e-4).")
    return n_sources, n_steps, float(dtv)
