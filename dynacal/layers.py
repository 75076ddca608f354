"""The layers of parameters, implemented once: defaults, a calibration, the network, the caller.

The order is written in :mod:`dynacal.params` (module docstring); :func:`network_params` is
its implementation and :meth:`Network.params <dynacal.chip.Network.params>` calls it.
:class:`ChipLayers` holds what a calibration knows about one chip: the values its bias codes
give per core, and each physical neuron's mismatch factors. It is keyed by physical neuron
(global core = chip * 4 + core, neuron id 0..255), so it applies to any network built on the
calibrated neurons.

>>> from dynacal import Chip
>>> chip = Chip()
>>> neurons = chip.get_neurons(2, "Core_0")
>>> chip.set_bias({"Isoma_dpi_tau": "4 pA"}, "Core_0")
>>> layers = ChipLayers(mismatch={"Isoma_dpi_tau": {0: np.linspace(0.5, 1.5, 256)}})
>>> p = chip.network().params({"Isoma_th": [1e-9, 3e-9]}, layers=layers)
>>> p.Isoma_th.tolist(), [round(v * 1e12, 3) for v in p.Isoma_dpi_tau[0].tolist()]
([[1e-09, 3e-09]], [2.0, 2.016])
"""

from __future__ import annotations

import dataclasses
import logging
import warnings
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import torch

from .chip import CORES_PER_CHIP, NEURONS_PER_CORE
from .errors import ParameterError, unknown_name
from .params import PARAMETERS, Params, check_values, to_tensor

if TYPE_CHECKING:
    from .chip import Network

__all__ = ["ChipLayers", "network_params"]

log = logging.getLogger(__name__)

_FORMAT = "dynacal-chip-layers"


def _core_index(key: Any, where: str) -> int:
    """Global core index from ``5``, ``"Core_5"`` or ``(chip, core)`` = ``(1, 1)``."""
    index = None
    if isinstance(key, str):
        head, _, num = key.partition("_")
        if head.lower() == "core" and num.isdigit():
            index = int(num)
        elif key.isdigit():  # JSON object keys
            index = int(key)
    elif isinstance(key, tuple) and len(key) == 2 and all(isinstance(k, (int, np.integer)) for k in key):
        if key[0] >= 0 and 0 <= key[1] < CORES_PER_CHIP:
            index = int(key[0]) * CORES_PER_CHIP + int(key[1])
    elif isinstance(key, (int, np.integer)) and not isinstance(key, bool) and key >= 0:
        index = int(key)
    if index is None:
        raise ParameterError(f"{where}: core {key!r} is not a core; give a global core index (chip * 4 + core, "
                             f"e.g. 5), 'Core_5' or (chip, core) = (1, 1).")
    return index


def _scalar(name: str, value: Any, where: str) -> float:
    if isinstance(value, (float, int)) and not isinstance(value, bool):
        return float(value)  # checked with the other cores' values in _check_core_values
    t = to_tensor(name, value, torch.float64, "cpu")
    if t.numel() != 1:
        raise ParameterError(f"{where}: {name} has shape {tuple(t.shape)}; a core value is one value per core.")
    return float(t)


def _check_core_values(values: Mapping[int, Mapping[str, float]]) -> None:
    """NaN, negative and wrong-unit values, one check per parameter over every core."""
    by_name: dict[str, list[tuple[int, float]]] = {}
    for core, per in values.items():
        for name, v in per.items():
            by_name.setdefault(name, []).append((core, v))
    for name, pairs in by_name.items():
        try:  # measured on a chip: implausible is information, not a mistake, so no warning
            check_values(name, torch.tensor([v for _, v in pairs], dtype=torch.float64), warn=False)
        except ParameterError:
            for core, v in pairs:  # name the core at fault
                try:
                    check_values(name, torch.tensor([v], dtype=torch.float64), warn=False)
                except ParameterError as exc:
                    raise ParameterError(f"ChipLayers.core_values[{core}]: {exc}") from exc
            raise


def _factors(name: str, core: int, value: Any) -> np.ndarray:
    where = f"ChipLayers.mismatch[{name!r}][{core}]"
    try:
        f = np.array(value.detach().cpu() if isinstance(value, torch.Tensor) else value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{where} is not an array of numbers: {exc}.") from exc
    if f.shape != (NEURONS_PER_CORE,):
        raise ParameterError(f"{where} has shape {f.shape}; give ({NEURONS_PER_CORE},) factors, one per neuron id "
                             f"of the core (1 for a neuron without mismatch).")
    bad = ~(np.isfinite(f) & (f > 0))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ParameterError(f"{where}: the factor of neuron {k} is {float(f[k])!r}; mismatch factors multiply the core "
                             f"value and must be finite and > 0 (1 = no mismatch).")
    f.setflags(write=False)
    return f


@dataclasses.dataclass(frozen=True, eq=False)
class ChipLayers:
    """What a calibration knows about one chip (layers 2 and 4 of the order in :mod:`dynacal.params`).

    Attributes:
        core_values: global core (chip * 4 + core; ``"Core_5"`` and ``(chip, core)`` are
            accepted) -> {parameter name: value, SI}: what this chip's bias codes give on
            that core, before mismatch.
        mismatch: parameter name -> {global core: float64 (256,) factors indexed by neuron
            id}: a neuron's value is its core value times its factor (> 0; 1 = none).
        name: a label for reports (chip serial, calibration id).

    Cores a calibration does not cover are absent: their neurons keep the lower layers
    (table defaults), and their factor is 1.

    Raises:
        ParameterError: unknown names (closest match first), NaN, negative or wrong-unit
            values, factors of the wrong shape or <= 0.
    """

    core_values: Mapping[int, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    mismatch: Mapping[str, Mapping[int, np.ndarray]] = dataclasses.field(default_factory=dict)
    name: str = ""

    def __post_init__(self):
        values: dict[int, dict[str, float]] = {}
        for key, per in dict(self.core_values).items():
            core = _core_index(key, "ChipLayers.core_values")
            where = f"ChipLayers.core_values[{core}]"
            for name in per:
                if name not in PARAMETERS:
                    raise unknown_name("parameter", name, PARAMETERS)
            values.setdefault(core, {}).update({n: _scalar(n, v, where) for n, v in per.items()})
        _check_core_values(values)
        factors: dict[str, dict[int, np.ndarray]] = {}
        for name, per_core in dict(self.mismatch).items():
            if name not in PARAMETERS:
                raise unknown_name("parameter", name, PARAMETERS)
            cores = {_core_index(k, f"ChipLayers.mismatch[{name!r}]"): v for k, v in dict(per_core).items()}
            factors[name] = {core: _factors(name, core, v) for core, v in cores.items()}
        object.__setattr__(self, "core_values", values)
        object.__setattr__(self, "mismatch", factors)

    def neuron_factors(self, network: "Network") -> dict[str, np.ndarray]:
        """Mismatch factors of a network's neurons: parameter name -> float64 (N,) (1 where
        the calibration has no factor). A fitter that varies a core value and wants each
        neuron's mismatch kept multiplies its candidate by these."""
        return {name: self._factors_of(name, network) for name in self.mismatch}

    def _factors_of(self, name: str, network: "Network") -> np.ndarray:
        f = np.ones(network.n_neurons)
        for core, arr in self.mismatch.get(name, {}).items():
            sel = network.core == core
            f[sel] = arr[network.neuron_id[sel]]
        return f

    def to_dict(self) -> dict:
        """A JSON-able description (``from_dict`` reads it back)."""
        return {"format": _FORMAT, "version": 1, "name": self.name,
                "core_values": {str(c): dict(v) for c, v in sorted(self.core_values.items())},
                "mismatch": {n: {str(c): f.tolist() for c, f in sorted(per.items())}
                             for n, per in sorted(self.mismatch.items())}}

    @classmethod
    def from_dict(cls, data: Mapping) -> "ChipLayers":
        """Read what :meth:`to_dict` wrote.

        Raises:
            ParameterError: not a ``dynacal-chip-layers`` description, or invalid values.
        """
        if not isinstance(data, Mapping) or data.get("format") != _FORMAT:
            raise ParameterError(f"not a chip-layers description (format must be {_FORMAT!r}).")
        return cls(data.get("core_values", {}), data.get("mismatch", {}), data.get("name", ""))

    def __repr__(self) -> str:
        names = sorted({n for v in self.core_values.values() for n in v})
        return (f"ChipLayers({self.name!r}, core values on cores {sorted(self.core_values)} for {len(names)} "
                f"parameters, mismatch of {sorted(self.mismatch)})")


def network_params(network: "Network", candidates: Mapping[str, Any] | None = None, *,
                   layers: ChipLayers | None = None, base: Params | None = None,
                   dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu") -> Params:
    """The parameters ``network`` runs with, built in the order of :mod:`dynacal.params`.

    Args:
        network: the network (its core biases and per-neuron values are layers 3 and 5).
        candidates: the caller's values, name -> a scalar or string with unit, (N,),
            (B, N), (B, 1), or per core ``{core: value or (B,) values}``; they always win.
        layers: a calibration's core values and mismatch factors (layers 2 and 4).
        base: deprecated; replaces the table defaults (layer 1), so every layer above
            replaces its values (logged by name). Pass the values you set as ``candidates``.
        dtype, device: of every tensor.

    Returns:
        :class:`Params` of shape (B|1, N|1); a name that no layer sets stays a scalar.
        Tensors of the candidates keep their autograd graph.

    Raises:
        ParameterError: unknown names (closest match first), wrong shapes, NaN, negative or
            wrong-unit values, per-core values for a core without neurons of ``network``.
    """
    candidates, base = _deprecated_base(candidates, base)
    if layers is not None and not isinstance(layers, ChipLayers):
        raise ParameterError(f"layers must be a ChipLayers (a calibration's core values and mismatch), not "
                             f"{type(layers).__name__}.")
    masks = {int(c): torch.as_tensor(network.core == c, device=device).reshape(1, -1)
             for c in np.unique(network.core)}
    wanted = _read_candidates(candidates, network, masks, dtype, device)
    start = base.to(dtype, device) if base is not None else Params.from_values(dtype=dtype, device=device)
    fields, replaced = {}, []
    for name in PARAMETERS:
        first = getattr(start, name)
        value = _network_layers(name, first, network, layers, masks)
        if base is not None and value is not first and name not in wanted and \
                not torch.equal(*torch.broadcast_tensors(value.detach(), first.detach())):
            replaced.append(name)  # a layer gave another value than base's: say so
        kind, cand = wanted.get(name, (None, None))
        if kind == "all":
            value = cand
        elif kind == "cores":
            value = _set_cores(value, cand, masks)
        fields[name] = value
    if replaced:
        log.warning("network.params(base=...): the network's or calibration's layers replaced the values given in "
                    "base of %s; pass them as candidates {name: value} to make them win.", ", ".join(replaced))
    p = Params(**fields)
    p.shape  # checks that the candidates' batch sizes agree
    return p


def _deprecated_base(candidates, base):
    """(candidates, base): a Params given as candidates is the deprecated ``base``."""
    if isinstance(candidates, Params):
        if base is not None:
            raise ParameterError("network.params got a Params both as candidates and as base=; give the values "
                                 "you set as candidates={name: value}.")
        base, candidates = candidates, None
    if base is not None:
        # stacklevel: this helper, network_params, Network.params, then the caller
        warnings.warn("network.params(base=Params) is deprecated: base replaces only the table defaults, and the "
                      "network's layers replace its values; pass the values you set as "
                      "network.params({name: value}) so that they win.", DeprecationWarning, stacklevel=4)
    return candidates, base


def _set_cores(value: torch.Tensor, per_core: Mapping[int, Any], masks) -> torch.Tensor:
    """``value`` with the neurons of each core set to that core's value ((B|1, 1) or float)."""
    for core, v in per_core.items():
        if core in masks:
            v = v if isinstance(v, torch.Tensor) else torch.tensor(float(v), dtype=value.dtype, device=value.device)
            value = torch.where(masks[core], v, value)
    return value


def _network_layers(name: str, value: torch.Tensor, network: "Network", layers: ChipLayers | None,
                    masks) -> torch.Tensor:
    """Layers 2 to 5 for one parameter (``value`` itself when none sets it)."""
    per_core = {}
    if layers is not None:
        per_core.update({c: v[name] for c, v in layers.core_values.items() if name in v})
    per_core.update({c: b[name] for c, b in network.core_biases.items() if name in b})
    if per_core:
        value = _set_cores(value, per_core, masks)
    if layers is not None and name in layers.mismatch:
        f = torch.as_tensor(layers._factors_of(name, network), dtype=value.dtype, device=value.device)
        value = value * f.reshape(1, -1)
    if name in network.neuron_values:
        per = torch.as_tensor(network.neuron_values[name], dtype=value.dtype, device=value.device).reshape(1, -1)
        given = ~torch.isnan(per)
        if bool(given.any()):
            value = torch.where(given, torch.nan_to_num(per), value)
    return value


def _read_candidates(candidates, network: "Network", masks, dtype, device) -> dict[str, tuple[str, Any]]:
    """Validated candidates: name -> ("all", tensor (B|1, N|1)) or ("cores", {core: tensor (B|1, 1)})."""
    if candidates is None:
        return {}
    if not isinstance(candidates, Mapping):
        raise ParameterError(f"candidates must be a mapping {{name: value}} of the values you set, not "
                             f"{type(candidates).__name__}.")
    n, out = network.n_neurons, {}
    for name, value in candidates.items():
        if name not in PARAMETERS:
            raise unknown_name("parameter", name, PARAMETERS)
        if isinstance(value, Mapping):
            out[name] = ("cores", dict(_core_candidate(name, c, v, masks, dtype, device) for c, v in value.items()))
            continue
        t = to_tensor(name, value, dtype, device)
        if t.shape[1] not in (1, n):
            raise ParameterError(
                f"candidates[{name!r}] has shape {tuple(np.shape(value))}, values for {t.shape[1]} neurons, but the "
                f"network has {n}; give a scalar, ({n},) per neuron, (B, {n}), (B, 1) or per core {{core: value}}.")
        check_values(name, t, text=value)
        out[name] = ("all", t)
    return out


def _core_candidate(name: str, key, value, masks, dtype, device) -> tuple[int, torch.Tensor]:
    core = _core_index(key, f"candidates[{name!r}]")
    if core not in masks:
        raise ParameterError(f"candidates[{name!r}] sets core {core}, which holds no neuron of this network (its "
                             f"neurons are on cores {sorted(masks)}); give a value per used core.")
    ndim = value.ndim if isinstance(value, (torch.Tensor, np.ndarray)) else np.ndim(value) \
        if not isinstance(value, str) else 0
    if ndim > 1:
        raise ParameterError(f"candidates[{name!r}][{core}] has shape {tuple(np.shape(value))}; a per-core value "
                             f"is one value or (B,) values, one per candidate set.")
    t = to_tensor(name, value, dtype, device).reshape(-1, 1)
    check_values(name, t, text=value)
    return core, t

