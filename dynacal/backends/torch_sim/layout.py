"""The engines' parameter layout, generated from the table: the terms every engine reads.

The DPI step reads, per neuron, a few parameters as they are and a few parameter-only
combinations of them (``tau = C * Ut / (kappa * I_tau)``, ``alpha * I_tau``, ...). They are
computed here, once per run, in torch (:func:`derive`), and handed to every engine: the
eager step (:mod:`.dpi`), the fused CPU kernels (a row per term in their workspace) and
the fused CUDA kernel (a row per term of its parameter tensor). The order of the terms is
:data:`TERMS`; every engine addresses a term by its name through :func:`index`, so no
engine holds a literal index or an order of its own.

Names: a term that is a parameter keeps its name in ``dynacal.params.PARAMETERS``
(``Isoma_th``); a derived term is named after what it is in ``dpi-model.md``
(``tau_soma``: the soma time constant above the floor, ``tau_soma_I0``: at the floor, where
``Itau_s = I0``). Per synapse type the terms follow ``SYNAPSE_TYPES``, so a kernel reaches
type ``k`` as ``index("Ig_nmda") + k``.

Bit-identity: each term is the reference's expression in the reference's order of
operations (``C * Ut / (kappa * I)``), and torch's elementwise float arithmetic is IEEE,
so the engines see the values the reference computes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

from ...params import PARAMETERS, SYNAPSE_TYPES, Params, kappa

__all__ = ["TERMS", "FLOAT_TERMS", "index", "derive", "source_sha256"]

#: The per-synapse-type terms: kind -> the expression's name per type (``SYNAPSE_TYPES`` order).
_SYN_TERMS = ("Ig_{x}", "tau_{x}", "tau_{x}_I0", "I{x}_w0", "alpha_{x}")
_SOMA = ("I0", "Inmda_thr", "Isoma_const", "Isoma_dpi_tau", "Ig_soma", "alpha_soma", "Isoma_pfb_gain",
         "Isoma_pfb_th", "Isoma_pfb_norm", "tau_soma", "tau_soma_I0", "Ig_ahp", "tau_ahp", "tau_ahp_I0", "two_I0")
_RESET = ("Isoma_th", "Isoma_reset", "ahp_jump")
#: Every term, in the engines' order; the last, ``refractory_steps``, is a whole number of steps.
TERMS: tuple[str, ...] = (_SOMA + tuple(t.format(x=x) for t in _SYN_TERMS for x in SYNAPSE_TYPES)
                          + _RESET + ("refractory_steps",))
#: The terms that are currents, capacitances, times or gains (all but ``refractory_steps``).
FLOAT_TERMS = TERMS[:-1]
_INDEX = {name: i for i, name in enumerate(TERMS)}


def index(name: str) -> int:
    """Position of term ``name`` in :data:`TERMS` (a KeyError names a term that is not there)."""
    return _INDEX[name]


def _syn(p: Params, x: str, k: torch.Tensor) -> dict[str, torch.Tensor]:
    """The terms of synapse type ``x``: ``alpha_X * I_X_tau``, ``C_X Ut / (kappa I_X_tau)``, ..."""
    tau, alpha, w0 = getattr(p, f"I{x}_tau"), getattr(p, f"alpha_{x}"), getattr(p, f"I{x}_w0")
    cap = getattr(p, "C" + x)
    return {f"Ig_{x}": alpha * tau, f"tau_{x}": cap * p.Ut / (k * tau), f"tau_{x}_I0": cap * p.Ut / (k * p.I0),
            f"I{x}_w0": w0, f"alpha_{x}": alpha}


def derive(p: Params, dt: float | None = None) -> dict[str, torch.Tensor]:
    """Every term of :data:`TERMS` (``refractory_steps`` only when ``dt`` is given), in order.

    Args:
        p: parameters, each (B|1, N|1); tensors that require grad keep their graph.
        dt: time step (s), for ``refractory_steps`` (int64, Brian2's rounding, no gradient).

    Returns:
        name -> tensor broadcastable to (B, N), in SI units, ordered as :data:`TERMS`.
    """
    k, i0 = kappa(p), p.I0
    terms = {"I0": i0, "Inmda_thr": p.Inmda_thr, "Isoma_const": p.Isoma_const, "Isoma_dpi_tau": p.Isoma_dpi_tau,
             "Ig_soma": p.alpha_soma * p.Isoma_dpi_tau, "alpha_soma": p.alpha_soma,
             "Isoma_pfb_gain": p.Isoma_pfb_gain, "Isoma_pfb_th": p.Isoma_pfb_th, "Isoma_pfb_norm": p.Isoma_pfb_norm,
             "tau_soma": p.Csoma_mem * p.Ut / (k * p.Isoma_dpi_tau), "tau_soma_I0": p.Csoma_mem * p.Ut / (k * i0),
             "Ig_ahp": p.alpha_ahp * p.Isoma_ahp_tau, "tau_ahp": p.Csoma_ahp * p.Ut / (k * p.Isoma_ahp_tau),
             "tau_ahp_I0": p.Csoma_ahp * p.Ut / (k * i0), "two_I0": 2 * i0,
             "Isoma_th": p.Isoma_th, "Isoma_reset": p.Isoma_reset, "ahp_jump": p.Isoma_ahp_w * p.alpha_ahp}
    for x in SYNAPSE_TYPES:
        terms.update(_syn(p, x, k))
    if dt is not None:
        terms["refractory_steps"] = refractory_steps(p.soma_refP, dt)
    return {name: terms[name] for name in TERMS if name in terms}


def refractory_steps(soma_refP: torch.Tensor, dt: float) -> torch.Tensor:
    """Whole steps of refractoriness, rounded as Brian2's ``timestep(refP, dt)`` does (int64)."""
    return torch.floor((soma_refP.detach().double() + 1e-3 * dt) / dt).to(torch.int64)


def source_sha256() -> str:
    """SHA-256 of this file: the numba kernels that compile in :func:`index` pin it (their disk
    cache notices changes of their own file only)."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()

