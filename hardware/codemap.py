"""Bias codes <-> model parameters, per core: the one mapping the board, the twin and a calibration use.

Forward (codes -> parameters), for one core: each (coarse, fine) code gives a current
through the DAC (:class:`~.biasgen.BiasDAC`), and the currents give the 20 model parameters
of ``biasmap.MODEL_PARAMETERS`` (:func:`~.biasmap.currents_to_params`, the map written in
:mod:`.biasmap`). :func:`core_codes_to_params` does one core, :func:`codes_to_params` many,
:func:`codes_to_layers` turns them into the core-value layer of a
:class:`~dynacal.layers.ChipLayers` (what this chip's codes give), and
:func:`codes_to_network_params` into the :class:`~dynacal.params.Params` a network runs with
(through ``Network.params``, the one order of ``dynacal.params``).

Inverse (parameters -> codes): :func:`~.biasmap.params_to_codes` codes per-core values and
reports the rounding error of every bias and parameter; :func:`layers_to_codes` does it for
a ``ChipLayers``' core values, and :func:`network_params_to_codes` for one parameter set of
a network's ``Params`` (:func:`params_to_core_values` checks that each bias-set parameter is
one value per core: per-neuron differences are the chip's mismatch and cannot be set).

Codes are *logical* (coarse 0 = the smallest range) everywhere here; a bit-reversed DAC
gets them reversed on the way in. A core is a global index (chip * 4 + core) or a
(chip, core) pair; results are keyed by (chip, core), as in :class:`~.biasmap.BiasSetting`.

>>> s = params_to_codes({0: {"Isoma_dpi_tau": 5e-12}})
>>> round(codes_to_params(s.codes)[(0, 0)]["Isoma_dpi_tau"] * 1e12, 6)
5.0
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

import numpy as np

from dynacal.errors import ParameterError, unknown_name
from dynacal.layers import ChipLayers
from dynacal.params import PARAMETERS, Params

from .biasgen import BIAS_NAMES, BiasDAC, reverse_coarse
from .biasmap import BIAS_MAP, MODEL_PARAMETERS, BiasConstants, BiasSetting, core_key, currents_to_params, \
    params_to_codes

__all__ = ["MODEL_BIASES", "SATURATION", "core_codes_to_params", "codes_to_params", "codes_to_layers",
           "codes_to_network_params", "layers_to_codes", "params_to_core_values", "network_params_to_codes"]

log = logging.getLogger(__name__)

#: The biases whose codes set a model parameter (every bias except the fixed ones).
MODEL_BIASES = tuple(b for b in BIAS_NAMES if BIAS_MAP[b][0] != "fixed")
#: Where a chip's values saturate for the simulator (``saturate=True``): gains (``alpha_*``)
#: to this range, and the refractory period to at most this many seconds.
SATURATION = {"alpha": (1e-2, 1e4), "soma_refP": 0.9}


def _read_codes(codes: Any, where: str) -> dict[str, tuple[int, int]]:
    """{bias: (coarse, fine)} from a mapping or an int array (25, 2) in ``BIAS_NAMES`` order."""
    if isinstance(codes, Mapping):
        names = list(codes)
        for bias in names:
            if bias not in BIAS_MAP:
                raise unknown_name("bias", str(bias), BIAS_NAMES)
        try:
            arr = np.array([tuple(codes[b]) for b in names], dtype=np.float64).reshape(len(names), -1)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"{where}: a code is not a pair of integers (coarse 0..7, fine 0..255): "
                                 f"{exc}.") from exc
    else:
        names = list(BIAS_NAMES)
        arr = np.asarray(codes, dtype=np.float64)
        if arr.shape != (len(BIAS_NAMES), 2):
            raise ParameterError(f"{where}: codes of shape {arr.shape}; give {{bias: (coarse, fine)}} or an int array "
                                 f"({len(BIAS_NAMES)}, 2) in BIAS_NAMES order.")
    bad = ~np.all(np.isfinite(arr) & (arr == np.round(arr)), axis=1) if arr.shape[1:] == (2,) else \
        np.ones(len(names), dtype=bool)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        code = codes[names[k]] if isinstance(codes, Mapping) else arr[k].tolist()
        raise ParameterError(f"{where}: {names[k]} = {code!r}; a code is two integers (coarse 0..7, fine 0..255).")
    arr = arr.astype(np.int64)
    return {b: (int(c), int(f)) for b, (c, f) in zip(names, arr.tolist())}


def core_codes_to_params(codes: Any, dac: BiasDAC | None = None, constants: BiasConstants = BiasConstants(), *,
                         complete: bool = True, saturate: bool = False, where: str = "codes") -> dict[str, float]:
    """The model parameters that one core's codes give.

    Args:
        codes: {bias: (coarse, fine)} logical codes, or an int array (25, 2) in
            ``BIAS_NAMES`` order.
        dac: the core's DAC (default: the community table).
        constants: the chip constants of the map (refractory charge, pulse reference).
        complete: require a code for every bias in ``MODEL_BIASES``; with False, only the
            parameters whose biases are all given are returned.
        saturate: clip to ``SATURATION`` (the range the simulator runs), as a chip saturates.
        where: names the core in messages.

    Returns:
        parameter name -> SI value.

    Raises:
        ParameterError: an unknown bias (closest match first), a code out of range or not a
            pair of integers, a missing bias (with ``complete``), a gain or weight without
            the bias it divides by, a zero current a parameter divides by.
    """
    dac = dac or BiasDAC()
    given = _read_codes(codes, where)
    missing = [b for b in MODEL_BIASES if b not in given]
    if complete and missing:
        raise ParameterError(f"{where}: no code for {', '.join(missing)}; every model bias needs one (or pass "
                             f"complete=False for the parameters of the biases given).")
    for bias in given:
        kind, param, base = BIAS_MAP[bias]
        partner = base if kind == "gain" else "PULSE_PWLK_P" if kind == "weight" else None
        if partner and partner not in given:
            raise ParameterError(f"{where}: {bias} sets {param} relative to {partner}, which has no code; give "
                                 f"{partner}'s code too.")
    names = list(given)
    coarse = np.array([given[b][0] for b in names], dtype=np.int64)
    fine = np.array([given[b][1] for b in names], dtype=np.int64)
    try:
        wire = reverse_coarse(coarse) if dac.bit_reversed and np.all((coarse >= 0) & (coarse < 8)) else coarse
        currents = dac.current(wire, fine, names) if len(names) > 1 else \
            np.atleast_1d(dac.current(wire[0], fine[0], names[0])) if names else np.zeros(0)
    except ParameterError as exc:
        raise ParameterError(f"{where}: {exc}") from exc
    try:
        values = currents_to_params(dict(zip(names, np.asarray(currents).tolist())), constants)
    except ParameterError as exc:
        raise ParameterError(f"{where}: {exc}") from exc
    out = {k: float(v) for k, v in values.items()}
    if saturate:
        lo, hi = SATURATION["alpha"]
        for name in out:
            if name.startswith("alpha_"):
                out[name] = min(max(out[name], lo), hi)
        if "soma_refP" in out:
            out["soma_refP"] = min(out["soma_refP"], SATURATION["soma_refP"])
    return out


def _for_core(value, key: tuple[int, int], default, kind: str):
    """``value`` itself, or its entry for one core ((chip, core) or global index keys)."""
    if not isinstance(value, Mapping):
        return value if value is not None else default
    chip, core = key
    for k in (key, chip * 4 + core):
        if k in value:
            return value[k]
    if kind == "constants" and chip in value:  # chip constants may be given per chip
        return value[chip]
    raise ParameterError(f"no {kind} for chip {chip} core {core}; the mapping has {sorted(value, key=str)}.")


def codes_to_params(codes: Mapping[Any, Any], dac: BiasDAC | Mapping | None = None,
                    constants: BiasConstants | Mapping = BiasConstants(), *, complete: bool = True,
                    saturate: bool = False) -> dict[tuple[int, int], dict[str, float]]:
    """Per-core parameters from per-core codes (see :func:`core_codes_to_params`).

    Args:
        codes: core (global index or (chip, core)) -> that core's codes.
        dac: one DAC for every core, or core -> DAC (a lab's measured tables, the twin).
        constants: one for the board, or chip (or core) -> :class:`~.biasmap.BiasConstants`.
        complete, saturate: as in :func:`core_codes_to_params`.

    Returns:
        (chip, core) -> {parameter: SI value}.
    """
    out = {}
    for key, core_codes in codes.items():
        k = core_key(key)
        out[k] = core_codes_to_params(core_codes, _for_core(dac, k, None, "DAC"),
                                      _for_core(constants, k, BiasConstants(), "constants"), complete=complete,
                                      saturate=saturate, where=f"chip {k[0]} core {k[1]}")
    return out


def codes_to_layers(codes: Mapping[Any, Any], dac: BiasDAC | Mapping | None = None,
                    constants: BiasConstants | Mapping = BiasConstants(), *,
                    mismatch: Mapping[str, Mapping[int, Any]] | None = None, saturate: bool = False,
                    name: str = "") -> ChipLayers:
    """The :class:`~dynacal.layers.ChipLayers` of a chip under these codes: the core values
    they give (layer 2 of ``dynacal.params``) and, optionally, the chip's mismatch factors
    (layer 4: parameter -> {global core: (256,) factors})."""
    per_core = codes_to_params(codes, dac, constants, saturate=saturate)
    return ChipLayers({c * 4 + k: v for (c, k), v in per_core.items()}, mismatch or {}, name)


def codes_to_network_params(network, codes: Mapping[Any, Any], dac: BiasDAC | Mapping | None = None,
                            constants: BiasConstants | Mapping = BiasConstants(), *,
                            mismatch: Mapping[str, Mapping[int, Any]] | None = None,
                            candidates: Mapping[str, Any] | None = None, saturate: bool = False,
                            **params_options) -> Params:
    """The parameters ``network`` runs with on a chip set to ``codes``: ``network.params(candidates,
    layers=codes_to_layers(...))`` (so the network's own biases and values sit above the codes').

    Raises:
        ParameterError: a core the network uses has no codes, or any error of the codes.
    """
    used = sorted({core_key(int(c)) for c in np.unique(network.core)})
    have = {core_key(k) for k in codes}
    missing = [k for k in used if k not in have]
    if missing:
        raise ParameterError(f"the network uses chip/core {missing} but codes are given for {sorted(have)}; give "
                             f"the codes of every core the network uses.")
    wanted = {k: v for k, v in codes.items() if core_key(k) in used}
    layers = codes_to_layers(wanted, dac, constants, mismatch=mismatch, saturate=saturate)
    return network.params(candidates, layers=layers, **params_options)


def layers_to_codes(layers: ChipLayers, dac: BiasDAC | None = None,
                    constants: BiasConstants = BiasConstants()) -> BiasSetting:
    """Codes for a ``ChipLayers``' core values (``params_to_codes``, with its rounding report).

    Model parameters a core does not give take their table default; parameters no bias sets
    (capacitances, threshold, ...) cannot be coded and are named in a warning.
    """
    ignored = sorted({n for v in layers.core_values.values() for n in v if n not in MODEL_PARAMETERS})
    if ignored:
        log.warning("no bias sets %s (the silicon fixes them): left out of the codes", ", ".join(ignored))
    return params_to_codes({core_key(c): {n: x for n, x in v.items() if n in MODEL_PARAMETERS}
                            for c, v in layers.core_values.items()}, dac, constants)


def params_to_core_values(p: Params, cores: Any, i: int = 0, *, dc: bool = False) -> dict[tuple[int, int], dict[str, float]]:
    """The per-core values of parameter set ``i``: one value per core for every model parameter.

    Args:
        p: parameters of shape (B|1, N|1).
        cores: a :class:`~dynacal.chip.Network`, or int (N,) global cores (chip * 4 + core).
        i: the parameter set (row of the batch).
        dc: the stimulus carries a DC (it sets ``Isoma_const``), for the error message.

    Returns:
        (chip, core) -> {parameter of ``MODEL_PARAMETERS``: SI value}, for the used cores.

    Raises:
        ParameterError: a bias-set parameter differs within a core (names the parameter, the
            core, the values and why).
    """
    core = np.asarray(getattr(cores, "core", cores), dtype=np.int64)
    out = {}
    for g in np.unique(core).tolist():
        chip, k = core_key(g)
        where = np.flatnonzero(core == g)
        values = {}
        for name in MODEL_PARAMETERS:
            t = getattr(p, name).detach().cpu().numpy()
            v = t[min(i, t.shape[0] - 1)]
            v = v[where] if v.size > 1 else v
            if np.ptp(v) > 1e-9 * np.max(np.abs(v)):
                hint = (" The stimulus DC sets it: give one DC per core (IF_DC_P is one bias per core)."
                        if name == "Isoma_const" and dc else "")
                raise ParameterError(
                    f"{name} differs between the neurons of chip {chip} core {k} in parameter set {i} "
                    f"({v.min():g}..{v.max():g} {PARAMETERS[name].unit}); the board sets one value per core "
                    f"(per-neuron differences are the chip's mismatch).{hint}")
            values[name] = float(v.reshape(-1)[0])
        out[(chip, k)] = values
    return out


def network_params_to_codes(p: Params, network, i: int = 0, dac: BiasDAC | None = None,
                            constants: BiasConstants = BiasConstants()) -> BiasSetting:
    """Codes for parameter set ``i`` of a network's ``Params`` (with the rounding report):
    :func:`params_to_core_values` then :func:`~.biasmap.params_to_codes`."""
    return params_to_codes(params_to_core_values(p, network, i), dac, constants)
