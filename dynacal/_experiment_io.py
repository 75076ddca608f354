"""An Experiment as data: a JSON-able dict, and the ``/experiment`` group of an HDF5 file.

Both hold everything that defines the experiment, so that it comes back with the same
content hash: the network (neurons' core and id, chips, inputs, the input and recurrent
connections as ``(pre, post, syn_type, weight)``, core biases, per-neuron values, whether
the fan-in limit was enforced), the stimulus and condition stimuli (input events, DC),
dt, n_steps, the conditions, the protocol's name and settings, and the name.

HDF5 group layout (version 1 of the group; recording files of schema 2 and experiment files
share it)::

    /experiment/          attrs: format_version, name, dt, n_steps, protocol (JSON, "null")
        network/          attrs: n_inputs, n_chips, enforce_limits, core_biases (JSON
                          {"core": {name: SI value}}); core, neuron_id (int64, N)
            inputs/       pre, post, syn_type, weight (int64, E)
            recurrent/    pre, post, syn_type, weight (int64, E)
            neuron_values/  one float64 (N,) dataset per parameter (NaN = unset)
        stimulus/         attrs: n_sources; steps, sources (int64, K); dc (float64, N), if any
        condition_stimuli/  attrs: count; "0", "1", ...: one group per condition, as stimulus/
        conditions/       one float64 dataset (L,) or (L, N) per parameter, in SI
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from .files import atomic_hdf5, open_hdf5
from .chip import Connections, Network
from .errors import DynacalError, RecordingError
from .stimulus import Stimulus

__all__ = ["experiment_to_dict", "experiment_from_dict", "write_group", "read_group",
           "save_experiment", "load_experiment", "GROUP_VERSION"]

GROUP_VERSION = 1
_CONN = Connections._fields


def _floats(a: np.ndarray) -> list:
    """float64 array -> nested lists with NaN as None (JSON has no NaN)."""
    return np.where(np.isnan(a), None, a.astype(object)).tolist() if a.size else a.tolist()


def _array(value, dtype, field: str) -> np.ndarray:
    """A list from :func:`experiment_to_dict` as an array; None (NaN in JSON) back to NaN."""
    if dtype == np.float64 and isinstance(value, list) and any(v is None for v in value):
        value = [np.nan if v is None else v for v in value]
    try:
        return np.asarray(value, dtype=dtype)
    except (TypeError, ValueError) as exc:
        raise RecordingError(f"experiment field {field!r} is not a {np.dtype(dtype).name} array: {exc}.") from exc


def _stimulus_dict(s: Stimulus) -> dict:
    return {"n_sources": int(s.n_sources), "steps": s.steps.tolist(), "sources": s.sources.tolist(),
            "dc": None if s.dc is None else s.dc.tolist()}


def _stimulus_from(d: Mapping, field: str) -> Stimulus:
    dc = d.get("dc")
    return Stimulus(int(d["n_sources"]), _array(d["steps"], np.int64, f"{field}.steps"),
                    _array(d["sources"], np.int64, f"{field}.sources"),
                    None if dc is None else _array(dc, np.float64, f"{field}.dc"))


def experiment_to_dict(e) -> dict:
    """``Experiment.to_dict``: everything that defines ``e``, JSON-able."""
    net = e.network
    return {
        "format": "dynacal.experiment", "format_version": GROUP_VERSION,
        "name": e.name, "dt": e.dt, "n_steps": int(e.n_steps),
        "network": {"core": net.core.tolist(), "neuron_id": net.neuron_id.tolist(),
                    "n_inputs": int(net.n_inputs), "n_chips": int(net.n_chips),
                    "enforce_limits": bool(net.enforce_limits),
                    "inputs": {k: getattr(net.inputs, k).tolist() for k in _CONN},
                    "recurrent": {k: getattr(net.recurrent, k).tolist() for k in _CONN},
                    "core_biases": _core_biases(net),
                    "neuron_values": {k: _floats(np.asarray(v, np.float64)) for k, v in net.neuron_values.items()}},
        "stimulus": _stimulus_dict(e.stimulus),
        "condition_stimuli": [_stimulus_dict(s) for s in e.condition_stimuli],
        "conditions": {k: v.tolist() for k, v in e.conditions.items()},
        "protocol": e.protocol,
    }


def _core_biases(net: Network) -> dict:
    return {str(int(k)): {name: float(v) for name, v in biases.items()} for k, biases in net.core_biases.items()}


def _network(core, neuron_id, n_inputs, inputs, recurrent, core_biases, neuron_values, n_chips, enforce) -> Network:
    return Network(core, neuron_id, int(n_inputs), Connections(*inputs), Connections(*recurrent),
                   core_biases={int(k): {n: float(v) for n, v in b.items()} for k, b in core_biases.items()},
                   neuron_values=neuron_values, n_chips=int(n_chips), enforce_limits=bool(enforce))


def experiment_from_dict(d: Mapping):
    """``Experiment.from_dict``; a missing or malformed field is a RecordingError naming it."""
    from .experiment import Experiment
    field = "?"
    try:
        field = "network"
        n = d["network"]
        conns = [[_array(n[part][k], np.int64, f"network.{part}.{k}") for k in _CONN] for part in ("inputs", "recurrent")]
        net = _network(_array(n["core"], np.int64, "network.core"), _array(n["neuron_id"], np.int64, "network.neuron_id"),
                       n["n_inputs"], conns[0], conns[1], n.get("core_biases", {}),
                       {k: _array(v, np.float64, f"network.neuron_values.{k}") for k, v in n.get("neuron_values", {}).items()},
                       n.get("n_chips", 1), n.get("enforce_limits", True))
        field = "stimulus"
        stim = _stimulus_from(d["stimulus"], "stimulus")
        field = "condition_stimuli"
        cstims = tuple(_stimulus_from(s, f"condition_stimuli[{k}]") for k, s in enumerate(d.get("condition_stimuli", ())))
        field = "conditions"
        conditions = {k: _array(v, np.float64, f"conditions.{k}") for k, v in d.get("conditions", {}).items()}
        field = "dt, n_steps, name or protocol"
        return Experiment(net, stim, float(d["dt"]), int(d["n_steps"]), str(d.get("name", "")),
                          conditions=conditions, condition_stimuli=cstims, protocol=d.get("protocol"))
    except KeyError as exc:
        raise RecordingError(f"the experiment description has no field {exc} (in {field!r}); it was not written "
                             f"by Experiment.to_dict, or is damaged.") from exc
    except (DynacalError, TypeError, ValueError, AttributeError, IndexError, OverflowError) as exc:
        if isinstance(exc, RecordingError):
            raise
        raise RecordingError(f"the experiment description is invalid in {field!r}: {exc}") from exc


# --- HDF5 --------------------------------------------------------------------------------

def _dataset(g, name: str, data) -> None:
    data = np.asarray(data)
    g.create_dataset(name, data=data, **({"compression": "gzip"} if data.size > 256 else {}))


def _write_stimulus(g, s: Stimulus) -> None:
    g.attrs["n_sources"] = int(s.n_sources)
    _dataset(g, "steps", s.steps)
    _dataset(g, "sources", s.sources)
    if s.dc is not None:
        _dataset(g, "dc", s.dc)


def _read_stimulus(g) -> Stimulus:
    return Stimulus(int(g.attrs["n_sources"]), g["steps"][()], g["sources"][()], g["dc"][()] if "dc" in g else None)


def write_group(parent, e, name: str = "experiment") -> None:
    """Write ``e`` as the group ``name`` of an open h5py File or Group."""
    g = parent.create_group(name)
    g.attrs.update({"format_version": GROUP_VERSION, "name": e.name, "dt": e.dt, "n_steps": int(e.n_steps),
                    "protocol": json.dumps(e.protocol)})
    net, gn = e.network, g.create_group("network")
    gn.attrs.update({"n_inputs": int(net.n_inputs), "n_chips": int(net.n_chips),
                     "enforce_limits": bool(net.enforce_limits), "core_biases": json.dumps(_core_biases(net))})
    _dataset(gn, "core", net.core)
    _dataset(gn, "neuron_id", net.neuron_id)
    for part in ("inputs", "recurrent"):
        gc = gn.create_group(part)
        for k in _CONN:
            _dataset(gc, k, np.asarray(getattr(getattr(net, part), k), dtype=np.int64))
    gv = gn.create_group("neuron_values")
    for k, v in net.neuron_values.items():
        _dataset(gv, k, np.asarray(v, dtype=np.float64))
    _write_stimulus(g.create_group("stimulus"), e.stimulus)
    gs = g.create_group("condition_stimuli")
    gs.attrs["count"] = len(e.condition_stimuli)
    for k, s in enumerate(e.condition_stimuli):
        _write_stimulus(gs.create_group(str(k)), s)
    gcond = g.create_group("conditions")
    for k, v in e.conditions.items():
        _dataset(gcond, k, v)


def read_group(g, where: str = "the file"):
    """Rebuild the Experiment of a group written by :func:`write_group`.

    Raises:
        RecordingError: a missing or malformed field (the message names it).
    """
    from .experiment import Experiment
    try:
        version = int(g.attrs["format_version"])
        if version != GROUP_VERSION:
            raise RecordingError(f"{where}: its experiment has format version {version}; this dynacal reads "
                                 f"version {GROUP_VERSION}. Upgrade dynacal.")
        gn = g["network"]
        conns = [[gn[part][k][()] for k in _CONN] for part in ("inputs", "recurrent")]
        net = _network(gn["core"][()], gn["neuron_id"][()], gn.attrs["n_inputs"], conns[0], conns[1],
                       json.loads(gn.attrs["core_biases"]), {k: ds[()] for k, ds in gn["neuron_values"].items()},
                       gn.attrs["n_chips"], gn.attrs["enforce_limits"])
        gs = g["condition_stimuli"]
        cstims = tuple(_read_stimulus(gs[str(k)]) for k in range(int(gs.attrs["count"])))
        return Experiment(net, _read_stimulus(g["stimulus"]), float(g.attrs["dt"]), int(g.attrs["n_steps"]),
                          str(g.attrs["name"]), conditions={k: ds[()] for k, ds in g["conditions"].items()},
                          condition_stimuli=cstims, protocol=json.loads(g.attrs["protocol"]))
    except KeyError as exc:
        raise RecordingError(f"{where}: its experiment group is damaged (missing {exc}). Re-record it or "
                             f"restore it from a copy.") from exc
    except DynacalError as exc:
        if isinstance(exc, RecordingError):
            raise
        raise RecordingError(f"{where}: its experiment is invalid: {exc}") from exc
    except Exception as exc:  # a damaged group fails inside h5py, numpy or json in many ways
        raise RecordingError(f"{where}: its experiment group is damaged ({type(exc).__name__}: {exc}). "
                             f"Re-record it or restore it from a copy.") from exc


def save_experiment(e, path: str | os.PathLike) -> Path:
    """``Experiment.save``: a file with the recording schema's root attributes and
    ``/experiment`` only."""
    from .recording import SCHEMA_VERSION

    def fill(f):
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs["content"] = "experiment"
        write_group(f, e)
    return atomic_hdf5(path, fill)


def load_experiment(path: str | os.PathLike) -> Any:
    """``Experiment.load``: the experiment of a file from :func:`save_experiment` or of a v2 recording."""
    path = Path(path)
    f = open_hdf5(path, "experiment")
    with f:
        try:
            has_group, version = "experiment" in f, f.attrs.get("schema_version")
            if not has_group:
                v1 = version is not None and np.asarray(version).shape == () and version == 1
                hint = (" It is a version 1 recording, which does not store its experiment: re-record it with "
                        "this dynacal." if v1 else "")
                raise RecordingError(f"{str(path)!r} holds no experiment (no /experiment group).{hint}")
            group = f["experiment"]
        except RecordingError:
            raise
        except Exception as exc:  # damaged root attributes or links
            raise RecordingError(f"{str(path)!r} is damaged ({type(exc).__name__}: {exc}). Restore it from a "
                                 f"copy.") from exc
        return read_group(group, repr(str(path)))
