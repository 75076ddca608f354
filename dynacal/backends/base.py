"""The Backend protocol: the seam between the model and the ways it runs.

Contract of ``run``:

- it never mutates its arguments and is deterministic for a given seed;
- ``params`` may hold B parameter sets (leading batch dimension); simulators run them in
  one pass, the board one after another; the B sets behave as B independent chips;
- ``params=None`` means the network's own parameters (``experiment.network.params()``);
  given params are used as they are (build them with ``network.params(candidates,
  layers=...)``, the one order of ``dynacal.params``, to keep the network's biases under
  the candidates); a DC in the stimulus always sets ``Isoma_const``;
- **B candidates x L conditions**: ``params`` are B candidate sets (B|1, N|1) and the
  experiment has L conditions (``experiment.n_conditions``, 1 without any); the run has
  B * L parameter sets, set ``b * L + l`` being candidate b under condition l. Condition
  values (``experiment.conditions``) replace the candidates' values of those parameters
  (:func:`resolve_params`); an experiment with ``condition_stimuli`` runs as L separate
  runs from the fresh state, merged into one Recording in that order
  (:func:`run_conditions`). L = 1 is the plain run. ``dynacal.experiment.split_sets``
  turns (B * L, ...) results into (B, L, ...);
- the Recording carries ``experiment=`` (the experiment as given, all its conditions) and,
  from a simulator, ``unstable=`` (bool (B * L, N));
- ``record`` names state traces to keep (``STATE_NAMES``), spikes are always returned; a
  backend that measures spikes only (the board) says so with ``records_traces = False``
  (absent means True), and the protocols then ask it for none;
- everything returned is in SI units (A, s).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from ..errors import ParameterError, unknown_name
from ..experiment import Experiment
from ..params import PARAMETERS, Params, check_values
from ..recording import Recording

__all__ = ["Backend", "resolve_params", "expand_conditions", "run_conditions", "merge_conditions",
           "select_neurons", "check_request"]


@runtime_checkable
class Backend(Protocol):
    """A simulator or a board. Capabilities are attributes: ``batched``, ``differentiable``."""

    name: str

    def run(self, experiment: Experiment, params: Params | None = None, *,
            record: Sequence[str] = (), record_neurons=None, record_every: int = 1) -> Recording:
        ...


def check_params(params) -> None:
    """Raise ParameterError unless ``params`` is a :class:`Params` or None (a dict of values
    is the usual mistake: the message says how to build a Params from it)."""
    if params is not None and not isinstance(params, Params):
        raise ParameterError(f"params is a {type(params).__name__}; give a Params or None. Build one from "
                             f"values with experiment.network.params({{'Isoma_th': '2 nA', ...}}).")


def resolve_params(experiment: Experiment, params: Params | None, *, dtype=torch.float64,
                   device="cpu") -> Params:
    """The B * L parameter sets a backend runs (module docstring).

    The network's parameters when ``params`` is None, else ``params`` as given; the
    stimulus DC sets ``Isoma_const``; then :func:`expand_conditions` with the experiment's
    conditions. Returned on ``dtype``/``device``.

    Raises:
        ParameterError: the experiment has condition stimuli (run it with
            :func:`run_conditions`, which resolves each condition's experiment).
    """
    if experiment.condition_stimuli:
        raise ParameterError(f"experiment {experiment.name or '(unnamed)'} has {experiment.n_conditions} condition "
                             f"stimuli, which run as separate runs: use run_conditions (every backend's run does).")
    check_params(params)
    p = experiment.network.params(dtype=dtype, device=device) if params is None else params.to(dtype, device)
    if experiment.stimulus.dc is not None:
        b, _ = p.shape
        dc = torch.as_tensor(experiment.stimulus.dc, dtype=dtype, device=device).reshape(1, -1)
        p = p.replace(Isoma_const=dc.expand(b, -1))
    return expand_conditions(p, experiment.conditions)


def expand_conditions(p: Params, conditions: Mapping[str, Sequence[float]]) -> Params:
    """B parameter sets times L conditions: set ``b * L + l`` is set b with condition l.

    Args:
        p: parameters of shape (B|1, N|1).
        conditions: parameter name -> L values (SI), (L,) the same for every neuron or
            (L, N) per neuron; they replace ``p``'s values of that parameter.

    Returns:
        Params of batch B * L (or L when every value of ``p`` has batch 1); ``p`` itself
        when there are no conditions.
    """
    if not conditions:
        return p
    values = {name: np.array(v, dtype=np.float64) for name, v in conditions.items()}  # a writable copy
    lengths = {v.shape[0] if v.ndim else 0 for v in values.values()}
    if len(lengths) != 1 or 0 in lengths:
        raise ParameterError(f"conditions {sorted(values)} have lengths {sorted(lengths)}; give L values for each.")
    (L,) = lengths
    for name in values:
        if name not in PARAMETERS:
            raise unknown_name("parameter in conditions", name, PARAMETERS)
    b, _ = p.shape
    fields = {}
    for f in dataclasses.fields(p):
        t = getattr(p, f.name)
        if f.name in values:
            v = torch.as_tensor(values[f.name], dtype=t.dtype, device=t.device)
            check_values(f.name, v)
            v = v.reshape(L, -1)  # (L, 1) or (L, N)
            t = v.repeat(b, 1)  # row b * L + l = condition l
        elif t.shape[0] > 1:
            t = t.repeat_interleave(L, dim=0)
        fields[f.name] = t
    out = type(p)(**fields)
    out.shape  # checks that the shapes broadcast
    return out


def run_conditions(backend_run: Callable[..., Recording], experiment: Experiment, params: Params | None,
                   **kwargs) -> Recording:
    """Run ``experiment`` through ``backend_run``, its condition stimuli as separate runs.

    Without condition stimuli this is ``backend_run(experiment, params, **kwargs)``. With
    them, condition l runs as ``backend_run(experiment.condition(l), params, **kwargs)``
    from the fresh state, and the L recordings of B sets each merge into one of B * L sets,
    set ``b * L + l`` (:func:`merge_conditions`). The result's ``experiment`` is
    ``experiment``.

    Raises:
        ParameterError: ``params`` is not a Params or None.
    """
    check_params(params)
    if not experiment.condition_stimuli:
        rec = backend_run(experiment, params, **kwargs)
        rec.experiment = experiment
        return rec
    parts = [backend_run(experiment.condition(l), params, **kwargs) for l in range(experiment.n_conditions)]
    return merge_conditions(parts, experiment)


def merge_conditions(parts: Sequence[Recording], experiment: Experiment) -> Recording:
    """L recordings of B sets each (condition l = ``parts[l]``) -> one of B * L sets,
    set ``b * L + l`` = set b of ``parts[l]``; spikes, traces, raster and unstable masks."""
    L, first = len(parts), parts[0]
    b = first.batch
    for rec in parts[1:]:
        if (rec.batch, rec.n_neurons, rec.n_steps, rec.trace_every) != (b, first.n_neurons, first.n_steps,
                                                                      first.trace_every) \
                or sorted(rec.traces) != sorted(first.traces) or not np.array_equal(rec.trace_neurons, first.trace_neurons):
            raise ParameterError("the condition runs of one experiment returned recordings of different shapes; "
                                 "every condition must run the same parameter sets and record the same traces.")
    batch = np.concatenate([r.spike_batch * L + l for l, r in enumerate(parts)])
    neuron = np.concatenate([r.spike_neuron for r in parts])
    step = np.concatenate([r.spike_step for r in parts])
    time = np.concatenate([r.spike_time for r in parts])
    order = np.lexsort((neuron, batch, time))

    def interleave(xs, axis):  # (..., B, ...) x L -> (..., B * L, ...), index b * L + l
        y = torch.stack(xs, dim=axis + 1)
        return y.reshape(*y.shape[:axis], y.shape[axis] * L, *y.shape[axis + 2:])

    traces = {name: interleave([r.traces[name] for r in parts], 1) for name in first.traces}
    raster = interleave([r.raster for r in parts], 1) if all(r.raster is not None for r in parts) else None
    unstable = None
    if all(r.unstable is not None for r in parts):
        unstable = interleave([torch.as_tensor(r.unstable) for r in parts], 0).numpy()
    meta = dict(first.metadata)
    meta["experiment"] = experiment.summary()
    if all("wall_time_s" in r.metadata for r in parts):
        meta["wall_time_s"] = float(sum(r.metadata["wall_time_s"] for r in parts))
    meta["condition_runs"] = L
    return Recording(first.backend, first.dt, first.n_steps, b * L, first.n_neurons, batch[order], neuron[order],
                     step[order], time[order], traces, first.trace_neurons, first.trace_every, meta, raster,
                     experiment=experiment, unstable=unstable)


def select_neurons(record_neurons, n_neurons: int) -> np.ndarray:
    """Indices of the neurons whose traces are kept (None: all)."""
    if record_neurons is None:
        return np.arange(n_neurons, dtype=np.int64)
    idx = np.atleast_1d(np.asarray(record_neurons, dtype=np.int64))
    if idx.size and (idx.min() < 0 or idx.max() >= n_neurons):
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
