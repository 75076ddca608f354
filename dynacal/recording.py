"""Recording: what every backend returns, and its HDF5 file format.

Spikes are events ``(batch, neuron, step, time)``: simulators produce steps (time = step *
dt), the board produces times (step = the step the time falls in); both views are kept.
Traces are the state at the *start* of each recorded step, shape ``(T_rec, B, R)`` for R
recorded neurons, sampled every ``trace_every`` steps.

A recording carries the :class:`~dynacal.experiment.Experiment` it ran (``experiment``),
so that a target recorded elsewhere can be simulated again, and the per-(set, neuron) mask
of Euler-unstable runs (``unstable``), so that a fitter can drop or penalise those sets. Its
``batch`` sets are B candidates x L conditions, set ``b * L + l`` (``n_candidates``,
``n_conditions``).

File schema (version 2), written atomically (temporary file, then rename)::

    /            attrs: schema_version (2), backend, dt, n_steps, batch, n_neurons,
                        trace_every, metadata (JSON)
    /spikes/     batch, neuron, step (int64, K), time (float64, K, s)
    /traces/     one float64 dataset (T_rec, B, R) per state name (A); attrs: neurons (R,)
    /unstable    bool (B, N): Euler-unstable (set, neuron); absent when not known (board)
    /experiment/ the whole experiment (``dynacal._experiment_io`` documents the group):
                 network, stimulus, condition stimuli, conditions, dt, n_steps, protocol,
                 name; absent for a recording built without one

Version 1 files (no ``/unstable``, no ``/experiment``) still load, with ``experiment`` and
``unstable`` None; :meth:`Recording.require_experiment` says how to re-record them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .files import atomic_hdf5
from ._recording_io import READABLE_VERSIONS, check_disk, check_traces, read_fields, write_traces
from .errors import RecordingError, unknown_name
from .params import STATE_NAMES

if TYPE_CHECKING:
    from .experiment import Experiment

__all__ = ["Recording", "SCHEMA_VERSION", "check_record", "time_to_step"]

SCHEMA_VERSION = 2


def time_to_step(time, dt: float) -> np.ndarray:
    """The step a measured time in s falls in: ``floor(t / dt)``, as the board backend counts.

    The 1e-9 step of slack keeps a time written as ``step * dt`` (a simulator's, or Brian2's
    ``SpikeMonitor.t``) in its own step despite float rounding.
    """
    return np.floor(np.asarray(time, dtype=np.float64) / dt + 1e-9).astype(np.int64)


def check_record(record) -> tuple[str, ...]:
    """Validate trace names (``"all"`` means every state); returns them as a tuple."""
    if record in ("all", ("all",)):
        return STATE_NAMES
    if isinstance(record, str):
        record = [r for r in record.split(",") if r]
    out = []
    for name in record:
        if name not in STATE_NAMES:
            raise unknown_name("trace", name, STATE_NAMES)
        out.append(name)
    return tuple(out)


@dataclasses.dataclass(eq=False)
class Recording:
    """Output of one run.

    Attributes:
        backend: name of the backend that produced it.
        dt: time step in s; n_steps: length in steps.
        batch: number of parameter sets B; n_neurons: N.
        spike_batch, spike_neuron, spike_step: int64 (K,) spike events, sorted by step.
        spike_time: float64 (K,) spike times in s.
        traces: state name -> tensor (T_rec, B, R) in A (may carry gradients).
        trace_neurons: int64 (R,) indices of the recorded neurons.
        trace_every: sampling step of the traces, in steps.
        metadata: JSON-able provenance (parameters, network and stimulus summary,
            versions, wall time).
        raster: (T, B, N) float spikes with surrogate gradients, only from a
            differentiable run; never saved.
        experiment: the Experiment that ran (None for a version 1 file).
        unstable: bool (B, N), the (set, neuron) runs where forward Euler went unstable (a
            current negative or non-finite); None where not known (the board, v1 files).
    """

    backend: str
    dt: float
    n_steps: int
    batch: int
    n_neurons: int
    spike_batch: np.ndarray
    spike_neuron: np.ndarray
    spike_step: np.ndarray
    spike_time: np.ndarray
    traces: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    trace_neurons: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))
    trace_every: int = 1
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    raster: torch.Tensor | None = None
    experiment: "Experiment | None" = None
    unstable: np.ndarray | None = None

    def __post_init__(self):
        if self.unstable is not None:
            u = self.unstable
            u = np.asarray(u.detach().cpu() if isinstance(u, torch.Tensor) else u, dtype=bool)
            if u.shape != (self.batch, self.n_neurons):
                raise RecordingError(f"unstable has shape {u.shape}; expected (batch, n_neurons) = "
                                     f"{(self.batch, self.n_neurons)}.")
            self.unstable = u

    def __repr__(self) -> str:
        exp = self.experiment
        what = (f"experiment {exp.name or '(unnamed)'!r} {exp.content_hash()[:12]}" if exp is not None
                else "no experiment")
        sets = (f"{self.batch} sets = {self.n_candidates} x {self.n_conditions} conditions"
                if self.n_conditions > 1 else f"{self.batch} sets")
        traces = f", traces {sorted(self.traces)} of {self.trace_neurons.size} neurons" if self.traces else ""
        bad = f", {int(self.unstable.sum())} unstable" if self.unstable is not None and self.unstable.any() else ""
        return (f"Recording({self.backend!r}: {sets}, {self.n_neurons} neurons, {self.n_steps} steps of "
                f"{self.dt:g} s, {self.spike_step.size} spikes{traces}{bad}; {what})")

    @property
    def n_conditions(self) -> int:
        """L, the conditions of its experiment (1 without an experiment)."""
        return 1 if self.experiment is None else self.experiment.n_conditions

    @property
    def n_candidates(self) -> int:
        """B, the candidate parameter sets: ``batch // n_conditions``."""
        return self.batch // self.n_conditions

    def require_experiment(self) -> "Experiment":
        """The experiment of this recording.

        Raises:
            RecordingError: it has none (a version 1 file, or a recording built by hand),
                with how to get one.
        """
        if self.experiment is None:
            source = self.metadata.get("replayed_from", {}).get("path") or self.metadata.get("path")
            where = f" ({source})" if source else ""
            raise RecordingError(
                f"this {self.backend!r} recording{where} does not hold its experiment (a schema version 1 "
                f"file, or built without experiment=), so it cannot be simulated again. Re-record it with "
                f"this dynacal (protocol.run(backend).save(path), or recordings/make_recordings.py for the "
                f"shipped ones), or pass the experiment: Recording(..., experiment=exp).")
        return self.experiment

    @classmethod
    def from_steps(cls, backend: str, dt: float, n_steps: int, batch: int, n_neurons: int,
                   spike_batch, spike_neuron, spike_step, **kwargs) -> "Recording":
        """Build from simulator spike steps (time = step * dt); sorts events by step."""
        b, n, s = (np.asarray(a, dtype=np.int64).ravel() for a in (spike_batch, spike_neuron, spike_step))
        nb, nn = (max(batch, int(b.max()) + 1), max(n_neurons, int(n.max()) + 1)) if s.size else (1, 1)
        if s.size and min(s.min(), b.min(), n.min()) >= 0 and (int(s.max()) + 1) * nb * nn < 2 ** 62:
            # one int64 key: a stable argsort is linear on the already sorted events of the
            # simulators (np.lexsort took 1 s for 3.7 M events)
            key = (s * nb + b) * nn + n
            order = None if np.all(key[1:] >= key[:-1]) else np.argsort(key, kind="stable")
        else:
            order = np.lexsort((n, b, s))
        if order is not None:
            b, n, s = b[order], n[order], s[order]
        return cls(backend, dt, n_steps, batch, n_neurons, b, n, s, s * dt, **kwargs)

    @classmethod
    def from_times(cls, backend: str, dt: float, n_steps: int, batch: int, n_neurons: int,
                   spike_batch, spike_neuron, spike_time, **kwargs) -> "Recording":
        """Build from measured spike times in s (the board); steps are ``floor(t / dt)``."""
        t = np.asarray(spike_time, dtype=np.float64).ravel()
        b, n = (np.asarray(a, dtype=np.int64).ravel() for a in (spike_batch, spike_neuron))
        order = np.lexsort((n, b, t))
        t, b, n = t[order], b[order], n[order]
        s = time_to_step(t, dt)
        return cls(backend, dt, n_steps, batch, n_neurons, b, n, s, t, **kwargs)

    @classmethod
    def from_events(cls, experiment: "Experiment", *, neuron, step=None, time=None, batch=None, n_sets: int = 1,
                    traces=None, trace_neurons=None, conditions=None, backend: str = "imported",
                    metadata=None) -> "Recording":
        """A recording of spikes (and traces) measured elsewhere: a lab's files, another simulator.

        Thin entry to :func:`dynacal.labdata.from_events`, which documents the arguments
        and the checks (each bad field is a RecordingError that names it and the fix).
        """
        from .labdata import from_events
        return from_events(experiment, neuron=neuron, step=step, time=time, batch=batch, n_sets=n_sets,
                           traces=traces, trace_neurons=trace_neurons, conditions=conditions,
                           backend=backend, metadata=metadata)

    @property
    def duration(self) -> float:
        return self.n_steps * self.dt

    def spike_counts(self) -> np.ndarray:
        """Spikes per parameter set and neuron, int64 (B, N)."""
        counts = np.zeros((self.batch, self.n_neurons), dtype=np.int64)
        np.add.at(counts, (self.spike_batch, self.spike_neuron), 1)
        return counts

    def rates(self) -> np.ndarray:
        """Mean firing rate in Hz, (B, N)."""
        return self.spike_counts() / self.duration

    def spike_steps(self, neuron: int = 0, batch: int = 0) -> np.ndarray:
        """Spike steps of one neuron in one parameter set."""
        sel = (self.spike_neuron == neuron) & (self.spike_batch == batch)
        return self.spike_step[sel]

    def dense_spikes(self) -> np.ndarray:
        """The spike raster as bool (T, B, N)."""
        r = np.zeros((self.n_steps, self.batch, self.n_neurons), dtype=bool)
        r[self.spike_step, self.spike_batch, self.spike_neuron] = True
        return r

    def trace(self, name: str, neuron: int | None = None, batch: int = 0) -> np.ndarray:
        """One trace as float64 numpy: (T_rec, R) for a batch entry, or (T_rec,) for a
        neuron given by its network index."""
        if name not in self.traces:
            raise RecordingError(f"trace {name!r} was not recorded; recorded: {sorted(self.traces) or 'none'}. "
                                 f"Run with record=[{name!r}].")
        arr = self.traces[name].detach().cpu().numpy()[:, batch]
        if neuron is None:
            return arr
        where = np.nonzero(self.trace_neurons == neuron)[0]
        if not where.size:
            raise RecordingError(f"neuron {neuron} was not recorded; recorded neurons: {self.trace_neurons.tolist()[:20]}.")
        return arr[:, where[0]]

    # --- files -------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> Path:
        """Write to HDF5 (schema 2) atomically: a crash or Ctrl-C never leaves a half-written
        file at ``path``. Traces are written in slabs, with a progress bar for a long save
        (when bars are shown: :func:`dynacal._progress.enable`), and a save bigger than the
        free disk space is warned about first."""
        from ._experiment_io import write_group

        path = Path(path)
        n_spikes = self.spike_step.size
        check_disk(path, 8 * (sum(int(v.numel()) for v in self.traces.values()) + 4 * n_spikes))

        def fill(f):
            f.attrs["schema_version"] = SCHEMA_VERSION
            for key in ("backend", "dt", "n_steps", "batch", "n_neurons", "trace_every"):
                f.attrs[key] = getattr(self, key)
            f.attrs["metadata"] = json.dumps(self.metadata, default=_json_default)
            g = f.create_group("spikes")
            for key in ("batch", "neuron", "step", "time"):
                g.create_dataset(key, data=getattr(self, f"spike_{key}"), compression="gzip")
            g = f.create_group("traces")
            g.attrs["neurons"] = np.asarray(self.trace_neurons, dtype=np.int64)
            write_traces(g, self.traces, path.name)
            if self.unstable is not None:
                f.create_dataset("unstable", data=np.asarray(self.unstable, dtype=bool))
            if self.experiment is not None:
                write_group(f, self.experiment)
        return atomic_hdf5(path, fill)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recording":
        """Read a file written by :meth:`save`.

        Raises:
            RecordingError: the file is missing, not HDF5, truncated, or of another schema.
        """
        from .files import open_hdf5
        path = Path(path)
        f = open_hdf5(path, "recording", "Re-record it or restore it from a copy.")
        where = repr(str(path))
        with f:
            try:
                fields = read_fields(f, where)
            except RecordingError:
                raise
            except Exception as exc:  # a damaged file fails inside h5py, numpy or json in many ways
                raise RecordingError(f"{where} is damaged ({type(exc).__name__}: {exc}). Re-record it or "
                                     f"restore it from a copy.") from exc
        rec = cls(**fields)
        rec._check_consistent(path)
        return rec

    def _check_consistent(self, path) -> None:
        where = repr(str(path))

        def damaged(part: str, problem: str) -> RecordingError:
            return RecordingError(f"{where}: {part} {problem}; the file is damaged. Re-record it or restore "
                                  f"it from a copy.")
        if not (math.isfinite(self.dt) and 0 < self.dt < 0.1):
            raise damaged("dt", f"= {self.dt!r} s is not a time step (positive, finite, under 0.1 s)")
        for key, low in (("n_steps", 1), ("batch", 1), ("n_neurons", 0), ("trace_every", 1)):
            if getattr(self, key) < low:
                raise damaged(key, f"= {getattr(self, key)} is below {low}")
        k = self.spike_step.size
        arrays = (self.spike_batch, self.spike_neuron, self.spike_step, self.spike_time)
        if any(a.ndim != 1 or a.size != k for a in arrays):
            raise damaged("/spikes", f"has arrays of shapes {[a.shape for a in arrays]} (batch, neuron, step, "
                                     f"time); expected one length K")
        for name, values, top in (("batch", self.spike_batch, self.batch), ("neuron", self.spike_neuron, self.n_neurons),
                                  ("step", self.spike_step, self.n_steps)):
            if k and (values.min() < 0 or values.max() >= top):
                raise damaged(f"/spikes/{name}", f"holds {int(values.min())}..{int(values.max())}, outside "
                                                 f"0..{top - 1}")
        if k and not np.all(np.isfinite(self.spike_time)):
            raise damaged("/spikes/time", "holds non-finite times")
        check_traces(self, damaged)
        exp = self.experiment
        if exp is not None and (exp.n_steps, exp.network.n_neurons) != (self.n_steps, self.n_neurons):
            raise RecordingError(f"{str(path)!r}: its experiment has {exp.network.n_neurons} neurons x {exp.n_steps} "
                                 f"steps but the recording {self.n_neurons} x {self.n_steps}; the file is damaged.")
        if exp is not None and self.batch % exp.n_conditions:
            raise RecordingError(f"{str(path)!r}: {self.batch} sets are not B candidates x its experiment's "
                                 f"{exp.n_conditions} conditions; the file is damaged.")
        written = (self.metadata.get("experiment") or {}).get("hash") if isinstance(self.metadata.get("experiment"), dict) else None
        if exp is not None and isinstance(written, str) and written != exp.content_hash():
            raise damaged("/experiment", f"has content hash {exp.content_hash()[:12]}, but the metadata says the run "
                                         f"had {written[:12]}")


def _json_default(obj):
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return np.asarray(obj.detach().cpu() if isinstance(obj, torch.Tensor) else obj).tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return str(obj)
