"""Reading and checking a recording file (``Recording.load``): every part of the file is
checked for type, shape, range and finiteness, so that a damaged or foreign file is a
:class:`~dynacal.errors.RecordingError` naming the part, not a failure far from the cause.

Writing the traces (``Recording.save``): in slabs of time steps of at most ``SLAB_BYTES``,
so that a big save needs no float64 copy of a whole trace and shows its progress
(:mod:`dynacal._progress`: a bar once it will take longer than a few seconds); the sizes
are checked against the free disk space first (:func:`check_disk`).
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from . import _progress
from .errors import RecordingError
from .params import STATE_NAMES

__all__ = ["READABLE_VERSIONS", "read_fields", "check_traces", "write_traces", "check_disk", "SLAB_BYTES"]

log = logging.getLogger(__name__)
#: float64 bytes of trace written per h5py call: bounds a save's extra memory and paces its progress.
SLAB_BYTES = 64 * 2 ** 20

READABLE_VERSIONS = (1, 2)


def check_traces(self, damaged) -> None:
    """Traces of a loaded recording: known names, (T_rec, B, R) shapes, recorded neurons in
    range, and values finite except in the sets the ``unstable`` mask flags."""
    r, t_rec = self.trace_neurons.size, -(-self.n_steps // self.trace_every)
    if self.trace_neurons.ndim != 1 or (r and (self.trace_neurons.min() < 0 or self.trace_neurons.max() >= self.n_neurons)):
        raise damaged("/traces neurons", f"= {self.trace_neurons.tolist()[:10]} are not indices in 0..{self.n_neurons - 1}")
    for name, value in self.traces.items():
        if name not in STATE_NAMES:
            raise damaged(f"/traces/{name}", f"is not a state of the model ({', '.join(STATE_NAMES)})")
        if tuple(value.shape) != (t_rec, self.batch, r):
            raise damaged(f"/traces/{name}", f"has shape {tuple(value.shape)}; expected (T_rec, batch, R) = "
                                             f"{(t_rec, self.batch, r)}")
        if not value.dtype.is_floating_point:
            raise damaged(f"/traces/{name}", f"has dtype {value.dtype}; expected float64 currents in A")
        bad = ~torch.isfinite(value).all(dim=0).cpu().numpy()  # (B, R)
        if bad.any() and (self.unstable is None or not self.unstable[:, self.trace_neurons][bad].all()):
            raise damaged(f"/traces/{name}", "holds non-finite values in runs not marked unstable")


def read_fields(f, where: str) -> dict:
    """The constructor arguments of ``Recording`` from an open file; RecordingError for
    a foreign file or another schema, any other exception for a damaged one."""
    version = f.attrs.get("schema_version")
    if version is None:
        raise RecordingError(f"{where} is HDF5 but not a dynacal recording (no schema_version).")
    if int(version) not in READABLE_VERSIONS:
        raise RecordingError(f"{where} has schema version {int(version)}; this dynacal reads "
                             f"versions {READABLE_VERSIONS}. Upgrade dynacal or convert the file.")
    if "spikes" not in f and "experiment" in f:
        raise RecordingError(f"{where} holds an experiment, not a recording; read it with Experiment.load.")
    for part in ("spikes", "traces"):
        if part not in f:
            raise RecordingError(f"{where} has no /{part} group; it is damaged or not a dynacal recording.")
    attrs = {k: f.attrs[k] for k in ("backend", "dt", "n_steps", "batch", "n_neurons", "trace_every")}
    spikes = {k: np.asarray(f["spikes"][k][()]) for k in ("batch", "neuron", "step", "time")}
    for k in ("batch", "neuron", "step"):
        if spikes[k].dtype.kind not in "iu":
            raise RecordingError(f"{where}: /spikes/{k} has dtype {spikes[k].dtype}; expected int64. The file is damaged.")
    metadata = json.loads(f.attrs["metadata"])
    if not isinstance(metadata, dict):
        raise RecordingError(f"{where}: its metadata is a JSON {type(metadata).__name__}, not an object; the file is damaged.")
    experiment = None
    if "experiment" in f:
        from ._experiment_io import read_group
        experiment = read_group(f["experiment"], where)
    unstable = f["unstable"][()] if "unstable" in f else None
    return dict(backend=str(attrs["backend"]), dt=float(attrs["dt"]), n_steps=_whole(attrs["n_steps"], "n_steps", where),
                batch=_whole(attrs["batch"], "batch", where), n_neurons=_whole(attrs["n_neurons"], "n_neurons", where),
                spike_batch=spikes["batch"].astype(np.int64), spike_neuron=spikes["neuron"].astype(np.int64),
                spike_step=spikes["step"].astype(np.int64), spike_time=spikes["time"].astype(np.float64),
                traces={name: torch.as_tensor(np.asarray(ds[()])) for name, ds in f["traces"].items()},
                trace_neurons=np.asarray(f["traces"].attrs["neurons"], dtype=np.int64),
                trace_every=_whole(attrs["trace_every"], "trace_every", where), metadata=metadata, experiment=experiment,
                unstable=None if unstable is None else np.asarray(unstable, dtype=bool))


def _whole(value, key: str, where: str) -> int:
    """An integer attribute; a float or a string there means a damaged file."""
    v = np.asarray(value)
    if v.shape != () or v.dtype.kind not in "iu":
        raise RecordingError(f"{where}: attribute {key} = {v.tolist()!r} is not an integer; the file is damaged.")
    return int(v)


def write_traces(group, traces, what: str) -> None:
    """Write each (T_rec, B, R) trace into ``group`` as float64, gzip, in slabs of rows.

    The datasets are created with the shape and chunking h5py chooses for the whole array,
    so the file is the same as one written in a single call.

    Args:
        group: the h5py group ``/traces``.
        traces: name -> tensor (T_rec, B, R), any float dtype and device.
        what: the file's name, for the progress bar.
    """
    total = sum(int(v.numel()) for v in traces.values()) * 8
    with _progress.Progress(total, f"saving {what}", unit="B") as progress:
        for name, value in traces.items():
            v = value.detach()
            ds = group.create_dataset(name, shape=tuple(v.shape), dtype="f8", compression="gzip")
            row = 8 * max(1, int(v[0].numel()) if v.shape[0] else 1)
            step = max(1, SLAB_BYTES // row)
            for start in range(0, v.shape[0], step):
                slab = v[start:start + step]
                ds[start:start + slab.shape[0]] = slab.cpu().double().numpy()
                progress.update(int(slab.numel()) * 8)


def check_disk(path: Path, n_bytes: int) -> None:
    """Warn, before a save, when ``n_bytes`` (the arrays before compression) exceed the free
    space of ``path``'s disk: compression may still make it fit, so this is not refused."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError:
        return
    if n_bytes > free:
        log.warning("saving %s: its arrays are %.3g GiB before compression and %s has %.3g GiB free; if the save "
                    "fails for space, record fewer traces (record_every, record_neurons), fewer sets, or save "
                    "elsewhere", path.name, n_bytes / 2 ** 30, folder, free / 2 ** 30)
