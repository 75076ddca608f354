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
   features). Each gets the protocols whose ``sensitive_to`` lists it, *checked*: such a
   protocol is run on a few neurons and named only if its features do move.
4. **Combinations**: the null space of S_n over the sensitive parameters (singular values
   below ``rtol * s_max``: exact degeneracies give ~1e-9, a physical but inexact trade-off
   1e-2 and more), split into groups of parameters that share null vectors; each group of k
   parameters with k - 1 null directions has one identifiable combination, the product of
   powers orthogonal to them, its exponents scaled to the smallest and rounded to small
   rationals where they are close (``alpha_ampa*Iampa_w0``, ``Iampa_tau/Campa``). A
   combination found in at least half the neurons is reported with its value per neuron.

A fitter fits each combination through one member and holds the others at their values
(:func:`identifiable_space`; the member kept is a bias the chip sets, ``Combination.fixed``
the others). Cost: one core (256 neurons), the fi and kernels protocols at their default
settings, 10 parameters: 21 candidates of each, ~10 s on this 2-core machine (module
``tests/fitting/test_identify.py`` measures a small case; the figure is in the report).
"""

from __future__ import annotations

import dataclasses
import logging
import re
import time
from fractions import Fraction
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np

from dynacal.errors import ParameterError, unknown_name
from dynacal.params import PARAMETERS, SYNAPSE_TYPES

from . import _nullspace
from .sensitivity import SKIP, Sensitivity, point_of, sensitivity, suggest_protocols

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
    """

    name: str
    exponents: dict[str, float]
    values: np.ndarray
    neurons: float
    exact: bool
    keep: str
    fixed: tuple[str, ...]

    def to_dict(self) -> dict:
        """JSON-able (the CalibrationResult's ``combinations``)."""
        return {"name": self.name, "exponents": dict(self.exponents), "values": self.values.tolist(),
                "neurons": self.neurons, "exact": self.exact, "keep": self.keep, "fixed": list(self.fixed)}


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
        with np.errstate(all="ignore"):
            import warnings  # noqa: PLC0415
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
                which = " or ".join(f"{f} (with other settings, e.g. its defaults)" if f in self.protocols else f
                                    for f in fixes)
                line = (f"{name} is not constrained by {used} (no feature moves when it changes); add the "
                        f"{which} protocol to constrain it, or leave it out of the fit.")
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
                    with_partners: bool | None = None) -> Identifiability:
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

    Returns:
        :class:`Identifiability`; call ``.warn()`` to log what is unconstrained.

    Raises:
        ParameterError: unknown parameter or protocol names, an empty source, neurons that
            differ between experiments, a point value <= 0.
    """
    from dynacal import get_backend  # noqa: PLC0415  (the core's registry, lazily)

    t0 = time.perf_counter()
    requested = _names(space_or_names)
    is_space = hasattr(space_or_names, "core")
    names = requested + [m for m in partners(requested) if m not in requested] \
        if (is_space if with_partners is None else with_partners) else requested
    runs = _runs(source, protocols, traces)
    network = runs[0][1].network
    point = point_of(network, names, at)
    be = get_backend(backend)
    parts = [sensitivity(proto, exp, point, backend=be, step=step, traces=tr, keys=keys, retry=retry,
                         min_sensitivity=min_sensitivity) for proto, exp, tr, keys in runs]
    sens = _join(parts, network.n_neurons, len(names))
    levels = _noise_levels(source, [r[0].name for r in runs], noise)
    row_noise = np.concatenate([np.full(len(s.features), levels[r[0].name]) for r, s in zip(runs, parts)])
    result = _analyse(sens, names, point, rtol=rtol, min_sensitivity=min_sensitivity, noise=row_noise,
                      prior=prior)
    used = [r[0].name for r in runs]
    result["unconstrained"] = suggest_protocols(
        result["sensitive"][:, :len(requested)], requested, {r[0].name: r[0] for r in runs}, network, point, be, step=step, retry=retry, min_sensitivity=min_sensitivity,
        check=check, n_check=check_neurons, traces=any(r[2] for r in runs))
    settings = {"step": step, "retry": retry, "rtol": rtol, "min_sensitivity": min_sensitivity, "noise": noise,
                "prior": prior, "noise_by_protocol": levels, "traces": {r[0].name: bool(r[2]) for r in runs},
                "steps": {r[0].name: dict(zip(names, s.steps.tolist())) for r, s in zip(runs, parts)},
                "n_neurons": network.n_neurons, "wall_s": round(time.perf_counter() - t0, 3)}
    return Identifiability(parameters=list(names), requested=list(requested), protocols=used, features=sens.features, point=point,
                           sensitivity=sens.matrix, valid=sens.valid, settings=settings, **result)


def partners(names: Sequence[str]) -> list[str]:
    """The parameters no bias sets that act with a requested bias only through a product or
    ratio (calibration.md): ``I_X_w0`` -> ``alpha_X``, ``I_X_tau`` -> ``C_X``, the soma's
    and adaptation's leaks -> their capacitances, ``Isoma_ahp_w`` -> ``alpha_ahp``."""
    pairs = {"Isoma_dpi_tau": "Csoma_mem", "Isoma_ahp_tau": "Csoma_ahp", "Isoma_ahp_w": "alpha_ahp"}
    for syn in SYNAPSE_TYPES:
        pairs[f"I{syn}_w0"], pairs[f"I{syn}_tau"] = f"alpha_{syn}", f"C{syn}"
    return list(dict.fromkeys(pairs[n] for n in names if n in pairs))


def _names(space_or_names) -> list[str]:
    if isinstance(space_or_names, str):
        space_or_names = [space_or_names]
    if hasattr(space_or_names, "core") and hasattr(space_or_names, "mismatch"):
        names = list(space_or_names.core) + [m for m in space_or_names.mismatch if m not in space_or_names.core]
    else:
        names = list(dict.fromkeys(space_or_names))
    if not names:
        raise ParameterError("no parameters to analyse; give parameter names (e.g. ['Isoma_dpi_tau', "
                             "'Iampa_w0']) or a SearchSpace.")
    for name in names:
        if name not in PARAMETERS:
            raise unknown_name("parameter", name, PARAMETERS)
    return names


def _runs(source, protocols, traces) -> list[tuple]:
    """(protocol, experiment, traces, feature keys or None) per analysed protocol."""
    from dynacal.experiment import Experiment  # noqa: PLC0415
    from dynacal.protocols import PROTOCOLS, get_protocol  # noqa: PLC0415

    if isinstance(source, Experiment):
        source = {source.name: source}
    runs = []
    if hasattr(source, "recordings"):  # a Target: what its recordings hold
        for name, rec in source.recordings.items():
            proto = get_protocol(rec)
            feats = proto.features(rec)
            keys = [k for k, v in feats.items() if np.isfinite(np.asarray(v, dtype=float)).any()]
            runs.append((proto, rec.experiment, bool(rec.traces) if traces is None else traces, keys))
    elif isinstance(source, Mapping):
        for name, exp in source.items():
            if not isinstance(exp, Experiment):
                raise ParameterError(f"source[{name!r}] is a {type(exp).__name__}; give Experiments "
                                     f"(get_protocol({name!r}).experiment('core0')) or a Target.")
            if not exp.protocol:
                raise ParameterError(f"experiment {name!r} names no protocol; build it with "
                                     f"get_protocol(name).experiment(...) so its features can be read.")
            runs.append((get_protocol(exp.protocol), exp, True if traces is None else traces, None))
    else:
        raise ParameterError(f"source is a {type(source).__name__}; give a Target, or {{name: Experiment}}.")
    if protocols is not None:
        for p in protocols:
            if p not in PROTOCOLS:
                raise unknown_name("protocol", p, PROTOCOLS)
        runs = [r for r in runs if r[0].name in protocols]
    else:
        runs = [r for r in runs if r[0].name not in SKIP]
    if not runs:
        raise ParameterError(f"no protocol to analyse in the source (protocols={protocols}); give the "
                             f"experiments or recordings of e.g. 'fi' and 'kernels'.")
    first = runs[0][1].network
    for proto, exp, _, _ in runs[1:]:
        net = exp.network
        if not (np.array_equal(net.core, first.core) and np.array_equal(net.neuron_id, first.neuron_id)):
            raise ParameterError(f"the {proto.name} experiment holds other neurons than the "
                                 f"{runs[0][0].name} one; build every experiment on the same neurons.")
    return runs


def _noise_levels(source, protocols, noise: float) -> dict[str, float]:
    """Relative feature noise per protocol: ``noise``, or a target's measured noise floor
    (``NoiseFloor.level``) where that is larger."""
    floor = getattr(source, "noise", None)
    out = {}
    for name in protocols:
        level = noise
        if floor is not None and name in getattr(floor, "spreads", {}):
            measured = floor.level(name)
            level = max(noise, measured) if np.isfinite(measured) else noise
        out[name] = float(level)
    return out


def _join(parts: Sequence[Sensitivity], n: int, p: int) -> Sensitivity:
    if not any(s.features for s in parts):
        return Sensitivity(np.zeros((n, 0, p)), np.zeros((n, 0), bool), [], np.zeros((n, 0)), np.zeros(p))
    keep = [s for s in parts if s.features]
    return Sensitivity(np.concatenate([s.matrix for s in keep], axis=1),
                       np.concatenate([s.valid for s in keep], axis=1),
                       [f for s in keep for f in s.features], np.concatenate([s.values for s in keep], axis=1),
                       np.max([s.steps for s in keep], axis=0))


def _analyse(sens: Sensitivity, names, point, *, rtol, min_sensitivity, noise, prior) -> dict:
    """Per-neuron spectra, posterior spread and correlation, and the combinations."""
    S = np.where(sens.valid[..., None], sens.matrix, 0.0)  # (N, F, P)
    out = _nullspace.spectra(S, rtol=rtol, min_sensitivity=min_sensitivity, noise=noise, prior=prior)
    combos = _nullspace.combinations(S, out["sensitive"], names, rtol=rtol)
    n = S.shape[0]
    out["combinations"] = [_combination(expo, count / n, point) for expo, count in combos if count >= 0.5 * n]
    return out


_BIAS = re.compile(r"\(([A-Z][A-Z0-9_]+)\)")


def _keep_order(name: str) -> tuple:
    """Sort key of the member a fitter keeps: a bias the chip sets first, gains and capacitances last."""
    spec = PARAMETERS[name]
    return (not _BIAS.search(spec.doc), name.startswith("alpha_") or spec.unit == "F", name)


def _combination(exponents: tuple, fraction: float, point) -> Combination:
    """A Combination in a canonical form: members in table order, the kept member's power > 0."""
    table = list(PARAMETERS)
    expo = dict(sorted(exponents, key=lambda item: table.index(item[0])))
    keep = min(expo, key=_keep_order)
    if expo[keep] < 0:
        expo = {k: -v for k, v in expo.items()}
    exact = all(isinstance(e, Fraction) for e in expo.values())
    values = np.ones_like(next(iter(point.values())))
    for name, e in expo.items():
        values = values * point[name] ** float(e)
    return Combination(_nullspace.name_of(expo), {k: float(v) for k, v in expo.items()}, values, float(fraction),
                       exact, keep, tuple(k for k in expo if k != keep))


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
    drop = set(ident.unconstrained)
    for comb in ident.combinations:
        for level in (space.core, space.mismatch):
            members = sorted((m for m in comb.exponents if m in level and m not in drop), key=_keep_order)
            drop |= set(members[1:])
    if log_changes and drop & (set(space.core) | set(space.mismatch)):
        log.info("identifiable space: holding %s at their values", ", ".join(sorted(drop)))
    core = {k: v for k, v in space.core.items() if k not in drop}
    mismatch = {k: v for k, v in space.mismatch.items() if k not in drop}
    if dataclasses.is_dataclass(space):
        return dataclasses.replace(space, core=core, mismatch=mismatch)
    return type(space)(core=core, mismatch=mismatch, scales=getattr(space, "scales", {}),
                       code_grid=getattr(space, "code_grid", False))
