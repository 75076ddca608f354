"""The board's noise floor, and the robust statistics a fitter uses against repeated measurements.

A board (and its twin) never gives the same spikes twice: spike times jitter, events are
dropped, state left by the previous run lingers. A calibration that chased one measurement
would fit that noise, so the target measures one protocol several times first
(:meth:`dynacal.fitting.target.Target.measure`) and this module turns the repeats into a
**noise floor**: per protocol, feature and neuron,

- ``median``: the median over the repeats of the protocol's feature (``Protocol.features``
  of candidate 0, the board's one parameter set), shape (N,) or (N, K);
- ``mad``: the scaled median absolute deviation over the repeats, ``1.4826 * median(|x -
  median|)`` (the standard deviation for Gaussian noise, robust to one bad repeat);
- ``relative()``: ``mad / |median|`` (0 where both are 0, i.e. a silent neuron stays
  silent; inf where only the median is 0);
- ``std`` and ``cv()``: the plain sample standard deviation (ddof 1) and ``std / |mean|``,
  for reports: with few repeats and rare noise (the twin drops one event in a thousand) the
  MAD is 0 wherever most repeats agree exactly, while the standard deviation still shows
  the rare differences. The repeat rule uses the robust MAD: noise that only one repeat
  shows is no reason to measure everything again.

A noise-free backend (the torch simulator) gives mad = std = 0 exactly.

**How many repeats** (:func:`repeats_needed`): a median of n independent repeats has a
spread of about ``mad / sqrt(n)`` (x 1.25 for the median), so bringing a protocol's relative
noise ``r`` under a tolerance ``tol`` takes ``n = ceil((r / tol)^2)`` repeats, at least 1
and at most the caller's limit. The level ``r`` of a protocol is the median over neurons
of each neuron's median relative spread over the protocol's features and conditions
(:meth:`NoiseFloor.level`), leaving out features that were 0 in every repeat (a silent
condition tells nothing about the noise) and NaN ones (a rheobase of a neuron that never
fired).

**Robust scores** (:func:`robust_loss`): a fitter re-scores its best candidates against
every repeat of the target and takes, per candidate and neuron, the median of the
per-repeat losses, so that one lucky (or unlucky) measurement never decides the winner.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dynacal._files import atomic_write
from dynacal.errors import ParameterError, RecordingError
from dynacal.recording import Recording

__all__ = ["Spread", "NoiseFloor", "MAD_SCALE", "mad", "robust_loss", "repeats_needed", "features_of"]

#: MAD x 1.4826 = the standard deviation of Gaussian noise.
MAD_SCALE = 1.4826


def _quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():  # all-NaN slices (neurons that never fired) give NaN, as meant
        warnings.simplefilter("ignore", RuntimeWarning)
        return fn(*args, **kwargs)


def mad(values, axis: int = 0) -> np.ndarray:
    """The scaled median absolute deviation along ``axis`` (NaN ignored): ``1.4826 *
    median(|x - median(x)|)``."""
    x = np.asarray(values, dtype=np.float64)
    med = _quiet(np.nanmedian, x, axis=axis, keepdims=True)
    return MAD_SCALE * _quiet(np.nanmedian, np.abs(x - med), axis=axis)


def robust_loss(per_repeat_losses, axis: int = 0):
    """The median over repeats of per-repeat losses: the score of a candidate against a
    noisy target (module docstring).

    Args:
        per_repeat_losses: losses (R, ...) of the same candidates scored against each of R
            repeats (numpy or torch; NaN repeats are ignored in numpy).
        axis: the repeats' axis.

    Returns:
        The median over ``axis``: (...) for (R, ...); a torch tensor for a torch input
        (``torch.median``: the lower of the two middle values for even R, with gradients).

    Raises:
        ParameterError: no repeats.
    """
    if per_repeat_losses.shape[axis] == 0:
        raise ParameterError("robust_loss got 0 repeats; score each candidate against at least one recording.")
    if hasattr(per_repeat_losses, "detach"):
        return per_repeat_losses.median(dim=axis).values
    return _quiet(np.nanmedian, np.asarray(per_repeat_losses, dtype=np.float64), axis=axis)


def repeats_needed(level: float, tolerance: float = 0.02, most: int = 3) -> int:
    """Repeats that bring relative noise ``level`` under ``tolerance``: ``ceil((level /
    tolerance)^2)``, clipped to 1..most (module docstring).

    Raises:
        ParameterError: a tolerance that is not positive, or ``most`` < 1.
    """
    if not tolerance > 0 or int(most) < 1:
        raise ParameterError(f"tolerance = {tolerance!r} must be > 0 (a fraction, e.g. 0.02) and most = {most!r} "
                             f">= 1 repeat.")
    if not math.isfinite(level):
        return int(most)
    return int(min(most, max(1, math.ceil((level / tolerance) ** 2 - 1e-9))))


def features_of(rec: Recording) -> dict[str, np.ndarray]:
    """The protocol features of a recording's first candidate: name -> (N,) or (N, K)."""
    from dynacal.protocols import Recorded, get_protocol
    proto = rec.require_experiment().protocol
    protocol = get_protocol(rec) if proto and proto.get("name") != Recorded.name else Recorded()
    return {k: np.asarray(v, dtype=np.float64)[0] for k, v in protocol.features(rec).items()}


@dataclasses.dataclass(frozen=True)
class Spread:
    """The spread of one feature over R repeats, per neuron.

    Attributes:
        median: float (N,) or (N, K), the median over repeats (the feature's unit).
        mad: same shape, the scaled MAD over repeats (same unit).
        n_repeats: R.
        mean, std: same shape, the plain mean and sample standard deviation (ddof 1).
    """

    median: np.ndarray
    mad: np.ndarray
    n_repeats: int
    mean: np.ndarray
    std: np.ndarray

    @classmethod
    def of(cls, values: Sequence[np.ndarray]) -> "Spread":
        """From one array per repeat (all of one shape)."""
        x = np.stack([np.asarray(v, dtype=np.float64) for v in values])
        # about the first repeat: identical repeats give exactly 0 (the mean of equal floats may not be them)
        std = _quiet(np.nanstd, x - x[:1], axis=0, ddof=1) if len(values) > 1 else np.zeros(x.shape[1:])
        return cls(_quiet(np.nanmedian, x, axis=0), mad(x, axis=0), len(values), _quiet(np.nanmean, x, axis=0), std)

    def relative(self) -> np.ndarray:
        """``mad / |median|``: 0 where both are 0, inf where only the median is 0, NaN where unknown."""
        m = np.abs(self.median)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.mad / m
        out[(m == 0) & (self.mad == 0)] = 0.0
        return out

    def cv(self) -> np.ndarray:
        """``std / |mean|`` (plain, for reports): 0 where both are 0, NaN where unknown."""
        m = np.abs(self.mean)
        with np.errstate(divide="ignore", invalid="ignore"):
            out = self.std / m
        out[(m == 0) & (self.std == 0)] = 0.0
        return out


@dataclasses.dataclass
class NoiseFloor:
    """The noise floor of a target: per protocol and feature, a :class:`Spread` over repeats.

    Attributes:
        spreads: protocol name -> feature name -> Spread.
    """

    spreads: dict[str, dict[str, Spread]]

    @classmethod
    def from_repeats(cls, repeats: Mapping[str, Sequence[Recording]]) -> "NoiseFloor":
        """From two or more repeats of each protocol (protocol name -> recordings of one experiment).

        Raises:
            RecordingError: fewer than two repeats of a protocol, or repeats of different experiments.
        """
        spreads = {}
        for name, recs in repeats.items():
            if len(recs) < 2:
                raise RecordingError(f"protocol {name!r} has {len(recs)} recording; a noise floor needs at least "
                                     f"2 repeats of the same experiment (Target.measure(..., repeats=3)).")
            hashes = {r.require_experiment().content_hash() for r in recs}
            if len(hashes) > 1:
                raise RecordingError(f"the repeats of {name!r} ran {len(hashes)} different experiments; repeats "
                                     f"must run one experiment.")
            feats = [features_of(r) for r in recs]
            spreads[name] = {k: Spread.of([f[k] for f in feats]) for k in feats[0]}
        return cls(spreads)

    @classmethod
    def from_target_repeats(cls, repeats: Mapping[str, Sequence[Recording]]) -> "NoiseFloor | None":
        """From the protocols that were repeated (two or more recordings); None when none was."""
        repeated = {k: v for k, v in repeats.items() if len(v) > 1}
        return cls.from_repeats(repeated) if repeated else None

    def relative(self, protocol: str, feature: str) -> np.ndarray:
        """The relative spread (N,) or (N, K) of one feature (:meth:`Spread.relative`).

        Raises:
            ParameterError: a protocol or feature the floor does not hold.
        """
        if protocol not in self.spreads or feature not in self.spreads[protocol]:
            have = {k: sorted(v) for k, v in self.spreads.items()}
            raise ParameterError(f"the noise floor has no {protocol!r} feature {feature!r}; it has {have}.")
        return self.spreads[protocol][feature].relative()

    def per_neuron(self, protocol: str) -> np.ndarray:
        """float (N,): each neuron's median relative spread over the protocol's features and
        conditions, leaving out NaN features and features that were 0 in every repeat (a
        silent level of an f-I curve); NaN where a neuron has none left."""
        parts = []
        for s in self.spreads[protocol].values():
            rel = s.relative()
            rel[(s.median == 0) & (s.mad == 0)] = np.nan  # silent every time: says nothing about noise
            parts.append(rel.reshape(rel.shape[0], -1))
        return _quiet(np.nanmedian, np.concatenate(parts, axis=1), axis=1)

    def level(self, protocol: str) -> float:
        """The protocol's relative noise: the median over neurons of :meth:`per_neuron`."""
        return float(_quiet(np.nanmedian, self.per_neuron(protocol)))  # NaN: nothing known

    def summary(self) -> dict[str, Any]:
        """JSON-able: per protocol, the repeats, the level, and per feature the median over
        neurons of the relative spread and of the MAD (the feature's unit) and its 90th percentile."""
        out = {}
        for name, feats in self.spreads.items():
            entry = {"n_repeats": next(iter(feats.values())).n_repeats, "level": self.level(name), "features": {}}
            for key, s in feats.items():
                rel, cv = (a[np.isfinite(a)] for a in (s.relative(), s.cv()))
                entry["features"][key] = {
                    "median_relative": float(np.median(rel)) if rel.size else None,
                    "p90_relative": float(np.percentile(rel, 90)) if rel.size else None,
                    "median_mad": float(_quiet(np.nanmedian, s.mad)) if np.isfinite(s.mad).any() else None,
                    "median_cv": float(np.median(cv)) if cv.size else None,
                    "p90_cv": float(np.percentile(cv, 90)) if cv.size else None,
                    "max_cv": float(np.max(cv)) if cv.size else None}
            out[name] = entry
        return out

    # --- files --------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-able, arrays as lists (NaN as None); :meth:`from_dict` reads it back."""
        def arr(a):
            return [None if not np.isfinite(v) else float(v) for v in np.ravel(a)], list(np.shape(a))
        return {"format": "dynacal-noise/1", "summary": self.summary(),
                "spreads": {p: {k: {"median": arr(s.median), "mad": arr(s.mad), "n_repeats": s.n_repeats,
                                    "mean": arr(s.mean), "std": arr(s.std)}
                                for k, s in f.items()} for p, f in self.spreads.items()}}

    @classmethod
    def from_dict(cls, data: Mapping) -> "NoiseFloor":
        def arr(pair):
            values, shape = pair
            return np.asarray([np.nan if v is None else v for v in values], dtype=np.float64).reshape(shape)
        try:
            return cls({p: {k: Spread(arr(s["median"]), arr(s["mad"]), int(s["n_repeats"]), arr(s["mean"]),
                                      arr(s["std"])) for k, s in f.items()}
                        for p, f in data["spreads"].items()})
        except (KeyError, TypeError, ValueError) as exc:
            raise RecordingError(f"a noise floor description is malformed ({type(exc).__name__}: {exc}); "
                                 f"measure it again.") from exc

    def save(self, path: str | os.PathLike) -> Path:
        """Write ``noise.json`` atomically (the summary first, for people reading it)."""
        text = json.dumps(self.to_dict(), indent=1) + "\n"
        return atomic_write(path, lambda fh: fh.write(text.encode()))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "NoiseFloor":
        """Read a file written by :meth:`save`.

        Raises:
            RecordingError: a missing, unreadable or malformed file.
        """
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise RecordingError(f"{path} is not a readable noise floor ({exc}); measure it again.") from exc
        return cls.from_dict(data)
