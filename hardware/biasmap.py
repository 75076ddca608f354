"""The 25 biases of a Dynap-SE1 core <-> the model parameters of ``shared/docs/dpi-model.md``.

The map (``BIAS_MAP``; table in ``shared/docs/dynapse1-hardware.md``), for one core::

    Isoma_dpi_tau = I(IF_TAU1_N)          alpha_soma   = I(IF_THR_N)      / I(IF_TAU1_N)
    Isoma_ahp_tau = I(IF_AHTAU_N)         alpha_ahp    = I(IF_AHTHR_N)    / I(IF_AHTAU_N)
    Iampa_tau     = I(NPDPIE_TAU_F_P)     alpha_ampa   = I(NPDPIE_THR_F_P) / I(NPDPIE_TAU_F_P)
    Inmda_tau     = I(NPDPIE_TAU_S_P)     alpha_nmda   = I(NPDPIE_THR_S_P) / I(NPDPIE_TAU_S_P)
    Igaba_a_tau   = I(NPDPII_TAU_F_P)     alpha_gaba_a = I(NPDPII_THR_F_P) / I(NPDPII_TAU_F_P)
    Igaba_b_tau   = I(NPDPII_TAU_S_P)     alpha_gaba_b = I(NPDPII_THR_S_P) / I(NPDPII_TAU_S_P)
    Isoma_const = I(IF_DC_P)   Inmda_thr = I(IF_NMDA_N)   Isoma_ahp_w = I(IF_AHW_P)
    soma_refP   = refractory_charge / I(IF_RFR_N)                    (a pulse width)
    I<X>_w0     = I(PS_WEIGHT_<X>) * pulse_reference / I(PULSE_PWLK_P)

Refractory period: the refractory pulse ends when ``I(IF_RFR_N)`` has charged a capacitor
``C_ref`` through a swing ``V_swing``, so ``refP = C_ref * V_swing / I``. We take
``C_ref = 0.1 pF`` and ``V_swing = 0.2 V`` (approx.): ``refractory_charge = 2e-14 C``, so
5 ms <-> 4 pA. Pulse width: a synaptic jump is the weight current integrated over the input
pulse, whose width is inversely proportional to ``I(PULSE_PWLK_P)``; the model's ``I<X>_w0``
is the weight current at the reference pulse current ``pulse_reference = 20.78 nA`` (the
code (4, 106) of the community table). Both constants are per chip: calibration fits them.
``IF_TAU2_N`` (a second leak a neuron can select), ``IF_BUF_P``, ``IF_CASC_N`` and ``R2R_P``
are not in the model; they are written with the fixed codes of ``FIXED_CODES``.

Rounding: a gain is a ratio of two rounded currents, so :func:`params_to_codes` codes the
leak first and then the gain bias for ``alpha * (achieved leak)``; weights likewise use the
achieved pulse current. The export file is ``{chip: {core: {bias: [coarse, fine]}}}``
(strings as keys) plus a ``"_meta"`` entry (format, version, coarse convention, DAC).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dynacal.files import atomic_write
from dynacal.errors import ParameterError, unknown_name
from dynacal.params import PARAMETERS
from dynacal.units import format_quantity

from .biasgen import BIAS_NAMES, BiasDAC, reverse_coarse

__all__ = ["BIAS_MAP", "FIXED_CODES", "MODEL_PARAMETERS", "BiasConstants", "BiasSetting", "BiasReport",
           "currents_to_params", "params_to_currents", "params_to_codes", "export_biases", "import_biases",
           "core_key", "LEAK_BIASES"]

#: bias -> (kind, model parameter, base bias). kind: "current" (param = I), "gain" (param = I /
#: I(base)), "period" (param = refractory_charge / I), "weight" (param = I * pulse_reference /
#: I(PULSE_PWLK_P)), "pulse" (PULSE_PWLK_P), "fixed" (not in the model).
BIAS_MAP: dict[str, tuple[str, str | None, str | None]] = {
    "IF_TAU1_N": ("current", "Isoma_dpi_tau", None), "IF_THR_N": ("gain", "alpha_soma", "IF_TAU1_N"),
    "IF_RFR_N": ("period", "soma_refP", None), "IF_DC_P": ("current", "Isoma_const", None),
    "IF_NMDA_N": ("current", "Inmda_thr", None),
    "IF_AHTAU_N": ("current", "Isoma_ahp_tau", None), "IF_AHTHR_N": ("gain", "alpha_ahp", "IF_AHTAU_N"),
    "IF_AHW_P": ("current", "Isoma_ahp_w", None),
    "NPDPIE_TAU_F_P": ("current", "Iampa_tau", None), "NPDPIE_THR_F_P": ("gain", "alpha_ampa", "NPDPIE_TAU_F_P"),
    "NPDPIE_TAU_S_P": ("current", "Inmda_tau", None), "NPDPIE_THR_S_P": ("gain", "alpha_nmda", "NPDPIE_TAU_S_P"),
    "NPDPII_TAU_F_P": ("current", "Igaba_a_tau", None),
    "NPDPII_THR_F_P": ("gain", "alpha_gaba_a", "NPDPII_TAU_F_P"),
    "NPDPII_TAU_S_P": ("current", "Igaba_b_tau", None),
    "NPDPII_THR_S_P": ("gain", "alpha_gaba_b", "NPDPII_TAU_S_P"),
    "PS_WEIGHT_EXC_F_N": ("weight", "Iampa_w0", None), "PS_WEIGHT_EXC_S_N": ("weight", "Inmda_w0", None),
    "PS_WEIGHT_INH_F_N": ("weight", "Igaba_a_w0", None), "PS_WEIGHT_INH_S_N": ("weight", "Igaba_b_w0", None),
    "PULSE_PWLK_P": ("pulse", None, None),
    "IF_TAU2_N": ("fixed", None, None), "IF_BUF_P": ("fixed", None, None), "IF_CASC_N": ("fixed", None, None),
    "R2R_P": ("fixed", None, None),
}
assert set(BIAS_MAP) == set(BIAS_NAMES)
#: Codes (logical coarse, fine) of the biases that are not in the model (community settings).
FIXED_CODES = {"IF_TAU2_N": (7, 255), "IF_BUF_P": (3, 80), "IF_CASC_N": (0, 0), "R2R_P": (3, 85)}
#: The leak (time-constant) biases: raising them all to their maximum discharges a core.
LEAK_BIASES = ("IF_TAU1_N", "IF_AHTAU_N", "NPDPIE_TAU_F_P", "NPDPIE_TAU_S_P", "NPDPII_TAU_F_P", "NPDPII_TAU_S_P")
#: The model parameters a core's biases set (everything else is fixed by the silicon).
MODEL_PARAMETERS = tuple(p for kind, p, _ in BIAS_MAP.values() if p is not None)
_ORDER = [b for b, v in BIAS_MAP.items() if v[0] in ("current", "period", "pulse")] + \
         [b for b, v in BIAS_MAP.items() if v[0] in ("gain", "weight")]
_POSITIVE = {b for b, (k, p, _) in BIAS_MAP.items() if p and PARAMETERS[p].positive} | {"PULSE_PWLK_P"}


@dataclasses.dataclass(frozen=True)
class BiasConstants:
    """Chip constants of the bias map (see the module doc).

    Attributes:
        refractory_charge: C_ref * V_swing in C; ``soma_refP = refractory_charge / I(IF_RFR_N)``.
        pulse_reference: I(PULSE_PWLK_P) in A at which ``I<X>_w0`` equals the weight current.
        pulse_current: I(PULSE_PWLK_P) in A that an export targets (None: ``pulse_reference``).
    """

    refractory_charge: float = 0.1e-12 * 0.2
    pulse_reference: float = 50e-9 * 106 / 255
    pulse_current: float | None = None


def core_key(key) -> tuple[int, int]:
    """(chip, core) from a global core index (chip * 4 + core) or a (chip, core) pair."""
    if isinstance(key, tuple):
        chip, core = (int(k) for k in key)
    else:
        chip, core = divmod(int(key), 4)
    if not (0 <= chip < 4 and 0 <= core < 4):
        raise ParameterError(f"core {key!r} does not exist on a Dynap-SE1 board (chips 0..3, cores 0..3).")
    return chip, core


def currents_to_params(currents: Mapping[str, Any], constants: BiasConstants = BiasConstants()) -> dict[str, np.ndarray]:
    """Model parameters from bias currents (vectorised: arrays of one broadcast shape).

    Args:
        currents: bias name -> current in A (any shape). Parameters whose biases are
            missing are left out of the result.
        constants: the chip constants of the map.

    Returns:
        parameter name -> float64 array (SI units).

    Raises:
        ParameterError: an unknown bias name, or a zero current where the parameter divides
            by it (e.g. IF_TAU1_N = 0 A gives no leak).
    """
    for name in currents:
        if name not in BIAS_MAP:
            raise unknown_name("bias", name, BIAS_NAMES)
    cur = {k: np.asarray(v, dtype=np.float64) for k, v in currents.items()}
    out = {}
    for bias, (kind, param, base) in BIAS_MAP.items():
        if param is None or bias not in cur:
            continue
        divisor = {"gain": base, "period": bias, "weight": "PULSE_PWLK_P"}.get(kind)
        if divisor is not None:
            if divisor not in cur:
                continue
            if np.any(cur[divisor] <= 0):
                raise ParameterError(f"{divisor} = 0 A: {param} divides by it; set a code with fine >= 1 "
                                     f"(or a DAC with a floor) for {divisor}.")
        i = cur[bias]
        if kind == "current":
            out[param] = i.copy()
        elif kind == "gain":
            out[param] = i / cur[base]
        elif kind == "period":
            out[param] = constants.refractory_charge / i
        elif kind == "weight":
            out[param] = i * constants.pulse_reference / cur["PULSE_PWLK_P"]
    return out


def params_to_currents(values: Mapping[str, Any], constants: BiasConstants = BiasConstants()) -> dict[str, np.ndarray]:
    """Ideal bias currents (before rounding) for model parameters; defaults fill the gaps.

    Args:
        values: parameter name -> value in SI units (any broadcast shape); only the
            parameters in ``MODEL_PARAMETERS`` are used.

    Returns:
        bias name -> current in A for the 21 model biases (not the fixed ones).
    """
    v = _model_values(values)
    pulse = constants.pulse_current if constants.pulse_current is not None else constants.pulse_reference
    out = {"PULSE_PWLK_P": np.broadcast_to(np.float64(pulse), next(iter(v.values())).shape).copy()}
    for bias in _ORDER:
        kind, param, base = BIAS_MAP[bias]
        if kind == "current":
            out[bias] = v[param]
        elif kind == "period":
            out[bias] = constants.refractory_charge / np.maximum(v[param], 1e-300)
        elif kind == "gain":
            out[bias] = v[param] * out[base]
        elif kind == "weight":
            out[bias] = v[param] * out["PULSE_PWLK_P"] / constants.pulse_reference
    return out


@dataclasses.dataclass
class BiasReport:
    """Rounding of every bias: one row per (core, bias) with target and achieved values.

    ``rows``: dicts with keys core, bias, coarse, fine, target_A, achieved_A, rel_error and,
    for model biases, parameter, target_param, achieved_param, param_rel_error.
    """

    rows: list[dict]

    @property
    def max_rel_error(self) -> float:
        """Largest relative error of a model parameter (0 when every one is met exactly)."""
        errs = [abs(r["param_rel_error"]) for r in self.rows if r.get("parameter")]
        return max(errs, default=0.0)

    def worst(self, n: int = 5) -> list[dict]:
        """The n rows with the largest parameter error."""
        return sorted((r for r in self.rows if r.get("parameter")), key=lambda r: -abs(r["param_rel_error"]))[:n]

    def to_text(self) -> str:
        """A table for humans (one line per bias)."""
        lines = [f"{'core':>8} {'bias':<18} {'code':>8} {'target':>12} {'achieved':>12} {'param error':>11}"]
        for r in self.rows:
            err = f"{100 * r['param_rel_error']:+.3f}%" if r.get("parameter") else "fixed"
            lines.append(f"{str(r['core']):>8} {r['bias']:<18} {str((r['coarse'], r['fine'])):>8} "
                         f"{format_quantity(r['target_A'], 'A'):>12} {format_quantity(r['achieved_A'], 'A'):>12} "
                         f"{err:>11}")
        return "\n".join(lines)


@dataclasses.dataclass
class BiasSetting:
    """Codes for a set of cores. ``codes``: core -> bias -> (logical coarse, fine);
    ``currents``: core -> bias -> achieved A; ``params``: core -> parameter -> achieved value."""

    codes: dict
    currents: dict
    params: dict
    report: BiasReport


def params_to_codes(per_core: Mapping[Any, Mapping[str, Any]], dac: BiasDAC | None = None,
                    constants: BiasConstants = BiasConstants()) -> BiasSetting:
    """Codes for per-core parameter values, with the rounding error of every bias.

    Args:
        per_core: core (global index or (chip, core)) -> {parameter: SI value}; parameters
            not given take their default, parameters not set by biases are ignored.
        dac: the DAC that turns codes into currents (default: the community table).
        constants: chip constants of the map.

    Returns:
        :class:`BiasSetting`; codes are in the *logical* coarse convention.

    Raises:
        ParameterError: unknown parameter names, values whose currents the DAC cannot reach.
    """
    dac = dac or BiasDAC()
    keys = [core_key(k) for k in per_core]
    if not keys:
        return BiasSetting({}, {}, {}, BiasReport([]))
    values = [_model_values(v) for v in per_core.values()]
    for key, v in zip(keys, values):
        for p, arr in v.items():
            if arr.size != 1:
                raise ParameterError(f"{p} on core {key} has {arr.size} values; a bias is one value per core "
                                     f"(per-neuron differences are the chip's mismatch and cannot be set).")
    stacked = {p: np.array([float(v[p].reshape(-1)[0]) for v in values]) for p in MODEL_PARAMETERS}
    ideal = params_to_currents(stacked, constants)
    codes: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    achieved: dict[str, np.ndarray] = {}
    targets: dict[str, np.ndarray] = {}
    for bias in _ORDER:  # bases (leaks, pulse) first: gains and weights use their achieved currents
        kind, param, base = BIAS_MAP[bias]
        target = ideal[bias]
        if kind == "gain":
            target = stacked[param] * achieved[base]
        elif kind == "weight":
            target = stacked[param] * achieved["PULSE_PWLK_P"] / constants.pulse_reference
        targets[bias] = target
        try:
            r = dac.code(target, bias)
        except ParameterError as exc:
            what = f"{param} = {format_quantity(float(np.max(stacked[param])), PARAMETERS[param].unit)}" if param \
                else "the pulse current"
            raise ParameterError(f"{what} needs {bias} outside its DAC range: {exc}") from exc
        if bias in _POSITIVE and np.any(r.current <= 0):
            raise ParameterError(f"{bias}: the code nearest to {format_quantity(float(target.min()), 'A')} gives "
                                 f"0 A, but {param or bias} must be > 0; raise the value.")
        coarse = reverse_coarse(r.coarse) if dac.bit_reversed else r.coarse
        codes[bias], achieved[bias] = (coarse, r.fine), r.current
    for bias, (c, f) in FIXED_CODES.items():
        n = len(keys)
        codes[bias] = (np.full(n, c), np.full(n, f))
        cc = reverse_coarse(codes[bias][0]) if dac.bit_reversed else codes[bias][0]
        achieved[bias] = targets[bias] = dac.current(cc, codes[bias][1], bias)
    got = currents_to_params(achieved, constants)
    out_codes, out_cur, out_par, rows = {}, {}, {}, []
    for i, key in enumerate(keys):
        out_codes[key] = {b: (int(codes[b][0][i]), int(codes[b][1][i])) for b in BIAS_NAMES}
        out_cur[key] = {b: float(achieved[b][i]) for b in BIAS_NAMES}
        out_par[key] = {p: float(got[p][i]) for p in MODEL_PARAMETERS}
        for b in BIAS_NAMES:
            param = BIAS_MAP[b][1]
            t, a = float(targets[b][i]), float(achieved[b][i])
            row = {"core": key, "bias": b, "coarse": out_codes[key][b][0], "fine": out_codes[key][b][1],
                   "target_A": t, "achieved_A": a, "rel_error": (a - t) / t if t > 0 else float(a != t)}
            if param:
                want, have = float(stacked[param][i]), float(got[param][i])
                row.update(parameter=param, target_param=want, achieved_param=have,
                           param_rel_error=(have - want) / want if want else float(have != want))
            rows.append(row)
    return BiasSetting(out_codes, out_cur, out_par, BiasReport(rows))


def export_biases(path: str | os.PathLike, per_core: Mapping[Any, Mapping[str, Any]], dac: BiasDAC | None = None,
                  constants: BiasConstants = BiasConstants(), *, coarse_convention: str = "logical") -> BiasSetting:
    """Write per-core parameters as ``{chip: {core: {bias: [coarse, fine]}}}`` JSON, atomically.

    Args:
        path: the JSON file to write.
        per_core: as in :func:`params_to_codes`.
        coarse_convention: ``"logical"`` or ``"reversed"`` coarse codes in the file
            (stated in ``_meta.coarse_convention``).

    Returns:
        The :class:`BiasSetting`, whose ``report`` gives the rounding error of every bias.
    """
    if coarse_convention not in ("logical", "reversed"):
        raise unknown_name("coarse_convention", coarse_convention, ("logical", "reversed"))
    setting = params_to_codes(per_core, dac, constants)
    data: dict[str, Any] = {"_meta": {"format": "dynacal-biases", "version": 1, "coarse_convention": coarse_convention,
                                      "dac": (dac or BiasDAC()).to_dict(), "constants": dataclasses.asdict(constants),
                                      "max_param_rel_error": setting.report.max_rel_error}}
    for (chip, core), codes in sorted(setting.codes.items()):
        data.setdefault(str(chip), {})[str(core)] = {
            b: [int(reverse_coarse(c)) if coarse_convention == "reversed" else c, f] for b, (c, f) in codes.items()}
    text = json.dumps(data, indent=1)
    atomic_write(path, lambda fh: fh.write(text.encode()))
    return setting


def import_biases(path: str | os.PathLike, dac: BiasDAC | None = None, constants: BiasConstants = BiasConstants(), *,
                  coarse_convention: str | None = None) -> BiasSetting:
    """Read a bias file written by :func:`export_biases` (or by hand) back into parameters.

    Args:
        path: the JSON file.
        dac: turns the codes into currents (default: the community table).
        coarse_convention: overrides ``_meta.coarse_convention``; one of the two is required.

    Returns:
        :class:`BiasSetting` with logical codes, currents and the parameters derivable from
        the biases present (``report`` rows have the file's codes, no targets).

    Raises:
        ParameterError: unknown bias names (with the list of valid ones), codes out of
            range, a missing coarse convention, a malformed file.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise ParameterError(f"bias file {str(path)!r} does not exist.") from exc
    except json.JSONDecodeError as exc:
        raise ParameterError(f"bias file {str(path)!r} is not valid JSON: {exc}.") from exc
    meta = data.get("_meta", {}) if isinstance(data, dict) else {}
    convention = coarse_convention or meta.get("coarse_convention")
    if convention not in ("logical", "reversed"):
        raise ParameterError(f"bias file {str(path)!r} does not say its coarse convention (_meta.coarse_convention "
                             f"= {convention!r}); pass coarse_convention='logical' or 'reversed'.")
    dac = dac or BiasDAC()
    codes, currents, params, rows = {}, {}, {}, []
    for chip_s, cores in data.items():
        if chip_s.startswith("_"):
            continue
        for core_s, biases in cores.items():
            key = core_key((int(chip_s), int(core_s)))
            codes[key], currents[key] = {}, {}
            for bias, code in biases.items():
                if bias not in BIAS_MAP:
                    raise unknown_name("bias", bias, BIAS_NAMES)
                if not (isinstance(code, (list, tuple)) and len(code) == 2):
                    raise ParameterError(f"{str(path)!r}: chip {chip_s} core {core_s} {bias} = {code!r}; expected "
                                         f"[coarse, fine].")
                c, f = int(code[0]), int(code[1])
                logical = int(reverse_coarse(c)) if convention == "reversed" else c
                wire = int(reverse_coarse(logical)) if dac.bit_reversed else logical
                currents[key][bias] = float(dac.current(wire, f, bias))
                codes[key][bias] = (logical, f)
                rows.append({"core": key, "bias": bias, "coarse": logical, "fine": f, "target_A": currents[key][bias],
                             "achieved_A": currents[key][bias], "rel_error": 0.0})
            params[key] = {k: float(v) for k, v in currents_to_params(currents[key], constants).items()}
    return BiasSetting(codes, currents, params, BiasReport(rows))


def _model_values(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    for name in values:
        if name not in PARAMETERS:
            raise unknown_name("parameter", name, PARAMETERS)
    shape = np.broadcast_shapes(*(np.shape(np.asarray(values[p])) for p in values if p in MODEL_PARAMETERS)) \
        if any(p in MODEL_PARAMETERS for p in values) else ()
    return {p: np.broadcast_to(np.asarray(values.get(p, PARAMETERS[p].default), dtype=np.float64), shape).copy()
            for p in MODEL_PARAMETERS}
