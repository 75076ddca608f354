"""Bias DAC files: the parametric model as JSON, a measured table as CSV.

- JSON, the parametric model::

      {"format": "dynacal-bias-dac", "version": 1, "coarse_currents_A": [8 floats],
       "fine_formula": "f/255", "floor_A": 0.0, "scale": {"IF_TAU1_N": 1.02, ...},
       "coarse_convention": "logical"}

- CSV, a measured table: optional ``# key: value`` header lines (``coarse_convention:
  logical|reversed``, ``floor_A``, ``fine_formula``, ``name``), then the header
  ``bias,coarse,fine,current_A`` and one row per measured code (current in A). ``bias`` may be
  ``*``: rows for every bias without rows of its own. Codes not measured are filled from the
  parametric model, scaled per (bias, coarse range) to the geometric mean of the measured
  ratios, so a lab can measure a few fine codes per range.

:func:`save_dac` and :func:`load_dac` are the only file functions of the DAC: this module
builds on :mod:`.biasgen` (the model), which knows nothing of files, so the two never
import each other.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path

import numpy as np

from dynacal.files import atomic_write
from dynacal.errors import ParameterError

from .biasgen import BIAS_NAMES, N_COARSE, N_FINE, BiasDAC, _check_bias, _check_codes, reverse_coarse

__all__ = ["save_dac", "load_dac"]


def save_dac(dac: BiasDAC, path: str | os.PathLike) -> Path:
    """Write ``dac`` to ``path``: the full table of every bias for a ``.csv`` path, else the
    parametric JSON (measured tables are not part of the JSON; save them as CSV)."""
    path = Path(path)
    if path.suffix.lower() == ".csv":
        buf = io.StringIO()
        buf.write(f"# dynacal bias DAC table v1\n# coarse_convention: logical\n# name: {dac.name}\n")
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["bias", "coarse", "fine", "current_A"])
        for bias in BIAS_NAMES:
            t = dac.table(bias)
            for c in range(N_COARSE):
                for f in range(N_FINE):
                    w.writerow([bias, c, f, repr(float(t[c, f]))])
        text = buf.getvalue()
    else:
        text = json.dumps(dac.to_dict(), indent=2)
    return atomic_write(path, lambda fh: fh.write(text.encode()))


def load_dac(path: str | os.PathLike) -> BiasDAC:
    """Read a DAC file (see the module doc).

    Raises:
        ParameterError: missing file, unknown format, bad rows (the message names the row).
    """
    path = Path(path)
    if not path.exists():
        raise ParameterError(f"DAC file {str(path)!r} does not exist.")
    if path.suffix.lower() == ".csv":
        return _load_csv(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ParameterError(f"DAC file {str(path)!r} is not valid JSON: {exc}.") from exc
    if not isinstance(data, dict) or data.get("format") != "dynacal-bias-dac":
        raise ParameterError(f"{str(path)!r} is not a dynacal DAC file (format must be 'dynacal-bias-dac').")
    return BiasDAC(data["coarse_currents_A"], fine_formula=data.get("fine_formula", "f/255"),
                   floor=float(data.get("floor_A", 0.0)), scale=data.get("scale") or {},
                   bit_reversed=_convention(data.get("coarse_convention", "logical"), path),
                   name=data.get("name", path.stem))


def _convention(text: str, path) -> bool:
    if text not in ("logical", "reversed"):
        raise ParameterError(f"{str(path)!r}: coarse_convention {text!r} must be 'logical' or 'reversed'.")
    return text == "reversed"


def _load_csv(path: Path) -> BiasDAC:
    meta, rows = {}, []
    with path.open(newline="") as fh:
        lines = fh.read().splitlines()
    body = []
    for line in lines:
        if line.startswith("#"):
            key, sep, value = line[1:].partition(":")
            if sep:
                meta[key.strip()] = value.strip()
        elif line.strip():
            body.append(line)
    reader = csv.DictReader(body)
    if reader.fieldnames is None or [h.strip() for h in reader.fieldnames] != ["bias", "coarse", "fine", "current_A"]:
        raise ParameterError(f"{str(path)!r}: the CSV header must be 'bias,coarse,fine,current_A'.")
    reversed_ = _convention(meta.get("coarse_convention", "logical"), path)
    for k, row in enumerate(reader, start=2):
        try:
            bias, c, f, i = row["bias"].strip(), int(row["coarse"]), int(row["fine"]), float(row["current_A"])
        except (TypeError, ValueError) as exc:
            raise ParameterError(f"{str(path)!r} data row {k}: {exc}; expected bias,coarse,fine,current_A.") from exc
        if bias != "*":
            _check_bias(bias)
        _check_codes(np.asarray(c), np.asarray(f), None if bias == "*" else bias)
        if not (math.isfinite(i) and i >= 0):
            raise ParameterError(f"{str(path)!r} data row {k}: current_A = {i!r} must be a current >= 0 in A.")
        rows.append((bias, int(reverse_coarse(c)) if reversed_ else c, f, i))
    base = BiasDAC(floor=float(meta.get("floor_A", 0.0)), fine_formula=meta.get("fine_formula", "f/255"))
    tables = {}
    for bias in sorted({r[0] for r in rows}):
        model = base.table(None).copy()
        measured = np.full((N_COARSE, N_FINE), np.nan)
        for _, c, f, i in (r for r in rows if r[0] == bias):
            measured[c, f] = i
        for c in range(N_COARSE):
            have = ~np.isnan(measured[c]) & (model[c] > 0) & (measured[c] > 0)
            if have.any():  # fill the unmeasured codes from the model, scaled to the measured ones
                model[c] = model[c] * float(np.exp(np.mean(np.log(measured[c, have] / model[c, have]))))
            model[c] = np.where(np.isnan(measured[c]), model[c], measured[c])
        tables[bias] = model
    return BiasDAC(floor=base.floor, fine_formula=base.fine_formula, tables=tables,
                   bit_reversed=False, name=meta.get("name", meta.get("chip", path.stem)))
