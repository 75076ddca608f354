"""Writing and reading ``calibration.json`` / ``calibration.npz`` (schema in :mod:`.result`).

Every field read back is checked: a problem raises :class:`~dynacal.errors.RecordingError`
naming the file and the field, so a corrupt, foreign or newer file never becomes a silently
wrong calibration.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from dynacal import __version__
from dynacal._files import atomic_write
from dynacal.errors import DynacalError
from dynacal.layers import ChipLayers
from dynacal.params import PARAMETERS

from .result import JSON_NAME, NPZ_NAME, SCHEMA, SCHEMA_VERSION, _jsonable, npz_bytes, reject, sha256_bytes, \
    write_json

_DICTS = ("scales", "failed", "identifiability", "provenance", "options", "quality", "cores")


def write(result, folder: Path) -> Path:
    """Save ``result`` into ``folder`` (npz first, then the JSON that names its hash)."""
    arrays = {"neurons": result.neurons.astype(np.int64), "ok": result.ok.astype(bool)}
    arrays.update({f"per_neuron/{k}": v for k, v in result.per_neuron.items()})
    arrays.update({f"quality/{p}": q["per_neuron"] for p, q in result.quality.items() if q["per_neuron"] is not None})
    arrays.update({f"combinations/{i}": c["values"] for i, c in enumerate(result.combinations)
                   if c["values"] is not None})
    blob = npz_bytes(arrays)
    atomic_write(folder / NPZ_NAME, lambda fh: fh.write(blob))
    layers = result.layers()
    cores = {str(c): {"chip": c // 4, "core": c % 4, "values": dict(v), "codes": result.codes.get(c, {}),
                      "code_error": result.code_error.get(c, {})} for c, v in sorted(layers.core_values.items())}
    names = sorted({n for v in layers.core_values.values() for n in v} | set(result.per_neuron))
    data = {
        "format": SCHEMA, "version": SCHEMA_VERSION, "written_by": f"dynacal {__version__}",
        "layers": layers.to_dict(), "cores": cores,
        "units": {n: PARAMETERS[n].unit for n in names},
        "scales": result.scales,
        "combinations": [{"name": c["name"], "exponents": c["exponents"],
                          "values": f"npz:combinations/{i}" if c["values"] is not None else None}
                         for i, c in enumerate(result.combinations)],
        "quality": {p: {"median": q["median"], "per_neuron": f"npz:quality/{p}" if q["per_neuron"] is not None
                        else None} for p, q in result.quality.items()},
        "failed": result.failed, "code_table": result.code_table,
        "identifiability": result.identifiability, "provenance": result.provenance, "options": result.options,
        "history": result.history,
        "arrays": {"file": NPZ_NAME, "sha256": sha256_bytes(blob), "names": sorted(arrays)},
    }
    return write_json(folder / JSON_NAME, _jsonable(data))


def _json(path: Path) -> dict:
    if path.is_dir():
        path = path / JSON_NAME
    if not path.exists():
        hint = " (a folder written by `dynacal calibrate` holds it)" if path.name == JSON_NAME else ""
        raise reject(path, "file", "does not exist", f"give the calibration.json or its folder{hint}")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise reject(path, "file", f"is not JSON (corrupt or truncated?): {exc}",
                     "calibrate again or restore the file") from exc
    if not isinstance(data, dict) or data.get("format") != SCHEMA:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise reject(path, "format", f"is {got!r}, not {SCHEMA!r}: not a dynacal calibration",
                     "give the calibration.json that `dynacal calibrate` wrote")
    version = data.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise reject(path, "version", f"is {version!r}; expected an integer schema version")
    if version > SCHEMA_VERSION:
        raise reject(path, "version", f"is {version} (written by {data.get('written_by', 'a newer dynacal')}), but "
                     f"this dynacal ({__version__}) reads schema {SCHEMA_VERSION}", "upgrade dynacal")
    return data


def _arrays(path: Path, data: dict) -> dict[str, np.ndarray]:
    spec = data.get("arrays")
    if not isinstance(spec, dict) or not isinstance(spec.get("file"), str) or not isinstance(spec.get("sha256"), str):
        raise reject(path, "arrays", "must be {'file', 'sha256', 'names'}")
    npz = path.parent / Path(spec["file"]).name
    if not npz.exists():
        raise reject(path, "arrays.file", f"names {npz.name!r}, which is missing beside it",
                     "copy calibration.npz together with calibration.json")
    blob = npz.read_bytes()
    if sha256_bytes(blob) != spec["sha256"]:
        raise reject(path, "arrays.sha256", f"does not match {npz.name} (the npz belongs to another calibration or "
                     f"is corrupt)", "copy the two files of one calibration together")
    try:
        with np.load(io.BytesIO(blob), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise reject(path, "arrays.file", f"{npz.name} is not a readable npz: {exc}") from exc


def _ref(path: Path, arrays: dict, field: str, ref: Any):
    if ref is None:
        return None
    key = ref[4:] if isinstance(ref, str) and ref.startswith("npz:") else None
    if key is None or key not in arrays:
        raise reject(path, field, f"refers to {ref!r}, which is not an array of {NPZ_NAME}")
    return arrays[key]


def read(cls, path: Path):
    """A :class:`~.result.CalibrationResult` from a file or folder (see :mod:`.result`)."""
    path = path / JSON_NAME if path.is_dir() else path
    data = _json(path)
    for field in _DICTS:
        if not isinstance(data.get(field, {}), dict):
            raise reject(path, field, f"must be a JSON object, not {type(data[field]).__name__}")
    for field in ("combinations", "history"):
        if not isinstance(data.get(field, []), list):
            raise reject(path, field, f"must be a JSON list, not {type(data[field]).__name__}")
    arrays = _arrays(path, data)
    for key in ("neurons", "ok"):
        if key not in arrays:
            raise reject(path, f"arrays.{key}", f"is missing from {NPZ_NAME}")
    try:
        layers = ChipLayers.from_dict(data.get("layers"))
    except DynacalError as exc:
        raise reject(path, "layers", f"is not a valid chip-layers description: {exc}") from exc
    cores = data.get("cores", {})
    try:
        codes = {int(c): v["codes"] for c, v in cores.items()}
        code_error = {int(c): v.get("code_error", {}) for c, v in cores.items()}
        combos = [dict(c, values=_ref(path, arrays, f"combinations[{i}].values", c.get("values")))
                  for i, c in enumerate(data.get("combinations", []))]
        quality = {p: {"median": q.get("median"),
                       "per_neuron": _ref(path, arrays, f"quality[{p!r}].per_neuron", q.get("per_neuron"))}
                   for p, q in data.get("quality", {}).items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise reject(path, "cores/combinations/quality", f"is malformed: {exc!r}") from exc
    per_neuron = {k.split("/", 1)[1]: v for k, v in arrays.items() if k.startswith("per_neuron/")}
    try:
        return cls(layers.core_values, layers.mismatch, scales=data.get("scales", {}), neurons=arrays["neurons"],
                   per_neuron=per_neuron, combinations=combos, quality=quality, ok=arrays["ok"],
                   failed=data.get("failed", {}), codes=codes, code_error=code_error,
                   identifiability=data.get("identifiability", {}), provenance=data.get("provenance", {}),
                   options=data.get("options", {}), history=data.get("history", []),
                   code_table=data.get("code_table"))
    except DynacalError as exc:
        raise type(exc)(f"{str(path)!r}: {exc}") from exc
