r"""The physics: one Euler step of the Dynap-SE1 AdExp soma and its four DPI synapses.

This is the only place the model's equations are written (``shared/docs/dpi-model.md`` is
the contract). Every other engine (the fused CPU and GPU kernels) is tested against
:func:`dpi_step` on the same input: same spike steps, traces within rounding.

All currents are in A, times in s. State and parameter tensors have shape ``(B, N)``
(B candidate parameter sets, N neurons; size 1 broadcasts).

Soma (``m = [Isoma_mem > I0]``, ``f = 1 - m``)::

    Imem_c = clip(Isoma_mem, I0, 1 A);  Iin_c = clip(Inmda_dp + Iampa - Igaba_b + Isoma_const, I0, 1 A)
    Itau_s = m Isoma_dpi_tau + f I0;    Ig_s = m alpha_soma Itau_s + f I0
    Iahp_s = m Isoma_ahp + f I0;        Iga_s = m Igaba_a + f I0
    Ipfb   = Isoma_pfb_gain / (1 + exp(-(Isoma_mem - Isoma_pfb_th) / Isoma_pfb_norm));  Ipfb_s = m Ipfb + f I0
    Isum   = Itau_s + Iahp_s + Iga_s - Ipfb_s - f I0;   tau_soma = Csoma_mem Ut / (kappa Itau_s)
    dIsoma_mem/dt = (alpha_soma (Iin_c - Isum) - (Isum - f I0) Imem_c / Itau_s)
                    / (tau_soma (1 + Ig_s / Imem_c))                     (0 while refractory)
    Inmda_dp = Inmda / (1 + Inmda_thr / Imem_c)

Adaptation (``a = [Isoma_ahp > I0]``, ``g = 1 - a``)::

    Iahp_tau_s = a Isoma_ahp_tau + g I0;  Iahp_g_s = a alpha_ahp Iahp_tau_s + g I0
    dIsoma_ahp/dt = (-Iahp_g_s - Isoma_ahp + 2 g I0) / (tau_ahp (1 + Iahp_g_s / Iahp_s)),
    tau_ahp = Csoma_ahp Ut / (kappa Iahp_tau_s)

Synapse X in nmda, ampa, gaba_a, gaba_b (``s = [I_X > I0]``, ``u = 1 - s``)::

    Itau_X_s = s I_X_tau + u I0;  Ig_X_s = s alpha_X I_X_tau + u I0;  tau_X = C_X Ut / (kappa Itau_X_s)
    dI_X/dt = (-I_X - Ig_X_s + 2 u I0) / (tau_X (Ig_X_s / I_X + 1));   on a spike: I_X += I_X_w0 w alpha_X

Step order (Brian2's schedule, the contract for agreement): the caller records the state
*before* the step; then forward Euler from the old state; threshold (``Isoma_mem >
Isoma_th``, non-refractory neurons only); synaptic jumps of this step's input and
recurrent spikes; reset (``Isoma_ahp += Isoma_ahp_w alpha_ahp``, ``Isoma_mem =
Isoma_reset``).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import Tensor

from ...params import SYNAPSE_TYPES, Params
from .layout import derive, refractory_steps

__all__ = ["State", "Recurrent", "dpi_step", "derivatives", "initial_state",
           "refractory_steps", "SURROGATES", "get_surrogate"]


class State(NamedTuple):
    """Dynamic state of every neuron; currents in A, each of shape (B, N)."""

    Isoma_mem: Tensor
    Isoma_ahp: Tensor
    Inmda: Tensor
    Iampa: Tensor
    Igaba_a: Tensor
    Igaba_b: Tensor
    refractory: Tensor  # int64: steps of refractoriness left, counted down at each step


class Recurrent(NamedTuple):
    """Connections between simulated neurons, one entry per (pre, post, type).

    ``pre``, ``post``: int64 (E,) neuron indices; ``target``: int64 (E,) flat index
    ``type * N + post`` into the (4, N) jump counts; ``weight``: float (E,) or (B, E).
    """

    pre: Tensor
    target: Tensor
    weight: Tensor


def initial_state(batch: int, n_neurons: int, *, dtype=torch.float64, device="cpu",
                  values: dict[str, float] | None = None) -> State:
    """The state at t = 0 (``params.INITIAL_STATE``), shape (batch, n_neurons) each."""
    from ...params import INITIAL_STATE
    values = dict(INITIAL_STATE, **(values or {}))
    full = lambda v: torch.full((batch, n_neurons), float(v), dtype=dtype, device=device)  # noqa: E731
    return State(*(full(values[k]) for k in INITIAL_STATE),
                 refractory=torch.zeros((batch, n_neurons), dtype=torch.int64, device=device))


def derivatives(state: State, p: Params, terms: dict[str, Tensor] | None = None) -> tuple[Tensor, ...]:
    """Time derivatives (A/s) of the six currents, from the equations above.

    Args:
        state: the currents, each (B, N).
        p: parameters, broadcastable to (B, N).
        terms: ``layout.derive(p)``, the parameter-only terms (computed here when None):
            ``tau_soma`` is ``Csoma_mem Ut / (kappa Isoma_dpi_tau)``, ``tau_soma_I0`` the same
            at the floor (``Itau_s = I0``), ``Ig_soma`` = ``alpha_soma Isoma_dpi_tau``, and so
            on for the AHP and each synapse type.

    Returns ``(dIsoma_mem, dIsoma_ahp, dInmda, dIampa, dIgaba_a, dIgaba_b)``; the
    refractory freeze is applied by the caller.
    """
    # The masks of the model (m * X + f * I0) are written as selects: the same values
    # bit for bit (X * 1 + 0 * I0 == X), a third of the tensor operations, and no NaN
    # gradient from 0 * inf on the unselected side. A masked parameter-only expression
    # (tau_soma with Itau_s = m Isoma_dpi_tau + f I0) takes one of two terms, selected.
    q = derive(p) if terms is None else terms
    I0 = q["I0"]
    zero = torch.zeros((), dtype=I0.dtype, device=I0.device)
    Imem, Iahp = state.Isoma_mem, state.Isoma_ahp
    m = Imem > I0
    f_I0 = torch.where(m, zero, I0)                     # f * I0
    Imem_c = torch.clamp(Imem, min=I0, max=torch.ones_like(I0))
    Inmda_dp = state.Inmda / (1 + q["Inmda_thr"] / Imem_c)
    Iin_c = torch.clamp(Inmda_dp + state.Iampa - state.Igaba_b + q["Isoma_const"], min=I0,
                        max=torch.ones_like(I0))
    Itau_s = torch.where(m, q["Isoma_dpi_tau"], I0)
    Ig_s = torch.where(m, q["Ig_soma"], I0)
    Iahp_s = torch.where(m, Iahp, I0)
    Iga_s = torch.where(m, state.Igaba_a, I0)
    Ipfb = q["Isoma_pfb_gain"] / (1 + torch.exp(-(Imem - q["Isoma_pfb_th"]) / q["Isoma_pfb_norm"]))
    Ipfb_s = torch.where(m, Ipfb, I0)
    Isum = Itau_s + Iahp_s + Iga_s - Ipfb_s - f_I0
    tau_soma = torch.where(m, q["tau_soma"], q["tau_soma_I0"])
    d_mem = ((q["alpha_soma"] * (Iin_c - Isum) - (Isum - f_I0) * Imem_c / Itau_s)
             / (tau_soma * (1 + Ig_s / Imem_c)))

    a = Iahp > I0
    Iahp_g_s = torch.where(a, q["Ig_ahp"], I0)
    tau_ahp = torch.where(a, q["tau_ahp"], q["tau_ahp_I0"])
    # Quirk of the reference: Isoma_ahp starts at 0, so Iahp_s is 0 while the membrane is
    # above I0 and the denominator is infinite: the derivative is exactly 0 in IEEE
    # arithmetic. Select instead of dividing by 0 so that autograd sees no inf or NaN.
    live = Iahp_s > 0
    safe_Iahp_s = torch.where(live, Iahp_s, torch.ones_like(Iahp_s))
    two_g_I0 = torch.where(a, zero, q["two_I0"])        # 2 * g * I0
    d_ahp = torch.where(live, (-Iahp_g_s - Iahp + two_g_I0) / (tau_ahp * (1 + Iahp_g_s / safe_Iahp_s)), zero)

    d_syn = []
    for I_X, x in zip(state[2:6], SYNAPSE_TYPES):
        s = I_X > I0
        Ig_X_s = torch.where(s, q[f"Ig_{x}"], I0)
        tau_X = torch.where(s, q[f"tau_{x}"], q[f"tau_{x}_I0"])
        two_u_I0 = torch.where(s, zero, q["two_I0"])    # 2 * u * I0
        d_syn.append((-I_X - Ig_X_s + two_u_I0) / (tau_X * (Ig_X_s / I_X + 1)))
    return (d_mem, d_ahp, *d_syn)


def dpi_step(state: State, p: Params, dt: float, counts: Tensor | None = None, *,
             recurrent: Recurrent | None = None, spike_fn: Callable[[Tensor], Tensor] | None = None,
             refr_steps: Tensor | None = None, substeps: int = 1,
             terms: dict[str, Tensor] | None = None) -> tuple[Tensor, State]:
    """Advance every neuron by one time step ``dt`` (s), in the Brian2 order.

    Args:
        state: the state at the start of the step, each tensor (B, N).
        p: parameters, broadcastable to (B, N).
        dt: time step in s.
        counts: (4, N) or (B, 4, N) weighted input spike counts of this step per synapse
            type (order ``SYNAPSE_TYPES``): a jump of ``I_X_w0 * count * alpha_X``.
        recurrent: connections from simulated neurons; their spikes of this step add jumps.
        spike_fn: maps the relative threshold distance ``(Isoma_mem - Isoma_th) /
            Isoma_th`` to spikes (Heaviside forward); a surrogate-gradient function from
            ``SURROGATES`` makes the step differentiable. Default: plain Heaviside.
        refr_steps: (B|1, N|1) int refractory length in steps; default from ``p.soma_refP``.
        substeps: Euler sub-steps of ``dt / substeps`` each (1 is Brian2-exact). Threshold,
            jumps and reset still happen once per step.
        terms: ``layout.derive(p)`` (computed here when None; a time loop computes it once).

    Returns:
        ``(spikes, new_state)``: spikes (B, N) of this step as 0./1. floats.
    """
    q = derive(p) if terms is None else terms
    if refr_steps is None:
        refr_steps = refractory_steps(p.soma_refP, dt)
    refractory = torch.clamp(state.refractory - 1, min=0)
    frozen = refractory > 0
    h = dt / substeps
    currents = list(state[:6])
    for _ in range(substeps):
        derivs = derivatives(State(*currents, refractory), p, q)
        new = [x + h * d for x, d in zip(currents, derivs)]
        new[0] = torch.where(frozen, currents[0], new[0])
        currents = new
    Imem = currents[0]

    rel = (Imem - q["Isoma_th"]) / q["Isoma_th"]
    spikes = (spike_fn(rel) if spike_fn is not None else (rel > 0).to(Imem.dtype))
    spikes = spikes * (~frozen).to(Imem.dtype)

    B, N = spikes.shape
    total = counts
    if recurrent is not None and recurrent.pre.numel():
        flow = spikes[:, recurrent.pre] * recurrent.weight
        rec = torch.zeros((B, 4 * N), dtype=Imem.dtype, device=Imem.device)
        rec = rec.index_add(1, recurrent.target, flow).view(B, 4, N)
        total = rec if total is None else total + rec
    if total is not None:
        for i, x in enumerate(SYNAPSE_TYPES):
            currents[2 + i] = currents[2 + i] + q[f"I{x}_w0"] * total[..., i, :] * q[f"alpha_{x}"]

    Iahp = currents[1] + spikes * q["ahp_jump"]
    Imem = Imem * (1 - spikes) + q["Isoma_reset"] * spikes
    spiked = spikes.detach() > 0
    refractory = torch.where(spiked, refr_steps.expand_as(refractory), refractory)
    return spikes, State(Imem, Iahp, *currents[2:], refractory)


# --- surrogate gradients for the spike -------------------------------------------------

class _Spike(torch.autograd.Function):
    """Heaviside forward; the backward is ``grad(x)`` of the chosen surrogate."""

    @staticmethod
    def forward(ctx, x, grad_fn):
        ctx.save_for_backward(x)
        ctx.grad_fn = grad_fn
        return (x > 0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.grad_fn(x), None


def _fast_sigmoid(beta: float):
    return lambda x: 1.0 / (1.0 + beta * x.abs()) ** 2


def _straight_through(width: float):
    return lambda x: (x.abs() < width).to(x.dtype)


#: name -> factory(scale) of the surrogate's derivative, with its default scale. The
#: input is the relative threshold distance (Isoma_mem - Isoma_th) / Isoma_th.
SURROGATES: dict[str, tuple[Callable[[float], Callable[[Tensor], Tensor]], float]] = {
    "fast_sigmoid": (_fast_sigmoid, 10.0),     # SuperSpike (Zenke & Ganguli 2018)
    "straight_through": (_straight_through, 0.5),  # gradient 1 within +-50 % of threshold
}


def get_surrogate(name: str | None = "fast_sigmoid", scale: float | None = None) -> Callable[[Tensor], Tensor] | None:
    """A spike function: Heaviside forward, the named surrogate derivative backward.

    ``None`` or ``"none"`` returns None: spikes are then constants for autograd, and the
    gradient is the exact pathwise derivative for fixed spike steps (which is the true
    derivative of a smooth observable, since spike steps are locally constant). Surrogates
    add a biased but informative gradient through the threshold, e.g. for spike counts.
    """
    from ...errors import unknown_name
    if name is None or name == "none":
        return None
    if name not in SURROGATES:
        raise unknown_name("surrogate", name, SURROGATES)
    factory, default = SURROGATES[name]
    grad_fn = factory(default if scale is None else scale)
    return lambda x: _Spike.apply(x, grad_fn)


