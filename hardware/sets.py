"""Parameter sets -> bias codes per core, for the board (one value per core and bias).

A :class:`~dynacal.params.Params` holds values per neuron, shape (B, N). On the chip the
bias-set parameters (``biasmap.MODEL_PARAMETERS``) are shared by the 256 neurons of a core;
per-neuron differences are device mismatch and cannot be set. :func:`set_codes` takes one
parameter set, checks that every bias-set parameter is equal within each core the network
uses, and codes the per-core values. :func:`ignored_parameters` lists the parameters that no
bias sets (capacitances, threshold, ...) where they differ from their default: the silicon
fixes those, so the board ignores them.
"""

from __future__ import annotations

import numpy as np

from dynacal.params import PARAMETERS, Params

from .biasgen import BiasDAC
from .biasmap import MODEL_PARAMETERS, BiasConstants, BiasSetting, params_to_codes
from .codemap import params_to_core_values
from .config import BoardPlan

__all__ = ["set_codes", "ignored_parameters"]


def set_codes(p: Params, i: int, plan: BoardPlan, dac: BiasDAC, constants: BiasConstants, *,
              dc: bool = False) -> BiasSetting:
    """Bias codes of parameter set ``i`` for the cores of ``plan``.

    Args:
        p: parameters of shape (B|1, N|1).
        i: the parameter set (row of the batch).
        plan: where the network sits (which neurons share a core).
        dac, constants: the DAC model and chip constants used to code the currents.
        dc: the stimulus carries a DC (it sets ``Isoma_const``), for the error message.

    Raises:
        ParameterError: a bias-set parameter differs within a core (names the parameter,
            the core, the values and why), or a value the DAC cannot reach.
    """
    cores = plan.chip * 4 + plan.core  # global cores: the one check of codemap.params_to_core_values
    return params_to_codes(params_to_core_values(p, cores, i, dc=dc), dac, constants)


def ignored_parameters(p: Params) -> list[str]:
    """Parameters away from their default that no bias sets, as ``"name = value unit"``."""
    out = []
    for name, spec in PARAMETERS.items():
        if name in MODEL_PARAMETERS:
            continue
        v = getattr(p, name).detach().cpu().numpy()
        if not np.allclose(v, spec.default, rtol=1e-9, atol=0):
            out.append(f"{name} = {float(v.reshape(-1)[0]):g} {spec.unit}".strip())
    return out
