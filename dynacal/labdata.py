"""Lab data in: recordings built from spike event arrays measured elsewhere.

:func:`from_events` (``Recording.from_events``) turns output spikes given as event arrays
(a Brian2 ``SpikeMonitor``'s ``i`` and ``t``, a board's event list, another simulator's
output) and optional traces into a :class:`~dynacal.recording.Recording` of a given
:class:`~dynacal.experiment.Experiment`. Times in s are rounded to steps by the board
backend's rule (:func:`dynacal.recording.time_to_step`). Every bad field is a
:class:`~dynacal.errors.RecordingError` that names it and says how to fix it.

The plain file format of ``dynacal import`` is read by :mod:`dynacal.labformat`.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from .errors import DynacalError, RecordingError
from .params import PARAMETERS, STATE_NAMES
from .recording import Recording, time_to_step
from .units import format_quantity, parse_quantity

__all__ = ["from_events", "si_values"]

# A current trace above this is not in A (a DPI current is pA..uA); 1e12 too large = pA.
_MAX_TRACE_A = 1e-3
# ... and a non-zero trace entirely below this is 1e12 too small (A divided by 1e12 again).
_MIN_TRACE_A = 1e-21


def si_values(name: str, values, unit: str) -> np.ndarray:
    """Values of a field as float64 SI: numbers (SI) or strings with units ("2 nA").

    Raises:
        RecordingError: a value that is neither, naming ``name``.
    """
    flat = np.asarray(values, dtype=object)
    try:
        out = [_parse(v, unit, name) if isinstance(v, str) else float(v) for v in flat.ravel()]
    except (DynacalError, TypeError, ValueError) as exc:
        raise RecordingError(f"{name}: {exc}") from exc
    return np.asarray(out, dtype=np.float64).reshape(flat.shape)


def _parse(text: str, unit: str, name: str) -> float:
    # "100 us" parses to 100 * 1e-6 = 9.999999999999999e-05; keep the 15 digits a person
    # writes, so that the value (and the experiment's content hash) is the literal 1e-4
    return float(f"{parse_quantity(text, unit, name=name):.15g}")


def from_events(experiment, *, neuron, step=None, time=None, batch=None, n_sets: int = 1, traces=None,
                trace_neurons=None, conditions=None, backend: str = "imported", metadata=None) -> Recording:
    """A recording of ``experiment`` from output spike events and optional traces.

    Args:
        experiment: the Experiment that ran (network, stimulus, dt, n_steps).
        neuron: int (K,), the spiking neuron of each event: an index into the network.
        step: int (K,), the step of each event; or
        time: float (K,), its time in s (rounded down to its step, as the board backend does).
        batch: int (K,), the set of each event (one set per condition, as
            ``Recording.spike_batch``); None = every event in set 0.
        n_sets: number of sets; must equal the experiment's number of conditions.
        traces: state name (``Isoma_mem``, ...) -> float (n_sets, R, T) in A, ``trace[..., k]``
            the state at the start of step k, T = n_steps.
        trace_neurons: int (R,), the network indices of the traced neurons (default: all
            neurons, when R = N).
        conditions: parameter name -> L values in SI (or "50 pA" strings), one per set: what
            varies across the sets (e.g. ``{"Isoma_const": [...]}``); stored in the experiment.
        backend: the name the recording carries (where the data came from).
        metadata: extra JSON-able provenance, merged into the recording's metadata.

    Returns:
        A Recording with ``experiment`` set (with the conditions) and events sorted by step.

    Raises:
        RecordingError: a field out of range, unsorted, duplicated, past the end, or of the
            wrong unit or shape; the message names the field and the fix.
    """
    exp = _with_conditions(experiment, conditions)
    if int(n_sets) != exp.n_conditions:
        raise RecordingError(f"n_sets = {n_sets} but the experiment has {exp.n_conditions} condition(s); a target "
                             f"holds one set per condition: pass n_sets={exp.n_conditions} or conditions= with "
                             f"{n_sets} values each.")
    n_sets, n, dt, n_steps = int(n_sets), exp.network.n_neurons, exp.dt, exp.n_steps
    if (step is None) == (time is None):
        raise RecordingError("give the spike times as step= (int, steps) or as time= (float, s): exactly one of them.")
    nrn = _ints("neuron", neuron)
    if time is not None:
        t = np.asarray(time, dtype=np.float64).ravel()
        if not np.all(np.isfinite(t)):
            raise RecordingError("time holds NaN or inf; every spike time must be a finite time in s.")
        s = time_to_step(t, dt)
    else:
        s = _ints("step", step)
        t = s * dt
    b = np.zeros(nrn.size, np.int64) if batch is None else _ints("batch", batch)
    field = "time" if time is not None else "step"
    if not nrn.size == s.size == b.size:
        raise RecordingError(f"neuron has {nrn.size} events, {field} {s.size}, batch {b.size}; give one entry "
                             f"per spike in each.")
    _check_range("neuron", nrn, n, "an index into the experiment's network (0..N-1)")
    _check_range("batch", b, n_sets, "the set (condition) of the event, 0..n_sets-1")
    _check_times(field, s, t, n_steps, dt)
    _check_order(field, b, nrn, s, t, dt)
    tr, tn = _traces(traces, trace_neurons, n_sets, n, n_steps)
    meta = {"experiment": exp.summary(), "imported": {"n_spikes": int(s.size), "given_as": field},
            **dict(metadata or {})}
    kw = dict(traces=tr, trace_neurons=tn, metadata=meta, experiment=exp)
    if time is not None:
        return Recording.from_times(backend, dt, n_steps, n_sets, n, b, nrn, t, **kw)
    return Recording.from_steps(backend, dt, n_steps, n_sets, n, b, nrn, s, **kw)


def _with_conditions(experiment, conditions):
    if not conditions:
        return experiment
    parsed = {name: si_values(f"conditions[{name!r}]", values, _unit(name))
              for name, values in conditions.items()}
    clash = [k for k in parsed if k in experiment.conditions
             and not np.array_equal(np.asarray(experiment.conditions[k]), parsed[k])]
    if clash:
        raise RecordingError(f"conditions {clash} differ from the experiment's own; give them in one place only.")
    try:
        return dataclasses.replace(experiment, conditions={**experiment.conditions, **parsed})
    except DynacalError as exc:
        raise RecordingError(f"conditions: {exc}") from exc


def _ints(name: str, values) -> np.ndarray:
    a = np.asarray(values).ravel()
    if a.size and not np.issubdtype(a.dtype, np.number):
        raise RecordingError(f"{name} holds {a.dtype} values; give integers.")
    if a.size and (not np.all(np.isfinite(a)) or np.any(a != np.round(a))):
        bad = a[~np.isfinite(a) | (a != np.round(a))][0]
        hint = " (times in s go to time=, not step=)" if name == "step" else ""
        raise RecordingError(f"{name} = {bad.item()!r} is not an integer; give whole indices{hint}.")
    return a.astype(np.int64)


def _check_range(name: str, a: np.ndarray, size: int, what: str) -> None:
    if a.size and (a.min() < 0 or a.max() >= size):
        bad = int(a.min()) if a.min() < 0 else int(a.max())
        raise RecordingError(f"{name} = {bad} is out of range: it must be {what}, here 0..{size - 1}; "
                             f"drop what belongs elsewhere (another network or set) or fix the numbering.")


def _check_times(field: str, s: np.ndarray, t: np.ndarray, n_steps: int, dt: float) -> None:
    if s.size and s.min() < 0:
        raise RecordingError(f"{field}: a spike at {format_quantity(float(t.min()), 's')} is before the start; "
                             f"times count from the start of the run (t = 0).")
    if s.size and s.max() >= n_steps:
        raise RecordingError(f"{field}: a spike at {format_quantity(float(t.max()), 's')} (step {int(s.max())}) is "
                             f"past the end of the experiment ({n_steps} steps = "
                             f"{format_quantity(n_steps * dt, 's')}); drop later events or lengthen the "
                             f"experiment (n_steps / duration).")


def _check_order(field: str, b, nrn, s, t, dt: float) -> None:
    """Events sorted by time within each set, at most one per (set, neuron, step)."""
    order = np.argsort(b, kind="stable")
    bb, tt = b[order], t[order]
    back = (np.diff(tt) < 0) & (np.diff(bb) == 0)
    if back.any():
        k = int(np.argmax(back))
        raise RecordingError(f"{field}: the events of set {int(bb[k])} are not sorted by time (a spike at "
                             f"{format_quantity(float(tt[k + 1]), 's')} follows one at "
                             f"{format_quantity(float(tt[k]), 's')}); sort them, e.g. "
                             f"order = np.lexsort((time, batch)).")
    key = np.lexsort((s, nrn, b))
    same = (np.diff(b[key]) == 0) & (np.diff(nrn[key]) == 0) & (np.diff(s[key]) == 0)
    if same.any():
        k = key[int(np.argmax(same))]
        raise RecordingError(f"{field}: neuron {int(nrn[k])} of set {int(b[k])} spikes twice in step {int(s[k])} "
                             f"(dt = {format_quantity(dt, 's')}); a neuron spikes at most once per step: drop "
                             f"the duplicated event (or record with a smaller dt).")


def _traces(traces, trace_neurons, n_sets: int, n: int, n_steps: int):
    if not traces:
        if trace_neurons is not None and np.asarray(trace_neurons).size:
            raise RecordingError("trace_neurons is given but traces is empty; pass traces={name: array} too.")
        return {}, np.zeros(0, np.int64)
    if trace_neurons is None:
        first = np.asarray(next(iter(traces.values())))
        if first.ndim != 3 or first.shape[1] != n:
            raise RecordingError(f"trace_neurons is missing and the traces do not cover all {n} neurons; pass "
                                 f"trace_neurons= (the network index of each traced neuron).")
        trace_neurons = np.arange(n)
    tn = _ints("trace_neurons", trace_neurons)
    _check_range("trace_neurons", tn, n, "an index into the experiment's network (0..N-1)")
    if np.unique(tn).size != tn.size:
        raise RecordingError(f"trace_neurons {tn.tolist()[:20]} lists a neuron twice; give each traced neuron once.")
    out = {}
    for name, value in traces.items():
        if name not in STATE_NAMES:
            raise RecordingError(f"traces[{name!r}] is not a state of the model; valid: {', '.join(STATE_NAMES)}.")
        a = np.asarray(value, dtype=np.float64)
        want = (n_sets, tn.size, n_steps)
        if a.shape != want:
            raise RecordingError(f"traces[{name!r}] has shape {a.shape}; expected (n_sets, len(trace_neurons), "
                                 f"n_steps) = {want}, the state at the start of each step (a Brian2 "
                                 f"StateMonitor's {name} is (R, T): add the set axis with a[None]).")
        _check_unit(f"traces[{name!r}]", a)
        # the Recording layout is (T, B, R)
        out[name] = torch.as_tensor(np.ascontiguousarray(a.transpose(2, 0, 1)))
    return out, tn


def _check_unit(name: str, a: np.ndarray) -> None:
    if not np.all(np.isfinite(a)):
        raise RecordingError(f"{name} holds NaN or inf; every sample must be a finite current in A.")
    top = float(np.abs(a).max()) if a.size else 0.0
    if top > _MAX_TRACE_A:
        raise RecordingError(f"{name} reaches {top:g}, far above any DPI current in A: it looks like pA; give "
                             f"it in A (multiply by 1e-12, or strip Brian2 units with mon.Isoma_mem / amp).")
    if 0 < top < _MIN_TRACE_A:
        raise RecordingError(f"{name} peaks at {top:g} A, 1e12 below any DPI current: it was scaled twice; "
                             f"give it in A (multiply by 1e12).")


def _unit(name: str) -> str:
    if name not in PARAMETERS:
        from .errors import unknown_name
        raise unknown_name("parameter", name, PARAMETERS)
    return PARAMETERS[name].unit
