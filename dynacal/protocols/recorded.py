"""Generic features of any experiment: spikes and traces of every neuron in every condition.

:class:`Recorded` takes an experiment it did not build (imported lab data, a network of
the user's own) and reads what every recording has: the spikes, and the traces where
there are any. Its features are (B, N, L) for B candidates, N neurons and the
experiment's L conditions (L = 1 without), over the window ``[start, stop)`` of each run:

- ``spike_count`` (int as float), ``rate`` (Hz, count / window);
- ``first_spike_latency`` (s): from the start of the window to the first spike, NaN if none;
- ``isi_mean`` (s), ``isi_cv``: of the spikes in the window (NaN with fewer than 2, 3);
- ``<trace>_mean``, ``<trace>_peak`` (A) for each recorded trace (``Isoma_mem``, ...), over
  its samples in the window; NaN for neurons that were not traced.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from ..errors import ParameterError, RecordingError
from ..experiment import Experiment
from ..recording import Recording, check_record
from ._common import SpikeIndex, split_conditions
from .base import Protocol, description_of

__all__ = ["Recorded"]


@dataclasses.dataclass(frozen=True)
class Recorded(Protocol):
    """The generic per-neuron features of every condition of a given experiment.

    Requires: nothing; it fits nothing by itself (not in the lab order). Use it to look at
    data from any source, or to compare a target with a model on an experiment no other
    protocol describes.

    Attributes:
        start: s ignored at the start of each run (transients).
        stop: s at which the window ends; None: the end of the run.
        trace_names: state traces to record when it runs (``STATE_NAMES``); none by default.
        every: trace sampling in steps.
        dt: not used: the experiment's own step counts.
    """

    name: ClassVar[str] = "recorded"
    start: float = 0.0
    stop: float | None = None
    trace_names: tuple[str, ...] = ()
    every: int = 1

    def __post_init__(self):
        if self.start < 0 or (self.stop is not None and self.stop <= self.start):
            raise ParameterError(f"start = {self.start} s and stop = {self.stop} s: give 0 <= start < stop "
                                 f"(or stop=None for the end of the run).")
        object.__setattr__(self, "trace_names", check_record(self.trace_names) if self.trace_names else ())
        if int(self.every) != self.every or self.every < 1:
            raise ParameterError(f"every = {self.every} must be an integer >= 1 (steps).")

    def traces(self) -> tuple[str, ...]:
        return self.trace_names

    def trace_every(self) -> int:
        return int(self.every)

    def experiment(self, neurons: Any = None, *, stimulus=None, wiring="shared") -> Experiment:
        """The given experiment, described as measured by this protocol.

        Args:
            neurons: the Experiment (this protocol builds none of its own).
        """
        if not isinstance(neurons, Experiment):
            raise ParameterError(f"Recorded measures a given experiment; pass an Experiment (e.g. "
                                 f"Recording.load(path).experiment), not {type(neurons).__name__}.")
        if stimulus is not None or wiring != "shared":
            raise ParameterError("Recorded runs the experiment as given: build it with the stimulus and wiring.")
        return dataclasses.replace(neurons, protocol=self.describe())

    def with_recorded_settings(self, rec: Recording) -> "Protocol":
        """Recorded reads any recording: its own settings only where it made it."""
        desc = description_of(rec)
        return Recorded.from_recording(rec) if desc and desc.get("name") == self.name else self

    def conditions_of(self, rec: Recording) -> int:
        """L: the experiment's conditions; for a v1 file, those its metadata names; else 1."""
        experiment = getattr(rec, "experiment", None)
        if experiment is not None:
            return int(experiment.n_conditions)
        values = (rec.metadata.get("protocol") or {}).get("conditions") or {}
        return len(next(iter(values.values()))) if values else 1

    def check(self, rec: Recording) -> None:
        L = self.conditions_of(rec)
        if rec.batch % L:
            raise RecordingError(f"the recording has {rec.batch} parameter sets, not a multiple of its "
                                 f"experiment's {L} conditions; the file is damaged.")
        if self.start >= rec.duration:
            raise ParameterError(f"start = {self.start} s is past the end of the {rec.duration:g} s recording.")

    def window(self, rec: Recording) -> tuple[int, int]:
        """The window ``[start, stop)`` in steps."""
        stop = rec.n_steps if self.stop is None else min(rec.n_steps, int(round(self.stop / rec.dt)))
        return int(round(self.start / rec.dt)), stop

    def extract(self, rec: Recording) -> dict[str, np.ndarray]:
        """The features of the module docstring, each (B, N, L)."""
        L = self.conditions_of(rec)
        lo, hi = self.window(rec)
        index = SpikeIndex(rec)
        count = index.counts([lo], [hi])[..., 0].astype(np.float64)
        mean, cv = index.isi_stats(lo, hi)
        out = {"spike_count": count, "rate": count / ((hi - lo) * rec.dt),
               "first_spike_latency": index.first_after([lo], [hi])[..., 0] * rec.dt,
               "isi_mean": mean, "isi_cv": cv}
        steps = np.arange(next(iter(rec.traces.values())).shape[0]) * rec.trace_every if rec.traces else None
        for name, value in rec.traces.items():
            x = value.detach().cpu().numpy().astype(np.float64)[(steps >= lo) & (steps < hi)]  # (S, B, R)
            for key, fn in (("mean", np.mean), ("peak", np.max)):
                full = np.full((rec.batch, rec.n_neurons), np.nan)
                if x.shape[0]:
                    full[:, rec.trace_neurons] = fn(x, axis=0)
                out[f"{name}_{key}"] = full
        return {key: split_conditions(v, L) for key, v in out.items()}
