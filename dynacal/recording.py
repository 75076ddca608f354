"""Recording: what every backend returns, and its HDF5 file format.

Spikes are events ``(batch, neuron, step, time)``: simulators produce steps (time = step *
dt), the board produces times (step = the step the time falls in); both views are kept.
Traces are the state at the *start* of each recorded step, shape ``(T_rec, B, R)`` for R
recorded neurons, sampled every ``trace_every`` steps.

File schema (version 1), written atomically (temporary file, then rename)::

    /            attrs: schema_version, backend, dt, n_steps, batch, n_neurons, trace_every,
                        metadata (JSON)
    /spikes/     batch, neuron, step (int64, K), time (float64, K, s)
    /traces/     one float64 dataset (T_rec, B, R) per state name (A); attrs: neurons (R,)
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import RecordingError, unknown_name
from .params import STATE_NAMES

__all__ = ["Recording", "SCHEMA_VERSION", "check_record"]

SCHEMA_VERSION = 1


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
        s = np.floor(t / dt + 1e-9).astype(np.int64)
        return cls(backend, dt, n_steps, batch, n_neurons, b, n, s, t, **kwargs)

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
        """Write to HDF5 atomically: a crash never leaves a half-written file at ``path``."""
        import h5py
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            with h5py.File(tmp, "w") as f:
                f.attrs["schema_version"] = SCHEMA_VERSION
                for key in ("backend", "dt", "n_steps", "batch", "n_neurons", "trace_every"):
                    f.attrs[key] = getattr(self, key)
                f.attrs["metadata"] = json.dumps(self.metadata, default=_json_default)
                g = f.create_group("spikes")
                for key in ("batch", "neuron", "step", "time"):
                    g.create_dataset(key, data=getattr(self, f"spike_{key}"), compression="gzip")
                g = f.create_group("traces")
                g.attrs["neurons"] = np.asarray(self.trace_neurons, dtype=np.int64)
                for name, value in self.traces.items():
                    g.create_dataset(name, data=value.detach().cpu().double().numpy(), compression="gzip")
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it owner-only; give the usual mode
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Recording":
        """Read a file written by :meth:`save`.

        Raises:
            RecordingError: the file is missing, not HDF5, truncated, or of another schema.
        """
        import h5py
        path = Path(path)
        if not path.exists():
            raise RecordingError(f"recording file {str(path)!r} does not exist.")
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise RecordingError(f"{str(path)!r} is not a readable HDF5 recording (corrupt or truncated?): "
                                 f"{exc}. Re-record it or restore it from a copy.") from exc
        with f:
            version = f.attrs.get("schema_version")
            if version is None:
                raise RecordingError(f"{str(path)!r} is HDF5 but not a dynacal recording (no schema_version).")
            if int(version) != SCHEMA_VERSION:
                raise RecordingError(f"{str(path)!r} has schema version {int(version)}; this dynacal reads "
                                     f"version {SCHEMA_VERSION}. Upgrade dynacal or convert the file.")
            try:
                attrs = {k: f.attrs[k] for k in ("backend", "dt", "n_steps", "batch", "n_neurons", "trace_every")}
                spikes = {k: f["spikes"][k][()] for k in ("batch", "neuron", "step", "time")}
                traces = {name: torch.as_tensor(ds[()]) for name, ds in f["traces"].items()}
                neurons = np.asarray(f["traces"].attrs["neurons"], dtype=np.int64)
                metadata = json.loads(f.attrs["metadata"])
            except (KeyError, OSError, ValueError) as exc:
                raise RecordingError(f"{str(path)!r} is damaged: {exc}. Re-record it or restore it from a copy.") from exc
        rec = cls(str(attrs["backend"]), float(attrs["dt"]), int(attrs["n_steps"]), int(attrs["batch"]),
                  int(attrs["n_neurons"]), spikes["batch"].astype(np.int64), spikes["neuron"].astype(np.int64),
                  spikes["step"].astype(np.int64), spikes["time"].astype(np.float64), traces, neurons,
                  int(attrs["trace_every"]), metadata)
        rec._check_consistent(path)
        return rec

    def _check_consistent(self, path) -> None:
        k = self.spike_step.size
        if any(a.size != k for a in (self.spike_batch, self.spike_neuron, self.spike_time)):
            raise RecordingError(f"{str(path)!r}: spike arrays have different lengths; the file is damaged.")
        if k and (self.spike_neuron.max() >= self.n_neurons or self.spike_batch.max() >= self.batch):
            raise RecordingError(f"{str(path)!r}: spike indices exceed the recorded sizes; the file is damaged.")


def _json_default(obj):
    if isinstance(obj, (np.ndarray, torch.Tensor)):
        return np.asarray(obj.detach().cpu() if isinstance(obj, torch.Tensor) else obj).tolist()
    if isinstance(obj, (np.integer, np.floating)):
        return obj.item()
    return str(obj)
