"""The Dynap-SE1 bias DAC: (coarse, fine) codes <-> currents, vectorised over any shape.

Every bias of a core is set by a 3-bit coarse code ``c`` (0..7) and an 8-bit fine code
``f`` (0..255). The parametric model (``shared/docs/dynapse1-hardware.md``)::

    I(bias, c, f) = floor + scale[bias] * I_coarse[c] * f / 255        (fine_formula "f/255")
    I(bias, c, f) = floor + scale[bias] * I_coarse[c] * (f + 1) / 256  (fine_formula "(f+1)/256")

with the community table ``I_coarse`` = 15 pA, 105 pA, 820 pA, 6.5 nA, 50 nA, 400 nA,
3.2 uA, 24 uA (approx.), a floor in A (leakage of a real DAC) and a dimensionless scale
factor per bias. Codes are given in the DAC's coarse convention: ``bit_reversed=True``
means the 3 coarse bits are reversed (as some tools send them); the table is always indexed
by the *logical* coarse range (0 = smallest).

A lab that measured its chip loads a table with :func:`.dacfile.load_dac` (JSON for the
parametric model, CSV for measured currents); this module never reads or writes files.

>>> dac = BiasDAC()
>>> float(dac.current(3, 255))
6.5e-09
>>> r = dac.code(5e-12)
>>> (int(r.coarse), int(r.fine), float(r.current))
(0, 85, 5e-12)
"""

from __future__ import annotations

import logging
import math
from typing import Any, Mapping, NamedTuple, Sequence

import numpy as np
import torch

from dynacal.errors import ParameterError, unknown_name
from dynacal.units import format_quantity

__all__ = ["BiasDAC", "CodeResult", "BIAS_NAMES", "DEFAULT_COARSE_CURRENTS", "N_COARSE", "N_FINE",
           "reverse_coarse"]

log = logging.getLogger(__name__)

#: The 25 biases of a Dynap-SE1 core, as samna names them (``Dynapse1Parameter.param_name``).
BIAS_NAMES = ("IF_AHTAU_N", "IF_AHTHR_N", "IF_AHW_P", "IF_BUF_P", "IF_CASC_N", "IF_DC_P", "IF_NMDA_N",
              "IF_RFR_N", "IF_TAU1_N", "IF_TAU2_N", "IF_THR_N", "NPDPIE_TAU_F_P", "NPDPIE_TAU_S_P",
              "NPDPIE_THR_F_P", "NPDPIE_THR_S_P", "NPDPII_TAU_F_P", "NPDPII_TAU_S_P", "NPDPII_THR_F_P",
              "NPDPII_THR_S_P", "PS_WEIGHT_EXC_F_N", "PS_WEIGHT_EXC_S_N", "PS_WEIGHT_INH_F_N",
              "PS_WEIGHT_INH_S_N", "PULSE_PWLK_P", "R2R_P")
#: Top current of each logical coarse range in A (community approximation).
DEFAULT_COARSE_CURRENTS = (15e-12, 105e-12, 820e-12, 6.5e-9, 50e-9, 400e-9, 3.2e-6, 24e-6)
N_COARSE, N_FINE = 8, 256
_FINE_FORMULAS = ("f/255", "(f+1)/256")
_REL_TOL = 1e-9  # targets this close beyond the reachable range still count as reachable


def reverse_coarse(coarse):
    """Reverse the 3 bits of coarse codes (its own inverse): 1 <-> 4, 3 <-> 6, 0, 2, 5, 7 fixed."""
    c = np.asarray(coarse, dtype=np.int64)
    return ((c & 1) << 2) | (c & 2) | ((c >> 2) & 1)


class CodeResult(NamedTuple):
    """Best codes for target currents, each array of the targets' shape.

    ``coarse``/``fine``: int64 codes (in the DAC's coarse convention); ``current``: the
    current they give, A; ``error``: ``current - target``, A; ``rel_error``: error / target
    (0 where the target is 0 and met exactly).
    """

    coarse: np.ndarray
    fine: np.ndarray
    current: np.ndarray
    error: np.ndarray
    rel_error: np.ndarray


class BiasDAC:
    """A bias DAC: parametric (community table, floor, scales) or measured tables.

    Args:
        coarse_currents: 8 top currents in A, one per logical coarse range.
        fine_formula: ``"f/255"`` (default) or ``"(f+1)/256"``.
        floor: current at fine code 0 in A (DAC leakage), added to every code.
        scale: bias name -> dimensionless factor on the parametric current (default 1).
        bit_reversed: codes passed in and returned use the bit-reversed coarse convention.
        tables: bias name (or ``"*"`` for every bias) -> (8, 256) measured currents in A,
            indexed by logical coarse; replaces the parametric model for those biases.
        name: a label for files and reports.

    Raises:
        ParameterError: unknown bias names, wrong table shapes, negative or NaN currents.
    """

    def __init__(self, coarse_currents: Sequence[float] = DEFAULT_COARSE_CURRENTS, *,
                 fine_formula: str = "f/255", floor: float = 0.0, scale: Mapping[str, float] | None = None,
                 bit_reversed: bool = False, tables: Mapping[str, Any] | None = None, name: str = "community"):
        cc = np.asarray(coarse_currents, dtype=np.float64)
        if cc.shape != (N_COARSE,) or not np.all(np.isfinite(cc)) or np.any(cc <= 0):
            raise ParameterError(f"coarse_currents must be {N_COARSE} positive currents in A (one per coarse "
                                 f"range, e.g. {DEFAULT_COARSE_CURRENTS}); got {coarse_currents!r}.")
        if fine_formula not in _FINE_FORMULAS:
            raise unknown_name("fine_formula", fine_formula, _FINE_FORMULAS)
        if not (math.isfinite(floor) and floor >= 0) or floor >= 1e-9:
            raise ParameterError(f"floor = {floor!r} A must be a finite current >= 0 and below 1 nA "
                                 f"(a DAC floor is a fraction of a pA, e.g. 2e-13).")
        self.coarse_currents, self.fine_formula, self.floor = cc, fine_formula, float(floor)
        self.bit_reversed, self.name = bool(bit_reversed), name
        self.scale = {}
        for bias, factor in (scale or {}).items():
            _check_bias(bias)
            if not (math.isfinite(factor) and factor > 0):
                raise ParameterError(f"scale[{bias!r}] = {factor!r} must be a positive factor (1 = nominal).")
            self.scale[bias] = float(factor)
        self.tables = {}
        for bias, table in (tables or {}).items():
            if bias != "*":
                _check_bias(bias)
            t = np.asarray(table, dtype=np.float64)
            if t.shape != (N_COARSE, N_FINE) or not np.all(np.isfinite(t)) or np.any(t < 0):
                raise ParameterError(f"measured table for {bias!r} must be ({N_COARSE}, {N_FINE}) finite "
                                     f"currents >= 0 in A; got shape {t.shape}.")
            for c in range(N_COARSE):
                if np.any(np.diff(t[c]) < 0):
                    f = int(np.argmax(np.diff(t[c]) < 0))
                    log.warning("measured DAC table %s: %s is not monotone in coarse %d at fine %d..%d",
                                name, bias, c, f, f + 1)
            self.tables[bias] = t
        self._cache: dict[str, tuple] = {}

    # --- forward ---------------------------------------------------------------------

    def table(self, bias: str | None = None) -> np.ndarray:
        """All 2048 currents of one bias, float64 (8, 256) in A, indexed by logical coarse."""
        if bias is not None:
            _check_bias(bias)
        if bias in self.tables:
            return self.tables[bias]
        if "*" in self.tables:
            return self.tables["*"]
        f = np.arange(N_FINE, dtype=np.float64)
        frac = f / 255.0 if self.fine_formula == "f/255" else (f + 1.0) / 256.0
        return self.floor + self.scale.get(bias, 1.0) * self.coarse_currents[:, None] * frac[None, :]

    def _stacked(self, biases: Sequence[str | None]) -> np.ndarray:
        return np.stack([self.table(b) for b in biases])

    def current(self, coarse, fine, bias: str | Sequence[str] | None = None):
        """Currents of codes, vectorised.

        Args:
            coarse, fine: integer arrays (numpy or torch) of one broadcast shape ``S``, in the
                DAC's coarse convention.
            bias: one name, None (a bias without scale factor), or a sequence of names
                matching the last axis of ``S`` (e.g. (1024, 25) codes for 25 biases).

        Returns:
            float64 currents in A, shape ``S``; a torch tensor (on the codes' device) when
            the codes are tensors.

        Raises:
            ParameterError: a code out of range (names the bias, the code and the range).
        """
        is_torch = isinstance(coarse, torch.Tensor) or isinstance(fine, torch.Tensor)
        device = (coarse if isinstance(coarse, torch.Tensor) else fine).device if is_torch else None
        c = np.asarray(coarse.cpu() if isinstance(coarse, torch.Tensor) else coarse)
        f = np.asarray(fine.cpu() if isinstance(fine, torch.Tensor) else fine)
        c, f = np.broadcast_arrays(c, f)
        names = [bias] if bias is None or isinstance(bias, str) else list(bias)
        _check_codes(c, f, names if len(names) > 1 else names[0])
        c = c.astype(np.int64)
        f = f.astype(np.int64)
        logical = reverse_coarse(c) if self.bit_reversed else c
        if len(names) == 1:
            out = self.table(names[0])[logical, f]
        else:
            if c.ndim == 0 or c.shape[-1] != len(names):
                raise ParameterError(f"{len(names)} bias names given but the codes' last axis has "
                                     f"{c.shape[-1] if c.ndim else 0} entries; give one name per column.")
            stacked = self._stacked(names)
            out = stacked[np.arange(len(names)), logical, f]
        return torch.as_tensor(out, dtype=torch.float64, device=device) if is_torch else out

    # --- inverse ---------------------------------------------------------------------

    def reachable(self, bias: str | None = None) -> tuple[float, float]:
        """The smallest positive and the largest current of a bias, in A."""
        t = self.table(bias)
        positive = t[t > 0]
        return (float(positive.min()) if positive.size else 0.0), float(t.max())

    def code(self, current, bias: str | Sequence[str] | None = None) -> CodeResult:
        """Best codes for target currents: the code whose current is nearest in ratio.

        Where several codes give (nearly) the same current, the lowest coarse range wins
        (its fine steps are the finest). A target of exactly 0 A gets the lowest code.

        Args:
            current: targets in A, any shape ``S`` (numpy, torch or float).
            bias: as in :meth:`current` (a sequence matches the last axis of ``S``).

        Returns:
            :class:`CodeResult` of numpy arrays of shape ``S``.

        Raises:
            ParameterError: NaN or negative targets, or a target outside the reachable
                range (the message states the range of that bias).
        """
        target = np.asarray(current.detach().cpu() if isinstance(current, torch.Tensor) else current,
                            dtype=np.float64)
        names = [bias] if bias is None or isinstance(bias, str) else list(bias)
        if len(names) > 1 and (target.ndim == 0 or target.shape[-1] != len(names)):
            raise ParameterError(f"{len(names)} bias names given but the targets' last axis has "
                                 f"{target.shape[-1] if target.ndim else 0} entries; give one name per column.")
        coarse = np.zeros(target.shape, dtype=np.int64)
        fine = np.zeros(target.shape, dtype=np.int64)
        achieved = np.zeros(target.shape, dtype=np.float64)
        for j, name in enumerate(names):
            sel = (Ellipsis,) if len(names) == 1 else (Ellipsis, j)
            c, f, a = self._code_one(target[sel], name)
            coarse[sel], fine[sel], achieved[sel] = c, f, a
        if self.bit_reversed:
            coarse = reverse_coarse(coarse)
        error = achieved - target
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.where(target > 0, error / np.where(target > 0, target, 1.0), np.where(error == 0, 0.0, np.inf))
        return CodeResult(coarse, fine, achieved, error, rel)

    def _code_one(self, target: np.ndarray, bias: str | None):
        label = bias or "bias"
        if not np.all(np.isfinite(target)) or np.any(target < 0):
            bad = target[~(np.isfinite(target) & (target >= 0))].ravel()[0]
            raise ParameterError(f"{label}: target current {bad!r} A is negative or not finite; a bias "
                                 f"current must be >= 0 A.")
        lo, hi = self.reachable(bias)
        inside = (target == 0) | ((target >= lo * (1 - _REL_TOL)) & (target <= hi * (1 + _REL_TOL)))
        if not np.all(inside):
            bad = float(target[~inside].ravel()[0])
            way = "above" if bad > hi else "below"
            fix = ("lower the target, or use a DAC table whose top coarse range reaches it" if bad > hi else
                   "raise the target, or set 0 A to switch the bias off")
            raise ParameterError(
                f"{label}: target {format_quantity(bad, 'A')} is {way} the reachable range "
                f"{format_quantity(lo, 'A')}..{format_quantity(hi, 'A')} of DAC {self.name!r} (coarse 0..7, "
                f"fine 0..255); {fix}.")
        key = bias if (bias in self.tables or "*" in self.tables or bias in self.scale) else None
        if key not in self._cache:
            flat = self.table(bias).ravel()
            order = np.argsort(flat, kind="stable")  # ties: lowest coarse first
            self._cache[key] = (flat[order], order)
        values, order = self._cache[key]
        t = target.ravel()
        idx = np.searchsorted(values, t, side="left")
        lo_i = np.clip(idx - 1, 0, values.size - 1)
        hi_i = np.clip(idx, 0, values.size - 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            d_lo = np.abs(np.log(values[lo_i] / t))
            d_hi = np.abs(np.log(values[hi_i] / t))
        d_lo = np.where(np.isnan(d_lo), np.inf, d_lo)
        d_hi = np.where(np.isnan(d_hi), np.inf, d_hi)
        # equal currents: searchsorted(side="left") puts hi_i on the first (lowest coarse) one
        pick = np.where(d_lo < d_hi, lo_i, hi_i)
        pick = np.where(t == 0, 0, pick)
        flat_code = order[pick]
        c, f = np.divmod(flat_code, N_FINE)
        return c.reshape(target.shape), f.reshape(target.shape), values[pick].reshape(target.shape)

    # --- description -------------------------------------------------------------------

    def to_dict(self) -> dict:
        """The parametric description as JSON-able dict (measured tables are not included)."""
        return {"format": "dynacal-bias-dac", "version": 1, "name": self.name,
                "coarse_currents_A": self.coarse_currents.tolist(), "fine_formula": self.fine_formula,
                "floor_A": self.floor, "scale": dict(self.scale),
                "coarse_convention": "reversed" if self.bit_reversed else "logical",
                "measured_biases": sorted(self.tables)}

    def __repr__(self) -> str:
        return (f"BiasDAC({self.name!r}, floor={format_quantity(self.floor, 'A')}, "
                f"{len(self.scale)} scaled biases, {len(self.tables)} measured tables"
                f"{', bit-reversed coarse' if self.bit_reversed else ''})")


def _check_bias(name) -> None:
    if name is not None and name not in BIAS_NAMES:
        raise unknown_name("bias", str(name), BIAS_NAMES)


def _check_codes(c: np.ndarray, f: np.ndarray, bias) -> None:
    names = [bias] if bias is None or isinstance(bias, str) else list(bias)
    for n in names:
        _check_bias(n)
    for label, arr, top in (("coarse", c, N_COARSE - 1), ("fine", f, N_FINE - 1)):
        if arr.size and (not np.issubdtype(arr.dtype, np.integer)):
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise ParameterError(f"{label} codes must be integers 0..{top}; got {arr.ravel()[:3].tolist()}.")
        bad = (arr < 0) | (arr > top)
        if np.any(bad):
            where = np.argwhere(bad)[0]
            name = names[int(where[-1])] if len(names) > 1 and arr.ndim else names[0]
            raise ParameterError(f"{label} code {int(arr[tuple(where)])} of {name or 'a bias'} is out of range "
                                 f"0..{top} (a Dynap-SE1 bias has coarse 0..7 and fine 0..255).")
