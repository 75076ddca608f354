"""The Backend protocol: the seam between the model and the ways it runs.

Contract of ``run``:

- it never mutates its arguments and is deterministic for a given seed;
- ``params`` may hold B parameter sets (leading batch dimension); simulators run them in
  one pass, the board one after another; the B sets behave as B independent chips;
- ``params=None`` means the network's own parameters (``experiment.network.params()``);
  given params are used as they are (build them with ``network.params(candidates,
  layers=...)``, the one order of ``dynacal.params``, to keep the network's biases under
  the candidates); a DC in the stimulus always sets ``Isoma_const``;
- ``record`` names state traces to keep (``STATE_NAMES``), spikes are always returned; a
  backend that measures spikes only (the board) says so with ``records_traces = False``
  (absent means True), and the protocols then ask it for none;
- everything returned is in SI units (A, s).
"""

from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from ..experiment import Experiment
from ..params import Params
from ..recording import Recording

__all__ = ["Backend", "resolve_params", "select_neurons", "check_request"]


@runtime_checkable
class Backend(Protocol):
    """A simulator or a board. Capabilities are attributes: ``batched``, ``differentiable``."""

    name: str

    def run(self, experiment: Experiment, params: Params | None = None, *,
            record: Sequence[str] = (), record_neurons=None, record_every: int = 1) -> Recording:
        ...


def resolve_params(experiment: Experiment, params: Params | None, *, dtype=torch.float64,
                   device="cpu") -> Params:
    """The parameters a backend runs: the network's when None; the stimulus DC sets
    ``Isoma_const``. Returned on ``dtype``/``device``."""
    p = experiment.network.params(dtype=dtype, device=device) if params is None else params.to(dtype, device)
    if experiment.stimulus.dc is not None:
        b, _ = p.shape
        dc = torch.as_tensor(experiment.stimulus.dc, dtype=dtype, device=device).reshape(1, -1)
        p = p.replace(Isoma_const=dc.expand(b, -1))
    return p


def select_neurons(record_neurons, n_neurons: int) -> np.ndarray:
    """Indices of the neurons whose traces are kept (None: all)."""
    if record_neurons is None:
        return np.arange(n_neurons, dtype=np.int64)
    idx = np.atleast_1d(np.asarray(record_neurons, dtype=np.int64))
    if idx.size and (idx.min() < 0 or idx.max() >= n_neurons):
        from ..errors import ParameterError
        raise ParameterError(f"record_neurons has index {int(idx.max())}; the network has {n_neurons} neurons.")
    return idx


def check_request(experiment: Experiment, shape: tuple[int, int], record, record_neurons,
                  record_every) -> tuple[tuple[str, ...], int, int, int, np.ndarray]:
    """Validate what a simulator run is asked for, the same way for every backend.

    Args:
        shape: the (B, N) broadcast shape of the parameters.

    Returns:
        ``(names, every, B, N, idx)``: trace names, the trace step, the number of parameter
        sets, the number of neurons and the indices of the traced neurons.
    """
    from ..errors import ParameterError
    from ..recording import check_record
    names = check_record(record)
    if int(record_every) != record_every or int(record_every) < 1:
        raise ParameterError(f"record_every = {record_every} must be an integer >= 1.")
    n = experiment.network.n_neurons
    b, pn = shape
    if pn not in (1, n):
        raise ParameterError(f"parameters are given for {pn} neurons but the network has {n}; give "
                             f"(B, {n}) or (B, 1) values.")
    return names, int(record_every), b, n, select_neurons(record_neurons, n)
