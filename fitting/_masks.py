"""Target neurons that cannot inform a protocol (``objective`` module docstring): found once, masked in every term."""

from __future__ import annotations

import numpy as np
import torch

from dynacal.losses import PerNeuron
from dynacal.recording import Recording

_FLAT = 0.05  # a rate within 5 % of the neuron's top rate over every firing condition: saturated


def target_masks(name: str, rec: Recording, L: int) -> dict[str, np.ndarray]:
    """reason -> target neurons that cannot inform this protocol (module docstring)."""
    counts = np.asarray(rec.spike_counts(), dtype=np.float64).reshape(L, -1)  # (L, N)
    out = {}
    silent = np.flatnonzero(counts.sum(0) == 0)
    if silent.size:
        out["target silent in every condition"] = silent
    if L >= 3:
        firing = counts > 0
        top = counts.max(0)
        flat = np.all(~firing | (counts >= (1 - _FLAT) * top), axis=0) & (firing.sum(0) >= 3)
        if flat.any():
            out["target saturated (flat rate at its refractory limit)"] = np.flatnonzero(flat)
    if rec.unstable is not None:
        bad = np.flatnonzero(np.asarray(rec.unstable, bool).reshape(L, -1).any(0))
        if bad.size:
            out["target Euler-unstable"] = bad
    return out


def apply_masks(term: PerNeuron, masked: dict[str, np.ndarray]) -> PerNeuron:
    if not masked:
        return term
    mask = term.mask.copy()
    for idx in masked.values():
        mask[idx] = False
    keep = torch.as_tensor(mask, device=term.values.device)
    values = torch.where(keep[None], term.values, torch.zeros_like(term.values))
    return term._replace(values=values, mask=mask, reasons={**term.reasons, **masked})
