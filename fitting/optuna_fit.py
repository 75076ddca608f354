"""The two search stages: core values with Optuna, per-neuron mismatch with a vectorised per-neuron search.

**Core stage** (:func:`core_search`). An Optuna study (any storage URL; ``sqlite:///<out>/study.db``
by default in :func:`~dynacal.fitting.calibrate.calibrate`) searches core values (and
condition scales), the mismatch factors held fixed. Trials are asked in batches of B and
the B candidates are simulated as one batched run (``Objective.evaluate``); a trial's value
is a robust reduction over neurons (median by default), so a few neurons the model cannot
follow do not steer the core. The defaults (and any start values) are enqueued first.

*Resume.* Optuna's heartbeat only works inside ``study.optimize``; ask/tell is ours to
recover. A process that died (crash, Ctrl-C) leaves its asked trials RUNNING: on resume they
are scored first and told *in place* (``study.tell(number, value)``, which any process may
do), with their own numbers and parameters, so no trial is lost, none is scored twice, and no
FAIL stubs appear. In place rather than re-enqueued: CMA-ES seeds each ask with the trial
number and keeps its generation in the trial's system attributes, so a re-enqueued copy (a
new number, no attributes) would send it elsewhere. The sampler is rebuilt before each batch
with the seed ``seed + number of COMPLETE trials`` and batches start at multiples of B
COMPLETE trials, so an interrupted and resumed study asks exactly what an uninterrupted one
asks (the samplers read their history from the storage). Resuming assumes no other process
is working on the study at the same time (a RUNNING trial is taken to be a dead one's).

**Per-neuron stage** (:func:`neuron_search`). With the core values fixed, every neuron is an
independent small problem (no protocol connects neurons). A cross-entropy search runs
for all neurons at once: per neuron a Gaussian over the log factors (mean, std per
parameter); each generation draws B - 1 candidates per neuron plus the neuron's best so
far, scores all B x N in one run (``factors`` (B, N)), and moves each neuron's Gaussian to
the mean of its best quarter. The loss adds a weak log-normal prior, ``PRIOR x sum (ln
f)^2 / (2 sigma^2)``, which keeps factors that no data constrain at 1. Generation g draws
from ``numpy.random.default_rng([seed, g])``; its state is checkpointed (npz, atomic) after
every generation, so a resumed search continues where it stopped, with the same draws.
"""

from __future__ import annotations

import dataclasses
import io
import logging
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from dynacal._files import atomic_write
from dynacal.errors import ParameterError

from .space import Parameter, SearchSpace

__all__ = ["core_search", "neuron_search", "CoreOutcome", "NeuronOutcome", "make_sampler", "SAMPLERS", "PRIOR"]

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "cmaes", "gp")
PRIOR = 1e-3


def make_sampler(name: str, seed: int):
    """An Optuna sampler by name (``SAMPLERS``), seeded."""
    import optuna  # noqa: PLC0415

    if name == "tpe":
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=8)
    if name == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    if name == "gp":
        return optuna.samplers.GPSampler(seed=seed)
    raise ParameterError(f"sampler = {name!r}: give one of {SAMPLERS} (TPE, CMA-ES, Gaussian process).")


def _distribution(p: Parameter):
    from optuna.distributions import FloatDistribution, IntDistribution  # noqa: PLC0415

    if p.grid is not None:
        return IntDistribution(0, len(p.grid) - 1)
    return FloatDistribution(p.low, p.high, log=p.log)


def _key(p: Parameter) -> str:
    return f"{'code' if p.grid is not None else p.level}:{p.name}"


def _encode(p: Parameter, value: float):
    if p.grid is not None:
        return int(np.argmin(np.abs(np.log(np.asarray(p.grid) / value))))
    return float(min(max(value, p.low), p.high))


def _decode(p: Parameter, raw) -> float:
    return float(p.grid[int(raw)]) if p.grid is not None else float(raw)


@dataclasses.dataclass
class CoreOutcome:
    """What a core stage found.

    Attributes:
        core: name -> best value (SI); scales: name -> best scale.
        loss: the best trial's value; trials: COMPLETE trials of the study, in order, as
            (params dict, value); study: the Optuna study.
    """

    core: dict[str, float]
    scales: dict[str, float]
    loss: float
    trials: list
    study: Any


def _stale(study) -> list:
    """The trials a stopped process asked and never told (module docstring)."""
    from optuna.trial import TrialState  # noqa: PLC0415

    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    if stale:
        log.info("resumed study %s: %d trials left running by a stopped process are scored now",
                 study.study_name, len(stale))
    return sorted(stale, key=lambda t: t.number)


def core_search(objective, params: Mapping[str, Parameter], *, fixed: Mapping[str, float] | None = None,
                factors: Mapping[str, np.ndarray] | None = None, scales: Mapping[str, Parameter] | None = None,
                storage: str | None = None, study_name: str = "core", sampler: str = "tpe", seed: int = 0,
                batch: int = 16, n_trials: int | None = None, deadline: float | None = None,
                reduce: str = "median", starts: list[Mapping[str, float]] = (),
                progress: Callable[[dict], None] | None = None) -> CoreOutcome:
    """Search core values (and scales) with Optuna, B candidates per batched run (module docstring).

    Args:
        objective: an :class:`~dynacal.fitting.objective.Objective`.
        params: the core Parameters searched (name -> Parameter).
        fixed: core values of the names not searched (SI); the rest of the space takes its default.
        factors: name -> (N,) mismatch factors held fixed (default 1).
        scales: condition scale Parameters searched too (board targets).
        storage: an Optuna storage URL, or None (in memory).
        study_name, sampler, seed: the study; ``sampler`` one of ``SAMPLERS``.
        batch: trials per batched run; n_trials: COMPLETE trials to reach (None: until ``deadline``).
        deadline: ``time.monotonic()`` value after which no new batch starts.
        reduce: ``Score.reduce`` over neurons (``"median"``, ``"trimmed"``, ``"mean"``).
        starts: candidates enqueued first in a new study: name -> value (defaults always first).
        progress: called after each batch with {"trials", "best", "batch_s"}.

    Raises:
        ParameterError: nothing to search, an unknown sampler, no stopping rule.
    """
    import optuna  # noqa: PLC0415
    from optuna.trial import TrialState  # noqa: PLC0415

    space = {**{_key(p): p for p in params.values()}, **{_key(p): p for p in (scales or {}).values()}}
    if not space:
        raise ParameterError("core_search got no parameters to search; give core or scale Parameters.")
    if n_trials is None and deadline is None:
        raise ParameterError("core_search needs n_trials or a deadline (budget_s) to stop.")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=storage, study_name=study_name, direction="minimize", load_if_exists=True,
                                sampler=make_sampler(sampler, seed))
    stale = _stale(study)
    if not study.get_trials(deepcopy=False):
        for start in [{}, *starts]:
            study.enqueue_trial({k: _encode(p, start.get(p.name, p.default)) for k, p in space.items()})
    dists = {k: _distribution(p) for k, p in space.items()}
    fixed = dict(fixed or {})
    last = 0.0
    while True:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        left = None if n_trials is None else n_trials - len(complete)
        if left is not None and left <= 0:
            break
        if deadline is not None and time.monotonic() + last > deadline:
            break
        # batches start at multiples of `batch` COMPLETE trials, so a resumed study (its
        # re-asked trials filling the broken batch) asks in the same batches as a whole one
        k = min(batch - len(complete) % batch, left if left is not None else batch)
        study.sampler = make_sampler(sampler, seed + len(complete))
        if stale:  # finish the broken batch first, in place: same numbers, same sampler records
            trials, stale = stale[:k], stale[k:]
        else:
            trials = [study.ask(dists) for _ in range(k)]
        t0 = time.monotonic()
        core = {n: np.full(k, v, dtype=np.float64) for n, v in fixed.items() if n not in params}
        sc = {}
        for key, p in space.items():
            values = np.array([_decode(p, t.params[key]) for t in trials])
            (core if p.level == "core" else sc)[p.name] = values
        fac = {n: np.array(np.broadcast_to(np.asarray(f, dtype=np.float64), (k, objective.n_neurons)))
               for n, f in (factors or {}).items()}
        with torch.no_grad():
            loss = objective.evaluate(core, fac, sc).reduce(reduce).cpu().numpy()
        for t, value in zip(trials, loss):
            study.tell(t.number, float(value) if np.isfinite(value) else None,
                       state=TrialState.COMPLETE if np.isfinite(value) else TrialState.FAIL)
        last = time.monotonic() - t0
        if progress is not None:
            progress({"trials": len(complete) + k, "best": study.best_value, "batch_s": last})
    return _outcome(study, space)


def _outcome(study, space: Mapping[str, Parameter]) -> CoreOutcome:
    from optuna.trial import TrialState  # noqa: PLC0415

    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if not done:
        raise ParameterError(f"study {study.study_name!r} has no complete trial; give a larger budget_s or n_trials.")
    best = min(done, key=lambda t: (t.value, t.number))
    core = {p.name: _decode(p, best.params[k]) for k, p in space.items() if p.level == "core"}
    scales = {p.name: _decode(p, best.params[k]) for k, p in space.items() if p.level == "scale"}
    trials = [({k: v for k, v in t.params.items()}, float(t.value)) for t in sorted(done, key=lambda t: t.number)]
    return CoreOutcome(core, scales, float(best.value), trials, study)


def trial_values(outcome: CoreOutcome, space: Mapping[str, Parameter], k: int) -> list[dict]:
    """The ``k`` best distinct trials as {"core": {...}, "scales": {...}, "loss": float}."""
    seen, out = set(), []
    for params, value in sorted(outcome.trials, key=lambda x: x[1]):
        key = tuple(sorted(params.items()))
        if key in seen:
            continue
        seen.add(key)
        byname = {kk: p for kk, p in space.items()}
        core = {p.name: _decode(p, params[kk]) for kk, p in byname.items() if kk in params and p.level == "core"}
        scales = {p.name: _decode(p, params[kk]) for kk, p in byname.items() if kk in params and p.level == "scale"}
        out.append({"core": core, "scales": scales, "loss": value})
        if len(out) == k:
            break
    return out


@dataclasses.dataclass
class NeuronOutcome:
    """What a per-neuron stage found: name -> (N,) factors, their loss (N,), generations run."""

    factors: dict[str, np.ndarray]
    loss: np.ndarray
    generations: int


def neuron_search(objective, space: SearchSpace, core: Mapping[str, float], *,
                  start: Mapping[str, np.ndarray] | None = None, scales: Mapping[str, float] | None = None,
                  batch: int = 16, generations: int | None = None, deadline: float | None = None, seed: int = 0,
                  checkpoint: str | Path | None = None, init_std: float = 0.3,
                  progress: Callable[[dict], None] | None = None) -> NeuronOutcome:
    """Fit every neuron's mismatch factors at once (module docstring).

    Args:
        objective: the Objective; space: its SearchSpace (``mismatch`` are searched).
        core: fixed core values (SI); scales: fixed condition scales.
        start: name -> (N,) start factors (default 1).
        batch: candidates per neuron per generation (>= 4); generations / deadline: stop rules.
        checkpoint: npz file of the search state (resumed when it exists).
        init_std: std of the log factors at the start.

    Raises:
        ParameterError: no mismatch parameters, batch < 4, no stopping rule.
    """
    names = list(space.mismatch)
    if not names:
        raise ParameterError("neuron_search needs mismatch Parameters in the SearchSpace.")
    if batch < 4:
        raise ParameterError(f"batch = {batch} candidates per neuron; give at least 4.")
    if generations is None and deadline is None:
        raise ParameterError("neuron_search needs generations or a deadline (budget_s) to stop.")
    N = objective.n_neurons
    lo = np.array([np.log(space.mismatch[n].low) for n in names])
    hi = np.array([np.log(space.mismatch[n].high) for n in names])
    sig = np.array([space.mismatch[n].sigma or 0.2 for n in names])
    state = _load_state(checkpoint) if checkpoint is not None and Path(checkpoint).exists() else None
    if state is None:
        z0 = np.stack([np.log(np.broadcast_to(np.asarray((start or {}).get(n, 1.0), dtype=np.float64), (N,)))
                       for n in names], -1)
        state = {"mean": z0.copy(), "std": np.full(z0.shape, init_std), "best": z0.copy(),
                 "best_loss": np.full(N, np.inf), "generation": np.array(0)}
    core_b = {n: np.full(batch, v) for n, v in core.items()}
    sc_b = {n: np.full(batch, v) for n, v in (scales or {}).items()}
    last = 0.0
    while True:
        g = int(state["generation"])
        if generations is not None and g >= generations:
            break
        if deadline is not None and g > 0 and time.monotonic() + last > deadline:
            break
        t0 = time.monotonic()
        rng = np.random.default_rng([seed, g])
        z = state["mean"][None] + state["std"][None] * rng.standard_normal((batch, N, len(names)))
        z[0] = state["best"]  # the best so far competes again (elitism)
        z = np.clip(z, lo, hi)
        with torch.no_grad():
            score = objective.evaluate(core_b, {n: np.exp(z[..., i]) for i, n in enumerate(names)}, sc_b)
        loss = score.total.cpu().numpy() + PRIOR * (z ** 2 / (2 * sig ** 2)).sum(-1)
        _update(state, z, loss)
        last = time.monotonic() - t0
        if checkpoint is not None:
            _save_state(checkpoint, state)
        if progress is not None:
            progress({"generation": g + 1, "best": float(np.median(state["best_loss"])), "batch_s": last})
        if float(state["std"].max()) < 1e-3:
            break
    best = state["best"]
    return NeuronOutcome({n: np.exp(best[:, i]) for i, n in enumerate(names)}, state["best_loss"].copy(),
                         int(state["generation"]))


def _update(state: dict, z: np.ndarray, loss: np.ndarray) -> None:
    """Cross-entropy step per neuron: mean and std of the best quarter; keep each neuron's best."""
    B = z.shape[0]
    k = max(2, B // 4)
    order = np.argsort(loss, axis=0, kind="stable")[:k]  # (k, N)
    elite = np.take_along_axis(z, order[..., None], axis=0)  # (k, N, P)
    state["mean"] = elite.mean(0)
    state["std"] = np.maximum(0.6 * state["std"] + 0.4 * elite.std(0), 1e-4)
    top = loss[order[0], np.arange(z.shape[1])]
    better = top < state["best_loss"]
    state["best"][better] = elite[0][better]
    state["best_loss"][better] = top[better]
    state["generation"] = np.array(int(state["generation"]) + 1)


def _save_state(path, state: dict) -> None:
    buf = io.BytesIO()
    np.savez(buf, **state)
    atomic_write(path, lambda fh: fh.write(buf.getvalue()))


def _load_state(path) -> dict:
    with np.load(path) as f:
        return {k: np.array(f[k]) for k in f.files}
