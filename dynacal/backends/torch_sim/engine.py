"""The contract between the torch backend and its engines (eager, fused CPU, fused CUDA).

Every engine module has ``simulate(experiment, params, request, terms=None) ->
EngineResult`` and ``supports(experiment) -> bool`` (whether it runs that experiment; the
backend says why not when it falls back):

- ``params``: the resolved parameters, each (B|1, N|1), in the run's dtype and on its device
  (``base.resolve_params``: conditions expanded, a stimulus DC in ``Isoma_const``);
- ``terms``: :func:`.layout.derive` of those parameters, computed once by the backend
  (None: the engine derives them); the engine reads the model's parameter-only terms from
  here by name, never by an index of its own;
- ``request``: what to trace and how to step (:class:`Request`);
- the result (:class:`EngineResult`) has the same meaning, dtype and order from every
  engine: spike events sorted by step, then set, then neuron; identical spike steps and
  traces within rounding on the same input (``tests/backends/torch_sim/test_conformance.py``).

Health (written once, here): a run is *unstable* in a (set, neuron) once any current went
negative or non-finite (``Isoma_ahp``, which starts at 0, only negative) after a step;
``peak`` is the largest ``Igaba_a + Isoma_ahp`` after any step (a NaN wins), from which
``stability.dynamic_message`` says what sub-steps are safe. The eager engine computes it
with :func:`track_health`; the fused kernels mirror it (their ``_settle_pass`` / the end of
the CUDA step) and the conformance suite binds them.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

__all__ = ["Request", "EngineResult", "track_health", "tensor_versions", "NON_NEGATIVE", "SHUNT"]

#: The current that may be 0 (it starts there, below I0); every other must stay > 0.
NON_NEGATIVE = ("Isoma_ahp",)
#: The currents whose sum shortens the soma's time constant (``peak``).
SHUNT = ("Igaba_a", "Isoma_ahp")


class Request(NamedTuple):
    """What a run records and how it steps.

    Attributes:
        names: state names to trace (``STATE_NAMES`` subset).
        idx: int64 (R,) traced neurons.
        every: keep the state at the start of steps ``t % every == 0``.
        substeps: Euler sub-steps per step (1 is Brian2-exact).
        chunk_steps: steps whose inputs are built at once (bounds memory).
        surrogate: None, no gradients; else the outputs carry gradients to the parameters
            that require grad, through this spike surrogate (``"none"``: spikes constant).
        batch: B when weights carry their own batch (eager), else None (the params' B).
        input_weights, recurrent_weights: float (E,) or (B, E) weights that replace the
            network's integer ones (eager only).
    """

    names: tuple = ()
    idx: np.ndarray = np.zeros(0, dtype=np.int64)
    every: int = 1
    substeps: int = 1
    chunk_steps: int = 1000
    surrogate: str | None = None
    batch: int | None = None
    input_weights: torch.Tensor | None = None
    recurrent_weights: torch.Tensor | None = None


class EngineResult(NamedTuple):
    """What an engine returns.

    Attributes:
        spike_batch, spike_neuron, spike_step: int64 (K,) events, sorted by step, set, neuron.
        traces: name -> tensor (T_rec, B, R) in A.
        unstable: bool (B, N) on the CPU: a current went negative or non-finite (module docstring).
        peak: (B, N) on the CPU, the largest ``Igaba_a + Isoma_ahp`` after any step (A).
        raster: (T, B, N) 0./1. floats carrying gradients when the request asked for them, else None.
    """

    spike_batch: np.ndarray
    spike_neuron: np.ndarray
    spike_step: np.ndarray
    traces: dict
    unstable: torch.Tensor
    peak: torch.Tensor
    raster: torch.Tensor | None = None


def track_health(state, unstable: torch.Tensor, peak: torch.Tensor) -> None:
    """Update ``unstable`` (bool (B, N)) and ``peak`` ((B, N), A) in place after a step of ``state``."""
    with torch.no_grad():
        for name, x in zip(state._fields[:6], state[:6]):
            unstable |= ~(x >= 0) if name in NON_NEGATIVE else ~(x > 0)
        first, second = SHUNT
        torch.maximum(peak, getattr(state, first) + getattr(state, second), out=peak)


def tensor_versions(tensors) -> tuple | None:
    """``(id, version)`` of each tensor: equal while no tensor was replaced or edited in
    place. None when one is an inference tensor (it has no version counter)."""
    try:
        return tuple((id(t), t._version) for t in tensors)
    except RuntimeError:
        return None
