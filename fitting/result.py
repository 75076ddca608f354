"""The result of a calibration: what one chip's cores and neurons are, saved as ``calibration.json``.

A :class:`CalibrationResult` holds the fitted core values (SI, the names of
:data:`dynacal.params.PARAMETERS`) per global core (chip * 4 + core), each calibrated
neuron's mismatch factors, and everything needed to judge and reuse the fit: the effective
value of every model parameter of every neuron, the identifiable combinations, the fit
quality, the neurons that failed, the bias codes of each core and where they came from.

``result.layers()`` is the chip as a :class:`~dynacal.layers.ChipLayers` and
``result.params(network)`` the :class:`~dynacal.params.Params` of any network built on the
calibrated neurons, through ``Network.params`` (the one order of :mod:`dynacal.params`): for a
calibrated neuron of a network that sets no core bias of its own, value = core value x
factor, exactly what the objective simulated.

Files (``result.save(folder)``; both written atomically, the npz first):

``calibration.json`` (schema ``dynacal-calibration``, version 1)::

    format        "dynacal-calibration"
    version       1 (a newer file is refused with the dynacal version that wrote it)
    layers        ChipLayers.to_dict(): {"format": "dynacal-chip-layers", "version": 1, "name",
                  "core_values": {"<global core>": {param: SI value}},
                  "mismatch": {param: {"<global core>": [256 factors by neuron id]}}}
                  (read without dynacal.fitting by ChipLayers.from_dict / ChipLayers.load)
    cores         {"<global core>": {"chip", "core", "values": {param: SI value},
                  "codes": {bias: [coarse, fine]} (nominal bias map), "code_error": {param: rel. error}}}
    units         {param: SI unit} of every parameter in core values and per_neuron
    scales        {param: factor}: condition scales (a code's current = scale x nominal)
    combinations  [{"name", "exponents": {param: power}, "values": "npz:combinations/<i>"}]
    quality       {protocol: {"median": float, "per_neuron": "npz:quality/<protocol>"}}
    failed        {reason: [indices into neurons]} (bound hits, unstable, silent, ...)
    code_table    CodeTable.to_dict() of fitting.codes (codes measured on this chip) or null
    identifiability, provenance, options, history: JSON objects as the fitter gave them
    arrays         {"file": "calibration.npz", "sha256": hex of the npz, "names": [...]}

``calibration.npz`` (arrays, M calibrated neurons): ``neurons`` int64 (M, 3) (chip, core,
id), ``ok`` bool (M,), ``per_neuron/<param>`` float64 (M,) for every PARAMETERS entry,
``quality/<protocol>`` float64 (M,), ``combinations/<i>`` float64 (M,).

Non-finite numbers in the JSON are written as null (strict JSON); the npz keeps NaN.
Loading checks the format, the version, every field's type and the npz's hash; a problem
raises :class:`~dynacal.errors.RecordingError` naming the field and the file.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dynacal.chip import NEURONS_PER_CORE, Connections, Network
from dynacal.errors import ParameterError, RecordingError
from dynacal.layers import ChipLayers
from dynacal.params import PARAMETERS, Params
from dynacal._files import atomic_write

__all__ = ["CalibrationResult", "SCHEMA", "SCHEMA_VERSION", "JSON_NAME", "NPZ_NAME"]

log = logging.getLogger(__name__)

SCHEMA, SCHEMA_VERSION = "dynacal-calibration", 1
JSON_NAME, NPZ_NAME = "calibration.json", "calibration.npz"


def neurons_network(neurons: np.ndarray) -> Network:
    """A bare network (no inputs, no biases) on neurons (M, 3) = (chip, core, id)."""
    n = np.asarray(neurons, dtype=np.int64).reshape(-1, 3)
    chips = int(n[:, 0].max()) + 1 if len(n) else 1
    return Network(core=n[:, 0] * 4 + n[:, 1], neuron_id=n[:, 2], n_inputs=0, inputs=Connections.empty(),
                   recurrent=Connections.empty(), n_chips=max(chips, 1), enforce_limits=False)


def _jsonable(x: Any) -> Any:
    """Plain JSON values from numpy/torch scalars and arrays, tuples, dataclasses."""
    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return _jsonable(dataclasses.asdict(x))
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if isinstance(x, (np.ndarray, np.generic)):
        return _jsonable(x.tolist())
    if isinstance(x, float) and not np.isfinite(x):
        return None  # strict JSON (a browser reads it too): NaN and inf are null
    if isinstance(x, (str, int, float, bool)) or x is None:
        return x
    return repr(x)


@dataclasses.dataclass(eq=False)
class CalibrationResult:
    """One chip's calibration (see the module doc for the file schema).

    Attributes:
        core_values: global core -> {parameter: SI value} (the fitted core values).
        mismatch: parameter -> {global core: float64 (256,) factors by neuron id}.
        scales: condition parameter -> factor (board targets: a code's current = scale x nominal).
        neurons: int64 (M, 3) (chip, core, id) of the calibrated neurons.
        per_neuron: parameter -> float64 (M,) effective value (core value x factor); filled
            for every ``PARAMETERS`` entry from the layers when not given.
        combinations: [{"name", "exponents": {param: power}, "values": (M,)}].
        quality: protocol -> {"per_neuron": (M,) loss, "median": float (over ok neurons)}.
        ok: bool (M,): the neuron's fit is usable (default: not listed in ``failed``).
        failed: reason -> [indices into ``neurons``].
        codes: global core -> {bias: [coarse, fine]}; None: coded through the nominal bias map.
        code_error: global core -> {parameter: relative rounding error}.
        identifiability, provenance, options: JSON-able dicts (serial, versions, hashes, ...).
        history: [dict] per fitter stage.
        code_table: ``fitting.codes.CodeTable.to_dict()`` (codes measured on the chip) or None.

    Raises:
        ParameterError: invalid values (through :class:`~dynacal.layers.ChipLayers`), arrays
            of the wrong length, neuron indices out of range.
    """

    core_values: Mapping[int, Mapping[str, float]]
    mismatch: Mapping[str, Mapping[int, Any]] = dataclasses.field(default_factory=dict)
    scales: Mapping[str, float] = dataclasses.field(default_factory=dict)
    neurons: Any = None
    per_neuron: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    combinations: list = dataclasses.field(default_factory=list)
    quality: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    ok: Any = None
    failed: Mapping[str, list] = dataclasses.field(default_factory=dict)
    codes: Mapping[int, Mapping[str, Any]] | None = None
    code_error: Mapping[int, Mapping[str, float]] = dataclasses.field(default_factory=dict)
    identifiability: dict = dataclasses.field(default_factory=dict)
    provenance: dict = dataclasses.field(default_factory=dict)
    options: dict = dataclasses.field(default_factory=dict)
    history: list = dataclasses.field(default_factory=list)
    code_table: dict | None = None

    def __post_init__(self):
        layers = ChipLayers(self.core_values, self.mismatch, name=self._name())
        self.core_values, self.mismatch = layers.core_values, layers.mismatch
        self._layers = layers
        self.neurons = self._read_neurons()
        m = len(self.neurons)
        self.failed = {str(r): sorted({_index(i, m, f"failed[{r!r}]") for i in idx}) for r, idx in
                       dict(self.failed).items()}
        if self.ok is None:
            ok = np.ones(m, dtype=bool)
            for idx in self.failed.values():
                ok[idx] = False
        else:
            ok = _column(self.ok, m, "ok", bool)
        self.ok = ok
        computed = self._effective(layers)
        given = {str(k): _column(v, m, f"per_neuron[{k!r}]") for k, v in dict(self.per_neuron).items()}
        unknown = sorted(set(given) - set(PARAMETERS))
        if unknown:
            raise ParameterError(f"per_neuron has unknown parameters {unknown}; give the names of "
                                 f"dynacal.params.PARAMETERS.")
        self.per_neuron = {name: given.get(name, computed[name]) for name in PARAMETERS}
        self.scales = {str(k): float(v) for k, v in dict(self.scales).items()}
        self.combinations = [self._combination(i, c, m) for i, c in enumerate(self.combinations)]
        self.quality = {str(p): self._quality(p, q, m) for p, q in dict(self.quality).items()}
        if self.codes is None:
            self.codes, self.code_error = self._nominal_codes(layers)
        else:
            self.codes = {int(c): {b: [int(x) for x in v] for b, v in per.items()} for c, per in self.codes.items()}
            self.code_error = {int(c): {p: float(e) for p, e in per.items()}
                               for c, per in dict(self.code_error).items()}
        for name in ("identifiability", "provenance", "options"):
            setattr(self, name, _jsonable(getattr(self, name) or {}))
        self.history = _jsonable(list(self.history or []))

    # --- construction helpers ----------------------------------------------------------

    def _name(self) -> str:
        serial = (self.provenance or {}).get("serial")
        return f"calibration of board {serial}" if serial is not None else "calibration"

    def _read_neurons(self) -> np.ndarray:
        if self.neurons is None:  # every neuron of the calibrated cores
            cores = sorted(set(self._layers.core_values) | {c for per in self._layers.mismatch.values() for c in per})
            return np.array([(c // 4, c % 4, i) for c in cores for i in range(NEURONS_PER_CORE)],
                            dtype=np.int64).reshape(-1, 3)
        try:
            n = np.asarray(self.neurons, dtype=np.int64).reshape(-1, 3)
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"neurons must be int (M, 3) (chip, core, id): {exc}.") from exc
        bad = (n[:, 0] < 0) | (n[:, 1] < 0) | (n[:, 1] > 3) | (n[:, 2] < 0) | (n[:, 2] >= NEURONS_PER_CORE)
        if bad.any():
            raise ParameterError(f"neurons[{int(np.flatnonzero(bad)[0])}] = {n[bad][0].tolist()} is not a neuron "
                                 f"(chip >= 0, core 0..3, id 0..255).")
        return n

    def _effective(self, layers: ChipLayers) -> dict[str, np.ndarray]:
        p = neurons_network(self.neurons).params(layers=layers)
        m = len(self.neurons)
        return {name: np.broadcast_to(getattr(p, name).detach().cpu().numpy().reshape(-1), (m,)).astype(np.float64)
                for name in PARAMETERS} if m else {name: np.zeros(0) for name in PARAMETERS}

    @staticmethod
    def _combination(i: int, c: Any, m: int) -> dict:
        if not isinstance(c, Mapping) or "name" not in c or "exponents" not in c:
            raise ParameterError(f"combinations[{i}] must be a dict with 'name', 'exponents' {{param: power}} and "
                                 f"'values' (M,); got {c!r:.80}.")
        values = c.get("values")
        return {"name": str(c["name"]), "exponents": {str(k): float(v) for k, v in dict(c["exponents"]).items()},
                "values": _column(values, m, f"combinations[{i}].values") if values is not None else None}

    def _quality(self, protocol: str, q: Any, m: int) -> dict:
        if not isinstance(q, Mapping):
            raise ParameterError(f"quality[{protocol!r}] must be {{'per_neuron': (M,), 'median': float}}.")
        per = _column(q["per_neuron"], m, f"quality[{protocol!r}].per_neuron") if q.get("per_neuron") is not None \
            else None
        median = q.get("median")
        if median is None and per is not None:
            good = per[self.ok & np.isfinite(per)]
            median = float(np.median(good)) if good.size else float("nan")
        return {"per_neuron": per, "median": float(median) if median is not None else float("nan")}

    @staticmethod
    def _nominal_codes(layers: ChipLayers) -> tuple[dict, dict]:
        """Codes of the core values through the nominal bias map, with their rounding error."""
        from dynacal.hardware.codemap import layers_to_codes  # noqa: PLC0415  (hardware builds on the core)
        if not layers.core_values:
            return {}, {}
        try:
            setting = layers_to_codes(layers)
        except ParameterError as exc:
            log.warning("the calibrated core values have no bias codes: %s", exc)
            return {}, {}
        codes = {c * 4 + k: {b: list(v) for b, v in per.items()} for (c, k), per in setting.codes.items()}
        err: dict[int, dict[str, float]] = {}
        for row in setting.report.rows:
            if row.get("parameter"):
                c, k = row["core"]
                err.setdefault(c * 4 + k, {})[row["parameter"]] = float(row["param_rel_error"])
        return codes, err

    # --- use -----------------------------------------------------------------------------

    @property
    def serial(self):
        """The board's serial number (None for a simulated target)."""
        return self.provenance.get("serial")

    def layers(self) -> ChipLayers:
        """The chip as core values and mismatch factors (layers 2 and 4 of ``dynacal.params``)."""
        return self._layers

    def params(self, network: Network, candidates: Mapping[str, Any] | None = None, **options) -> Params:
        """The parameters ``network`` runs with on this chip: ``network.params(candidates,
        layers=self.layers(), **options)`` (dtype, device). A core bias the network sets
        itself, or a candidate, replaces the calibrated core value (the one order)."""
        return network.params(candidates, layers=self._layers, **options)

    def neuron_index(self, chip: int, core: int, neuron: int) -> int:
        """Row of neuron (chip, core, id) in ``neurons`` and every per-neuron array."""
        hit = np.flatnonzero((self.neurons == (chip, core, neuron)).all(axis=1))
        if not hit.size:
            raise ParameterError(f"neuron (chip {chip}, core {core}, id {neuron}) was not calibrated; the "
                                 f"calibration covers {len(self.neurons)} neurons on cores "
                                 f"{sorted(set((self.neurons[:, 0] * 4 + self.neurons[:, 1]).tolist()))}.")
        return int(hit[0])

    def per_neuron_table(self, format: str = "dict") -> dict[str, np.ndarray] | str:
        """Every calibrated neuron's parameters, without the layering.

        Args:
            format: ``"dict"``: columns chip, core, id, ok, then every parameter (SI) as
                (M,) arrays; ``"csv"``: the same as CSV text, units in the header.
        """
        cols = {"chip": self.neurons[:, 0], "core": self.neurons[:, 1], "id": self.neurons[:, 2], "ok": self.ok}
        cols.update(self.per_neuron)
        if format == "dict":
            return cols
        if format != "csv":
            raise ParameterError(f"per_neuron_table(format={format!r}): give 'dict' or 'csv'.")
        head = [k if k not in PARAMETERS or not PARAMETERS[k].unit else f"{k} [{PARAMETERS[k].unit}]" for k in cols]
        lines = [",".join(head)]
        for i in range(len(self.neurons)):
            lines.append(",".join(str(int(v[i])) if k in ("chip", "core", "id", "ok") else repr(float(v[i]))
                                  for k, v in cols.items()))
        return "\n".join(lines) + "\n"

    def with_codes(self, table) -> "CalibrationResult":
        """A copy holding a :class:`~.codes.CodeTable` measured on the chip (``export_codes``
        then returns its codes)."""
        return dataclasses.replace(self, code_table=table.to_dict() if hasattr(table, "to_dict") else dict(table))

    def export_codes(self) -> dict[int, dict[str, list[int]]]:
        """The codes to set on the board: measured on this chip (``code_table``) where there is
        one, otherwise the nominal bias map's."""
        out = {c: dict(v) for c, v in self.codes.items()}
        for c, per in ((self.code_table or {}).get("codes") or {}).items():
            out.setdefault(int(c), {}).update({b: list(v) for b, v in per.items()})
        return out

    def __repr__(self) -> str:
        return (f"CalibrationResult({self._name()}, cores {sorted(self.core_values)}, {len(self.neurons)} neurons "
                f"({int(self.ok.sum())} ok), mismatch of {sorted(self.mismatch)})")

    # --- files ---------------------------------------------------------------------------

    def save(self, folder: str | os.PathLike) -> Path:
        """Write ``calibration.json`` and ``calibration.npz`` into ``folder`` (atomically).

        Returns:
            The path of ``calibration.json``.
        """
        from ._result_io import write  # noqa: PLC0415
        return write(self, Path(folder))

    @classmethod
    def load(cls, path: str | os.PathLike) -> "CalibrationResult":
        """Read a calibration from ``calibration.json`` or the folder holding it.

        Raises:
            RecordingError: missing, corrupt, foreign or newer-schema files, naming the field.
        """
        from ._result_io import read  # noqa: PLC0415
        return read(cls, Path(path))


def _index(i: Any, m: int, where: str) -> int:
    if not isinstance(i, (int, np.integer)) or isinstance(i, bool) or not 0 <= int(i) < m:
        raise ParameterError(f"{where}: {i!r} is not an index into the {m} calibrated neurons (0..{m - 1}).")
    return int(i)


def _column(v: Any, m: int, where: str, dtype=np.float64) -> np.ndarray:
    try:
        a = np.asarray(v.detach().cpu() if hasattr(v, "detach") else v, dtype=dtype).reshape(-1)
    except (TypeError, ValueError) as exc:
        raise ParameterError(f"{where} is not an array of numbers: {exc}.") from exc
    if a.shape != (m,):
        raise ParameterError(f"{where} has {a.size} values; give one per calibrated neuron ({m}).")
    return a


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def npz_bytes(arrays: Mapping[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def write_json(path: Path, data: Mapping) -> Path:
    text = json.dumps(data, indent=1, allow_nan=False)
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def reject(path: Path, field: str, problem: str, fix: str = "") -> RecordingError:
    return RecordingError(f"{str(path)!r}: field {field!r} {problem}" + (f"; {fix}" if fix else "."))
