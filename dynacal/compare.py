"""The seed experiment and the comparison of backends on it (``dynacal compare``).

The seed notebook of the project ran one Dynap-SE1 neuron (Core_1, ``Isoma_th`` = 2000 pA,
``Isoma_pfb_th`` = 1000 pA) driven by four Poisson inputs at 80 Hz, one per synapse type
(weights NMDA 10, AMPA 5, GABA_A 1, GABA_B 2), for 100 ms at dt = 100 us, once in the
Brian2 DynapSE simulator and once in PyTorch, and overlaid the currents. This module builds
that experiment (:func:`seed_experiment`, or :func:`experiment_from_npz` for a recorded
input raster), runs it on several backends (:func:`compare`) and measures how far apart
they are (:func:`agreement`):

- ``max_rel_diff``: the largest ``|a - b| / max(|a|, |b|)`` over all steps (0 where both
  are 0);
- ``rms_log10_diff``: the RMS of ``log10(a) - log10(b)`` over all steps, in decades,
  with currents floored at ``LOG_FLOOR`` = 1e-18 A (the initial ``Isoma_ahp`` is 0);
- the verdict is *agree* when the spike steps are identical and every trace is within
  the tolerance of the lower precision of the two runs (``TOLERANCE``: 1e-9 relative
  in float64, 1e-5 in float32).

Library code here logs and never prints; the CLI prints.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ._files import atomic_write
from .backends.registry import get_backend
from .chip import Chip
from .errors import ParameterError, unknown_name
from .experiment import Experiment
from .inputfile import NPZ_KEYS, read_inputs
from .params import STATE_NAMES, SYNAPSE_TYPES
from .recording import Recording
from .stimulus import Stimulus, poisson

__all__ = ["DEFAULT_WEIGHTS", "TOLERANCE", "LOG_FLOOR", "BackendRun", "seed_network",
           "seed_experiment", "experiment_from_npz", "NPZ_KEYS", "compare", "agreement",
           "precision", "file_stem", "save_results"]

log = logging.getLogger(__name__)

#: Integer weights of the seed notebook, per synapse type.
DEFAULT_WEIGHTS: dict[str, int] = {"nmda": 10, "ampa": 5, "gaba_a": 1, "gaba_b": 2}
#: Largest relative trace difference still counted as agreement, per precision.
TOLERANCE: dict[str, float] = {"float64": 1e-9, "float32": 1e-5}
#: Floor (A) applied before taking log10 of a current for ``rms_log10_diff``.
LOG_FLOOR = 1e-18


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
    """

    label: str
    recording: Recording
    wall_s: float
    first_wall_s: float
    deterministic: bool = True


def _check_weights(weights: Mapping[str, Any] | None) -> dict[str, int]:
    merged = dict(DEFAULT_WEIGHTS)
    for name, value in (weights or {}).items():
        key = str(name).lower()
        if key not in SYNAPSE_TYPES:
            raise unknown_name("synapse type", str(name), SYNAPSE_TYPES)
        v = float(value)
        if not math.isfinite(v) or v < 0 or v != round(v):
            raise ParameterError(f"weight {key} = {value!r} must be a non-negative integer (a count of "
                                 f"CAM entries, dimensionless), e.g. {key}={DEFAULT_WEIGHTS[key]}.")
        merged[key] = int(v)
    return merged


def seed_network(weights: Mapping[str, Any] | None = None, Isoma_const: float | str | None = None):
    """The seed network: 1 neuron on Core_1, four input sources, one per synapse type.

    Args:
        weights: synapse type -> integer weight; missing types take ``DEFAULT_WEIGHTS``.
        Isoma_const: constant injected current in A (or a string such as ``"50 pA"``);
            None keeps the default of the parameter table.

    Returns:
        A :class:`~dynacal.chip.Network` whose inputs 0..3 are nmda, ampa, gaba_a, gaba_b.
    """
    w = _check_weights(weights)
    chip = Chip()
    neuron = chip.get_neurons(1, "Core_1")
    sources = chip.add_inputs(len(SYNAPSE_TYPES))
    for k, syn_type in enumerate(SYNAPSE_TYPES):
        synapses = chip.add_connection(sources[k], neuron, synapse_type=syn_type.upper())
        chip.connect(synapses, True)
        synapses.weight = w[syn_type]
    biases: dict[str, Any] = {"Isoma_th": "2000 pA", "Isoma_pfb_th": "1000 pA"}
    if Isoma_const is not None:
        biases["Isoma_const"] = Isoma_const
    chip.set_bias(biases, "Core_1")
    return chip.network()


def seed_experiment(seed: int = 0, duration: float = 0.1, rate: float = 80.0,
                    weights: Mapping[str, Any] | None = None, dt: float = 1e-4,
                    Isoma_const: float | str | None = None) -> Experiment:
    """The seed notebook's experiment: four seeded Poisson inputs into one neuron.

    Args:
        seed: seed of the Poisson generator (same seed, same input).
        duration: length in s (rounded to whole steps).
        rate: rate of each input in Hz.
        weights: synapse type -> integer weight (default nmda 10, ampa 5, gaba_a 1, gaba_b 2).
        dt: time step in s.
        Isoma_const: constant injected current in A; None keeps the default (1 pA).

    Raises:
        ParameterError: a duration, rate, weight or dt that is not plausible.
    """
    if not (math.isfinite(duration) and duration > 0):
        raise ParameterError(f"duration = {duration!r} s must be a positive number of seconds, e.g. 0.1.")
    n_steps = int(round(duration / dt))
    if n_steps < 1:
        raise ParameterError(f"duration = {duration:g} s is shorter than one step of dt = {dt:g} s.")
    network = seed_network(weights, Isoma_const)
    stimulus = poisson(len(SYNAPSE_TYPES), rate, n_steps, dt, seed=seed)
    return Experiment(network, stimulus, dt, n_steps, name=f"seed (seed={seed}, rate={rate:g} Hz)")


def experiment_from_npz(path: str | os.PathLike, weights: Mapping[str, Any] | None = None) -> Experiment:
    """The seed network driven by a recorded input raster (format: :mod:`dynacal.inputfile`).

    Args:
        path: the ``.npz`` file: ``input_spikes`` uint8 (4, T) with rows nmda, ampa,
            gaba_a, gaba_b; ``dt`` in s; optional ``weights`` (4,) and ``Isoma_const`` in A.
        weights: synapse type -> integer weight, for a file without ``weights``.

    Raises:
        ParameterError: the file is invalid (the message names the key and the fix), or
            it has weights and ``weights`` was given too.
    """
    f = read_inputs(path)
    if f.weights is not None:
        if weights is not None:
            raise ParameterError(f"{path} has weights {f.weights} and weights were given too (--weights); "
                                 f"keep one of them.")
        weights = dict(zip(SYNAPSE_TYPES, f.weights))
    network = seed_network(weights, f.Isoma_const)
    return Experiment(network, Stimulus.from_dense(f.raster), f.dt, f.raster.shape[1],
                      name=f"inputs from {Path(path).name}")


def _make_backend(spec: Any, dtype: str, device: str, substeps: int = 1, calibration=None):
    if isinstance(spec, str) and spec.partition(":")[0] == "torch":
        chip = {} if calibration is None else {"calibration": calibration}
        return get_backend(spec, dtype=dtype, device=device, substeps=substeps, **chip)
    return get_backend(spec)  # the reference backends run in float64 on the CPU


def compare(backends: Sequence[Any], experiment: Experiment, dtype: str = "float64",
            device: str = "cpu", *,
            warm: bool = True, substeps: int = 1, calibration=None,
            progress: Callable[[str, BackendRun | None], None] | None = None) -> dict[str, BackendRun]:
    """Run ``experiment`` on each backend, recording every state trace.

    Args:
        backends: names (``"torch"``, ``"brian2"``, ``"brian2:cpp_standalone"``) or
            backend objects. ``dtype`` and ``device`` apply to the torch simulator; the
            Brian2 reference runs in float64 on the CPU.
        experiment: what to run (e.g. :func:`seed_experiment`).
        dtype: ``"float64"`` or ``"float32"``.
        device: ``"cpu"`` or ``"cuda"``.
        warm: run each backend twice and time both: the first run includes code
            generation and JIT, the second is the warm speed; the two must be identical.
        substeps: Euler sub-steps per step of the torch simulator (1 is Brian2-exact;
            more where a stability warning asks for them).
        calibration: the torch simulator runs as this chip (``TorchBackend(calibration=)``:
            a ChipLayers or a calibration file); the other backends are what they are.
        progress: called with ``(label, None)`` before each backend and ``(label, run)``
            after it (the CLI prints from it).

    Returns:
        label -> :class:`BackendRun`, in the order given.
    """
    if dtype not in TOLERANCE:
        raise ParameterError(f"dtype {dtype!r} is not supported; use 'float64' or 'float32'.")
    resolved = {}  # every backend is resolved before any runs: a missing one fails fast
    for spec in backends:
        backend = _make_backend(spec, dtype, device, substeps, calibration)
        label = spec if isinstance(spec, str) else backend.name
        if label in resolved:
            raise ParameterError(f"backend {label!r} is listed twice; list each backend once.")
        resolved[label] = backend
    runs: dict[str, BackendRun] = {}
    for label, backend in resolved.items():
        log.info("running %s on %s", label, experiment.name or "the experiment")
        if progress:
            progress(label, None)
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


def save_results(runs: Mapping[str, BackendRun], agreements: Sequence[dict], out: str | os.PathLike,
                 info: Mapping[str, Any] | None = None) -> list[Path]:
    """Write each run's Recording (``<label>.h5``), its plain NumPy archive
    (``<label>.npz``: one float64 (T,) array per trace in A, trace[k] = state at the start
    of step k, and int64 ``spike_steps``) and ``metrics.json``, all atomically.

    Args:
        runs: from :func:`compare`. agreements: from :func:`agreement`.
        out: output folder (created). info: more JSON-able facts for ``metrics.json``.

    Returns:
        The paths written.
    """
    out = Path(out)
    written = []
    backends = {}
    for label, run in runs.items():
        stem = file_stem(label)
        written.append(run.recording.save(out / f"{stem}.h5"))
        arrays = _npz_arrays(run.recording)
        written.append(atomic_write(out / f"{stem}.npz", lambda fh, a=arrays: np.savez(fh, **a)))
        backends[label] = {"wall_time_s": run.wall_s, "first_run_wall_time_s": run.first_wall_s,
                           "deterministic": run.deterministic, "n_spikes": int(run.recording.spike_step.size),
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
    written.append(atomic_write(out / "metrics.json", lambda fh: fh.write(text.encode())))
    return written


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
