r"""Identifiability: which parameters, and which combinations, the chosen protocols constrain.

Some parameters reach the data only together: above I0 a DPI synapse's gain ``alpha_X`` and
base weight ``I_X_w0`` act only through their product (the jump of each input event), and a
time constant ``C * Ut / (kappa * I_tau)`` holds ``C_X`` and ``I_X_tau`` only as a ratio.
No protocol separates them; a fitter must fit the combination and report it. Other
parameters are simply not seen by the protocols at hand (a synapse by the f-I curve).

:func:`identifiability` measures this from the model itself, per neuron, before or after
data exist:

1. **Sensitivity** S (N, F, P): the derivatives of each protocol's features (on the log
   scale) with respect to the log-parameters at the point ``at``, for every neuron from one
   batched run per protocol (:mod:`.sensitivity`: 2P + 1 candidates, central differences of
   step ``h = 0.1``; the features are those the target's recordings give, so a spike-only
   target is analysed with spike features only).
2. **Per neuron**: singular values of S_n, the numerical rank (singular values above
   ``max(rtol * s_max, min_sensitivity)``), the condition number s_max / s_min, and the
   posterior spread and correlation of the log-parameter estimates for a relative feature
   noise ``noise`` (or a target's measured noise floor, where larger) and a prior of width
   ``prior`` (log units), ``(S^T S / noise^2 + 1 / prior^2)^-1``.
3. **Unconstrained** parameters: those whose column of S is below ``min_sensitivity`` in
   most neurons (changing them by a factor e moves no feature by more than that, RMS over
   features). Each gets the protocols that would constrain it, *checked*: every protocol
   of ``ORDER`` not used (or used with other settings) runs on a few neurons and is named
   only where its features move; ``sensitive_to`` is a hint, not the answer.
4. **Combinations** (:mod:`._nullspace`): parameters whose columns of S_n are parallel
   (angle below ``rtol``) give the same simulations up to a product of powers: one
   combination per cluster, its powers the column ratios scaled to the smallest and
   rounded to small rationals where close (``alpha_ampa*Iampa_w0``, ``Iampa_tau/Campa``).
   In the other parameters, a null space of S_n (singular values below ``rtol * s_max``)
   shared by at most 3 parameters with exact powers is one too; a bigger one usually only
   says "too few features" (spike-only targets) and is left to the rank. A combination
   found in at least half the neurons is reported with its value and its posterior spread
   per neuron.

A fitter fits each combination through one member and holds the others at their values
(:func:`identifiable_space`; the member kept is a bias the chip sets, ``Combination.fixed``
the others). ``neurons=k`` analyses k neurons spread over the core (a fitter's quick plan).

Cost (measured on the shared 2-core machine, load 6-10): one core of 256 neurons, fi + kernels
at their default settings, 10 parameters: 11-13 s (fi: 11 candidates x 12 levels, the
synapse parameters cost none there; kernels: 21 candidates); every protocol of ``ORDER``
but heldout, the 17 parameters of ``SearchSpace.default`` + 7 partners: 110 s, 67 s of it
rate_transfer's 49 candidates x 105000 steps (``neurons=32``: an eighth).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
import warnings
from fractions import Fraction
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from dynacal.errors import ParameterError
from dynacal.params import PARAMETERS

from . import _nullspace
from ._plan import (cut_point, join, names_of, noise_levels, partners, runs_of, spread_subset,
                    suggest_protocols)
from .sensitivity import Sensitivity, point_of, sensitivity

__all__ = ["Combination", "Identifiability", "Matrix", "identifiability", "identifiable_space", "partners"]

log = logging.getLogger(__name__)



@dataclasses.dataclass(frozen=True)
class Combination:
    """A product of powers of parameters that the data constrain while its members are not.

    Attributes:
        name: e.g. ``"alpha_ampa*Iampa_w0"`` or ``"Iampa_tau/Campa"``.
        exponents: parameter -> power (small rationals where close, else 3 decimals).
        values: float (N,), the combination at the point, per neuron (SI units multiplied).
        neurons: fraction of the neurons in which it was found.
        exact: the exponents are small rationals (an exact degeneracy of the model).
        keep: the member a fitter fits (a bias the chip sets, where one is a member).
        fixed: the members a fitter holds at their values.
        uncertainty: float (N,), posterior sd of ln(combination) (``noise``, ``prior``):
            how well the protocols know it in each neuron.
    """

    name: str
    exponents: dict[str, float]
    values: np.ndarray
    neurons: float
    exact: bool
    keep: str
    fixed: tuple[str, ...]
    uncertainty: np.ndarray

    def value_of(self, values: Mapping[str, Any]) -> np.ndarray:
        """The combination at other parameter values (e.g. a fit's per-neuron table):
        ``prod values[name] ** power``; ``values`` name -> float or (N,) SI.

        Raises:
            ParameterError: a member missing from ``values``.
        """
        missing = [m for m in self.exponents if m not in values]
        if missing:
            raise ParameterError(f"{self.name} needs {missing}; give every member's value (SI).")
        out = np.ones(())
        for name, power in self.exponents.items():
            out = out * np.asarray(values[name], dtype=np.float64) ** power
        return out

    def to_dict(self) -> dict:
        """JSON-able (the CalibrationResult's ``combinations``)."""
        return {"name": self.name, "exponents": dict(self.exponents), "values": self.values.tolist(),
                "neurons": self.neurons, "exact": self.exact, "keep": self.keep, "fixed": list(self.fixed),
                "uncertainty": self.uncertainty.tolist()}


class Matrix(NamedTuple):
    """A labelled matrix for the report: ``values`` (len(rows), len(columns))."""

    rows: list[str]
    columns: list[str]
    values: np.ndarray
    kind: str

    def to_dict(self) -> dict:
        return {"rows": list(self.rows), "columns": list(self.columns), "values": self.values.tolist(),
                "kind": self.kind}


@dataclasses.dataclass
class Identifiability:
    """What the protocols constrain, per neuron (module docstring).

    Attributes:
        parameters: the P analysed parameter names (``requested`` first, then partners).
        requested: the parameters asked for (the only ones ``unconstrained`` can name).
        protocols: the protocols analysed.
        features: the F feature labels (rows of ``sensitivity``).
        point: name -> float (N,), the point (SI).
        sensitivity: float (N, F, P), d g / d ln theta (0 where not valid).
        valid: bool (N, F).
        singular_values: float (N, P), descending (zeros where F < P).
        rank: int (N,); condition: float (N,), s_max / s_min (capped at 1 / eps).
        condition_identifiable: float (N,), s_max / s_rank: the conditioning of the
            directions the data constrain (what a fit of the combinations faces).
        sensitive: bool (N, P), column norm >= ``min_sensitivity``.
        uncertainty: float (N, P), posterior sd of ln theta (``noise``, ``prior``).
        correlation_per_neuron: float (N, P, P), posterior correlation of the ln theta estimates.
        combinations: the identifiable combinations found.
        unconstrained: parameter -> protocols that would constrain it (checked; may be empty).
        settings: step, rtol, min_sensitivity, noise, prior, traces per protocol, wall_s.
    """

    parameters: list[str]
    requested: list[str]
    protocols: list[str]
    features: list[str]
    point: dict[str, np.ndarray]
    sensitivity: np.ndarray
    valid: np.ndarray
    singular_values: np.ndarray
    rank: np.ndarray
    condition: np.ndarray
    condition_identifiable: np.ndarray
    sensitive: np.ndarray
    uncertainty: np.ndarray
    correlation_per_neuron: np.ndarray
    combinations: list[Combination]
    unconstrained: dict[str, tuple[str, ...]]
    settings: dict

    @property
    def fixed(self) -> list[str]:
        """Parameters a fitter should hold at their values: the unconstrained ones and the
        members of each combination that the combination's ``keep`` stands for."""
        out = list(self.unconstrained)
        for comb in self.combinations:
            out += [p for p in comb.fixed if p not in out]
        return out

    @property
    def matrix(self) -> Matrix:
        """"The identifiability matrix" (features x parameters): the median over neurons of
        |S|, the relative change of each feature per relative change of each parameter."""
        s = np.where(self.valid[..., None], np.abs(self.sensitivity), np.nan)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: features no neuron has
            med = np.nanmedian(s, axis=0)
        return Matrix(list(self.features), list(self.parameters), np.nan_to_num(med), "sensitivity")

    @property
    def correlation(self) -> Matrix:
        """Median over neurons of the posterior correlation of the log-parameter estimates
        (parameters x parameters): near -1 or +1 where only a combination is known."""
        return Matrix(list(self.parameters), list(self.parameters),
                      np.median(self.correlation_per_neuron, axis=0), "correlation")

    def warn(self) -> list[str]:
        """Log one warning per unconstrained parameter naming the protocol to add, and one
        info line per combination; returns the warning lines."""
        used = ", ".join(self.protocols) or "no protocol"
        lines = []
        for name, fixes in self.unconstrained.items():
            if fixes:
                which = " or ".join(f"the {f} protocol" + (" with other settings (e.g. its defaults)"
                                                           if f in self.protocols else "") for f in fixes)
                line = (f"{name} is not constrained by {used} (no feature moves when it changes); add {which} "
                        f"to constrain it, or leave it out of the fit.")
            else:
                line = (f"{name} is not constrained by {used}, and no dynacal protocol constrains it; leave it "
                        f"out of the fit (it stays at its value).")
            log.warning("%s", line)
            lines.append(line)
        for comb in self.combinations:
            log.info("%s reach the data only as %s (found in %.0f%% of the neurons): fit that product through "
                     "%s, holding %s", " and ".join(comb.exponents), comb.name, 100 * comb.neurons, comb.keep,
                     ", ".join(comb.fixed))
        return lines

    def summary(self) -> str:
        """A plain-text table: per parameter the fraction of neurons it moves and the median
        posterior sd of its log; the combinations; what is unconstrained."""
        sd, frac = np.median(self.uncertainty, axis=0), self.sensitive.mean(axis=0)
        width = max(len(p) for p in self.parameters)
        lines = [f"identifiability of {len(self.parameters)} parameters from {', '.join(self.protocols)} "
                 f"({self.settings.get('n_neurons')} neurons): median rank {np.median(self.rank):g}",
                 f"{'parameter':<{width}}  moves  sd(ln)"]
        lines += [f"{p:<{width}}  {f:5.0%}  {u:6.3f}" for p, f, u in zip(self.parameters, frac, sd)]
        lines += [f"combination {c.name}: found in {c.neurons:.0%} of the neurons, sd(ln) "
                  f"{float(np.median(c.uncertainty)):.3f}, fitted through {c.keep}" for c in self.combinations]
        lines += [f"unconstrained {k}: add {' or '.join(v) or 'no dynacal protocol'}"
                  for k, v in self.unconstrained.items()]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        """JSON-able summary for ``calibration.json`` (per-neuron arrays as lists; the full
        (N, F, P) sensitivity is in :meth:`arrays`)."""
        frac = self.sensitive.mean(axis=0)
        return {
            "parameters": list(self.parameters), "requested": list(self.requested),
            "protocols": list(self.protocols),
            "features": list(self.features), "settings": dict(self.settings),
            "rank": {"median": float(np.median(self.rank)), "min": int(self.rank.min()),
                     "per_neuron": self.rank.tolist()},
            "condition": {"median": float(np.median(self.condition)), "per_neuron": self.condition.tolist()},
            "condition_identifiable": {"median": float(np.median(self.condition_identifiable)),
                                       "per_neuron": self.condition_identifiable.tolist()},
            "singular_values": {"median": np.median(self.singular_values, axis=0).tolist(),
                                "per_neuron": self.singular_values.tolist()},
            "sensitive": {p: float(f) for p, f in zip(self.parameters, frac)},
            "uncertainty": {p: float(u) for p, u in zip(self.parameters, np.median(self.uncertainty, axis=0))},
            "combinations": [c.to_dict() for c in self.combinations],
            "unconstrained": {k: list(v) for k, v in self.unconstrained.items()},
            "fixed": self.fixed, "matrix": self.matrix.to_dict(), "correlation": self.correlation.to_dict(),
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """The big per-neuron arrays (for an ``.npz`` beside the JSON)."""
        return {"identifiability_sensitivity": self.sensitivity, "identifiability_valid": self.valid,
                "identifiability_correlation": self.correlation_per_neuron}


def identifiability(source, space_or_names, at: Mapping | None = None, *, backend: Any = "torch",
                    protocols: Sequence[str] | None = None, traces: bool | None = None, step: float = 0.1,
                    retry: float = 4.0,
                    rtol: float = 1e-3, min_sensitivity: float = 0.05, noise: float = 0.02, prior: float = 1.0,
                    check: Mapping | bool = True, check_neurons: int = 4,
                    with_partners: bool | None = None, neurons: int | None = None) -> Identifiability:
    """Which parameters (and combinations) the protocols of ``source`` constrain, per neuron.

    Args:
        source: a Target (its recordings' experiments and the features they give), or
            experiments ``{name: Experiment}`` built by protocols (``get_protocol(name).experiment(...)``),
            or one such Experiment. Every experiment must hold the same neurons.
        space_or_names: a SearchSpace (its core and mismatch names) or parameter names.
        at: the point, name -> value as ``Network.params`` takes it; default the network's
            own parameters (table defaults, core biases, per-neuron values).
        backend: a backend name or object that runs batches (default the torch simulator).
        protocols: names of the source's protocols to analyse (default all but heldout).
        traces: record traces (None: as the target's recordings have them; True for experiments).
        step, rtol, min_sensitivity, noise, prior: as in the module docstring (log units).
        retry: a parameter no feature moves with at ``step`` is measured again at
            ``retry * step`` (:mod:`.sensitivity`; 1: never).
        check: True: check the protocols that would constrain an unconstrained parameter
            with their default settings; a mapping name -> Protocol: those settings; False:
            name them from ``sensitive_to`` only.
        check_neurons: neurons used for that check.
        with_partners: also analyse each requested bias's partners (:func:`partners`), so
            that the combinations a fit of the bias stands for are found and reported
            (never warned about); None: for a SearchSpace, not for names.
        neurons: analyse only this many neurons spread evenly over the source's (their
            indices in ``settings["neurons"]``; ``at`` per neuron then gives all of them,
            cut down here): a fitter's quick plan. None: every neuron.

    Returns:
        :class:`Identifiability`; call ``.warn()`` to log what is unconstrained.

    Raises:
        ParameterError: unknown parameter or protocol names, an empty source, neurons that
            differ between experiments, a point value <= 0.
    """
    from dynacal import get_backend  # noqa: PLC0415  (the core's registry, lazily)

    t0 = time.perf_counter()
    requested = names_of(space_or_names)
    is_space = hasattr(space_or_names, "core")
    names = requested + [m for m in partners(requested) if m not in requested] \
        if (is_space if with_partners is None else with_partners) else requested
    full = runs_of(source, protocols, traces)
    runs, kept = spread_subset(full, neurons)
    network = runs[0][1].network
    point = point_of(network, names, cut_point(at, kept, full[0][1].network.n_neurons))
    be = get_backend(backend)
    parts = [sensitivity(proto, exp, point, backend=be, step=step, traces=tr, keys=keys, retry=retry,
                         min_sensitivity=min_sensitivity) for proto, exp, tr, keys in runs]
    sens = join(parts, network.n_neurons, len(names))
    levels = noise_levels(source, [r[0].name for r in runs], noise)
    row_noise = np.concatenate([np.full(len(s.features), levels[r[0].name]) for r, s in zip(runs, parts)])
    result = _analyse(sens, names, point, rtol=rtol, min_sensitivity=min_sensitivity, noise=row_noise,
                      prior=prior)
    used = [r[0].name for r in runs]
    result["unconstrained"] = suggest_protocols(
        result["sensitive"][:, :len(requested)], requested, {r[0].name: r[0] for r in runs}, network, point, be,
        step=step, retry=retry, min_sensitivity=min_sensitivity, check=check, n_check=check_neurons,
        traces=any(r[2] for r in runs))
    settings = {"step": step, "retry": retry, "rtol": rtol, "min_sensitivity": min_sensitivity, "noise": noise,
                "prior": prior, "noise_by_protocol": levels, "traces": {r[0].name: bool(r[2]) for r in runs},
                "steps": {r[0].name: dict(zip(names, s.steps.tolist())) for r, s in zip(runs, parts)},
                "n_neurons": network.n_neurons, "neurons": kept.tolist(),
                "wall_s": round(time.perf_counter() - t0, 3)}
    return Identifiability(parameters=list(names), requested=list(requested), protocols=used, features=sens.features,
                           point=point, sensitivity=sens.matrix, valid=sens.valid, settings=settings, **result)


def _analyse(sens: Sensitivity, names, point, *, rtol, min_sensitivity, noise, prior) -> dict:
    """Per-neuron spectra, posterior spread and correlation, and the combinations."""
    S = np.where(sens.valid[..., None], sens.matrix, 0.0)  # (N, F, P)
    out = _nullspace.spectra(S, rtol=rtol, min_sensitivity=min_sensitivity, noise=noise, prior=prior)
    cov = out.pop("covariance")
    combos = _nullspace.combinations(S, out["sensitive"], names, rtol=rtol)
    n = S.shape[0]
    out["combinations"] = [_combination(expo, count / n, point, cov, names) for expo, count in combos
                           if count >= 0.5 * n]
    return out


_BIAS = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")


def _keep_order(name: str) -> tuple:
    """Sort key of the member a fitter keeps: a bias the chip sets first, gains and capacitances last."""
    spec = PARAMETERS[name]
    return (not _BIAS.search(spec.doc), name.startswith("alpha_") or spec.unit == "F", name)


def _combination(exponents: tuple, fraction: float, point, cov: np.ndarray, names) -> Combination:
    """A Combination in a canonical form: members in table order, the kept member's power > 0."""
    table = list(PARAMETERS)
    expo = dict(sorted(exponents, key=lambda item: table.index(item[0])))
    keep = min(expo, key=_keep_order)
    if expo[keep] < 0:
        expo = {k: -v for k, v in expo.items()}
    exact = all(isinstance(e, Fraction) for e in expo.values())
    values = np.ones_like(next(iter(point.values())))
    e = np.zeros(len(names))
    for name, power in expo.items():
        values = values * point[name] ** float(power)
        e[names.index(name)] = float(power)
    sd = np.sqrt(np.einsum("p,npq,q->n", e, cov, e))
    return Combination(_nullspace.name_of(expo), {k: float(v) for k, v in expo.items()}, values, float(fraction),
                       exact, keep, tuple(k for k in expo if k != keep), sd)


def identifiable_space(space, ident: Identifiability, *, log_changes: bool = True):
    """``space`` without the parameters the protocols cannot fit on their own: each
    unconstrained parameter, and every member of a combination but the one kept
    (``Combination.keep``; the fit then finds the combination through it, the others held at
    their values). A combination of which only one member is in the space is left alone.

    Args:
        space: a SearchSpace (``core`` and ``mismatch`` mappings name -> Parameter).
        ident: the analysis of the same parameters (:func:`identifiability`).

    Returns:
        A SearchSpace of the same type with fewer parameters.
    """
    loose = set(ident.unconstrained)
    kept = []
    for level in (space.core, space.mismatch):  # the core values and the factors each on their own
        drop = set(loose)
        for comb in ident.combinations:
            members = sorted((m for m in comb.exponents if m in level and m not in loose), key=_keep_order)
            drop |= set(members[1:])
        kept.append({k: v for k, v in level.items() if k not in drop})
    core, mismatch = kept
    held = sorted((set(space.core) - set(core)) | (set(space.mismatch) - set(mismatch)))
    if log_changes and held:
        log.info("identifiable space: holding %s at their values", ", ".join(held))
    if not core and not mismatch and not getattr(space, "scales", {}):
        raise ParameterError(f"the protocols {ident.protocols} constrain none of {held}: nothing is left to "
                             f"fit. Add the protocols ident.unconstrained names ({ident.unconstrained}).")
    if dataclasses.is_dataclass(space):
        return dataclasses.replace(space, core=core, mismatch=mismatch)
    return type(space)(core=core, mismatch=mismatch, scales=getattr(space, "scales", {}),
                       code_grid=getattr(space, "code_grid", False))
