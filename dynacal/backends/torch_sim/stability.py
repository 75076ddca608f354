"""Numerical safety of forward Euler: detect unstable settings and say what is safe.

Forward Euler on ``dI/dt = -I / tau`` overshoots below zero when the step is longer than
``tau``. Every DPI leak has ``tau = C * Ut / (kappa * I_tau)`` (2 pF and 1 nA give 71 us),
and the soma's effective time constant shrinks further with the shunting currents
(``Igaba_a`` and ``Isoma_ahp`` add to its leak). The static check looks at the leak
parameters before a run; the dynamic check looks at what a run produced.

The per-(set, neuron) mask of unstable runs travels with the data (``Recording.unstable``),
so a fitter can drop or penalise those sets; the warnings are logged once per network and
kind (:func:`warn_once`), not at every call of a loop that runs it thousands of times.
"""

from __future__ import annotations

import logging
import math
import weakref

import numpy as np
import torch

from ...params import Params, kappa
from ...units import format_quantity

__all__ = ["leak_time_constants", "check_static", "static_messages", "report_dynamic", "dynamic_message",
           "warn_once"]

log = logging.getLogger(__name__)
_warned: "weakref.WeakKeyDictionary[object, set]" = weakref.WeakKeyDictionary()


def warn_once(owner, key, message: str) -> bool:
    """Log ``message`` as a warning the first time ``key`` is seen for ``owner`` (the
    experiment's Network: condition runs and repeated calls share it), at DEBUG after.

    Returns:
        Whether it was logged as a warning.
    """
    seen = _warned.setdefault(owner, set())
    if key in seen:
        log.debug(message)
        return False
    seen.add(key)
    log.warning("%s (Logged once per network; Recording.unstable holds the mask of every run.)", message)
    return True

_LEAKS = (("Isoma_dpi_tau", "Csoma_mem"), ("Isoma_ahp_tau", "Csoma_ahp"), ("Inmda_tau", "Cnmda"),
          ("Iampa_tau", "Campa"), ("Igaba_a_tau", "Cgaba_a"), ("Igaba_b_tau", "Cgaba_b"))


def leak_time_constants(p: Params) -> dict[str, float]:
    """Smallest ``C * Ut / (kappa * I_tau)`` (s) over neurons and sets, per leak parameter."""
    k = kappa(p).detach()
    return {name: float((getattr(p, cap).detach() * p.Ut.detach() / (k * getattr(p, name).detach())).min())
            for name, cap in _LEAKS}


def check_static(p: Params, dt: float, substeps: int = 1) -> list[str]:
    """Warn for every leak whose time constant is shorter than the Euler step."""
    messages = static_messages(p, dt, substeps)
    for m in messages:
        log.warning(m)
    return messages


def static_messages(p: Params, dt: float, substeps: int = 1) -> list[str]:
    """What :func:`check_static` warns, without logging it."""
    h = dt / substeps
    messages = []
    for name, tau in leak_time_constants(p).items():
        if h > tau:
            need = math.ceil(h / tau)
            messages.append(
                f"forward Euler is unstable: {name} gives a time constant of {format_quantity(tau, 's')}, "
                f"shorter than the step {format_quantity(h, 's')}; use dt <= {format_quantity(tau, 's')} "
                f"(substeps={need * substeps}) or lower {name}.")
    return messages


def report_dynamic(p: Params, dt: float, substeps: int, unstable: torch.Tensor | np.ndarray,
                   peak_shunt: torch.Tensor | np.ndarray) -> str | None:
    """Warn when a run drove a current negative or non-finite (see :func:`dynamic_message`)."""
    msg = dynamic_message(p, dt, substeps, unstable, peak_shunt)
    if msg is not None:
        log.warning(msg)
    return msg


def dynamic_message(p: Params, dt: float, substeps: int, unstable: torch.Tensor | np.ndarray,
                    peak_shunt: torch.Tensor | np.ndarray) -> str | None:
    """What to say when a run drove a current negative or non-finite; None when it did not.

    Args:
        unstable: bool (B, N), a state went negative or non-finite during the run.
        peak_shunt: (B, N) the largest ``Igaba_a + Isoma_ahp`` seen (A), which sets the
            soma's shortest time constant ``Csoma_mem * Ut / (kappa * peak)``.
    """
    bad = torch.as_tensor(np.asarray(unstable) if not isinstance(unstable, torch.Tensor) else unstable)
    if not bool(bad.any()):
        return None
    peak = torch.as_tensor(np.asarray(peak_shunt) if not isinstance(peak_shunt, torch.Tensor) else peak_shunt,
                           dtype=torch.float64)
    k = kappa(p).detach().double().cpu()
    tau = (p.Csoma_mem.detach().double().cpu() * p.Ut.detach().double().cpu() / (k * peak.clamp(min=1e-30)))
    tau_min = float(tau.expand_as(peak)[bad].min())
    h = dt / substeps
    need = max(2, math.ceil(h / tau_min)) * substeps
    msg = (f"forward Euler was unstable in {int(bad.sum())} of {bad.numel()} neurons: a current went "
           f"negative or non-finite. The shunting current Igaba_a + Isoma_ahp reached "
           f"{format_quantity(float(peak[bad].max()), 'A')}, a soma time constant of "
           f"{format_quantity(tau_min, 's')} against a step of {format_quantity(h, 's')}. Use "
           f"substeps={need} (dt = {format_quantity(dt / need, 's')}) or lower Igaba_a_w0 / the GABA_A weights.")
    return msg
