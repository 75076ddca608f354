"""Codes the chip accepts: bias codes that give a calibration's currents on *this* chip.

On a board the current behind a code is known only roughly: each chip's DAC differs from the
nominal table by a factor per coarse range, a floor and a scale per (core, bias)
(:mod:`dynacal.hardware.twin_chip` draws them so). Coding the calibrated core values through
the nominal table (``CalibrationResult.codes``) therefore misses them by the DAC's error.
:func:`measure_codes` measures the chip's value-per-code of each bias instead, through a
protocol feature the calibrated simulator predicts, and picks the codes that give the
requested values on this chip.

Method, for one core, biases in the order of the bias map (bases before gains):

1. ``IF_DC_P`` first (every probe below is an f-I rate, so the DC must be known): a short
   f-I run on the board at a few DC codes around two probe levels (a mid level where the core
   fires at ~60 Hz, a high level near 60 % of its refractory limit), inverted through the
   calibrated simulator's f-I rates on a fine DC grid: the DC each code gives on this chip.
2. Each bias that sets a requested value (``IF_TAU1_N`` leak, ``IF_THR_N`` gain at the mid
   level, ``IF_RFR_N`` refractory period at the high level): the board at ``n_codes`` codes
   around the nominal code of the requested value (the other biases at the reference
   codes the calibration was measured at, or at the codes already chosen), the simulator on
   a grid of that parameter (times each neuron's mismatch); each neuron's board rate is
   inverted on its own simulated curve, and the median over neurons is the value the code
   gives (the spread over neurons is kept). A power law ``value = scale * nominal ** power``
   is fitted per bias to the swept codes (pure scale when it is ill-posed), and the code in
   the swept coarse ranges whose predicted value is nearest to the request is chosen.

The result is a :class:`CodeTable` (rows per bias: requested, chosen code, predicted value
and its rounding error, the nominal table's code and the value it gives here, the sweep);
``CalibrationResult.with_codes(table)`` stores it (``export_codes()`` then returns its codes).
Biases without a probe (synapse weights, time constants, ...) keep the nominal table and are
listed in ``CodeTable.unmeasured`` with the reason.

The reference: the calibrated core values are what the chip gave at the codes its target
was measured at. By default those are the nominal codes of the table defaults (what
``Target.measure`` runs); give ``reference={param: nominal value}`` otherwise.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping

import numpy as np
import torch

from dynacal.errors import ParameterError
from dynacal.layers import ChipLayers
from dynacal.params import PARAMETERS
from dynacal.protocols import FICurve

__all__ = ["CodeTable", "measure_codes", "check_codes", "board_values", "PROBES"]

log = logging.getLogger(__name__)

#: bias -> (probe, f-I level it is read at): what each supported bias is measured through.
PROBES = {"IF_DC_P": ("fi", "both"), "IF_TAU1_N": ("fi", "mid"), "IF_THR_N": ("fi", "mid"),
          "IF_RFR_N": ("fi", "high"), "PS_WEIGHT_EXC_F_N": ("evoked", "ampa")}
#: The evoked-rate probe: a Poisson source at ``rates`` Hz (the last is read) through ``weight``
#: CAM entries into every neuron, over the mid DC, for ``segment`` s.
EVOKED = {"rates": (20.0, 100.0), "weight": 4, "segment": 0.6}
_GRID = np.geomspace(0.3, 3.0, 97)  # simulated multipliers of a swept parameter (2.4 % apart)
_MIN_NEURONS = 0.05  # fraction of the neurons (and at least 5) that must be informative for a code


@dataclasses.dataclass
class CodeTable:
    """Codes measured on one chip (see the module doc).

    Attributes:
        codes: global core -> {bias: [coarse, fine]} for all 25 biases (logical coarse).
        values: global core -> {parameter: nominal value}: what to give a board backend with
            the nominal DAC so that its coding sets exactly ``codes``.
        rows: one dict per measured bias: core, bias, parameter, requested, code, predicted,
            error (relative), nominal_code, nominal_predicted, nominal_error, fit {scale,
            power}, sweep [{code, nominal, measured, spread, neurons}], probe.
        unmeasured: global core -> {bias: reason} (kept at the nominal table).
        settings: probe settings (levels, duration, n_codes, span, board).
    """

    codes: dict
    values: dict
    rows: list
    unmeasured: dict
    settings: dict

    def to_dict(self) -> dict:
        from .result import _jsonable  # noqa: PLC0415
        return _jsonable({"format": "dynacal-code-table", "version": 1, **dataclasses.asdict(self)})

    @classmethod
    def from_dict(cls, data: Mapping) -> "CodeTable":
        if not isinstance(data, Mapping) or data.get("format") != "dynacal-code-table":
            raise ParameterError("not a code table (format must be 'dynacal-code-table').")
        return cls({int(c): v for c, v in data["codes"].items()}, {int(c): v for c, v in data["values"].items()},
                   list(data["rows"]), {int(c): v for c, v in data.get("unmeasured", {}).items()},
                   dict(data.get("settings", {})))

    def to_text(self) -> str:
        """One line per measured bias: requested, chosen vs nominal code and their error here."""
        lines = [f"{'core':>4} {'bias':<10} {'parameter':<14} {'requested':>10} {'code':>9} {'error':>8} "
                 f"{'nominal':>9} {'error':>8}"]
        for r in self.rows:
            if r.get("code") is None:  # the DC: measured at the probe levels, not chosen
                lines.append(f"{r['core']:>4} {r['bias']:<10} {r['parameter']:<14} DC levels " + ", ".join(
                    f"{k} {v:.4g} A gives {r['measured_levels'][k]:.4g} A" for k, v in r["levels"].items()))
                continue
            lines.append(f"{r['core']:>4} {r['bias']:<10} {r['parameter']:<14} {r['requested']:>10.4g} "
                         f"{str(tuple(r['code'])):>9} {100 * r['error']:>+7.2f}% {str(tuple(r['nominal_code'])):>9} "
                         f"{100 * r['nominal_error']:>+7.2f}%")
        return "\n".join(lines)


def _kinds():
    from dynacal.hardware.biasmap import BIAS_MAP  # noqa: PLC0415  (fitting uses hardware lazily)
    return BIAS_MAP


def _to_param(bias: str, current, base_current, constants) -> np.ndarray:
    """The nominal parameter value of a bias current (given its base bias's current)."""
    kind = _kinds()[bias][0]
    i = np.asarray(current, dtype=np.float64)
    if kind == "gain":
        return i / base_current
    if kind == "period":
        return constants.refractory_charge / i
    if kind == "weight":
        return i * constants.pulse_reference / base_current
    return i


def _to_current(bias: str, value, base_current, constants) -> np.ndarray:
    kind = _kinds()[bias][0]
    v = np.asarray(value, dtype=np.float64)
    if kind == "gain":
        return v * base_current
    if kind == "period":
        return constants.refractory_charge / v
    if kind == "weight":
        return v * base_current / constants.pulse_reference
    return v


def board_values(codes: Mapping[str, Any], dac=None, constants=None) -> dict[str, float]:
    """Nominal parameter values whose coding through ``dac`` sets exactly ``codes``
    ({bias: (coarse, fine)}, one core): what a board backend is given to set those codes."""
    from dynacal.hardware.codemap import core_codes_to_params  # noqa: PLC0415
    from dynacal.hardware.biasmap import BiasConstants  # noqa: PLC0415
    return core_codes_to_params(codes, dac, constants or BiasConstants())


@dataclasses.dataclass
class _Core:
    """What one core's measurement knows as it goes."""

    core: int
    network: Any
    layers: ChipLayers          # calibrated (the chip at the reference codes)
    want: dict                  # requested parameter values (calibrated, overridden by values=)
    reference: dict             # nominal values of the reference codes (board side)
    chosen: dict = dataclasses.field(default_factory=dict)     # param -> nominal value of the chosen code
    predicted: dict = dataclasses.field(default_factory=dict)  # param -> its value on the chip
    chosen_codes: dict = dataclasses.field(default_factory=dict)  # bias -> (coarse, fine)
    dc: dict = dataclasses.field(default_factory=dict)         # nominal level -> measured DC


def measure_codes(result_or_layers, backend, neurons: Any = "core0", *, biases=None, values=None,
                  reference=None, n_codes: int = 3, span: float = 1.4, duration: float = 0.3, settle: float = 0.05,
                  progress: bool = True, simulator=None) -> CodeTable:
    """Measure on the board which codes give the calibrated (or requested) values on this chip.

    Args:
        result_or_layers: a ``CalibrationResult`` or ``ChipLayers`` (the chip at the
            reference codes).
        backend: the board (``get_backend("board")``, ``get_backend("twin:SERIAL")``);
            its ``dac`` is the nominal table its parameters are coded through.
        neurons: the neurons to measure through (one core; ``"core0"``, ``"core0:64"``).
        biases: the biases to choose codes for (default: every bias with a probe,
            :data:`PROBES`, that sets a calibrated or requested value).
        values: {parameter: SI value} requested in place of the calibrated core values.
        reference: {parameter: nominal SI value} the target was measured at (default: the
            table defaults).
        n_codes: codes per bias (odd: the nominal code and neighbours); span: the largest
            nominal ratio of a swept code to the request.
        duration, settle: the f-I probe run, s.
        progress: log each bias as it is measured.
        simulator: the calibrated simulator backend (default ``get_backend("torch")``).

    Returns:
        :class:`CodeTable`.

    Raises:
        ParameterError: no calibrated core among ``neurons``, several cores, an unknown bias,
            a bias without a probe, bad settings.
        CalibrationFailed: too few neurons respond to invert a code (names the bias, the code
            and the fix).
    """
    from dynacal.backends import get_backend  # noqa: PLC0415
    from dynacal.protocols import layout  # noqa: PLC0415

    from ._codes_probe import _Probe  # noqa: PLC0415  (it uses this module's helpers)
    layers = result_or_layers.layers() if hasattr(result_or_layers, "layers") else result_or_layers
    if not isinstance(layers, ChipLayers):
        raise ParameterError(f"measure_codes needs a CalibrationResult or ChipLayers, not "
                             f"{type(result_or_layers).__name__}.")
    if n_codes < 2 or span <= 1 or not 0 <= settle < duration:
        raise ParameterError(f"n_codes = {n_codes} (>= 2), span = {span} (> 1), settle = {settle} s and duration = "
                             f"{duration} s (settle < duration) are the sweep settings; e.g. 3, 1.4, 0.05, 0.3.")
    network = layout(neurons)
    cores = np.unique(network.core).tolist()
    if len(cores) != 1 or cores[0] not in layers.core_values:
        raise ParameterError(f"measure_codes measures one calibrated core at a time; neurons {neurons!r} are on "
                             f"cores {cores}, the calibration covers {sorted(layers.core_values)}: give e.g. "
                             f"neurons='core{sorted(layers.core_values)[0] if layers.core_values else 0}'.")
    core = int(cores[0])
    want = dict(layers.core_values[core])
    want.update({k: float(v) for k, v in _checked(values or {}, "values").items()})
    ref = {k: float(v) for k, v in _checked(reference or {}, "reference").items()}
    _warn_twin_tail(backend)
    ctx = _Core(core, network, layers, want, ref)
    todo = _biases(biases, want)
    sim = simulator or get_backend("torch")
    probe = _Probe(backend, sim, ctx, n_codes, span, duration, settle)
    probe.levels()
    rows = [probe.dc_row()]
    for bias in todo:
        if progress:
            log.info("measuring %s on core %d through the f-I rate", bias, core)
        rows.append(probe.bias_row(bias))
    return probe.table(rows, todo)


def _warn_twin_tail(backend) -> None:
    """The twin emits each set's spikes for its own ``tail_s`` after the stimulus, also when the
    board has already started the next set: with a shorter board ``tail_s`` they land in the
    next set's window (measured: the f-I rate at 2.3 nA read 155 Hz instead of 113 Hz)."""
    twin = getattr(backend, "twin", None)
    if twin is not None and getattr(backend, "tail_s", 0.0) < getattr(twin, "tail_s", 0.0):
        log.warning("the twin board simulates %.2f s after each stimulus but the board backend listens %.2f s: the "
                    "spikes of one set reach the next; use get_backend('twin:SERIAL', tail_s=%.2f)",
                    twin.tail_s, backend.tail_s, twin.tail_s + 0.1)


def _checked(values: Mapping, where: str) -> dict[str, float]:
    from dynacal.params import _to_tensor  # noqa: PLC0415
    out = {}
    for name, v in dict(values).items():
        if name not in PARAMETERS:
            from dynacal.errors import unknown_name  # noqa: PLC0415
            raise unknown_name("parameter", name, PARAMETERS)
        out[name] = float(_to_tensor(name, v, torch.float64, "cpu").reshape(-1)[0])
    return out


def _biases(biases, want: Mapping[str, float]) -> list[str]:
    bias_map = _kinds()
    if biases is None:
        return [b for b in PROBES if b != "IF_DC_P" and bias_map[b][1] in want]
    out = []
    for b in biases:
        if b not in bias_map:
            from dynacal.errors import unknown_name  # noqa: PLC0415
            raise unknown_name("bias", b, list(bias_map))
        if b not in PROBES or b == "IF_DC_P":
            raise ParameterError(f"no probe measures {b} yet (IF_DC_P is measured for every probe as the DC it "
                                 f"needs); measurable biases: {[k for k in PROBES if k != 'IF_DC_P']}.")
        out.append(b)
    order = [b for b in PROBES if b in out]  # bases before gains
    return order


def _invert(sim_rate: np.ndarray, grid: np.ndarray, board_rate: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per neuron, the grid value whose simulated rate equals the board's rate.

    Args:
        sim_rate: (J, N) Hz on the grid; grid: (J,) increasing values; board_rate: (K, N) Hz.

    Returns:
        (K, N) values (NaN where a neuron's curve is flat, not monotone, or does not reach
        the board's rate), and (N,) whether the neuron's curve is usable.
    """
    out = np.full(board_rate.shape, np.nan)
    lg = np.log(grid)
    d = np.diff(sim_rate, axis=0)
    up, down = np.all(d >= 0, axis=0), np.all(d <= 0, axis=0)
    usable = (up | down) & (np.ptp(sim_rate, axis=0) > 2.0) & np.isfinite(sim_rate).all(axis=0)
    for n in np.flatnonzero(usable):
        curve, x = (sim_rate[:, n], lg) if up[n] else (sim_rate[::-1, n], lg[::-1])
        # a plateau (rates from spike counts step by 1 / window) stands for the middle of its
        # values: its first point would bias every inversion low
        curve, inv = np.unique(curve, return_inverse=True)
        x = np.bincount(inv, weights=x) / np.bincount(inv)
        r = board_rate[:, n]
        inside = (r > curve[0] + 0.5) & (r < curve[-1] - 0.5) & (r > 1.0)
        out[inside, n] = np.exp(np.interp(r[inside], curve, x))
    return out, usable


def check_codes(table: CodeTable, result_or_layers, backend, neurons: Any = "core0", *, values=None,
                levels=None, duration: float = 0.3, settle: float = 0.05, simulator=None) -> dict:
    """How well the board at the measured codes reproduces the calibrated simulator, against
    the board at the nominal table's codes for the same values.

    Args:
        table: from :func:`measure_codes` (with the same ``values``).
        result_or_layers, backend, neurons, values: as :func:`measure_codes`.
        levels: f-I DC levels in A, taken as exact on the chip (default: the DC codes the table
            measured, the simulator run at the DC each gave on this chip).
        duration, settle: of the f-I run, s.

    Returns:
        {"levels": [A], "target": (N, L) simulated rates Hz, "measured": (N, L) board at the
        measured codes, "nominal": (N, L) board at the nominal codes, "error_measured" /
        "error_nominal": median over neurons and levels of |board - target| / target (neurons
        with a target rate >= 5 Hz), "per_level_measured" / "per_level_nominal": (L,) medians}.
    """
    from dynacal.backends import get_backend  # noqa: PLC0415
    from dynacal.protocols import layout  # noqa: PLC0415
    layers = result_or_layers.layers() if hasattr(result_or_layers, "layers") else result_or_layers
    network = layout(neurons)
    core = int(np.unique(network.core)[0])
    want = dict(layers.core_values[core])
    want.update(_checked(values or {}, "values"))
    true = levels
    if levels is None:
        sweep = next(r for r in table.rows if r["bias"] == "IF_DC_P")["sweep"]
        levels, true = [s["nominal"] for s in sweep], [s["measured"] for s in sweep]
    fi = FICurve(levels=tuple(float(x) for x in levels), duration=duration, settle=settle)
    sim = simulator or get_backend("torch")
    target_layers = ChipLayers({core: want}, layers.mismatch)
    fi_true = FICurve(levels=tuple(float(x) for x in true), duration=duration, settle=settle)
    target = fi_true.features(fi_true.run(sim, network, network.params(layers=target_layers)))["rate"][0]
    bias_set = {p: {core: v} for p, v in want.items() if p != "Isoma_const"}
    nominal = fi.features(fi.run(backend, network, network.params(bias_set)))["rate"][0]
    coded = {p: {core: v} for p, v in table.values[core].items() if p != "Isoma_const"}
    measured = fi.features(fi.run(backend, network, network.params(coded)))["rate"][0]
    ok = target >= 5.0
    err = lambda board: np.where(ok, np.abs(board - target) / np.where(ok, target, 1.0), np.nan)  # noqa: E731
    em, en = err(measured), err(nominal)
    return {"levels": list(levels), "true_levels": list(true), "target": target, "measured": measured,
            "nominal": nominal,
            "error_measured": float(np.nanmedian(em)), "error_nominal": float(np.nanmedian(en)),
            "per_level_measured": np.nanmedian(em, axis=0), "per_level_nominal": np.nanmedian(en, axis=0)}
