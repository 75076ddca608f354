"""Reading an input raster file (``dynacal compare --inputs FILE.npz``), with clear errors.

The file (written with ``np.savez``) holds:

- ``input_spikes``: uint8 (or bool) of shape (4, T), rows nmda, ampa, gaba_a, gaba_b
  (``SYNAPSE_TYPES``), columns the time steps, 1 = a spike of that source in that step;
- ``dt``: the time step in s (e.g. 1e-4);
- optional ``weights``: 4 non-negative integers, one per row (default 10, 5, 1, 2);
- optional ``Isoma_const``: a constant injected current in A (e.g. 5e-11 for 50 pA).

Every error names the file, the key, the problem with the value and its unit, and the fix.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import ParameterError, unknown_name
from .params import SYNAPSE_TYPES

__all__ = ["NPZ_KEYS", "InputFile", "read_inputs"]

#: Keys of an input file.
NPZ_KEYS = ("input_spikes", "dt", "weights", "Isoma_const")


class InputFile(NamedTuple):
    """The content of an input file, validated; SI units."""

    raster: np.ndarray        #: uint8 (4, T)
    dt: float                 #: s
    weights: list[int] | None  #: 4 integers or None
    Isoma_const: float | None  #: A or None


def _npz_error(path, key: str, problem: str, fix: str) -> ParameterError:
    return ParameterError(f"{path}: {key} {problem}; {fix}")


def read_inputs(path: str | os.PathLike) -> InputFile:
    """Read and validate an input file.

    Raises:
        ParameterError: the file is missing or unreadable, a key is missing or unknown, or
            a value has the wrong shape, dtype, unit or content; the message names the key
            and the fix.
    """
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise ParameterError(f"input file {str(path)!r} {what}; give the path of an .npz written "
                             f"with np.savez(path, input_spikes=..., dt=...).")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except Exception as exc:  # zipfile, pickle and format errors all mean "not a valid npz"
        raise ParameterError(f"{path}: not a readable .npz archive ({type(exc).__name__}: {exc}); write it "
                             f"with np.savez(path, input_spikes=..., dt=...) and no object arrays.") from exc
    for key in data:
        if key not in NPZ_KEYS:
            raise ParameterError(f"{path}: {unknown_name('key', key, NPZ_KEYS)} Rename or remove it.")
    for key in ("input_spikes", "dt"):
        if key not in data:
            raise _npz_error(path, key, "is missing", f"the file has {sorted(data) or 'no keys'}; add {key} "
                             f"({'uint8 (4, T) raster' if key == 'input_spikes' else 'time step in s, e.g. 1e-4'}).")
    dt = _npz_dt(path, data["dt"])
    raster = _npz_raster(path, data["input_spikes"])
    weights = _npz_weights(path, data["weights"]) if "weights" in data else None
    Isoma_const = _npz_current(path, data["Isoma_const"]) if "Isoma_const" in data else None
    return InputFile(raster, dt, weights, Isoma_const)


def _npz_scalar(path, key: str, value: np.ndarray, unit: str) -> float:
    if value.shape not in ((), (1,)) or value.dtype.kind not in "iuf":
        raise _npz_error(path, key, f"has shape {value.shape} and dtype {value.dtype}",
                         f"store one number in {unit} (e.g. np.savez(..., {key}=np.float64(...))).")
    v = float(value.reshape(()))
    if not math.isfinite(v):
        raise _npz_error(path, key, f"= {v} {unit} is not finite", f"store a finite number in {unit}.")
    return v


def _npz_dt(path, value: np.ndarray) -> float:
    dt = _npz_scalar(path, "dt", value, "s")
    if dt <= 0:
        raise _npz_error(path, "dt", f"= {dt:g} s is not positive", "store the time step in s, e.g. 1e-4.")
    if dt > 1e-2:
        guess = "us" if dt >= 10 else "ms"
        raise _npz_error(path, "dt", f"= {dt:g} s is implausibly large; it looks like {guess} given as s",
                         f"store it in seconds: dt = {dt * (1e-6 if guess == 'us' else 1e-3):g}.")
    if dt < 1e-7:
        raise _npz_error(path, "dt", f"= {dt:g} s is implausibly small (under 100 ns)",
                         "store the time step in seconds, e.g. 1e-4 for 100 us.")
    return dt


def _npz_raster(path, r: np.ndarray) -> np.ndarray:
    rows = ", ".join(SYNAPSE_TYPES)
    if r.dtype.kind == "b":
        r = r.astype(np.uint8)
    if r.ndim != 2 or r.shape[0] != len(SYNAPSE_TYPES):
        hint = " (it looks transposed: store input_spikes.T)" if r.ndim == 2 and r.shape[1] == 4 else ""
        raise _npz_error(path, "input_spikes", f"has shape {r.shape}{hint}",
                         f"expected (4, T): one row per synapse type ({rows}), one column per step.")
    if r.shape[1] < 1:
        raise _npz_error(path, "input_spikes", "has no steps (shape (4, 0))", "give at least one column.")
    if r.dtype != np.uint8:
        raise _npz_error(path, "input_spikes", f"has dtype {r.dtype}",
                         "store it as uint8 0/1: np.asarray(raster, dtype=np.uint8).")
    bad = (r != 0) & (r != 1)
    if bad.any():
        row, col = (int(x[0]) for x in np.nonzero(bad))
        raise _npz_error(path, "input_spikes", f"holds {int(bad.sum())} values other than 0 and 1 (first: "
                         f"{int(r[row, col])} in row {SYNAPSE_TYPES[row]}, step {col})",
                         "a source spikes at most once per step: store 1 for a spike and 0 otherwise "
                         "(raise the weight for a stronger input).")
    return r


def _npz_weights(path, w: np.ndarray) -> list[int]:
    if w.shape != (len(SYNAPSE_TYPES),) or w.dtype.kind not in "iuf":
        raise _npz_error(path, "weights", f"has shape {w.shape} and dtype {w.dtype}",
                         f"store 4 integers in the order {', '.join(SYNAPSE_TYPES)}, e.g. [10, 5, 1, 2].")
    wf = w.astype(np.float64)
    if not np.all(np.isfinite(wf)) or np.any(wf < 0) or np.any(wf != np.round(wf)):
        raise _npz_error(path, "weights", f"= {w.tolist()} is not all non-negative integers",
                         "weights count CAM entries (dimensionless): store e.g. [10, 5, 1, 2].")
    return [int(x) for x in wf]


def _npz_current(path, value: np.ndarray) -> float:
    v = _npz_scalar(path, "Isoma_const", value, "A")
    if v < 0:
        raise _npz_error(path, "Isoma_const", f"= {v:g} A is negative", "store a current >= 0 in A, e.g. 5e-11.")
    if v >= 1e-3:
        raise _npz_error(path, "Isoma_const", f"= {v:g} A is implausibly large; it looks like pA given as A",
                         f"store it in ampere: {v * 1e-12:g}.")
    return v
