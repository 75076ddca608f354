"""An Experiment: network + stimulus + time step + duration, its conditions, and its input drive.

The experiment is what a protocol builds and what every backend runs. Its content hash
identifies it (the replay backend matches recordings by it).

**Conditions.** An experiment may list L *conditions*: values of parameters the stimulus
cannot hold (a DC level is the core bias ``IF_DC_P``, ``Isoma_const`` in the model), one
per condition, and/or L *condition stimuli*, condition l running with its own stimulus as a
separate run from the fresh state (how a board measures one input rate after another).
A backend given B candidate parameter sets runs B * L sets, set ``b * L + l`` being
candidate b under condition l (:func:`split_sets` gives (B, L, ...) back); L = 1 when the
experiment has neither.

The experiment travels with its recordings: :meth:`Experiment.to_dict` / ``from_dict``
(JSON-able) and :meth:`Experiment.save` / ``load`` (HDF5, the ``/experiment`` group of a
recording file; see ``dynacal.recording``) rebuild it with the same content hash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from ._checks import integer
from .chip import Network
from .errors import ParameterError, unknown_name
from .params import PARAMETERS, check_values, check_dt
from .stimulus import Stimulus
from .units import parse_quantity

__all__ = ["Experiment", "split_sets"]


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
    """What to run.

    Attributes:
        network: the neurons and connections.
        stimulus: input spikes (one source per input of the network) and optional DC; with
            condition stimuli, ``condition_stimuli[0]`` by convention.
        dt: time step in s.
        n_steps: number of steps; ``duration = n_steps * dt``.
        name: a label for files and reports.
        conditions: parameter name (``PARAMETERS``) -> float64 (L,) values in SI, one per
            condition and the same for every neuron, or (L, N) per neuron. They replace the
            candidates' values of those parameters (module docstring).
        condition_stimuli: empty, or L stimuli: condition l runs with ``condition_stimuli[l]``
            as a separate run from the fresh state.
        protocol: ``{"name": str, "settings": {JSON-able}}`` of the protocol that built it,
            or None. Not part of the content hash: it says how features are read, not what
            runs.

    Raises:
        ParameterError: a bad dt or n_steps, a stimulus that does not fit the network, an
            unknown or implausible condition parameter, or conditions and condition stimuli
            of different lengths.
    """

    network: Network
    stimulus: Stimulus
    dt: float
    n_steps: int
    name: str = ""
    _: dataclasses.KW_ONLY
    conditions: Mapping[str, np.ndarray] = dataclasses.field(default_factory=dict)
    condition_stimuli: tuple[Stimulus, ...] = ()
    protocol: Mapping[str, Any] | None = None

    def __post_init__(self):
        object.__setattr__(self, "dt", check_dt(self.dt))
        if not isinstance(self.network, Network):
            raise ParameterError(f"network is a {type(self.network).__name__}; give a dynacal Network "
                                 f"(chip.network()).")
        object.__setattr__(self, "n_steps", integer(self.n_steps, "n_steps", low=1, error=ParameterError,
                                                    fix="it must be a positive integer (duration / dt)"))
        if not isinstance(self.name, str):
            raise ParameterError(f"name = {self.name!r} must be a string (a label for files and reports).")
        for label, stim in (("stimulus", self.stimulus),
                            *((f"condition_stimuli[{k}]", s) for k, s in enumerate(self.condition_stimuli))):
            self._check_stimulus(label, stim)
        object.__setattr__(self, "condition_stimuli", tuple(self.condition_stimuli))
        object.__setattr__(self, "conditions", self._checked_conditions(self.conditions))
        if self.protocol is not None:
            if not isinstance(self.protocol, Mapping) or not isinstance(self.protocol.get("name"), str):
                raise ParameterError(f"protocol = {self.protocol!r} must be None or {{'name': str, "
                                     f"'settings': {{...}}}} (what Protocol.describe() gives).")
            protocol = {"name": self.protocol["name"], "settings": dict(self.protocol.get("settings") or {})}
            try:  # canonical JSON values (tuples as lists), as a file gives them back
                protocol = json.loads(json.dumps(protocol, default=_json_value))
            except TypeError as exc:
                raise ParameterError(f"protocol settings must be JSON-able (numbers, strings, lists): {exc}.") from exc
            object.__setattr__(self, "protocol", protocol)

    def _check_stimulus(self, label: str, stim: Stimulus) -> None:
        if not isinstance(stim, Stimulus):
            raise ParameterError(f"{label} is a {type(stim).__name__}; give a dynacal Stimulus.")
        if stim.n_sources != self.network.n_inputs:
            raise ParameterError(f"the {label} has {stim.n_sources} sources but the network "
                                 f"has {self.network.n_inputs} inputs; give one train per input.")
        if stim.steps.size and stim.steps[-1] >= self.n_steps:
            late = int(np.count_nonzero(stim.steps >= self.n_steps))
            raise ParameterError(f"the {label} has {late} input spikes at or after step {self.n_steps} (its last at "
                                 f"step {int(stim.steps[-1])}), which this {self.n_steps}-step experiment would "
                                 f"never deliver; build the stimulus with n_steps={self.n_steps}, or make the "
                                 f"experiment at least {int(stim.steps[-1]) + 1} steps long.")
        if stim.dc is not None and stim.dc.size != self.network.n_neurons:
            raise ParameterError(f"{label}: dc has {stim.dc.size} values for {self.network.n_neurons} neurons.")

    def _checked_conditions(self, conditions: Mapping) -> dict[str, np.ndarray]:
        out, n = {}, self.network.n_neurons
        for name in sorted(conditions):
            if name not in PARAMETERS:
                raise unknown_name("parameter in conditions", name, PARAMETERS)
            v = np.array(conditions[name], dtype=np.float64)
            if v.ndim == 0 or v.ndim > 2 or (v.ndim == 2 and v.shape[1] != n) or v.shape[0] == 0:
                raise ParameterError(f"conditions[{name!r}] has shape {v.shape}; give L values (L,) the same "
                                     f"for every neuron, or (L, {n}) one per neuron.")
            check_values(name, torch.as_tensor(v))
            v.setflags(write=False)  # part of the content hash
            out[name] = v
        lengths = {v.shape[0] for v in out.values()} | ({len(self.condition_stimuli)} if self.condition_stimuli else set())
        if len(lengths) > 1:
            sizes = {k: v.shape[0] for k, v in out.items()}
            if self.condition_stimuli:
                sizes["condition_stimuli"] = len(self.condition_stimuli)
            raise ParameterError(f"the conditions have different lengths {sizes}; give the same number L of "
                                 f"values for each parameter (and L condition stimuli).")
        if "Isoma_const" in out and any(s.dc is not None for s in (self.stimulus, *self.condition_stimuli)):
            raise ParameterError("conditions set Isoma_const and a stimulus has a DC (which also sets "
                                 "Isoma_const); give the DC levels in one place only.")
        return out

    @classmethod
    def from_duration(cls, network: Network, stimulus: Stimulus, dt: float, duration: float,
                      name: str = "", **kwargs) -> "Experiment":
        """Like the constructor, with the duration in s (rounded to whole steps)."""
        dt = check_dt(dt)
        if isinstance(duration, str):
            duration = parse_quantity(duration, "s", name="duration")
        if isinstance(duration, (bool, np.bool_)) or not isinstance(duration, numbers.Real) or not duration > 0:
            raise ParameterError(f"duration = {duration!r} must be a positive time in s (or a string such as "
                                 f"'500 ms').")
        return cls(network, stimulus, dt, int(round(duration / dt)), name, **kwargs)

    @property
    def duration(self) -> float:
        """Length in s."""
        return self.n_steps * self.dt

    @property
    def n_conditions(self) -> int:
        """L: the number of conditions (1 when the experiment has none)."""
        if self.condition_stimuli:
            return len(self.condition_stimuli)
        return next(iter(self.conditions.values())).shape[0] if self.conditions else 1

    def condition(self, l: int) -> "Experiment":
        """The single-condition experiment of condition ``l``: its stimulus, its condition
        values as (1,) / (1, N), the protocol kept. Cached (the same object each call)."""
        L = self.n_conditions
        if int(l) != l or not -L <= l < L:
            raise ParameterError(f"condition {l} does not exist; this experiment has {L} (0..{L - 1}).")
        l = int(l) % L
        cache = self.__dict__.setdefault("_condition_cache", {})  # frozen: bypass __setattr__
        if l not in cache:
            stim = self.condition_stimuli[l] if self.condition_stimuli else self.stimulus
            cache[l] = Experiment(self.network, stim, self.dt, self.n_steps, self.name,
                                  conditions={k: v[l:l + 1] for k, v in self.conditions.items()},
                                  protocol=self.protocol)
        return cache[l]

    def input_counts(self, start: int = 0, stop: int | None = None, *, dtype=torch.float64,
                     device="cpu") -> torch.Tensor:
        """Weighted input spike counts per step, synapse type and neuron, of ``stimulus``.

        Returns:
            Tensor (stop - start, 4, N): the sum of the weights of the input connections of
            each type whose source spikes in that step.
        """
        stop = self.n_steps if stop is None else stop
        net, stim = self.network, self.stimulus
        n, conns = net.n_neurons, net.inputs
        out = np.zeros((stop - start) * 4 * n, dtype=np.float64)
        lo, hi = np.searchsorted(stim.steps, [start, stop])
        steps, sources = stim.steps[lo:hi] - start, stim.sources[lo:hi]
        if steps.size and conns.pre.size:
            order = np.argsort(conns.pre, kind="stable")
            pre = conns.pre[order]
            first = np.searchsorted(pre, sources, side="left")
            count = np.searchsorted(pre, sources, side="right") - first
            ev = np.repeat(np.arange(steps.size), count)
            idx = order[np.repeat(first, count) + (np.arange(ev.size) - np.repeat(np.cumsum(count) - count, count))]
            flat = (steps[ev] * 4 + conns.syn_type[idx]) * n + conns.post[idx]
            np.add.at(out, flat, conns.weight[idx])
        return torch.as_tensor(out.reshape(stop - start, 4, n), dtype=dtype, device=device)

    def content_hash(self) -> str:
        """SHA-256 of everything that defines the experiment (not its name, not its protocol).

        Conditions and condition stimuli are hashed only when present, so an experiment
        without them keeps the hash it had before they existed. Computed once (every run's
        metadata carries it): an experiment is immutable, so do not edit its arrays in
        place; build a new one.
        """
        cached = self.__dict__.get("_content_hash")
        if cached is None:
            cached = self.__dict__["_content_hash"] = self._compute_hash()  # frozen: bypass __setattr__
        return cached

    def _compute_hash(self) -> str:
        h = hashlib.sha256()
        net, stim = self.network, self.stimulus
        _hash_arrays(h, (net.core, net.neuron_id, *net.inputs, *net.recurrent, *_stimulus_arrays(stim)))
        meta = {"n_inputs": net.n_inputs, "n_chips": net.n_chips, "dt": repr(self.dt),
                "n_steps": int(self.n_steps),
                "core_biases": {str(k): v for k, v in sorted(net.core_biases.items())},
                "neuron_values": {k: np.nan_to_num(v, nan=-1.0).tolist() for k, v in sorted(net.neuron_values.items())}}
        h.update(json.dumps(meta, sort_keys=True).encode())
        if self.conditions:
            h.update(b"conditions" + json.dumps(sorted(self.conditions)).encode())
            _hash_arrays(h, [self.conditions[k] for k in sorted(self.conditions)])
        if self.condition_stimuli:
            h.update(b"condition_stimuli" + str(len(self.condition_stimuli)).encode())
            for s in self.condition_stimuli:
                _hash_arrays(h, _stimulus_arrays(s))
        return h.hexdigest()

    def summary(self) -> dict:
        """A small JSON-able description for recording metadata."""
        out = {"name": self.name, "dt": self.dt, "n_steps": int(self.n_steps),
               "n_neurons": self.network.n_neurons, "n_inputs": self.network.n_inputs,
               "n_input_connections": int(self.network.inputs.pre.size),
               "n_recurrent_connections": int(self.network.recurrent.pre.size),
               "stimulus": self.stimulus.summary(), "hash": self.content_hash()}
        if self.n_conditions > 1 or self.conditions or self.condition_stimuli:
            out["n_conditions"] = self.n_conditions
            out["conditions"] = sorted(self.conditions)
            out["condition_stimuli"] = len(self.condition_stimuli)
        return out

    def __repr__(self) -> str:
        extra = f", L={self.n_conditions} conditions" if self.n_conditions > 1 else ""
        proto = f", protocol={self.protocol['name']!r}" if self.protocol else ""
        return (f"Experiment({self.name or '(unnamed)'!r}: {self.network.n_neurons} neurons, "
                f"{self.network.n_inputs} inputs, {self.n_steps} steps of {self.dt:g} s{extra}{proto}, "
                f"hash {self.content_hash()[:12]})")

    # --- as data ------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """Everything that defines the experiment, JSON-able (arrays as lists, NaN as None)."""
        from ._experiment_io import experiment_to_dict
        return experiment_to_dict(self)

    @classmethod
    def from_dict(cls, data: Mapping) -> "Experiment":
        """Rebuild from :meth:`to_dict` (same content hash).

        Raises:
            RecordingError: a field is missing or malformed (the message names it).
        """
        from ._experiment_io import experiment_from_dict
        return experiment_from_dict(data)

    def save(self, path: str | os.PathLike) -> Path:
        """Write to HDF5 atomically (the ``/experiment`` group of a recording file)."""
        from ._experiment_io import save_experiment
        return save_experiment(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "Experiment":
        """Read a file written by :meth:`save`, or the experiment of a v2 recording file.

        Raises:
            RecordingError: a missing or damaged file, or one that holds no experiment.
        """
        from ._experiment_io import load_experiment
        return load_experiment(path)


def _json_value(obj):
    if isinstance(obj, (np.ndarray, np.generic)):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} {obj!r} is not JSON-able")


def _stimulus_arrays(stim: Stimulus) -> tuple:
    return stim.steps, stim.sources, np.zeros(0) if stim.dc is None else stim.dc


def _hash_arrays(h, arrays) -> None:
    for arr in arrays:
        a = np.ascontiguousarray(arr)
        h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())


def split_sets(x, n_conditions: int):
    """(B * L, ...) -> (B, L, ...): the candidates and conditions of a run's sets.

    Args:
        x: a numpy array or torch tensor whose first axis is the run's B * L sets (set
            ``b * L + l`` = candidate b under condition l).
        n_conditions: L (``experiment.n_conditions``).

    Raises:
        ParameterError: the first axis is not a multiple of L.
    """
    L = int(n_conditions)
    if L < 1 or x.shape[0] % L:
        raise ParameterError(f"{x.shape[0]} parameter sets cannot be split into {n_conditions} conditions; "
                             f"a run of B candidates over L conditions has B * L sets (was it made by this "
                             f"experiment?).")
    return x.reshape(x.shape[0] // L, L, *x.shape[1:])
