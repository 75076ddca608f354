"""What a calibration searches: core values, per-neuron mismatch factors, condition scales.

A :class:`SearchSpace` holds three groups of :class:`Parameter` (names from
``dynacal.params.PARAMETERS``):

- ``core``: one value per candidate for the calibrated core (a bias the protocols constrain:
  leak, gain, refractory period, synapse leaks, gains and weights), SI;
- ``mismatch``: per-neuron factors (log-normal around 1, prior ``sigma`` of the log) of the
  parameters the silicon spreads per neuron (``hardware/twin_chip.py`` ``MISMATCHED``);
- ``scales``: board targets only: a condition parameter set through a code (the DC of an
  f-I curve, ``Isoma_const``) is ``scale x nominal`` on the chip.

The value a candidate simulates is ``core[b] x factor[b, n]`` (``/work/FITTING.md``).

:meth:`SearchSpace.default` picks what a target's protocols constrain (their
``sensitive_to`` that a bias of the chip sets: not the capacitances, slope factors, thermal
voltage or dark current, which reach the data only through ratios with a bias, nor the
threshold and positive feedback, which no Dynap-SE1 bias sets; ``include=`` adds them) and
bounds each core value to ``default / 10 .. default x 10`` (x/3 for gains, x/5 for the
refractory period), clipped to the table's plausible range and to what the nominal bias DAC
can reach. ``code_grid=True`` keeps core values on the values the nominal DAC's (coarse,
fine) codes give (:meth:`Parameter.snap`).

>>> p = Parameter("Isoma_dpi_tau", 1e-12, 1e-10)
>>> round(p.from_unit(0.5) * 1e12, 6)
10.0
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from dynacal.errors import ParameterError, unknown_name
from dynacal.params import PARAMETERS
from dynacal.units import format_quantity

__all__ = ["Parameter", "SearchSpace", "NOT_BIASES", "WINDOWS", "reachable_range"]

#: Parameters no bias sets: they are fixed at their table value in the default space.
NOT_BIASES = ("kn", "kp", "Ut", "I0", "Csoma_mem", "Csoma_ahp", "Cnmda", "Campa", "Cgaba_a", "Cgaba_b")
#: Factor of the default window around a core default, per kind of parameter.
WINDOWS = {"A": 10.0, "": 3.0, "s": 5.0}
LEVELS = ("core", "neuron", "scale")


def _fmt(value: float, name: str) -> str:
    unit = PARAMETERS[name].unit if name in PARAMETERS else ""
    return format_quantity(value, unit) if unit else f"{value:g}"


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One searched quantity.

    Attributes:
        name: a ``PARAMETERS`` name.
        low, high: bounds (SI for core values; dimensionless for factors and scales).
        log: search in log space (currents, factors).
        default: start value (default: geometric / arithmetic middle).
        level: ``"core"``, ``"neuron"`` (a mismatch factor) or ``"scale"``.
        sigma: prior std of the log of a factor (neuron level), e.g. 0.2.
        grid: sorted values the parameter may take (``code_grid``), or None.
    """

    name: str
    low: float
    high: float
    log: bool = True
    default: float | None = None
    level: str = "core"
    sigma: float | None = None
    grid: tuple[float, ...] | None = None

    def __post_init__(self):
        if self.name not in PARAMETERS:
            raise unknown_name("parameter", self.name, PARAMETERS)
        if self.level not in LEVELS:
            raise ParameterError(f"{self.name}: level = {self.level!r}; give one of {LEVELS}.")
        lo, hi = float(self.low), float(self.high)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ParameterError(f"{self.name}: bounds {lo:g}..{hi:g} must be finite with low < high.")
        if self.log and lo <= 0:
            raise ParameterError(f"{self.name}: low = {lo:g} must be > 0 for a log-scale search; give a positive "
                                 f"low or log=False.")
        default = self.default
        if default is None:
            default = math.sqrt(lo * hi) if self.log else (lo + hi) / 2
        default = float(default)
        if not lo <= default <= hi:
            raise ParameterError(f"{self.name}: default {_fmt(default, self.name)} is outside its bounds "
                                 f"{_fmt(lo, self.name)}..{_fmt(hi, self.name)}; widen the bounds or move the default.")
        if self.sigma is not None and not self.sigma > 0:
            raise ParameterError(f"{self.name}: sigma = {self.sigma} must be > 0 (std of the log factor, e.g. 0.2).")
        grid = None
        if self.grid is not None:
            g = np.unique(np.asarray(self.grid, dtype=np.float64))
            g = g[(g >= lo * (1 - 1e-12)) & (g <= hi * (1 + 1e-12))]
            if g.size < 2:
                raise ParameterError(f"{self.name}: fewer than 2 grid values inside {_fmt(lo, self.name)}.."
                                     f"{_fmt(hi, self.name)}; widen the bounds or drop code_grid.")
            grid = tuple(float(x) for x in g)
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)
        object.__setattr__(self, "default", default)
        object.__setattr__(self, "grid", grid)

    # unit cube <-> value: what samplers without bounds of their own (per-neuron search) use
    def to_unit(self, value):
        """Value(s) -> [0, 1] (log or linear in the bounds); numpy or torch."""
        lib = _lib(value)
        if self.log:
            return (lib.log(value) - math.log(self.low)) / (math.log(self.high) - math.log(self.low))
        return (value - self.low) / (self.high - self.low)

    def from_unit(self, u):
        """[0, 1] -> value(s) (clipped to the bounds, snapped to the grid when there is one)."""
        lib = _lib(u)
        u = lib.clip(u, 0.0, 1.0) if lib is np else u.clamp(0.0, 1.0)
        if self.log:
            v = lib.exp(math.log(self.low) + u * (math.log(self.high) - math.log(self.low)))
        else:
            v = self.low + u * (self.high - self.low)
        return self.snap(v) if self.grid is not None else v

    def snap(self, value):
        """Value(s) -> the nearest grid value (in log), numpy; unchanged without a grid."""
        if self.grid is None:
            return value
        g = np.asarray(self.grid)
        v = np.asarray(value, dtype=np.float64)
        idx = np.clip(np.searchsorted(g, v), 1, g.size - 1)
        lo, hi = g[idx - 1], g[idx]
        near = np.where(np.abs(np.log(v / lo)) <= np.abs(np.log(hi / v)), lo, hi)
        return near

    def check(self, value) -> None:
        """Raise ParameterError when any value is outside the bounds."""
        v = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value, dtype=np.float64)
        tol = 1e-9 * max(abs(self.low), abs(self.high))
        bad = ~np.isfinite(v) | (v < self.low - tol) | (v > self.high + tol)
        if bad.any():
            x = float(v[bad].reshape(-1)[0])
            what = {"core": "core value", "neuron": "mismatch factor", "scale": "condition scale"}[self.level]
            raise ParameterError(f"{self.name} {what} = {_fmt(x, self.name) if self.level == 'core' else f'{x:g}'} "
                                 f"is outside its search range {_fmt(self.low, self.name) if self.level == 'core' else self.low}"
                                 f"..{_fmt(self.high, self.name) if self.level == 'core' else self.high}; clip it or "
                                 f"widen the Parameter's bounds.")


def _lib(x):
    import torch  # noqa: PLC0415

    return torch if isinstance(x, torch.Tensor) else np


def reachable_range(name: str) -> tuple[float, float] | None:
    """(low, high) SI values the nominal bias DAC can give ``name``; None where no bias sets it.

    Gains are ratios of two biases: the range is the gain bias's range over the base bias at
    its table default; weights are taken at the reference pulse current.
    """
    from dynacal.hardware.biasgen import BiasDAC  # noqa: PLC0415  (the core does not import hardware)
    from dynacal.hardware.biasmap import BIAS_MAP, BiasConstants  # noqa: PLC0415

    dac, const = BiasDAC(), BiasConstants()
    for bias, (kind, param, base) in BIAS_MAP.items():
        if param != name:
            continue
        lo, hi = dac.reachable(bias)
        if kind == "gain":
            base_param = BIAS_MAP[base][1]
            ref = PARAMETERS[base_param].default
            return lo / ref, hi / ref
        if kind == "period":
            return const.refractory_charge / hi, const.refractory_charge / lo
        return lo, hi  # current; weight at the reference pulse (I_w0 = I at pulse_reference)
    return None


def _grid(name: str) -> tuple[float, ...] | None:
    """Every value the nominal DAC's codes give ``name`` (gains over the base at its default)."""
    from dynacal.hardware.biasgen import BiasDAC  # noqa: PLC0415
    from dynacal.hardware.biasmap import BIAS_MAP, BiasConstants  # noqa: PLC0415

    dac, const = BiasDAC(), BiasConstants()
    for bias, (kind, param, base) in BIAS_MAP.items():
        if param != name:
            continue
        t = np.asarray(dac.table(bias), dtype=np.float64).reshape(-1)
        t = t[t > 0]
        if kind == "gain":
            t = t / PARAMETERS[BIAS_MAP[base][1]].default
        elif kind == "period":
            t = const.refractory_charge / t
        return tuple(float(x) for x in np.unique(t))
    return None


def check_reachable(name: str, value: float) -> None:
    """Raise ParameterError when the nominal DAC cannot give ``value`` to ``name``."""
    reach = reachable_range(name)
    if reach is None:
        return
    lo, hi = reach
    if not lo * (1 - 1e-9) <= value <= hi * (1 + 1e-9):
        raise ParameterError(f"{name} = {_fmt(value, name)} is outside what the bias DAC can reach "
                             f"({_fmt(lo, name)}..{_fmt(hi, name)}); give a value inside that range (or a "
                             f"Parameter with bounds inside it).")


def core_parameter(name: str, default: float, *, window: float | None = None, code_grid: bool = False) -> Parameter:
    """The default search Parameter of a core value: ``default / w .. default x w`` (``WINDOWS``),
    clipped to the table's plausible range and to what the nominal DAC reaches.

    Raises:
        ParameterError: ``default`` itself is outside what the DAC can reach.
    """
    spec = PARAMETERS[name]
    check_reachable(name, default)
    w = window or WINDOWS.get(spec.unit, 10.0)
    lo, hi = default / w, default * w
    lo, hi = max(lo, spec.low if spec.low > 0 else lo), min(hi, spec.high)
    reach = reachable_range(name)
    if reach is not None:
        lo, hi = max(lo, reach[0]), min(hi, reach[1])
    return Parameter(name, lo, hi, log=True, default=default, level="core",
                     grid=_grid(name) if code_grid and reach is not None else None)


def factor_parameter(name: str, *, low: float = 0.3, high: float = 3.0, sigma: float = 0.2) -> Parameter:
    """A per-neuron mismatch factor: log-normal around 1 within ``low..high``."""
    return Parameter(name, low, high, log=True, default=1.0, level="neuron", sigma=sigma)


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The searched quantities (module docstring).

    Attributes:
        core: name -> Parameter (level "core"), SI.
        mismatch: name -> Parameter (level "neuron"), factors.
        scales: condition parameter name -> Parameter (level "scale").
        code_grid: core values are kept on the nominal DAC's code grid.
    """

    core: Mapping[str, Parameter]
    mismatch: Mapping[str, Parameter] = dataclasses.field(default_factory=dict)
    scales: Mapping[str, Parameter] = dataclasses.field(default_factory=dict)
    code_grid: bool = False

    def __post_init__(self):
        for group, level in (("core", "core"), ("mismatch", "neuron"), ("scales", "scale")):
            items = dict(getattr(self, group))
            for key, p in items.items():
                if not isinstance(p, Parameter):
                    raise ParameterError(f"SearchSpace.{group}[{key!r}] is a {type(p).__name__}; give a Parameter.")
                if key != p.name or p.level != level:
                    raise ParameterError(f"SearchSpace.{group}[{key!r}] holds Parameter {p.name!r} of level "
                                         f"{p.level!r}; key it by its name, with level {level!r}.")
                if level == "core":
                    check_reachable(p.name, p.low)
                    check_reachable(p.name, p.high)
            object.__setattr__(self, group, items)
        if not self.core and not self.mismatch and not self.scales:
            raise ParameterError("the search space is empty: give at least one core, mismatch or scale Parameter.")
        if self.code_grid:
            object.__setattr__(self, "core", {k: p if p.grid is not None or _grid(k) is None else
                                              dataclasses.replace(p, grid=_grid(k)) for k, p in self.core.items()})

    @property
    def names(self) -> list[str]:
        """Every searched quantity as ``"core:<name>"``, ``"factor:<name>"``, ``"scale:<name>"``."""
        return ([f"core:{k}" for k in self.core] + [f"factor:{k}" for k in self.mismatch]
                + [f"scale:{k}" for k in self.scales])

    def defaults(self) -> dict[str, dict[str, float]]:
        """{"core": {name: default}, "factors": {...}, "scales": {...}}."""
        return {"core": {k: p.default for k, p in self.core.items()},
                "factors": {k: p.default for k, p in self.mismatch.items()},
                "scales": {k: p.default for k, p in self.scales.items()}}

    def to_dict(self) -> dict:
        """JSON-able description (for a result's options and provenance)."""
        def one(p: Parameter) -> dict:
            return {"low": p.low, "high": p.high, "log": p.log, "default": p.default, "sigma": p.sigma,
                    "grid": p.grid is not None}
        return {"core": {k: one(p) for k, p in self.core.items()},
                "mismatch": {k: one(p) for k, p in self.mismatch.items()},
                "scales": {k: one(p) for k, p in self.scales.items()}, "code_grid": self.code_grid}

    @classmethod
    def default(cls, target: Any, *, code_grid: bool = False, factor_low: float = 0.3, factor_high: float = 3.0,
                sigma: float = 0.2, exclude: tuple[str, ...] = (), include: tuple[str, ...] = ()) -> "SearchSpace":
        """What ``target``'s protocols constrain (module docstring).

        Args:
            target: a Target (``.recordings``) or a mapping name -> Recording.
            code_grid: search core values on the nominal DAC's codes.
            factor_low, factor_high, sigma: bounds and prior of the mismatch factors.
            exclude: parameter names to leave out.
            include: parameters no bias sets (``Isoma_th``, ``Isoma_pfb_*``) to search too; by
                default those stay at the network's values (a chip cannot change them).

        Raises:
            ParameterError: no recording names a protocol that constrains anything.
        """
        from ._target_view import board_codes, network_values, protocols_of  # noqa: PLC0415

        protocols = protocols_of(target)
        constrained: list[str] = []
        conditions: set[str] = set()
        for proto in protocols.values():
            conditions |= set(proto.conditions())
            constrained += [n for n in proto.sensitive_to if n not in constrained]
        for n in include:
            if n not in PARAMETERS:
                raise unknown_name("parameter", n, PARAMETERS)
        names = [n for n in constrained if n not in NOT_BIASES and n not in conditions and n not in exclude
                 and (reachable_range(n) is not None or n in include)]
        names += [n for n in include if n not in names]
        if not names:
            raise ParameterError(f"the target's protocols {sorted(protocols)} constrain no bias; a target needs at "
                                 f"least one of fi, refractory, adaptation, kernels, rate_transfer.")
        values = network_values(target, names)
        core = {n: core_parameter(n, values[n], code_grid=code_grid) for n in names}
        from dynacal.hardware.twin_chip import MISMATCHED  # noqa: PLC0415

        mismatch = {n: factor_parameter(n, low=factor_low, high=factor_high, sigma=sigma)
                    for n in names if n in MISMATCHED}
        scales = {}
        if board_codes(target) is not None:
            scales = {n: Parameter(n, 0.5, 2.0, log=True, default=1.0, level="scale") for n in sorted(conditions)
                      if reachable_range(n) is not None}
        return cls(core, mismatch, scales, code_grid)
