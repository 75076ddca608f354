r"""Synaptic kernels: isolated input spikes -> amplitude and decay of each synapse current.

One input source per synapse type reaches every neuron; each source spikes ``repeats``
times, the types taking turns, ``isolation`` s apart. Above the dark current a DPI
synapse decays as ``dI/dt = -I / tau`` exactly (``dpi-model.md``: the gain terms cancel),
with ``tau = C * Ut / (kappa * I_tau)``, so the logarithm of the current falls on a line:

- ``tau_<syn>`` (B, N), s: ``-1 / slope`` of a least-squares line through ``ln I`` over the
  samples after each input spike (up to ``fit_span`` s, while the current is above
  ``fit_min``), averaged over repeats. From forward-Euler data at step dt the per-step
  ratio is ``1 - dt / tau``, so this continuous-time estimate is below the model's tau by
  about ``dt / (2 tau)`` (1.4 % for AMPA at the defaults): ``dt / (1 - exp(-dt / tau_fit))``
  gives the model's value exactly.
- ``amplitude_<syn>`` (B, N), A: the jump, ``I`` just after the spike minus ``I`` just before
  decayed by the fitted ratio (``I_w0 * weight * alpha`` in the model).

These need the traces (simulators). Where only spikes exist (the board), the soma's
response tells the kernel, with a baseline DC (``dc``) so that inhibition shows too:

- ``latency_<syn>`` (B, N), s: mean time from an input spike to the next output spike
  within ``window`` s (NaN if none);
- ``evoked_<syn>`` (B, N): output spikes in the ``window`` after the input minus those in
  the ``window`` before it, averaged over repeats (> 0 excitation, < 0 inhibition).

Input spikes fall in steps ``k * trace_every - 1``, so the first sample after each is the
state just after its jump.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

import numpy as np

from ..errors import ParameterError
from ..experiment import Experiment
from ..params import SYNAPSE_TYPES
from ..recording import Recording
from ..stimulus import Stimulus
from ._common import (Protocol, SpikeIndex, all_to_all, build_network, split_conditions,
                      synapse_types_and_weights)

__all__ = ["SynapticKernels", "TRACE_OF"]

#: Synapse type -> its state trace.
TRACE_OF = {"nmda": "Inmda", "ampa": "Iampa", "gaba_a": "Igaba_a", "gaba_b": "Igaba_b"}


@dataclasses.dataclass(frozen=True)
class SynapticKernels(Protocol):
    """Amplitude and time constant of every synapse type of every neuron, in one run.

    Requires: nothing for the trace features (a synapse current does not depend on the
    soma). For the spike features, the soma calibrated first (f-I curve, refractory), since
    the baseline rate under ``dc`` sets how a synaptic current shows in the spikes.

    Attributes:
        synapses: synapse types measured, e.g. ``("nmda", "ampa", "gaba_a", "gaba_b")``.
        weights: integer weight of each type's input (CAM entries).
        isolation: s between consecutive input spikes (of any type).
        repeats: input spikes per type.
        lead: s before the first input spike.
        window: s after (and before) an input in which output spikes are counted.
        dc: baseline DC in A (a condition), or None to keep the network's ``Isoma_const``.
        every: trace sampling in steps.
        fit_min: A, the smallest current used in the decay fit (above the dark current).
        fit_span: s after the input spike used in the decay fit.
        dt: time step in s.
    """

    name: ClassVar[str] = "kernels"
    sensitive_to: ClassVar[tuple[str, ...]] = (
        "Inmda_tau", "Iampa_tau", "Igaba_a_tau", "Igaba_b_tau", "Cnmda", "Campa", "Cgaba_a", "Cgaba_b",
        "Inmda_w0", "Iampa_w0", "Igaba_a_w0", "Igaba_b_w0",
        "alpha_nmda", "alpha_ampa", "alpha_gaba_a", "alpha_gaba_b")
    record: ClassVar[tuple[str, ...]] = ("Inmda", "Iampa", "Igaba_a", "Igaba_b")
    synapses: tuple[str, ...] = SYNAPSE_TYPES
    weights: tuple[int, ...] = (2, 8, 1, 2)
    isolation: float = 0.1
    repeats: int = 2
    lead: float = 0.05
    window: float = 0.02
    dc: float | None = 1e-9
    every: int = 50
    fit_min: float = 2e-12
    fit_span: float = 0.05

    def __post_init__(self):
        syn = synapse_types_and_weights(self.synapses, self.weights)
        object.__setattr__(self, "synapses", syn)
        if self.fit_span + self.dt >= self.isolation * len(syn) or self.window >= self.isolation:
            raise ParameterError(f"isolation = {self.isolation} s is too short: the fit ({self.fit_span} s) "
                                 f"and the window ({self.window} s) must end before the next input spike.")
        if self.repeats < 1 or self.every < 1:
            raise ParameterError(f"repeats = {self.repeats} and every = {self.every} must be >= 1.")

    def conditions(self) -> dict[str, tuple[float, ...]]:
        return {} if self.dc is None else {"Isoma_const": (float(self.dc),)}

    def trace_every(self) -> int:
        return self.every

    def event_steps(self) -> np.ndarray:
        """Input spike steps, int (repeats, len(synapses)): on the sampling grid minus one."""
        iso = int(round(self.isolation / self.dt / self.every)) * self.every
        first = int(np.ceil(self.lead / self.dt / self.every)) * self.every
        k = np.arange(self.repeats * len(self.synapses)).reshape(self.repeats, len(self.synapses))
        return first + k * iso - 1

    def experiment(self, neurons: Any = "core0") -> Experiment:
        """One source per synapse type, to every neuron; see the module docstring."""
        types = [SYNAPSE_TYPES.index(s) for s in self.synapses]
        layout = build_network(neurons, 0)
        n, k = layout.n_neurons, len(types)
        net = build_network(neurons, k, all_to_all(n, range(k), types, [int(w) for w in self.weights]))
        events = self.event_steps()
        stim = Stimulus(k, events.ravel(), np.tile(np.arange(k), self.repeats))
        n_steps = int(events.max()) + 1 + int(round(self.isolation / self.dt))
        return Experiment(net, stim, self.dt, n_steps, name="kernels")

    def features(self, rec: Recording) -> dict[str, np.ndarray]:
        """Spike features always; trace features when the recording has the traces."""
        self.check(rec)
        events = self.event_steps()
        win = int(round(self.window / rec.dt))
        index = SpikeIndex(rec)
        out = {}
        for k, syn in enumerate(self.synapses):
            e = events[:, k] + 1  # the input acts from the next step on
            after = index.counts(e, e + win)
            before = index.counts(e - win, e)
            latency = index.first_after(e, e + win) * rec.dt
            out[f"latency_{syn}"] = _nanmean(latency)
            out[f"evoked_{syn}"] = (after - before).mean(-1)
            if TRACE_OF[syn] in rec.traces:
                out[f"amplitude_{syn}"], out[f"tau_{syn}"] = self._fit(rec, TRACE_OF[syn], e)
        n_cond = self.n_conditions
        return {key: split_conditions(v, n_cond)[..., 0] for key, v in out.items()}

    def _fit(self, rec: Recording, trace: str, starts: np.ndarray):
        """Amplitude (A) and time constant (s), (B, N): NaN for neurons not traced."""
        every = rec.trace_every
        x = rec.traces[trace].detach().cpu().numpy().astype(np.float64)  # (T_rec, B, R)
        n_fit = max(2, int(self.fit_span / (every * rec.dt)) + 1)
        taus, amps = [], []
        for s in starts:
            if s % every:
                raise ParameterError(f"traces sampled every {every} steps miss the input at step {s - 1}; "
                                     f"record with record_every dividing {self.every}.")
            i0 = s // every
            seg = x[i0:i0 + n_fit]
            keep = np.cumprod(seg > self.fit_min, axis=0).astype(bool)
            t = (np.arange(seg.shape[0]) * every * rec.dt)[:, None, None]
            y = np.log(np.where(keep, seg, 1.0))
            m = keep.sum(0)
            with np.errstate(divide="ignore", invalid="ignore"):
                mt, my = (t * keep).sum(0) / m, (y * keep).sum(0) / m
                slope = ((t - mt) * (y - my) * keep).sum(0) / (((t - mt) ** 2) * keep).sum(0)
                tau = np.where(m >= 2, -1.0 / slope, np.nan)
                ratio = np.exp(slope * every * rec.dt)
            amps.append(x[i0] - x[i0 - 1] * np.where(np.isfinite(ratio), ratio, 1.0))
            taus.append(tau)
        full = lambda v: _scatter(np.mean(v, axis=0), rec)  # noqa: E731
        return full(amps), full(taus)


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN where all are NaN (without a warning)."""
    n = (~np.isnan(x)).sum(-1)
    return np.where(n > 0, np.nansum(x, -1) / np.maximum(n, 1), np.nan)


def _scatter(values: np.ndarray, rec: Recording) -> np.ndarray:
    """(B, R) values of the traced neurons -> (B, N) with NaN elsewhere."""
    out = np.full((rec.batch, rec.n_neurons), np.nan)
    out[:, rec.trace_neurons] = values
    return out
