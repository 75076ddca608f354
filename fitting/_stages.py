"""The stages of the hybrid and Optuna fitters (``calibrate`` module docstring), on one ``Run``."""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynacal.protocols import ORDER, PROTOCOLS

from .objective import Objective
from .optuna_fit import core_search, neuron_search, trial_values
from .space import Parameter, SearchSpace

log = logging.getLogger(__name__)

#: Share of the budget of each kind of stage (the rest: re-scoring and the result).
SHARE = {"core": 0.35, "neuron": 0.30, "joint-core": 0.15, "joint-neuron": 0.15}
JOINT_WINDOW = 1.5


class Run:
    """One calibration's state: the current best core values, factors and scales, and its history."""

    def __init__(self, target, recordings, space: SearchSpace, objective: Objective, options, storage, out, deadline):
        self.target, self.recordings, self.space, self.objective = target, recordings, space, objective
        self.options, self.storage, self.out, self.deadline = options, storage, out, deadline
        self.core = dict(space.defaults()["core"])
        self.factors = {n: np.ones(objective.n_neurons) for n in space.mismatch}
        self.scales = dict(space.defaults()["scales"])
        self.history: list[dict] = []
        self.last_core = None  # (outcome, params) of the last core stage, for the top-k re-scoring
        self._objectives: dict[tuple, Objective] = {}
        self._bar = _bar(options.progress)

    # --- helpers ----------------------------------------------------------------------

    def objective_for(self, names) -> Objective:
        key = tuple(sorted(names))
        if set(key) == set(self.recordings):
            return self.objective
        if key not in self._objectives:
            self._objectives[key] = Objective({k: self.recordings[k] for k in key}, self.space,
                                              weights=self.options.weights, backend=self.objective.backend)
        return self._objectives[key]

    def until(self, share: float) -> float:
        """A stage deadline: ``share`` of the whole budget from now, never past the run's deadline."""
        return min(time.monotonic() + share * self.options.budget_s, self.deadline)

    def report(self, stage: str, info: dict) -> None:
        left = max(self.deadline - time.monotonic(), 0.0)
        if self._bar is not None:
            self._bar.set_description(stage)
            self._bar.set_postfix(trial=info.get("trials", info.get("generation")), best=f"{info['best']:.4g}",
                                  left=f"{left:.0f}s")
            self._bar.update(1)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    # --- stages -----------------------------------------------------------------------

    def core_stage(self, stage: str, names: list[str], protocols, *, window: float | None = None,
                   starts=(), with_scales: bool = True, share: float = SHARE["core"]) -> None:
        t0 = time.monotonic()
        params = {n: _windowed(self.space.core[n], self.core[n], window) for n in names}
        scales = {k: _windowed(p, self.scales[k], window) for k, p in self.space.scales.items()} if with_scales else {}
        obj = self.objective_for(protocols)
        fixed = {k: v for k, v in self.core.items() if k not in names}
        fixed.update({k: v for k, v in self.scales.items() if k not in scales})
        out = core_search(obj, params, fixed={k: v for k, v in fixed.items() if k in self.space.core},
                          factors=self.factors, scales=scales, storage=self.storage,
                          study_name=f"{self.options.study or 'dynacal'}.{stage}", sampler=self.options.sampler,
                          seed=self.options.seed, batch=self.options.batch, n_trials=self.options.n_trials,
                          deadline=None if self.options.n_trials else self.until(share),
                          reduce=self.options.reduce, starts=list(starts),
                          progress=lambda info: self.report(stage, info))
        self.core.update(out.core)
        self.scales.update(out.scales)
        self.last_core = (out, {**{f"core:{n}" if p.grid is None else f"code:{n}": p for n, p in params.items()},
                                **{f"scale:{k}": p for k, p in scales.items()}})
        self.history.append({"stage": stage, "kind": "optuna", "params": names + [f"scale:{k}" for k in scales],
                             "protocols": sorted(protocols), "trials": len(out.trials), "best": out.loss,
                             "values": dict(out.core, **out.scales), "seconds": time.monotonic() - t0})

    def neuron_stage(self, stage: str, share: float = SHARE["neuron"]) -> None:
        if not self.space.mismatch:
            return
        t0 = time.monotonic()
        ckpt = self.out / f"neurons.{stage}.npz" if self.out is not None else None
        res = neuron_search(self.objective, self.space, self.core, start=self.factors, scales=self.scales,
                            batch=max(4, self.options.batch), generations=self.options.generations,
                            deadline=None if self.options.generations else self.until(share),
                            seed=self.options.seed, checkpoint=ckpt,
                            progress=lambda info: self.report(stage, info))
        self.factors = res.factors
        self.recenter()
        self.history.append({"stage": stage, "kind": "per-neuron", "params": list(self.space.mismatch),
                             "generations": res.generations, "best": float(np.median(res.loss)),
                             "seconds": time.monotonic() - t0})

    def recenter(self) -> None:
        """Geometric mean 1 of each factor over the neurons with data; the core takes the mean."""
        with torch.no_grad():
            mask = self.objective.evaluate(self.core, self.factors, self.scales).mask
        for n, f in self.factors.items():
            if n not in self.core or not mask.any():
                continue
            g = float(np.exp(np.mean(np.log(f[mask]))))
            p = self.space.core[n]
            new = float(np.clip(self.core[n] * g, p.low, p.high))
            self.factors[n] = np.clip(f * self.core[n] / new, self.space.mismatch[n].low, self.space.mismatch[n].high)
            self.core[n] = new

    # --- the winner -------------------------------------------------------------------

    def candidates(self) -> list[dict]:
        """The top-k distinct candidates of the last core stage (the current best first)."""
        best = {"core": dict(self.core), "scales": dict(self.scales)}
        if self.last_core is None:
            return [best]
        out, space = self.last_core
        others = [dict(core={**self.core, **c["core"]}, scales={**self.scales, **c["scales"]})
                  for c in trial_values(out, space, self.options.top_k)]
        uniq = [best] + [c for c in others if c != best]
        return uniq[:self.options.top_k]

    def rescore(self) -> dict:
        """Re-score the top-k on every protocol and every repeat; the robust best wins."""
        cands = self.candidates()
        per_repeat = []
        for recs in _repeat_sets(self.target, self.recordings):
            obj = self.objective if recs is None else Objective(recs, self.space, weights=self.options.weights,
                                                                backend=self.objective.backend)
            core = {k: np.array([c["core"][k] for c in cands]) for k in self.space.core}
            scales = {k: np.array([c["scales"][k] for c in cands]) for k in self.space.scales}
            fac = {k: np.tile(v, (len(cands), 1)) for k, v in self.factors.items()}
            with torch.no_grad():
                per_repeat.append(obj.evaluate(core, fac, scales).reduce(self.options.reduce).numpy())
        from .noise import robust_loss  # noqa: PLC0415

        losses = np.asarray(robust_loss(np.stack(per_repeat)), dtype=np.float64).reshape(-1)
        k = int(np.argmin(losses))
        self.history.append({"stage": "rescore", "candidates": len(cands), "repeats": len(per_repeat),
                             "losses": losses.tolist(), "winner": k})
        return self.score_winner(cands[k]["core"], self.factors, cands[k]["scales"])

    def score_winner(self, core, factors, scales) -> dict:
        self.core, self.factors, self.scales = dict(core), dict(factors), dict(scales)
        with torch.no_grad():
            score = self.objective.evaluate(self.core, self.factors, self.scales)
        return {"core": self.core, "factors": self.factors, "scales": self.scales, "score": score}


def _repeat_sets(target, recordings):
    """None (the recordings themselves), then one dict per further repeat where the target has them."""
    repeats = getattr(target, "repeats", None) or {}
    n = max([len(v) for k, v in repeats.items() if k in recordings] or [1])
    yield None
    for r in range(1, n):
        yield {k: (repeats.get(k) or [rec])[r] if len(repeats.get(k) or []) > r else rec
               for k, rec in recordings.items()}


def _windowed(p: Parameter, centre: float, window: float | None) -> Parameter:
    if window is None:
        return p
    lo, hi = max(p.low, centre / window), min(p.high, centre * window)
    if lo >= hi:
        return p
    return dataclasses.replace(p, low=lo, high=hi, default=float(np.clip(centre, lo, hi)))


def _bar(show: bool):
    if not show:
        return None
    from tqdm.auto import tqdm  # noqa: PLC0415

    return tqdm(desc="calibrate", unit="batch", disable=None, leave=False)


#: The lab order's job of each protocol (issue 9): what it calibrates, when the target has it.
PRIMARY = {"fi": ("Isoma_dpi_tau", "alpha_soma"), "refractory": ("soma_refP",),
           "adaptation": ("Isoma_ahp_w", "Isoma_ahp_tau", "alpha_ahp"),
           "kernels": tuple(f"{k}{x}" for x in ("nmda", "ampa", "gaba_a", "gaba_b") for k in ("alpha_",))
           + tuple(f"I{x}_tau" for x in ("nmda", "ampa", "gaba_a", "gaba_b")),
           "rate_transfer": tuple(f"I{x}_w0" for x in ("nmda", "ampa", "gaba_a", "gaba_b")) + ("Inmda_thr",)}


def stage_plan(space: SearchSpace, protocols) -> list[tuple[str, list[str], list[str]]]:
    """(stage, core names, protocols scored) in the lab order: each name in the stage of the
    protocol whose job it is (``PRIMARY``), else of the first protocol sensitive to it; names
    no ordered protocol constrains join a last stage over every protocol."""
    present = [p for p in ORDER if p in protocols]
    extra = [p for p in protocols if p not in ORDER]

    def home(name):
        for p in present:
            if name in PRIMARY.get(p, ()):
                return p
        return next((p for p in present if name in PROTOCOLS[p].sensitive_to), None)

    plan = []
    for i, proto in enumerate(present):
        names = [n for n in space.core if home(n) == proto]
        if names:
            plan.append((proto, names, present[:i + 1]))
    rest = [n for n in space.core if home(n) is None]
    if rest or not plan:
        plan.append(("rest", rest, present + extra))
    return plan


def _starts(run: Run, names: list[str]) -> list[dict]:
    try:
        from .estimates import first_estimates, start_values  # noqa: PLC0415
    except ImportError:
        return []
    try:
        values = start_values(first_estimates(run.recordings), run.core)
    except Exception as exc:  # noqa: BLE001 - an estimate is a hint; the search goes on without it
        log.info("no first estimates: %s", exc)
        return []
    start = {n: float(np.clip(values[n], run.space.core[n].low, run.space.core[n].high))
             for n in names if n in values and np.isfinite(values[n]) and values[n] > 0}
    return [start] if start else []


def hybrid_stages(run: Run) -> None:
    """Core values in the lab order, per-neuron factors, joint refinement (``calibrate`` docstring)."""
    plan = stage_plan(run.space, run.recordings)
    total = sum(len(names) for _, names, _ in plan) or 1
    for i, (stage, names, protocols) in enumerate(plan):
        if names or (i == len(plan) - 1 and run.space.scales):
            run.core_stage(f"core-{stage}", names, protocols, starts=_starts(run, names),
                           with_scales=i == 0 or stage == "rest", share=SHARE["core"] * max(len(names), 1) / total)
    run.neuron_stage("neurons")
    if run.space.core:
        run.core_stage("joint-core", list(run.space.core), list(run.recordings), window=JOINT_WINDOW,
                       share=SHARE["joint-core"])
    run.neuron_stage("joint-neurons", SHARE["joint-neuron"])


def optuna_stages(run: Run) -> None:
    """One Optuna stage over every core value, then the per-neuron search."""
    run.core_stage("core", list(run.space.core), list(run.recordings), starts=_starts(run, list(run.space.core)),
                   share=SHARE["core"] + SHARE["joint-core"])
    run.neuron_stage("neurons", SHARE["neuron"] + SHARE["joint-neuron"])
