"""Shared by the protocol tests: a few neurons with a known per-neuron mismatch."""

from __future__ import annotations

import numpy as np
import torch

from dynacal import Params
from dynacal.params import PARAMETERS, kappa

MISMATCHED = ("Isoma_dpi_tau", "alpha_soma", "Inmda_w0", "Iampa_w0", "Igaba_a_w0", "Igaba_b_w0",
              "Inmda_tau", "Iampa_tau", "Igaba_a_tau", "Igaba_b_tau")


def mismatch(n: int, sigma: float = 0.15, seed: int = 1, names=MISMATCHED) -> Params:
    """Log-normal per-neuron values around the defaults (as the shipped recordings)."""
    rng = np.random.default_rng(seed)
    return Params.from_values({name: torch.as_tensor(PARAMETERS[name].default * np.exp(sigma * rng.standard_normal(n)))
                               for name in names})


def model_tau(p: Params, leak: str, cap: str) -> np.ndarray:
    """C * Ut / (kappa * I_tau), s, (1, N): the DPI time constant of dpi-model.md."""
    return (getattr(p, cap) * p.Ut / (kappa(p) * getattr(p, leak))).numpy()
