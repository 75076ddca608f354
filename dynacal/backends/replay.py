"""The replay backend: serves saved Recordings, matched by the experiment's content hash.

``get_backend("replay:DIR")`` (or a single ``.h5`` file) indexes the recordings there by
``metadata["experiment"]["hash"]`` (every simulator run stores it). ``run(experiment,
params)`` returns the recording of that experiment, so a calibration can run offline on
data recorded from a chip yesterday, and CI can run the board path from files.

Parameters are not matched: a recording stands for a chip whose parameters are unknown,
which is what a calibration fits. An experiment's conditions (DC levels, condition stimuli)
are part of its hash, so the hash alone finds the recording of every condition; an
experiment with condition stimuli whose merged recording is not there is served from the
recordings of its single conditions (``experiment.condition(l)``, as a board records them
one after another). Version 1 files, made before conditions were part of the experiment,
are matched by the hash in their metadata and, given params, by the condition values they
list in ``metadata["protocol"]["conditions"]``. The returned recording carries the
experiment asked for. A request for an experiment, conditions or traces the files do not
hold is a RecordingError that says what they do hold.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import ParameterError, RecordingError
from ..experiment import Experiment
from ..params import Params
from ..recording import Recording, check_record
from .base import run_conditions, select_neurons

__all__ = ["ReplayBackend"]

log = logging.getLogger(__name__)


class ReplayBackend:
    """Recordings from a folder (every ``*.h5`` in it) or one file, served by experiment.

    Args:
        path: a folder of recordings or one recording file.

    Raises:
        RecordingError: the path does not exist or holds no readable recording.
    """

    name = "replay"
    batched = True
    differentiable = False

    def __init__(self, path: str | None = None):
        if not path:
            raise ParameterError("the replay backend needs a folder or file of recordings: "
                                 "get_backend('replay:recordings/') or ReplayBackend('fi.h5').")
        self.path = Path(path)
        if not self.path.exists():
            raise RecordingError(f"replay path {str(self.path)!r} does not exist; give a folder of .h5 "
                                 f"recordings or one recording file.")
        files = sorted(self.path.glob("*.h5")) if self.path.is_dir() else [self.path]
        self.index: dict[str, list[tuple[Path, dict]]] = {}
        self.unreadable: dict[Path, str] = {}
        for f in files:
            try:
                meta = _metadata(f)
                self.index.setdefault(meta["experiment"]["hash"], []).append((f, meta))
            except (RecordingError, KeyError, TypeError) as exc:
                self.unreadable[f] = str(exc) if not isinstance(exc, (KeyError, TypeError)) else "no experiment hash"
        if not self.path.is_dir() and self.unreadable:
            raise RecordingError(f"{self.path}: {self.unreadable[self.path]}")
        for f, why in self.unreadable.items():
            log.warning("replay: skipping %s: %s", f, why)
        if not self.index:
            raise RecordingError(f"{str(self.path)!r} holds no readable recording with an experiment hash"
                                 + (f" ({len(self.unreadable)} unreadable)" if self.unreadable else "") + ".")

    def __repr__(self) -> str:
        return f"ReplayBackend({str(self.path)!r}, {sum(map(len, self.index.values()))} recordings)"

    def run(self, experiment: Experiment, params: Params | None = None, *, record: Sequence[str] = (),
            record_neurons=None, record_every: int = 1) -> Recording:
        """The recording of ``experiment`` (as ``Backend.run``); see the module docstring.

        Raises:
            RecordingError: no recording of this experiment (or of these conditions), a
                damaged file, or traces that were not recorded.
        """
        names = check_record(record)
        n = experiment.network.n_neurons
        if params is not None and params.shape[1] not in (1, n):
            raise ParameterError(f"parameters are given for {params.shape[1]} neurons but the network has {n}.")
        key = experiment.content_hash()
        if key not in self.index and experiment.condition_stimuli \
                and all(experiment.condition(l).content_hash() in self.index for l in range(experiment.n_conditions)):
            return run_conditions(self.run, experiment, params, record=record, record_neurons=record_neurons,
                                  record_every=record_every)
        if key not in self.index:
            raise RecordingError(f"no recording of experiment {experiment.name or '(unnamed)'} with hash "
                                 f"{key[:16]}... in {self.path}; it holds {self._holdings()}. Record it "
                                 f"(protocol.run(backend).save(...)) or rebuild the experiment with the "
                                 f"settings it was recorded with.")
        conditioned = bool(experiment.conditions or experiment.condition_stimuli)
        path, meta = self.index[key][0] if conditioned else self._choose(key, params)
        rec = Recording.load(path)
        if (rec.n_steps, rec.n_neurons, rec.dt) != (experiment.n_steps, n, experiment.dt):
            raise RecordingError(f"{path} claims experiment {key[:16]}... but holds {rec.n_neurons} neurons x "
                                 f"{rec.n_steps} steps of {rec.dt:g} s; the file is damaged or mislabelled.")
        if rec.experiment is not None and rec.experiment.content_hash() != key:
            raise RecordingError(f"{path} is indexed under experiment {key[:16]}... but holds experiment "
                                 f"{rec.experiment.content_hash()[:16]}...; the file is damaged or mislabelled.")
        if rec.batch % experiment.n_conditions:
            raise RecordingError(f"{path} holds {rec.batch} sets, not a multiple of the experiment's "
                                 f"{experiment.n_conditions} conditions; the file is damaged or mislabelled.")
        rec.experiment = experiment  # a v1 file has none; a v2 file's has the same hash
        return _subset(rec, path, names, record_neurons, int(record_every))

    def _choose(self, key: str, params: Params | None) -> tuple[Path, dict]:
        entries = self.index[key]
        if params is None:
            return entries[0]
        for path, meta in entries:
            wanted = meta.get("protocol", {}).get("conditions", {})
            if all(_same(getattr(params, name), values) for name, values in wanted.items()):
                return path, meta
        recorded = "; ".join(f"{p.name}: {m.get('protocol', {}).get('conditions')}" for p, m in entries)
        raise RecordingError(f"recordings of experiment {key[:16]}... exist ({recorded}) but none with the "
                             f"condition values of the given parameters; pass params=None, or build the "
                             f"experiment with the conditions it was recorded with (they are part of the "
                             f"experiment now: re-record v1 files to serve them by hash).")

    def _holdings(self) -> str:
        items = [f"{m['experiment'].get('name') or '?'} {k[:16]}... ({p.name})"
                 for k, entries in self.index.items() for p, m in entries]
        return f"{len(items)} recording(s): " + ", ".join(items[:12]) + (" ..." if len(items) > 12 else "")


def _metadata(path: Path) -> dict:
    import h5py
    try:
        with h5py.File(path, "r") as f:
            return json.loads(f.attrs["metadata"])
    except (OSError, KeyError, ValueError) as exc:
        raise RecordingError(f"not a readable dynacal recording ({type(exc).__name__}: {exc}); re-record it "
                             f"or restore it from a copy") from exc


def _same(tensor, values) -> bool:
    """Whether the per-set values of a parameter repeat ``values`` (one per condition)."""
    t = tensor.detach().cpu().numpy()
    v = np.asarray(values, dtype=np.float64)
    if t.shape[0] % v.size or np.ptp(t, axis=1).max() > 0:
        return False
    return np.allclose(t[:, 0].reshape(-1, v.size), v, rtol=1e-12, atol=0)


def _subset(rec: Recording, path: Path, names, record_neurons, every: int) -> Recording:
    missing = [nm for nm in names if nm not in rec.traces]
    if missing:
        raise RecordingError(f"{path} has no trace {missing} (it has {sorted(rec.traces) or 'none'}); record "
                             f"the experiment again with record={list(names)}.")
    if every % rec.trace_every:
        raise RecordingError(f"{path} has traces every {rec.trace_every} steps; record_every = {every} is not "
                             f"a multiple of it.")
    want = select_neurons(record_neurons, rec.n_neurons) if names else np.zeros(0, np.int64)
    cols = {int(k): i for i, k in enumerate(rec.trace_neurons)}
    if any(int(k) not in cols for k in want):
        raise RecordingError(f"{path} traces neurons {rec.trace_neurons.tolist()[:20]}; neurons "
                             f"{[int(k) for k in want if int(k) not in cols][:20]} were not recorded.")
    step = every // rec.trace_every
    pick = [cols[int(k)] for k in want]
    rec.traces = {nm: rec.traces[nm][::step][:, :, pick] for nm in names}
    rec.trace_neurons, rec.trace_every = want, every if names else rec.trace_every
    rec.metadata["replayed_from"] = {"path": str(path), "backend": rec.backend}
    rec.backend = "replay"
    return rec
