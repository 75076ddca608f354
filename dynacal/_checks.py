"""Argument checks shared by the public constructors (chip, stimulus): whole numbers that
may arrive as Python or numpy integers or integral floats, and index arrays.

Each check raises one of dynacal's errors naming the argument, the value and the fix.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np
import torch

from .errors import DynacalError, NetworkError

__all__ = ["integer", "index_array"]


def integer(value: Any, name: str, *, low: int = 0, high: int | None = None, fix: str = "",
            error: type[DynacalError] = NetworkError) -> int:
    """``value`` as a Python int (a Python or numpy integer, or an integral float such as
    ``2.0``), in ``low..high``; otherwise ``error`` naming ``name``, the value and ``fix``."""
    if isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0:
        value = value.item()
    ok = isinstance(value, numbers.Integral) or (isinstance(value, numbers.Real) and math.isfinite(value)
                                                 and float(value).is_integer())
    if isinstance(value, (bool, np.bool_)) or not ok:
        raise error(f"{name} = {value!r} must be a whole number{'; ' + fix if fix else ''}.")
    number = int(value)
    if number < low or (high is not None and number > high):
        span = f">= {low}" if high is None else f"in {low}..{high}"
        raise error(f"{name} = {number} must be {span}{'; ' + fix if fix else ''}.")
    return number


def index_array(value: Any, name: str, size: int) -> np.ndarray:
    """Connection indices as int64: whole numbers in ``0..size-1`` (NetworkError otherwise)."""
    try:
        a = np.asarray(value)
    except (TypeError, ValueError) as exc:
        raise NetworkError(f"{name} = {value!r} is not an array of indices.") from exc
    if a.dtype.kind == "f" and a.size and np.all(np.isfinite(a)) and np.all(a == np.round(a)) \
            and np.abs(a).max() < 2.0 ** 62:  # beyond, the cast to int64 would wrap
        a = a.astype(np.int64)
    if a.size and a.dtype.kind not in "iu" or a.dtype.kind == "b":
        raise NetworkError(f"{name} must hold whole-number indices in 0..{size - 1}; got dtype {a.dtype}: "
                           f"{np.ravel(a)[:5].tolist()}.")
    a = a.astype(np.int64)
    if a.size and (a.min() < 0 or a.max() >= size):
        bad = int(a.min()) if a.min() < 0 else int(a.max())
        raise NetworkError(f"{name} holds index {bad}, out of range 0..{size - 1} (the group has {size}).")
    return a
