"""The plain lab-data format of ``dynacal import FILE --out DIR``.

The format read by ``dynacal import FILE --out DIR`` (:func:`read_plain`,
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

from .errors import DynacalError, RecordingError
from .labdata import _ints, _unit, _with_conditions, from_events, si_values
from .recording import Recording, time_to_step

__all__ = ["read_plain", "experiment_from_description", "network_from_description", "import_file"]

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
