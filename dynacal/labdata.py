"""Lab data in: recordings built from spike event arrays measured elsewhere.

:func:`from_events` (``Recording.from_events``) turns output spikes given as event arrays
(a Brian2 ``SpikeMonitor``'s ``i`` and ``t``, a board's event list, another simulator's
output) and optional traces into a :class:`~dynacal.recording.Recording` of a given
:class:`~dynacal.experiment.Experiment`. Times in s are rounded to steps by the board
backend's rule (:func:`dynacal.recording.time_to_step`). Every bad field is a
:class:`~dynacal.errors.RecordingError` that names it and says how to fix it.

**The plain format** read by ``dynacal import FILE --out DIR`` (:func:`read_plain`,
:func:`import_file`) is one ``.npz`` file (``numpy.savez``) holding event arrays and, as
the string entry ``experiment``, a JSON description of the experiment (one file, so the
arrays never part from their description)::

    experiment    str, JSON (below)
    input_source  int (K_in,)  the input source of each input spike (0..n_inputs-1)
    input_time    float (K_in,) its time in s   -- or input_step, int (K_in,)
    spike_neuron  int (K,)     the spiking neuron: index into the neurons below
    spike_time    float (K,)   its time in s    -- or spike_step, int (K,)
    spike_set     int (K,)     optional: the set (condition) of each spike (default 0)
    trace_<state> float (n_sets, R, T) in A, e.g. trace_Isoma_mem; (R, T) when n_sets = 1
    trace_neurons int (R,)     the neurons of the traces (default: all)

    JSON: {"name": "seed", "dt": "100 us", "n_steps": 1000 (or "duration": "100 ms"),
           "n_chips": 1, "enforce_limits": true,
           "neurons": {"Core_1": 1}  (a count per core)  or  [[chip, core, id], ...],
           "n_inputs": 4,
           "input_connections": [{"source": 0, "target": 0, "synapse": "NMDA", "weight": 10}, ...],
           "connections": [{"source": 0, "target": 1, "synapse": "AMPA", "weight": 2}, ...],
           "biases": {"Core_1": {"Isoma_th": "2 nA", "Isoma_pfb_th": 1e-9}},
           "neuron_values": {"Isoma_th": ["2 nA", null, ...]} (one per neuron, null = unset),
           "dc": "50 pA" or one value per neuron,
           "conditions": {"Isoma_const": ["50 pA", "100 pA"]},
           "backend": "brian2-dynapse" (where the data came from)}

Values are SI numbers or strings with units. Only ``dt``, ``n_steps``/``duration`` and
``neurons`` are required. The network is built through :class:`~dynacal.chip.Chip`, so the
chip's limits (256 neurons a core, 64 CAM entries a neuron) are checked.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import zipfile
from pathlib import Path
from typing import Any, Mapping
import numpy as np
import torch

from .errors import DynacalError, RecordingError
from .params import PARAMETERS, STATE_NAMES
from .recording import Recording, time_to_step
from .units import format_quantity, parse_quantity

__all__ = ["from_events", "si_values", "read_plain", "experiment_from_description", "network_from_description",
           "import_file"]

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
                             f"drop the events of other {name}s or fix their numbering.")


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



# --- the plain format ------------------------------------------------------------------------

_ARRAYS = ("experiment", "input_source", "input_time", "input_step", "spike_neuron", "spike_time",
           "spike_step", "spike_set", "trace_neurons")


@contextlib.contextmanager
def _field(where: str, name: str):
    """Re-raise any dynacal error as a RecordingError naming the file and field."""
    try:
        yield
    except DynacalError as exc:
        raise RecordingError(f"{where}: {name}: {exc}") from exc
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        raise RecordingError(f"{where}: {name} is malformed ({type(exc).__name__}: {exc}); see the format in "
                             f"the README (Importing lab data).") from exc


def read_plain(path: str | os.PathLike) -> Recording:
    """Read a plain ``.npz`` file (module docstring) into a Recording with its experiment.

    Raises:
        RecordingError: the file is missing, not an npz, or a field is bad (named).
    """
    where = str(path)
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except FileNotFoundError as exc:
        raise RecordingError(f"{where} does not exist; give the .npz file to import.") from exc
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RecordingError(f"{where} is not a readable .npz file ({exc}); write it with numpy.savez.") from exc
    unknown = [k for k in arrays if k not in _ARRAYS and not k.startswith("trace_")]
    if unknown:
        raise RecordingError(f"{where}: unknown entries {unknown}; valid: {', '.join(_ARRAYS)}, trace_<state>.")
    if "experiment" not in arrays:
        raise RecordingError(f"{where}: no 'experiment' entry; add the JSON description as a string: "
                             f"np.savez(path, experiment=json.dumps(description), ...).")
    with _field(where, "experiment"):
        desc = json.loads(str(arrays["experiment"]))
        if not isinstance(desc, dict):
            raise RecordingError("the JSON description must be an object {...}.")
    exp = experiment_from_description(desc, arrays, where, default_name=Path(path).stem)
    traces = {k[len("trace_"):]: arrays[k] for k in arrays if k.startswith("trace_") and k != "trace_neurons"}
    n_sets = exp.n_conditions
    traces = {k: v[None] if np.ndim(v) == 2 and n_sets == 1 else v for k, v in traces.items()}
    if "spike_neuron" not in arrays:
        raise RecordingError(f"{where}: no 'spike_neuron' entry; give the output spikes as spike_neuron with "
                             f"spike_time (s) or spike_step (empty arrays for a silent run).")
    with _field(where, "spikes"):
        return from_events(exp, neuron=arrays["spike_neuron"], step=arrays.get("spike_step"),
                           time=arrays.get("spike_time"), batch=arrays.get("spike_set"), n_sets=n_sets,
                           traces=traces, trace_neurons=arrays.get("trace_neurons"),
                           backend=str(desc.get("backend", "imported")),
                           metadata={"imported_from": where})


def experiment_from_description(desc: Mapping[str, Any], arrays: Mapping[str, np.ndarray], where: str = "<description>",
                                default_name: str = ""):
    """Build the Experiment of a plain file through the Chip API (so chip limits are checked).

    Args:
        desc: the JSON description (module docstring).
        arrays: the file's arrays (``input_source``, ``input_time`` or ``input_step``).
        where: the file, for messages.
        default_name: the name when ``desc`` has none.

    Raises:
        RecordingError: a missing or bad field, named.
    """
    from .experiment import Experiment
    from .stimulus import Stimulus

    missing = [k for k in ("dt", "neurons") if k not in desc] + ([] if {"n_steps", "duration"} & set(desc)
                                                                  else ["n_steps (or duration)"])
    if missing:
        raise RecordingError(f"{where}: the experiment description lacks {missing}; see the format in the README.")
    with _field(where, "dt"):
        dt = float(si_values("dt", desc["dt"], "s"))
    with _field(where, "n_steps" if "n_steps" in desc else "duration"):
        n_steps = (int(desc["n_steps"]) if "n_steps" in desc
                   else int(round(float(si_values("duration", desc["duration"], "s")) / dt)))
    network = network_from_description(desc, where)
    with _field(where, "dc"):
        dc = _dc(desc, network.n_neurons)
    with _field(where, "input events"):
        stimulus = Stimulus(network.n_inputs, *_input_events(arrays, dt, n_steps), dc=dc)
    with _field(where, "experiment"):
        exp = Experiment(network, stimulus, dt, n_steps, str(desc.get("name", default_name)))
    with _field(where, "conditions"):
        return _with_conditions(exp, desc.get("conditions"))


def network_from_description(desc: Mapping[str, Any], where: str = "<description>"):
    """The Network of a plain file's description, built through :class:`~dynacal.chip.Chip`.

    Raises:
        RecordingError: a bad field (named), or a network over the chip's limits.
    """
    from .chip import Chip

    with _field(where, "n_chips"):
        chip = Chip(int(desc.get("n_chips", 1)), enforce_limits=bool(desc.get("enforce_limits", True)))
    with _field(where, "neurons"):
        group, ids = _neurons(chip, desc["neurons"])
    with _field(where, "n_inputs"):
        inputs = chip.add_inputs(int(desc.get("n_inputs", 0)))
    for key, source in (("input_connections", inputs), ("connections", group)):
        with _field(where, key):
            _connect(chip, source, group, desc.get(key, []))
    with _field(where, "biases"):
        for core, biases in dict(desc.get("biases", {})).items():
            chip.set_bias({k: float(si_values(k, v, _unit(k))) for k, v in dict(biases).items()}, core)
    with _field(where, "neuron_values"):
        for name, values in dict(desc.get("neuron_values", {})).items():
            if len(values) != len(group):
                raise RecordingError(f"{name} has {len(values)} values for {len(group)} neurons.")
            for k, v in enumerate(values):
                if v is not None:
                    group[k].set_states({name: float(si_values(name, v, _unit(name)))})
    with _field(where, "network (chip limits)"):
        network = chip.network()
        return network if ids is None else dataclasses.replace(network, neuron_id=ids)


def _unit(name: str) -> str:
    if name not in PARAMETERS:
        from .errors import unknown_name
        raise unknown_name("parameter", name, PARAMETERS)
    return PARAMETERS[name].unit


def _neurons(chip, spec):
    """Allocate neurons: {"Core_k": count} or [[chip, core, id], ...] (ids kept)."""
    from .chip import CORES_PER_CHIP, NEURONS_PER_CORE, NeuronGroup
    if isinstance(spec, Mapping):
        parts = [chip.get_neurons(int(count), core) for core, count in spec.items()]
        ids = None
    else:
        triples = np.asarray(spec, dtype=np.int64).reshape(-1, 3)
        parts = [chip.get_neurons(1, (int(c), int(k))) for c, k, _ in triples]
        ids = triples[:, 2]
        if ids.min(initial=0) < 0 or ids.max(initial=0) >= NEURONS_PER_CORE:
            raise RecordingError(f"a neuron id is outside 0..{NEURONS_PER_CORE - 1}.")
        keys = (triples[:, 0] * CORES_PER_CHIP + triples[:, 1]) * NEURONS_PER_CORE + ids
        if np.unique(keys).size != keys.size:
            raise RecordingError("a (chip, core, id) is listed twice; list each neuron once.")
    indices = np.concatenate([p.indices for p in parts]) if parts else np.zeros(0, np.int64)
    return NeuronGroup(chip, indices, -1), ids


def _connect(chip, source, target, conns) -> None:
    """One pathway per synapse type, connected with explicit (source, target) pairs."""
    by_type: dict[str, list] = {}
    for c in conns:
        by_type.setdefault(str(c["synapse"]).upper(), []).append(c)
    for syn_type, items in by_type.items():
        syn = chip.add_connection(source, target, synapse_type=syn_type)
        chip.connect(syn, i=[int(c["source"]) for c in items], j=[int(c["target"]) for c in items])
        syn.weight = [c.get("weight", 1) for c in items]


def _input_events(arrays, dt: float, n_steps: int):
    src = arrays.get("input_source", np.zeros(0, np.int64))
    if "input_time" in arrays and "input_step" in arrays:
        raise RecordingError("give input_time (s) or input_step, not both.")
    if "input_time" in arrays:
        steps = time_to_step(arrays["input_time"], dt)
    else:
        steps = _ints("input_step", arrays.get("input_step", np.zeros(0, np.int64)))
    src = _ints("input_source", src)
    if src.size != steps.size:
        raise RecordingError(f"input_source has {src.size} events but the input times {steps.size}.")
    if steps.size and (steps.min() < 0 or steps.max() >= n_steps):
        raise RecordingError(f"an input spike at step {int(steps.max() if steps.max() >= n_steps else steps.min())} "
                             f"is outside the experiment's 0..{n_steps - 1} steps; drop it or lengthen the run.")
    return steps, src


def _dc(desc, n: int):
    if desc.get("dc") is None:
        return None
    from .stimulus import Stimulus
    dc = np.array(np.broadcast_to(si_values("dc", desc["dc"], "A"), (n,)))
    Stimulus(0, dc=dc)  # checked here, so that a bad DC is reported as the field dc
    return dc


def import_file(path: str | os.PathLike, out: str | os.PathLike) -> Path:
    """Import a plain file into the target folder ``out`` (one v2 recording, ``<stem>.h5``).

    ``get_backend("replay:" + out)`` then serves it for its experiment.

    Raises:
        RecordingError: a bad file (the message names the field).
    """
    rec = read_plain(path)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return rec.save(out / f"{Path(path).stem}.h5")
