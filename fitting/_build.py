"""The CalibrationResult of a finished run: one function, the contract's fields (``/work/FITTING.md``)."""

from __future__ import annotations

import datetime
import logging

import numpy as np
import torch

from dynacal.chip import NEURONS_PER_CORE
from dynacal.errors import ParameterError

from .objective import Objective

log = logging.getLogger(__name__)


def _versions() -> dict:
    import optuna  # noqa: PLC0415

    import dynacal  # noqa: PLC0415

    return {"dynacal": getattr(dynacal, "__version__", "unknown"), "torch": torch.__version__,
            "optuna": optuna.__version__, "numpy": np.__version__}


def _failed(run, score, factors) -> dict[str, list[int]]:
    failed: dict[str, list[int]] = {}
    for reason, idx in score.reasons.items():
        failed.setdefault(f"no data: {reason}", []).extend(int(i) for i in idx)
    unstable = np.flatnonzero(score.unstable[0])
    if unstable.size:
        failed["Euler-unstable in the calibrated simulator"] = unstable.tolist()
    for name, f in factors.items():
        p = run.space.mismatch[name]
        at = np.flatnonzero((f <= p.low * 1.01) | (f >= p.high / 1.01))
        if at.size:
            failed[f"{name} factor at a bound ({p.low:g}..{p.high:g})"] = at.tolist()
    return failed


def _quality(run, winner) -> dict:
    score = winner["score"]
    quality = {}
    for name in run.recordings:
        term = score.terms[name]
        per = term.values[0].detach().cpu().numpy().copy()
        per[~term.mask] = np.nan
        quality[name] = {"per_neuron": per}
    heldout = getattr(run.target, "heldout", None) or {}
    if heldout:
        obj = Objective(heldout, run.space, weights=run.options.weights, backend=run.objective.backend)
        with torch.no_grad():
            s = obj.evaluate(winner["core"], winner["factors"], winner["scales"])
        for name in heldout:
            term = s.terms[name]
            per = term.values[0].detach().cpu().numpy().copy()
            per[~term.mask] = np.nan
            quality[name] = {"per_neuron": per}
    return quality


def build_result(run, winner: dict, *, started: float, wall_s: float):
    """The CalibrationResult of ``run`` with the ``winner`` (core, factors, scales, score)."""
    from .result import CalibrationResult  # noqa: PLC0415

    net = run.objective.network
    cores = np.unique(np.asarray(net.core))
    if cores.size != 1:
        raise ParameterError(f"the target's neurons sit on cores {cores.tolist()}; calibrate one core at a time "
                             f"(Target.load(folder, neurons='core0')).")
    g = int(cores[0])
    ids = np.asarray(net.neuron_id, dtype=np.int64)
    mismatch = {}
    for name, f in winner["factors"].items():
        full = np.ones(NEURONS_PER_CORE)
        full[ids] = np.asarray(f, dtype=np.float64)
        mismatch[name] = {g: full}
    neurons = np.stack([np.full(ids.size, g // 4), np.full(ids.size, g % 4), ids], 1)
    factors_m = {k: np.asarray(v, dtype=np.float64) for k, v in winner["factors"].items()}
    provenance = {"serial": getattr(run.target, "serial", None), "source": getattr(run.target, "source", "unknown"),
                  "versions": _versions(), "hashes": dict(getattr(run.target, "hashes", {}) or {}),
                  "started": datetime.datetime.fromtimestamp(started, datetime.timezone.utc).isoformat(),
                  "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(), "wall_s": wall_s,
                  "evaluations": run.objective.evaluations, "neuron_steps": run.objective.neuron_steps,
                  "storage": run.storage}
    options = dict(run.options.to_dict(), space=run.space.to_dict())
    return CalibrationResult(core_values={g: dict(winner["core"])}, mismatch=mismatch, scales=dict(winner["scales"]),
                             neurons=neurons, quality=_quality(run, winner),
                             failed=_failed(run, winner["score"], factors_m), provenance=provenance,
                             options=options, history=run.history)
