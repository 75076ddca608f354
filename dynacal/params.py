"""Model parameters of the Dynap-SE1 neuron and its DPI synapses: the one table.

``PARAMETERS`` gives every parameter's name, SI unit, default, plausible range and
meaning, as in ``shared/docs/dpi-model.md``. The simulator, the Brian2 backend, the bias
map, recordings and the CLI all use these names exactly. ``INITIAL_STATE`` gives the
state at t = 0.

A parameter value can be a scalar, per neuron ``(N,)`` (mismatch), or carry a leading
batch dimension ``(B, N)`` / ``(B, 1)`` of candidate parameter sets. Per-core biases are
expanded to per-neuron values with :func:`per_core`. ``Params`` stores each value as a
tensor of shape ``(B or 1, N or 1)`` that broadcasts to ``(B, N)``.

>>> p = Params.from_values({"Isoma_th": "2 nA"})
>>> float(p.Isoma_th)
2e-09

The order of parameters
-----------------------
The parameters a network runs with are built in one place,
:meth:`Network.params <dynacal.chip.Network.params>` (implemented in :mod:`dynacal.layers`),
from six layers. Each layer replaces, for the neurons and names it covers, what the layers
below it gave; the fourth multiplies instead:

1. the table defaults (``PARAMETERS``);
2. a calibration's core values (``ChipLayers.core_values``): what this chip's bias codes
   give, one value per global core (chip * 4 + core);
3. the network's core biases (``Chip.set_bias``);
4. the calibration's per-neuron mismatch factors (``ChipLayers.mismatch``), keyed by the
   physical neuron (global core, neuron id): value = core value x factor, whatever layer
   gave the core value, as on silicon, so changing a core bias keeps each neuron's mismatch;
5. the network's per-neuron values (``NeuronGroup.set_states``);
6. the caller's candidates, ``{name: value}``: a scalar, per neuron ``(N,)``, batched
   ``(B, N)`` / ``(B, 1)``, or per core ``{core: value or (B,) values}``. The caller's
   values always win: a candidate is the value the neuron runs with (no factor applied).

A calibration's layers cover the neurons it measured; neurons of other cores keep the
layers below. A backend given a ``Params`` runs it as it is; ``params=None`` means
``network.params()``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import numbers
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch

from .errors import ParameterError, unknown_name
from .units import format_quantity, parse_quantity

__all__ = ["ParamSpec", "PARAMETERS", "INITIAL_STATE", "STATE_NAMES", "SYNAPSE_TYPES",
           "Params", "per_core", "kappa", "to_tensor", "check_values", "check_dt"]

log = logging.getLogger(__name__)

#: Synapse types, in the order used by every array with a synapse-type axis.
SYNAPSE_TYPES = ("nmda", "ampa", "gaba_a", "gaba_b")


class ParamSpec(NamedTuple):
    """One row of the parameter table.

    ``low``/``high`` is the plausible range: values outside it are warned about.
    ``positive`` means the value must be strictly > 0 (it divides); otherwise >= 0.
    """

    name: str
    unit: str
    default: float
    low: float
    high: float
    positive: bool
    doc: str


def _row(name, unit, default, low, high, positive, doc):
    return name, ParamSpec(name, unit, default, low, high, positive, doc)


_pA, _pF = 1e-12, 1e-12
_ILO, _IHI = 1e-15, 1e-5  # plausible currents: below the dark current .. above the bias DAC
PARAMETERS: dict[str, ParamSpec] = dict([
    _row("kn", "", 0.75, 0.4, 1.0, True, "n-type subthreshold slope factor"),
    _row("kp", "", 0.66, 0.4, 1.0, True, "p-type subthreshold slope factor"),
    _row("Ut", "V", 25e-3, 20e-3, 40e-3, True, "thermal voltage"),
    _row("I0", "A", 1 * _pA, 1e-16, 1e-10, True, "dark current: the floor of every current"),
    _row("alpha_soma", "", 4.0, 0.1, 1000.0, True, "soma gain ratio Ig / Itau"),
    _row("alpha_ahp", "", 4.0, 0.1, 1000.0, True, "adaptation gain ratio"),
    _row("alpha_nmda", "", 4.0, 0.1, 1000.0, True, "NMDA gain ratio"),
    _row("alpha_ampa", "", 4.0, 0.1, 1000.0, True, "AMPA gain ratio"),
    _row("alpha_gaba_a", "", 4.0, 0.1, 1000.0, True, "GABA_A gain ratio"),
    _row("alpha_gaba_b", "", 4.0, 0.1, 1000.0, True, "GABA_B gain ratio"),
    _row("Csoma_mem", "F", 2 * _pF, 1e-14, 1e-10, True, "membrane capacitance"),
    _row("Isoma_dpi_tau", "A", 5 * _pA, _ILO, _IHI, True, "membrane leak current (IF_TAU1_N)"),
    _row("Isoma_th", "A", 2000 * _pA, _ILO, _IHI, True, "spike threshold"),
    _row("Isoma_reset", "A", 1.2 * _pA, _ILO, _IHI, False, "reset current"),
    _row("Isoma_const", "A", 1 * _pA, 0.0, _IHI, False, "constant injected current (IF_DC_P)"),
    _row("soma_refP", "s", 5e-3, 0.0, 0.1, False, "refractory period (IF_RFR_N)"),
    _row("Csoma_ahp", "F", 4 * _pF, 1e-14, 1e-10, True, "adaptation capacitance"),
    _row("Isoma_ahp_tau", "A", 2 * _pA, _ILO, _IHI, True, "adaptation leak current (IF_AHTAU_N)"),
    _row("Isoma_ahp_w", "A", 1 * _pA, 0.0, _IHI, False, "adaptation jump per spike, times alpha_ahp (IF_AHW_P)"),
    _row("Isoma_pfb_gain", "A", 100 * _pA, 0.0, _IHI, False, "positive-feedback gain"),
    _row("Isoma_pfb_th", "A", 1000 * _pA, _ILO, _IHI, False, "positive-feedback threshold"),
    _row("Isoma_pfb_norm", "A", 20 * _pA, _ILO, _IHI, True, "positive-feedback slope"),
    _row("Cnmda", "F", 2 * _pF, 1e-14, 1e-10, True, "NMDA capacitance"),
    _row("Campa", "F", 2 * _pF, 1e-14, 1e-10, True, "AMPA capacitance"),
    _row("Cgaba_a", "F", 2 * _pF, 1e-14, 1e-10, True, "GABA_A capacitance"),
    _row("Cgaba_b", "F", 2 * _pF, 1e-14, 1e-10, True, "GABA_B capacitance"),
    _row("Inmda_tau", "A", 2 * _pA, _ILO, _IHI, True, "NMDA leak current (NPDPIE_TAU_S_P)"),
    _row("Iampa_tau", "A", 20 * _pA, _ILO, _IHI, True, "AMPA leak current (NPDPIE_TAU_F_P)"),
    _row("Igaba_a_tau", "A", 5 * _pA, _ILO, _IHI, True, "GABA_A leak current (NPDPII_TAU_F_P)"),
    _row("Igaba_b_tau", "A", 5 * _pA, _ILO, _IHI, True, "GABA_B leak current (NPDPII_TAU_S_P)"),
    _row("Inmda_w0", "A", 100 * _pA, 0.0, _IHI, False, "NMDA base weight (PS_WEIGHT_EXC_S_N)"),
    _row("Iampa_w0", "A", 100 * _pA, 0.0, _IHI, False, "AMPA base weight (PS_WEIGHT_EXC_F_N)"),
    _row("Igaba_a_w0", "A", 100 * _pA, 0.0, _IHI, False, "GABA_A base weight (PS_WEIGHT_INH_F_N)"),
    _row("Igaba_b_w0", "A", 100 * _pA, 0.0, _IHI, False, "GABA_B base weight (PS_WEIGHT_INH_S_N)"),
    _row("Inmda_thr", "A", 1 * _pA, 0.0, _IHI, False, "NMDA voltage-gating threshold (IF_NMDA_N)"),
])

#: State at t = 0, in A. Quirk kept on purpose: the Brian2 reference starts Isoma_ahp at 0,
#: below I0, which freezes the adaptation until the first spike (dpi-model.md).
INITIAL_STATE: dict[str, float] = {
    "Isoma_mem": 1.1e-12, "Isoma_ahp": 0.0,
    "Inmda": 1e-12, "Iampa": 1e-12, "Igaba_a": 1e-12, "Igaba_b": 1e-12,
}
#: Names of the recordable state traces, in the order of ``INITIAL_STATE``.
STATE_NAMES = tuple(INITIAL_STATE)

# A value this many times above the plausible maximum is taken to be in the wrong unit.
_WRONG_UNIT = {"A": (1e-3, 1e-12, "pA given as A", "pA"), "F": (1e-6, 1e-12, "pF given as F", "pF"),
               "V": (1.0, 1e-3, "mV given as V", "mV"), "s": (1.0, 1e-3, "ms given as s", "ms")}

Value = Any  # float | str | np.ndarray | torch.Tensor


def kappa(p: "Params") -> torch.Tensor:
    """Mean subthreshold slope factor, ``(kn + kp) / 2``."""
    return (p.kn + p.kp) / 2


def to_tensor(name: str, value: Value, dtype, device) -> torch.Tensor:
    """One parameter's value as a tensor of shape ``(1, 1)``, ``(1, N)`` or ``(B, N)``.

    Used wherever a value of a table parameter enters (``Params``, the Chip API, the
    calibration layers); check the result with :func:`check_values`.

    Args:
        name: a name of ``PARAMETERS``.
        value: a number in SI units, a string with unit (``"5 pA"``), a sequence of either,
            a numpy array or a tensor; scalar, ``(N,)`` or ``(B, N)``.
        dtype, device: of the returned tensor.

    Raises:
        ParameterError: None, an empty value, a value that is not numeric, or more than two
            dimensions.
    """
    spec = PARAMETERS[name]
    if value is None:
        raise ParameterError(f"{name} = None; give a number ({spec.unit or 'dimensionless'}) or a string "
                             f"with unit such as {_example(spec)!r}, or leave {name} out for its default.")
    if isinstance(value, str):
        value = parse_quantity(value, spec.unit, name=name)
    elif isinstance(value, (list, tuple)) and any(isinstance(v, str) for v in value):
        value = [parse_quantity(v, spec.unit, name=name) if isinstance(v, str) else v for v in value]
    if isinstance(value, torch.Tensor):
        t = value.to(device=device, dtype=dtype)
    else:
        try:
            t = torch.as_tensor(np.asarray(value, dtype=np.float64), dtype=dtype, device=device)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"{name} = {value!r} is not a number or an array of numbers "
                                 f"({spec.unit or 'dimensionless'}).") from exc
    if t.numel() == 0:
        raise ParameterError(f"{name} = {value!r} is empty; give a number ({spec.unit or 'dimensionless'}), "
                             f"a string with unit such as {_example(spec)!r}, or one value per neuron.")
    if t.ndim == 0:
        t = t.reshape(1, 1)
    elif t.ndim == 1:
        t = t.reshape(1, -1)
    elif t.ndim > 2:
        raise ParameterError(f"{name} has shape {tuple(t.shape)}; expected a scalar, (N,) per neuron "
                             f"or (B, N) per candidate set and neuron.")
    return t


def _example(spec: ParamSpec) -> str:
    """A plausible value of ``spec`` as the string a user writes, e.g. ``'5 pA'``."""
    return format_quantity(spec.default, spec.unit, digits=3) if spec.unit else f"{spec.default:g}"


def check_values(name: str, t: torch.Tensor, *, warn: bool = True, text: Any = None) -> None:
    """Check the values of one parameter against its row of ``PARAMETERS``.

    Args:
        name: a name of ``PARAMETERS``.
        t: the values in SI units, any shape.
        warn: log a warning for values outside the plausible range; False for values
            measured on a chip.
        text: the value as the user wrote it, when it was a string with a unit (a unit was
            then given on purpose, so "pA given as A" is not the advice).

    Raises:
        ParameterError: NaN or inf, negative (or zero where the parameter must be positive)
            values, or values so far out of range that they are in the wrong unit.
    """
    spec = PARAMETERS[name]
    v = t.detach()
    unit = spec.unit or "(dimensionless)"
    if not torch.isfinite(v).all():
        raise ParameterError(f"{name} contains NaN or inf ({unit}); every value must be finite.")
    vmin, vmax = float(v.min()), float(v.max())
    if spec.positive and vmin <= 0 or vmin < 0:
        need = "> 0" if spec.positive else ">= 0"
        raise ParameterError(f"{name} = {format_quantity(vmin, spec.unit)} is negative or zero; "
                             f"{spec.doc} must be {need} {spec.unit}.")
    if spec.unit in _WRONG_UNIT:
        limit, scale, what, human = _WRONG_UNIT[spec.unit]
        too_big = vmax >= limit or (spec.unit == "s" and vmax > spec.high * 10)
        if too_big and isinstance(text, str):
            raise ParameterError(
                f"{name} = {text!r} is {format_quantity(vmax, spec.unit)}, far outside the plausible range "
                f"{format_quantity(spec.low, spec.unit)}..{format_quantity(spec.high, spec.unit)}; check the "
                f"prefix (e.g. {_example(spec)!r}).")
        if too_big:
            raise ParameterError(
                f"{name} = {vmax:g} {spec.unit} is far outside the plausible range "
                f"{spec.low:g}..{spec.high:g} {spec.unit}; it looks like {what}: pass "
                f"{vmax * scale:g} or \"{vmax:g} {human}\".")
    if spec.unit == "" and vmax > spec.high * 100:
        raise ParameterError(f"{name} = {vmax:g} is far outside the plausible range "
                             f"{spec.low:g}..{spec.high:g}.")
    if warn and (vmin < spec.low and not (vmin == 0 and not spec.positive) or vmax > spec.high):
        log.warning("%s spans %s..%s, outside the plausible range %s..%s", name,
                    format_quantity(vmin, spec.unit), format_quantity(vmax, spec.unit),
                    format_quantity(spec.low, spec.unit), format_quantity(spec.high, spec.unit))


class _ParamsMethods:
    """Methods of :class:`Params`; the fields come from ``PARAMETERS``."""

    @classmethod
    def from_values(cls, values: Mapping[str, Value] | None = None, *,
                    dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu",
                    **kwargs: Value) -> "Params":
        """Build validated parameters; names not given take their default.

        Args:
            values: name -> value (SI float, string with unit such as ``"5 pA"``, array or
                tensor of shape (), (N,), (B, 1) or (B, N)).
            dtype, device: of every stored tensor.
            **kwargs: more name=value pairs.

        Raises:
            ParameterError: an unknown name, NaN, a negative current, a value in the wrong
                unit, or shapes that do not broadcast.
        """
        if values is not None and not isinstance(values, Mapping):
            raise ParameterError(f"values = {values!r} is a {type(values).__name__}; give a mapping "
                                 f"{{name: value}}, e.g. {{'Isoma_th': '2 nA'}}, or name=value keywords.")
        given = dict(values or {}, **kwargs)
        for name in given:
            if name not in PARAMETERS:
                raise unknown_name("parameter", name, PARAMETERS)
        tensors = {}
        for name, spec in PARAMETERS.items():
            t = to_tensor(name, given.get(name, spec.default), dtype, device)
            if name in given:
                check_values(name, t, text=given[name])
            tensors[name] = t
        p = cls(**tensors)
        p.shape  # checks that shapes broadcast
        return p

    def replace(self, **kwargs: Value) -> "Params":
        """A copy with some values replaced (validated like ``from_values``)."""
        t0 = self.I0
        merged = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        for name in kwargs:
            if name not in PARAMETERS:
                raise unknown_name("parameter", name, PARAMETERS)
        for name, value in kwargs.items():
            t = to_tensor(name, value, t0.dtype, t0.device)
            check_values(name, t, text=value)
            merged[name] = t
        p = type(self)(**merged)
        p.shape
        return p

    @property
    def shape(self) -> tuple[int, int]:
        """The broadcast shape ``(B, N)`` of all values (1 where every value is shared)."""
        b, n = 1, 1
        for f in dataclasses.fields(self):
            t = getattr(self, f.name)
            for axis, (size, label) in enumerate(zip(t.shape, ("batch B", "neurons N"))):
                current = b if axis == 0 else n
                if size != 1 and current != 1 and size != current:
                    raise ParameterError(
                        f"{f.name} has shape {tuple(t.shape)}, which does not broadcast with "
                        f"{label} = {current} of the other parameters; give (B, N), (1, N), "
                        f"(B, 1) or a scalar.")
                if size != 1:
                    b, n = (size, n) if axis == 0 else (b, size)
        return b, n

    @property
    def dtype(self) -> torch.dtype:
        return self.I0.dtype

    @property
    def device(self) -> torch.device:
        return self.I0.device

    def to(self, dtype: torch.dtype | None = None, device=None) -> "Params":
        """The same values in another dtype or on another device."""
        return type(self)(**{f.name: getattr(self, f.name).to(dtype=dtype or self.dtype, device=device or self.device)
                             for f in dataclasses.fields(self)})

    def expand(self, batch: int, n_neurons: int) -> "Params":
        """Every value broadcast to a contiguous ``(batch, n_neurons)`` tensor."""
        b, n = self.shape
        if b not in (1, batch) or n not in (1, n_neurons):
            raise ParameterError(f"parameters of shape (B, N) = {(b, n)} do not fit a run with "
                                 f"B = {batch} parameter sets and N = {n_neurons} neurons.")
        return type(self)(**{f.name: getattr(self, f.name).expand(batch, n_neurons).contiguous()
                             for f in dataclasses.fields(self)})

    def as_dict(self) -> dict[str, np.ndarray]:
        """name -> numpy array of shape (B|1, N|1), in SI units (for files and metadata)."""
        return {f.name: getattr(self, f.name).detach().cpu().numpy() for f in dataclasses.fields(self)}

    def __repr__(self) -> str:
        parts = []
        for f in dataclasses.fields(self):
            t = getattr(self, f.name)
            unit = PARAMETERS[f.name].unit
            if t.numel() == 1:
                parts.append(f"{f.name}={format_quantity(float(t), unit)}")
            else:
                parts.append(f"{f.name}=<{tuple(t.shape)} {format_quantity(float(t.detach().mean()), unit)} mean>")
        return "Params(" + ", ".join(parts) + ")"


Params = dataclasses.make_dataclass(
    "Params", [(name, torch.Tensor) for name in PARAMETERS], bases=(_ParamsMethods,),
    frozen=True, eq=False, repr=False)
Params.__module__ = __name__
Params.__doc__ = ("Frozen set of model parameters, one ``torch.Tensor`` per row of "
                  "``PARAMETERS``, each of shape (B|1, N|1) in SI units. Build it with "
                  "``Params.from_values``.")


def per_core(values: Value, core_of_neuron: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Expand per-core values to per-neuron values.

    Args:
        values: shape (C,) or (B, C), one value per core (C = number of cores indexed).
        core_of_neuron: int array (N,), the core index of every neuron.

    Returns:
        Tensor of shape (N,) or (B, N).
    """
    v = values if isinstance(values, torch.Tensor) else torch.as_tensor(np.asarray(values, dtype=np.float64))
    idx = torch.as_tensor(np.asarray(core_of_neuron), dtype=torch.long, device=v.device)
    if idx.numel() and int(idx.max()) >= v.shape[-1]:
        raise ParameterError(f"per-core values have {v.shape[-1]} cores but a neuron sits on core "
                             f"{int(idx.max())}; give one value per core.")
    return v[..., idx]


def check_dt(dt: float | str) -> float:
    """Validate a time step: seconds (a Python or numpy number) or a string such as
    ``"100 us"`` (used by Experiment)."""
    if isinstance(dt, str):
        dt = parse_quantity(dt, "s", name="dt")
    elif isinstance(dt, (np.ndarray, torch.Tensor)) and dt.ndim == 0 and not isinstance(dt, np.bool_):
        dt = dt.item()
    if isinstance(dt, (bool, np.bool_)) or not isinstance(dt, numbers.Real) or not math.isfinite(dt) or dt <= 0:
        raise ParameterError(f"dt = {dt!r} s must be a positive finite number of seconds, e.g. 1e-4 "
                             f"or \"100 us\".")
    if dt >= 0.1:
        raise ParameterError(f"dt = {dt:g} s is implausibly large; it looks like ms or us given as s: "
                             f"pass e.g. 1e-4 or \"100 us\".")
    return float(dt)

