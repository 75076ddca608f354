"""The comparison of backends on one experiment (``dynacal compare``).

This module runs an experiment (usually the seed notebook's, :mod:`dynacal.seed`) on
several backends (:func:`compare`) and measures how far apart they are (:func:`agreement`):

- ``max_rel_diff``: the largest ``|a - b| / max(|a|, |b|)`` over all steps (0 where both
  are 0);
- ``rms_log10_diff``: the RMS of ``log10(a) - log10(b)`` over all steps, in decades,
  with currents floored at ``LOG_FLOOR`` = 1e-18 A (the initial ``Isoma_ahp`` is 0);
- the verdict is *agree* when the spike steps are identical and every trace is within
  the tolerance of the lower precision of the two runs (``TOLERANCE``: 1e-9 relative
  in float64, 1e-5 in float32).

The output folder is a :class:`~dynacal._outdir.RunFolder`: each backend's files are
written (:func:`save_run`) as soon as it finished, so an interrupted comparison keeps them,
and :func:`load_runs` reads them back to finish it (``--resume``) without running them again.

Library code here logs and never prints; the CLI prints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ._outdir import RunFolder
from .files import atomic_write
from .backends.registry import get_backend
from .errors import ParameterError
from .experiment import Experiment
from .params import STATE_NAMES
from .recording import Recording

__all__ = ["TOLERANCE", "LOG_FLOOR", "BackendRun", "resolve_backends", "compare", "agreement", "precision", "file_stem",
           "save_run", "load_runs", "save_metrics"]

log = logging.getLogger(__name__)

#: Largest relative trace difference still counted as agreement, per precision.
TOLERANCE: dict[str, float] = {"float64": 1e-9, "float32": 1e-5}
#: Floor (A) applied before taking log10 of a current for ``rms_log10_diff``.
LOG_FLOOR = 1e-18
# the key of a saved run's times in its Recording's metadata (read back on --resume)
_TIMING = "compare_timing"


@dataclasses.dataclass(frozen=True)
class BackendRun:
    """One backend's run of the experiment.

    Attributes:
        label: the backend as it was asked for (``"torch"``, ``"brian2:cpp_standalone"``).
        recording: the recording of the last run.
        wall_s: wall time in s of the last run (the warm one when it ran twice).
        first_wall_s: wall time in s of the first run in the process (it includes code
            generation, compilation and JIT); equal to ``wall_s`` when it ran once.
        deterministic: whether the runs gave identical spikes and traces (True when it ran
            once).
        reused: read back from the output folder of an interrupted run (``--resume``), not
            run again; the times are those of that run.
    """

    label: str
    recording: Recording
    wall_s: float
    first_wall_s: float
    deterministic: bool = True
    reused: bool = False


def _make_backend(spec: Any, dtype: str, device: str, substeps: int = 1):
    if isinstance(spec, str) and spec.partition(":")[0] == "torch":
        return get_backend(spec, dtype=dtype, device=device, substeps=substeps)
    return get_backend(spec)  # the reference backends run in float64 on the CPU


def resolve_backends(backends: Sequence[Any], dtype: str = "float64", device: str = "cpu",
                     substeps: int = 1) -> dict[str, Any]:
    """label -> backend object for :func:`compare`, every one resolved before any runs (a
    missing one fails fast, before an output folder is made); arguments as for :func:`compare`.

    Raises:
        ParameterError: an unsupported dtype or a backend listed twice.
        BackendUnavailable: a backend whose package is not installed.
    """
    if dtype not in TOLERANCE:
        raise ParameterError(f"dtype {dtype!r} is not supported; use 'float64' or 'float32'.")
    resolved = {}
    for spec in backends:
        backend = _make_backend(spec, dtype, device, substeps)
        label = spec if isinstance(spec, str) else backend.name
        if label in resolved:
            raise ParameterError(f"backend {label!r} is listed twice; list each backend once.")
        resolved[label] = backend
    return resolved


def compare(backends: Sequence[Any] | Mapping[str, Any], experiment: Experiment, dtype: str = "float64",
            device: str = "cpu", *,
            warm: bool = True, substeps: int = 1,
            progress: Callable[[str, BackendRun | None], None] | None = None,
            done: Mapping[str, BackendRun] | None = None,
            on_run: Callable[[BackendRun], None] | None = None) -> dict[str, BackendRun]:
    """Run ``experiment`` on each backend, recording every state trace.

    Args:
        backends: names (``"torch"``, ``"brian2"``, ``"brian2:cpp_standalone"``) or
            backend objects, or the result of :func:`resolve_backends`. ``dtype`` and ``device`` apply to the torch simulator; the
            Brian2 reference runs in float64 on the CPU.
        experiment: what to run (e.g. :func:`dynacal.seed.seed_experiment`).
        dtype: ``"float64"`` or ``"float32"``.
        device: ``"cpu"`` or ``"cuda"``.
        warm: run each backend twice and time both: the first run includes code
            generation and JIT, the second is the warm speed; the two must be identical.
        substeps: Euler sub-steps per step of the torch simulator (1 is Brian2-exact;
            more where a stability warning asks for them).
        progress: called with ``(label, None)`` before each backend and ``(label, run)``
            after it (the CLI prints from it).
        done: label -> run of backends that are not run again (:func:`load_runs`).
        on_run: called with each new run as soon as it is finished (:func:`save_run`), so
            that an interruption keeps the backends that finished.

    Returns:
        label -> :class:`BackendRun`, in the order given.
    """
    resolved = backends if isinstance(backends, Mapping) else resolve_backends(backends, dtype, device, substeps)
    runs: dict[str, BackendRun] = {}
    for label, backend in resolved.items():
        if progress:
            progress(label, None)
        if label in (done or {}):
            runs[label] = done[label]
            if progress:
                progress(label, runs[label])
            continue
        log.info("running %s on %s", label, experiment.name or "the experiment")
        walls, recs = [], []
        # a backend that measures spikes only (the board, the twin) says so: compare its spikes
        record = () if getattr(backend, "records_traces", True) is False else "all"
        if not record:
            log.info("%s records no traces (spikes only): compared on spikes", label)
        for _ in range(2 if warm else 1):
            start = time.perf_counter()
            recs.append(backend.run(experiment, None, record=record))
            walls.append(time.perf_counter() - start)
        same = len(recs) == 1 or _identical(recs[0], recs[1])
        if not same:
            log.warning("%s is not deterministic: two runs of the same experiment differ.", label)
        runs[label] = BackendRun(label, recs[-1], walls[-1], walls[0], same)
        log.info("%s took %.3f s (first run %.3f s), %d spikes", label, walls[-1], walls[0],
                 recs[-1].spike_step.size)
        if on_run:
            on_run(runs[label])
        if progress:
            progress(label, runs[label])
    return runs


def _identical(a: Recording, b: Recording) -> bool:
    return (np.array_equal(a.spike_step, b.spike_step) and np.array_equal(a.spike_neuron, b.spike_neuron)
            and a.traces.keys() == b.traces.keys()
            and all(bool((a.traces[k] == b.traces[k]).all()) for k in a.traces))


def precision(rec: Recording) -> str:
    """``"float32"`` if the recording's traces (or its metadata) are float32, else ``"float64"``."""
    if any(str(t.dtype).endswith("float32") for t in rec.traces.values()):
        return "float32"
    return "float32" if rec.metadata.get("dtype") == "float32" else "float64"


def agreement(rec_a: Recording, rec_b: Recording, *, labels: tuple[str, str] | None = None) -> dict:
    """How far apart two recordings of the same experiment are.

    Args:
        rec_a, rec_b: recordings with the same steps, batch and neurons.
        labels: names for the two (default: their backend names).

    Returns:
        A JSON-able dict: ``labels``; ``precision`` and ``tolerance`` (of the lower
        precision of the two); ``traces``: name -> {``max_rel_diff``, ``rms_log10_diff``}
        for every trace recorded by both; ``spike_steps``: the spike steps of each
        (lists); ``spikes_identical``; ``verdict`` (``"agree"`` or ``"disagree"``) and
        ``reason``.

    Raises:
        ParameterError: the recordings are of different experiments (steps, sizes).
    """
    labels = labels or (rec_a.backend, rec_b.backend)
    shape_a = (rec_a.n_steps, rec_a.batch, rec_a.n_neurons)
    shape_b = (rec_b.n_steps, rec_b.batch, rec_b.n_neurons)
    if shape_a != shape_b or not math.isclose(rec_a.dt, rec_b.dt, rel_tol=1e-12):
        raise ParameterError(f"{labels[0]} ran (steps, batch, neurons) = {shape_a} at dt = {rec_a.dt:g} s but "
                             f"{labels[1]} ran {shape_b} at dt = {rec_b.dt:g} s; compare runs of one experiment.")
    prec = "float32" if "float32" in (precision(rec_a), precision(rec_b)) else "float64"
    tol = TOLERANCE[prec]
    traces = {}
    for name in STATE_NAMES:
        if name in rec_a.traces and name in rec_b.traces:
            a = rec_a.traces[name].detach().cpu().double().numpy()
            b = rec_b.traces[name].detach().cpu().double().numpy()
            if a.shape != b.shape:
                raise ParameterError(f"trace {name} has shape {a.shape} in {labels[0]} but {b.shape} in "
                                     f"{labels[1]}; record the same neurons and steps in both.")
            traces[name] = {"max_rel_diff": _max_rel_diff(a, b), "rms_log10_diff": _rms_log10_diff(a, b)}
    ev_a = np.stack([rec_a.spike_step, rec_a.spike_batch, rec_a.spike_neuron])
    ev_b = np.stack([rec_b.spike_step, rec_b.spike_batch, rec_b.spike_neuron])
    identical = ev_a.shape == ev_b.shape and bool(np.array_equal(ev_a, ev_b))
    worse = {k: v["max_rel_diff"] for k, v in traces.items() if not v["max_rel_diff"] < tol}
    if not identical:
        reason = f"spike steps differ ({labels[0]}: {rec_a.spike_step.size}, {labels[1]}: {rec_b.spike_step.size} spikes)"
    elif worse:
        name = max(worse, key=lambda k: -1 if math.isnan(worse[k]) else worse[k])
        reason = (f"{name} differs by {worse[name]:.3g} relative, over the tolerance {tol:g} for {prec}"
                  + (f" ({len(worse) - 1} more traces too)" if len(worse) > 1 else ""))
    elif not traces:
        reason = "identical spike steps; no trace recorded by both"
    else:
        reason = f"identical spike steps; every trace within {tol:g} relative ({prec})"
    return {"labels": list(labels), "precision": prec, "tolerance": tol, "traces": traces,
            "spike_steps": [rec_a.spike_step.tolist(), rec_b.spike_step.tolist()],
            "spikes_identical": identical,
            "verdict": "agree" if identical and not worse else "disagree", "reason": reason}


def _max_rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    den = np.maximum(np.abs(a), np.abs(b))
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(den > 0, np.abs(a - b) / den, 0.0)
    rel = np.where(np.isnan(a) | np.isnan(b), np.nan, rel)
    return float(np.max(rel)) if rel.size else 0.0


def _rms_log10_diff(a: np.ndarray, b: np.ndarray) -> float:
    with np.errstate(invalid="ignore"):
        d = np.log10(np.maximum(a, LOG_FLOOR)) - np.log10(np.maximum(b, LOG_FLOOR))
    return float(np.sqrt(np.mean(d * d))) if d.size else 0.0


def file_stem(label: str) -> str:
    """A file name for a backend label: ``"brian2:cpp_standalone"`` -> ``"brian2_cpp_standalone"``."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _npz_arrays(rec: Recording) -> dict[str, np.ndarray]:
    if rec.batch == 1 and not rec.traces and rec.n_neurons == 1:  # spikes only (the board, the twin)
        return {"spike_steps": rec.spike_steps(neuron=0).astype(np.int64)}
    if rec.batch != 1 or rec.trace_every != 1 or rec.trace_neurons.size < 1:
        raise ParameterError(f"{rec.backend}: the plain archive holds one neuron's full traces; this "
                             f"recording has batch {rec.batch}, trace_every {rec.trace_every} and "
                             f"{rec.trace_neurons.size} traced neurons. Use the .h5 recording instead.")
    neuron = int(rec.trace_neurons[0])
    # float64 whatever the run's precision (exact for float32), as in the .h5 recording
    arrays = {name: rec.trace(name, neuron=neuron).astype(np.float64) for name in STATE_NAMES
              if name in rec.traces}
    arrays["spike_steps"] = rec.spike_steps(neuron=neuron).astype(np.int64)
    return arrays


def save_run(run: BackendRun, folder: RunFolder) -> list[Path]:
    """Write one run's Recording (``<label>.h5``, its times under ``metadata["compare"]``)
    and its plain NumPy archive (``<label>.npz``: one float64 (T,) array per trace in A,
    trace[k] = state at the start of step k, and int64 ``spike_steps``) into ``folder``,
    atomically, and list both in its manifest.

    Returns:
        The paths written.
    """
    stem = file_stem(run.label)
    timing = {"wall_time_s": run.wall_s, "first_run_wall_time_s": run.first_wall_s,
              "deterministic": run.deterministic}
    rec = dataclasses.replace(run.recording, metadata={**run.recording.metadata, _TIMING: timing})
    arrays = _npz_arrays(run.recording)  # before any write: a recording it cannot hold writes nothing
    h5 = folder.add(rec.save(folder.path / f"{stem}.h5"), part=run.label)
    npz = folder.add(atomic_write(folder.path / f"{stem}.npz", lambda fh: np.savez(fh, **arrays)), part=run.label)
    return [h5, npz]


def load_runs(folder: RunFolder, labels: Sequence[str]) -> dict[str, BackendRun]:
    """The runs of ``labels`` that an interrupted run in ``folder`` finished (both files
    intact, same options: :meth:`RunFolder.reuse`), read back as :class:`BackendRun`."""
    runs = {}
    for label in labels:
        stem = file_stem(label)
        h5, npz = folder.reuse(f"{stem}.h5"), folder.reuse(f"{stem}.npz")
        if h5 is None or npz is None:
            continue
        rec = Recording.load(h5)
        timing = rec.metadata.pop(_TIMING)
        runs[label] = BackendRun(label, rec, timing["wall_time_s"], timing["first_run_wall_time_s"],
                                 timing["deterministic"], reused=True)
    return runs


def save_metrics(runs: Mapping[str, BackendRun], agreements: Sequence[dict], folder: RunFolder,
                 info: Mapping[str, Any] | None = None) -> Path:
    """Write ``metrics.json`` (times, spikes, agreements, definitions) into ``folder``,
    atomically, and list it in its manifest.

    Args:
        runs: from :func:`compare`. agreements: from :func:`agreement`.
        info: more JSON-able facts for ``metrics.json``.
    """
    backends = {}
    for label, run in runs.items():
        stem = file_stem(label)
        backends[label] = {"wall_time_s": run.wall_s, "first_run_wall_time_s": run.first_wall_s,
                           "deterministic": run.deterministic, "reused": run.reused,
                           "n_spikes": int(run.recording.spike_step.size),
                           "spike_steps": run.recording.spike_step.tolist(), "precision": precision(run.recording),
                           "files": [f"{stem}.h5", f"{stem}.npz"], "metadata": run.recording.metadata}
    metrics = {**(info or {}), "backends": backends, "agreement": list(agreements),
               "tolerance": TOLERANCE,
               "definitions": {"max_rel_diff": "max over steps of |a - b| / max(|a|, |b|)",
                               "rms_log10_diff": f"RMS over steps of log10(a) - log10(b), currents in A "
                                                 f"floored at {LOG_FLOOR:g} A",
                               "wall_time_s": "wall time of the backend's last (warm) run",
                               "first_run_wall_time_s": "wall time of its first run in the process "
                                                        "(includes code generation, compilation and JIT)"}}
    text = json.dumps(_jsonable(metrics), indent=2, default=str) + "\n"
    return folder.add(atomic_write(folder.path / "metrics.json", lambda fh: fh.write(text.encode())))


def _jsonable(obj: Any) -> Any:
    """NaN and inf become None so that metrics.json is strict JSON."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer, np.floating)):
        return _jsonable(obj.item())
    return obj
