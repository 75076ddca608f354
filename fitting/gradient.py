r"""The gradient fitter: Adam or L-BFGS on log-parameters through the differentiable simulator.

One candidate (B = 1): core values ``core[name]`` (1,), per-neuron mismatch factors
``factors[name]`` (1, N) and condition scales ``scales[name]`` (1,) share one optimiser; the
objective (``fitting/objective.py`` ``Objective.evaluate(core, factors, scales) -> Score``,
or :class:`~dynacal.fitting.spike_time.SpikeTimeObjective`) simulates all neurons at once and
returns the per-neuron total (1, N). The loss is its sum over the neurons that are valid
(finite and not Euler-unstable): a neuron's factor moves only its own term (the Jacobian
of a feed-forward core is block-diagonal), the core values move all of them.

**Bounded transforms** (as Jaxley): every fitted value lives in ``[low, high]`` of its
``Parameter`` through a sigmoid of an unconstrained ``z``; in log space for ``log=True``

    ln v = ln low + w * sigmoid(4 z / w),   w = ln high - ln low

scaled so that ``d ln v / d z = 1`` in the middle of the window: a learning rate is then
the step in ``ln v`` (0.05 = about 5 % per step), one per parameter (``lr`` may be a dict
name -> rate); Adam's rates decay (cosine) to 1/20 over ``steps``. Linear parameters
(``log=False``) use ``v = low + (high - low) sigmoid(4 z)`` (the rate is then a fraction of
the window per step).

**NaN and instability.** A neuron whose loss is not finite, or that the Score marks
unstable, gives no gradient; after the step its factors go back to their last valid
value and its learning rate is halved (its Adam moments cleared), so one bad candidate
never poisons the others or the core. When no neuron is valid the core values go back and
their rate is halved. Non-finite gradients count as 0. The best valid state seen (by the
sum of the valid neurons' losses, per neuron when only factors are fitted) is returned.

**Budget.** ``budget_s`` stops before a step that would end past it (the time of the last
step as the estimate); ``steps`` caps the number of steps.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch
from torch import Tensor

from dynacal.errors import ParameterError

__all__ = ["GradientFit", "fit_gradient", "Bounded"]

log = logging.getLogger(__name__)
_EPS = 1e-6  # start values at a bound are moved this far (in sigmoid units) inside


class GradientFit(NamedTuple):
    """What :func:`fit_gradient` found.

    Attributes:
        core: name -> value (SI) of the core values.
        factors: name -> float (N,) mismatch factors.
        scales: name -> condition scale.
        history: one dict per step: ``step``, ``loss`` (mean over valid neurons), ``best``,
            ``n_valid``, ``n_bad`` (unstable or NaN this step), ``time_s`` (since start).
        loss: float (N,), the per-neuron loss at the returned state (NaN where never valid).
        valid: bool (N,), the neuron had a valid loss at the returned state.
        at_bound: name -> bool (N,) or bool: the value is within 1 % of its window (sigmoid units) of a bound.
        stopped: why the fit stopped (``"steps"``, ``"budget"``, ``"converged"``).
    """

    core: dict[str, float]
    factors: dict[str, np.ndarray]
    scales: dict[str, float]
    history: list[dict]
    loss: np.ndarray
    valid: np.ndarray
    at_bound: dict[str, Any]
    stopped: str


class Bounded:
    """The transform of one Parameter (module docstring): ``value(z)`` and ``z_of(value)``."""

    def __init__(self, name: str, low: float, high: float, log_scale: bool = True):
        if not (math.isfinite(low) and math.isfinite(high) and high > low and (low > 0 or not log_scale)):
            raise ParameterError(f"{name}: bounds [{low}, {high}] must be finite with low < high (and low > 0 on "
                                 f"a log scale); fix the SearchSpace's Parameter.")
        self.name, self.log, self.low, self.high = name, bool(log_scale), float(low), float(high)
        self.lo, self.hi = (math.log(low), math.log(high)) if self.log else (float(low), float(high))
        self.width = self.hi - self.lo
        self.k = 4.0 / self.width if self.log else 4.0  # d ln v / d z = 1 in the middle (log)

    def value(self, z: Tensor) -> Tensor:
        x = self.lo + self.width * torch.sigmoid(self.k * z)
        # clamped: exp(ln low) may round one ulp below low
        return (torch.exp(x) if self.log else x).clamp(self.low, self.high)

    def unit(self, z: Tensor) -> Tensor:
        """Where z sits in the window, 0..1."""
        return torch.sigmoid(self.k * z)

    def z_of(self, value) -> Tensor:
        v = torch.as_tensor(np.array(value, dtype=np.float64))
        if not torch.all(torch.isfinite(v)) or (self.log and torch.any(v <= 0)):
            raise ParameterError(f"{self.name}: start value {value} must be finite{' and > 0' if self.log else ''}.")
        x = torch.log(v) if self.log else v
        u = ((x - self.lo) / self.width).clamp(_EPS, 1 - _EPS)
        return torch.log(u / (1 - u)) / self.k


def _params(space, start: Mapping[str, Any], n: int, per_neuron: bool):
    """(kind, name) -> (Bounded, z leaf) for core values, factors and scales."""
    groups = {"core": getattr(space, "core", {}), "factor": getattr(space, "mismatch", {}) if per_neuron else {},
              "scale": getattr(space, "scales", {})}
    given_factors = dict(start.get("factors", {}) or {})
    given_scales = dict(start.get("scales", {}) or {})
    out = {}
    for kind, params in groups.items():
        for name, par in params.items():
            b = Bounded(name, float(par.low), float(par.high), bool(getattr(par, "log", True)))
            if kind == "factor":
                v = np.broadcast_to(np.asarray(given_factors.get(name, 1.0), dtype=np.float64), (n,))[None]
            else:
                src = given_scales if kind == "scale" else start
                default = getattr(par, "default", None)
                v = src.get(name, default if default is not None else (1.0 if kind == "scale" else None))
                if v is None:
                    raise ParameterError(f"{name}: no start value and no default; give start[{name!r}] (SI) or a "
                                         f"Parameter default.")
                v = np.asarray([float(v)])
            out[kind, name] = (b, b.z_of(v).clone().requires_grad_(True))
    if not out:
        raise ParameterError("the search space has nothing to fit (no core, mismatch or scale parameters).")
    return out


def _values(params) -> tuple[dict, dict, dict]:
    core, factors, scales = {}, {}, {}
    for (kind, name), (b, z) in params.items():
        {"core": core, "factor": factors, "scale": scales}[kind][name] = b.value(z)
    return core, factors, scales


def _evaluate(objective, params) -> tuple[Tensor, np.ndarray]:
    """Per-neuron loss (N,) with gradients, and the valid mask (N,)."""
    core, factors, scales = _values(params)
    score = objective.evaluate(core, factors or None, scales or None)
    total = score.total.reshape(-1)
    valid = torch.isfinite(total).detach().cpu().numpy()
    unstable = getattr(score, "unstable", None)
    if unstable is not None:
        valid &= ~np.asarray(unstable, dtype=bool).reshape(-1)
    return total, valid


def _n_neurons(objective, space, start) -> int:
    if getattr(objective, "n_neurons", None) is not None:
        return int(objective.n_neurons)
    target = getattr(objective, "target", None)
    if target is not None and getattr(target, "neurons", None) is not None:
        return len(target.neurons)
    for v in (start.get("factors") or {}).values():
        return int(np.asarray(v).size)
    if not getattr(space, "mismatch", None):
        return 1
    raise ParameterError("fit_gradient cannot tell the number of neurons: give the objective an n_neurons "
                         "attribute or a target with neurons, or start['factors'].")


def _lr_of(lr, name: str, default: float) -> float:
    value = lr.get(name, lr.get("default", default)) if isinstance(lr, Mapping) else lr
    if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
        raise ParameterError(f"lr for {name} = {value!r} must be a number > 0 (the step in ln value), e.g. 0.05.")
    return float(value)


def fit_gradient(objective, space, start: Mapping[str, Any] | None = None, *, steps: int = 100,
                 lr: float | Mapping[str, float] = 0.05, method: str = "adam", per_neuron: bool = True,
                 budget_s: float | None = None, progress: bool = True, tol: float = 0.0) -> GradientFit:
    """Fit the space's core values, factors and scales by gradient descent (module docstring).

    Args:
        objective: ``evaluate(core, factors, scales) -> Score`` with ``total`` (1, N)
            differentiable and ``unstable`` (1, N); ``n_neurons`` or ``target.neurons`` tells N.
        space: a SearchSpace (``core``, ``mismatch``, ``scales``: name -> Parameter with
            ``low``, ``high``, ``log``, ``default``).
        start: name -> core start value (SI) (default the Parameter's ``default``), and
            optionally ``"factors"``: name -> (N,) and ``"scales"``: name -> value.
        steps: the most optimiser steps (L-BFGS: outer steps of up to 5 evaluations).
        lr: step in ln value per step, one number or name -> number (``"default"`` for the rest).
        method: ``"adam"`` or ``"lbfgs"``.
        per_neuron: fit the mismatch factors (False: core values and scales only).
        budget_s: wall-time limit in s, or None.
        progress: log each 10th step at INFO (the library never prints).
        tol: stop when the best loss improved by less than ``tol`` (relative) over 10 steps.

    Raises:
        ParameterError: an unknown method, bad bounds, start values or rates, or a budget < 0.
    """
    if method not in ("adam", "lbfgs"):
        raise ParameterError(f"method = {method!r}: give 'adam' or 'lbfgs'.")
    if budget_s is not None and not budget_s > 0:
        raise ParameterError(f"budget_s = {budget_s} s must be > 0 (or None for no limit).")
    if int(steps) < 1:
        raise ParameterError(f"steps = {steps} must be an integer >= 1.")
    start = dict(start or {})
    n = _n_neurons(objective, space, start)
    params = _params(space, start, n, per_neuron)
    rates = {key: torch.full_like(z, _lr_of(lr, key[1], 0.05)) for key, (_, z) in params.items()}
    runner = _Adam(params, rates, int(steps)) if method == "adam" else _LBFGS(params, rates)
    return _loop(objective, params, runner, n, int(steps), budget_s, progress, tol)


#: Per-neuron loss that stands for an invalid (NaN or unstable) neuron where a value is
#: needed: in L-BFGS's line search (a wall without gradient) and in choosing the best state.
INVALID_LOSS = 1e3


class _Guard:
    """The module docstring's NaN and instability rules: last valid z, best state."""

    def __init__(self, params, rates, n: int):
        self.params, self.rates, self.n = params, rates, n
        self.good = {k: z.detach().clone() for k, (_, z) in params.items()}
        self.only_factors = all(kind == "factor" for kind, _ in params)
        self.best = {k: z.detach().clone() for k, z in self.good.items()}
        self.best_loss = np.full(n, np.inf)
        self.best_quality = np.inf
        self.best_valid = np.zeros(n, dtype=bool)

    def check(self, total: Tensor, valid: np.ndarray) -> np.ndarray:
        """Record the evaluated state; put invalid neurons (and, if none is valid, the core)
        back to their last valid values. Returns the neurons reverted (bool (N,))."""
        loss = total.detach().cpu().numpy().astype(np.float64).copy()
        loss[~valid] = np.nan
        self._record_best(loss, valid)
        bad = ~valid
        with torch.no_grad():
            for key, (_, z) in self.params.items():
                if key[0] == "factor":
                    m = torch.as_tensor(bad).reshape(z.shape)
                    z[m] = self.good[key][m]
                    self.rates[key][m] *= 0.5
                    self.good[key][~m] = z[~m]
                elif not valid.any():
                    z.copy_(self.good[key])
                    self.rates[key] *= 0.5
                else:
                    self.good[key] = z.detach().clone()
        return bad

    def _record_best(self, loss: np.ndarray, valid: np.ndarray) -> None:
        if self.only_factors:  # block-diagonal: each neuron keeps its own best factor
            better = valid & ~(loss >= self.best_loss)
            self.best_loss[better] = loss[better]
            self.best_valid |= better
            for key, (_, z) in self.params.items():
                m = torch.as_tensor(better).reshape(z.shape)
                self.best[key][m] = z.detach()[m]
            return
        quality = float(np.where(valid, loss, INVALID_LOSS).sum())
        if quality < self.best_quality:
            self.best_quality, self.best_loss, self.best_valid = quality, np.where(valid, loss, np.nan), valid.copy()
            self.best = {k: z.detach().clone() for k, (_, z) in self.params.items()}

    def quality(self) -> float:
        return float(np.where(self.best_valid, self.best_loss, INVALID_LOSS).sum())


def _zero_grads(params) -> None:
    for _, z in params.values():
        z.grad = None


def _masked_sum(total: Tensor, valid: np.ndarray) -> Tensor:
    v = torch.as_tensor(valid, device=total.device)
    safe = torch.where(v, total, torch.zeros_like(total))  # NaN-free values and gradients
    return safe.sum() + float((~valid).sum()) * INVALID_LOSS


def _clean_grads(params) -> None:
    for _, z in params.values():
        if z.grad is not None:
            z.grad = torch.nan_to_num(z.grad, nan=0.0, posinf=0.0, neginf=0.0)


class _Adam:
    """Adam with one learning rate per element (the guard halves those of bad neurons),
    times a cosine decay from 1 to 1/20 over the steps (the late steps settle instead of
    hovering at the noise floor of a constant rate)."""

    def __init__(self, params, rates, steps: int, betas=(0.9, 0.999), eps=1e-8):
        self.params, self.rates, self.betas, self.eps, self.steps = params, rates, betas, eps, max(int(steps), 1)
        self.m = {k: torch.zeros_like(z) for k, (_, z) in params.items()}
        self.v = {k: torch.zeros_like(z) for k, (_, z) in params.items()}
        self.t = 0

    def step(self, objective, guard: _Guard):
        _zero_grads(self.params)
        total, valid = _evaluate(objective, self.params)
        _masked_sum(total, valid).backward()
        _clean_grads(self.params)
        bad = guard.check(total, valid)
        self.t += 1
        b1, b2 = self.betas
        decay = 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(self.t - 1, self.steps) / self.steps))
        with torch.no_grad():
            for key, (_, z) in self.params.items():
                g = z.grad if z.grad is not None else torch.zeros_like(z)
                if key[0] == "factor":  # a bad neuron's moments restart from its reverted value
                    m = torch.as_tensor(bad).reshape(z.shape)
                    g, self.m[key][m], self.v[key][m] = g.masked_fill(m, 0.0), 0.0, 0.0
                self.m[key].mul_(b1).add_(g, alpha=1 - b1)
                self.v[key].mul_(b2).addcmul_(g, g, value=1 - b2)
                m_hat = self.m[key] / (1 - b1 ** self.t)
                v_hat = self.v[key] / (1 - b2 ** self.t)
                z.sub_(decay * self.rates[key] * m_hat / (v_hat.sqrt() + self.eps))
        return total.detach(), valid


class _LBFGS:
    """torch's L-BFGS with a strong-Wolfe line search (one rate: the line search's);
    invalid neurons are a wall of :data:`INVALID_LOSS` without gradient."""

    def __init__(self, params, rates):
        self.params, self.rates = params, rates
        self.leaves = [z for _, z in params.values()]
        self._new()

    def _new(self):
        # tolerances near 0: the sum over neurons is tiny long before its slowest neuron is done
        self.opt = torch.optim.LBFGS(self.leaves, lr=1.0, max_iter=4, history_size=10, tolerance_grad=1e-14,
                                     tolerance_change=1e-16,
                                     line_search_fn="strong_wolfe")

    def step(self, objective, guard: _Guard):
        with torch.no_grad():
            total, valid = _evaluate(objective, self.params)
        if guard.check(total, valid).any():
            self._new()  # the curvature pairs no longer describe the reverted point

        def closure():
            self.opt.zero_grad()
            t, ok = _evaluate(objective, self.params)
            loss = _masked_sum(t, ok)
            loss.backward()
            _clean_grads(self.params)
            return loss

        self.opt.step(closure)
        return total.detach(), valid


def _loop(objective, params, runner, n, steps, budget_s, progress, tol) -> GradientFit:
    guard = _Guard(params, runner.rates, n)
    t0, last, history, stopped = time.perf_counter(), 0.0, [], "steps"
    for step in range(steps):
        elapsed = time.perf_counter() - t0
        if budget_s is not None and elapsed + last > budget_s:
            stopped = "budget"
            break
        ts = time.perf_counter()
        total, valid = runner.step(objective, guard)
        last = time.perf_counter() - ts
        loss = total.cpu().numpy()
        mean = float(loss[valid].mean()) if valid.any() else float("nan")
        history.append({"step": step, "loss": mean, "best": guard.quality() / n, "n_valid": int(valid.sum()),
                        "n_bad": int((~valid).sum()), "time_s": time.perf_counter() - t0})
        if progress and step % 10 == 0:
            log.info("gradient step %d: loss %.4g (best %.4g), %d of %d neurons valid, %.1f s", step, mean,
                     history[-1]["best"], int(valid.sum()), n, history[-1]["time_s"])
        if tol > 0 and step >= 10 and history[-11]["best"] - history[-1]["best"] <= tol * abs(history[-1]["best"]):
            stopped = "converged"
            break
    return _result(params, guard, history, stopped)


def _result(params, guard: _Guard, history, stopped) -> GradientFit:
    core, factors, scales, at_bound = {}, {}, {}, {}
    for key, (b, _) in params.items():
        z = guard.best[key]
        value = b.value(z).detach().cpu().numpy().reshape(-1)
        u = b.unit(z).detach().cpu().numpy().reshape(-1)
        edge = (u < 1e-2) | (u > 1 - 1e-2)  # within 1 % of the window
        kind, name = key
        if kind == "factor":
            factors[name], at_bound[name] = value, edge
        else:
            (core if kind == "core" else scales)[name], at_bound[name] = float(value[0]), bool(edge[0])
    return GradientFit(core, factors, scales, history, guard.best_loss.copy(), guard.best_valid.copy(), at_bound,
                       stopped)
