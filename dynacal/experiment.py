"""An Experiment: network + stimulus + time step + duration, and its input drive.

The experiment is what a protocol builds and what every backend runs. Its content hash
identifies it (the replay backend matches recordings by it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json

import numpy as np
import torch

from .chip import Network
from .errors import ParameterError
from .params import _check_dt
from .stimulus import Stimulus

__all__ = ["Experiment"]


@dataclasses.dataclass(frozen=True, eq=False)
class Experiment:
    """What to run.

    Attributes:
        network: the neurons and connections.
        stimulus: input spikes (one source per input of the network) and optional DC.
        dt: time step in s.
        n_steps: number of steps; ``duration = n_steps * dt``.
        name: a label for files and reports.
    """

    network: Network
    stimulus: Stimulus
    dt: float
    n_steps: int
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "dt", _check_dt(self.dt))
        if int(self.n_steps) != self.n_steps or self.n_steps < 1:
            raise ParameterError(f"n_steps = {self.n_steps} must be a positive integer.")
        if self.stimulus.n_sources != self.network.n_inputs:
            raise ParameterError(f"the stimulus has {self.stimulus.n_sources} sources but the network "
                                 f"has {self.network.n_inputs} inputs; give one train per input.")
        if self.stimulus.dc is not None and self.stimulus.dc.size != self.network.n_neurons:
            raise ParameterError(f"dc has {self.stimulus.dc.size} values for {self.network.n_neurons} neurons.")

    @classmethod
    def from_duration(cls, network: Network, stimulus: Stimulus, dt: float, duration: float,
                      name: str = "") -> "Experiment":
        """Like the constructor, with the duration in s (rounded to whole steps)."""
        dt = _check_dt(dt)
        return cls(network, stimulus, dt, int(round(duration / dt)), name)

    @property
    def duration(self) -> float:
        """Length in s."""
        return self.n_steps * self.dt

    def input_counts(self, start: int = 0, stop: int | None = None, *, dtype=torch.float64,
                     device="cpu") -> torch.Tensor:
        """Weighted input spike counts per step, synapse type and neuron.

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
        """SHA-256 of everything that defines the experiment (not its name).

        Computed once (every run's metadata carries it): an experiment is immutable, so
        do not edit its arrays in place; build a new one.
        """
        cached = self.__dict__.get("_content_hash")
        if cached is None:
            cached = self.__dict__["_content_hash"] = self._compute_hash()  # frozen: bypass __setattr__
        return cached

    def _compute_hash(self) -> str:
        h = hashlib.sha256()
        net, stim = self.network, self.stimulus
        for arr in (net.core, net.neuron_id, *net.inputs, *net.recurrent, stim.steps, stim.sources,
                    np.zeros(0) if stim.dc is None else stim.dc):
            a = np.ascontiguousarray(arr)
            h.update(str(a.dtype).encode() + str(a.shape).encode() + a.tobytes())
        meta = {"n_inputs": net.n_inputs, "n_chips": net.n_chips, "dt": repr(self.dt),
                "n_steps": int(self.n_steps),
                "core_biases": {str(k): v for k, v in sorted(net.core_biases.items())},
                "neuron_values": {k: np.nan_to_num(v, nan=-1.0).tolist() for k, v in sorted(net.neuron_values.items())}}
        h.update(json.dumps(meta, sort_keys=True).encode())
        return h.hexdigest()

    def summary(self) -> dict:
        """A small JSON-able description for recording metadata."""
        return {"name": self.name, "dt": self.dt, "n_steps": int(self.n_steps),
                "n_neurons": self.network.n_neurons, "n_inputs": self.network.n_inputs,
                "n_input_connections": int(self.network.inputs.pre.size),
                "n_recurrent_connections": int(self.network.recurrent.pre.size),
                "stimulus": self.stimulus.summary(), "hash": self.content_hash()}
