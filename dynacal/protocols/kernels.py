r"""Synaptic kernels: isolated input spikes -> amplitude and decay of each synapse current.

One input source per synapse type reaches every neuron; each source spikes ``repeats``
times, the types taking turns, ``isolation`` s apart; or at the steps of the caller's
``events`` (one tuple per type) in a run of ``n_steps``. The features read the input steps
of each neuron from the recording's experiment, so any stimulus or wiring works (v1 files:
from the settings). Above the dark current a DPI
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

These need the traces (simulators); a recording that holds only some of them gives these
features for those types only. Only the traces of the measured types are recorded (plus
``Isoma_mem`` with ``record_soma=True``). Where only spikes exist (the board), the soma's
response tells the kernel, with a baseline DC (``dc``) so that inhibition shows too:

- ``latency_<syn>`` (B, N), s: mean time from an input spike to the next output spike
  within ``window`` s (NaN if none);
- ``evoked_<syn>`` (B, N): output spikes in the ``window`` after the input minus those in
  the ``window`` before it, averaged over repeats (> 0 excitation, < 0 inhibition).

Input spikes fall in steps ``k * every - 1``, so the first sample after each is the state
just after its jump (with ``every = 1`` any step will do).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from ..chip import Network
from ..errors import ParameterError, RecordingError
from ..params import SYNAPSE_TYPES
from ..recording import Recording
from ..stimulus import Stimulus
from ._common import SpikeIndex, all_to_all, build_network, input_steps, split_conditions, synapse_types_and_weights
from .base import Design, Protocol

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
        events: input spike steps, one increasing tuple per synapse type (order
            ``synapses``), in place of ``repeats`` / ``isolation`` / ``lead``; None: those.
        n_steps: length of the run in steps; None: the last input plus ``isolation``.
        record_soma: also record ``Isoma_mem`` (for plots; no feature uses it).
        dt: time step in s.
    """

    name: ClassVar[str] = "kernels"
    sensitive_to: ClassVar[tuple[str, ...]] = (
        "Inmda_tau", "Iampa_tau", "Igaba_a_tau", "Igaba_b_tau", "Cnmda", "Campa", "Cgaba_a", "Cgaba_b",
        "Inmda_w0", "Iampa_w0", "Igaba_a_w0", "Igaba_b_w0",
        "alpha_nmda", "alpha_ampa", "alpha_gaba_a", "alpha_gaba_b")
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
    events: tuple[tuple[int, ...], ...] | None = None
    n_steps: int | None = None
    record_soma: bool = False

    def __post_init__(self):
        syn = synapse_types_and_weights(self.synapses, self.weights)
        object.__setattr__(self, "synapses", syn)
        if self.repeats < 1 or self.every < 1:
            raise ParameterError(f"repeats = {self.repeats} and every = {self.every} must be >= 1.")
        if self.events is not None:
            ev = tuple(tuple(int(e) for e in np.atleast_1d(np.asarray(t, dtype=np.int64))) for t in self.events)
            if len(ev) != len(syn) or any(len(t) < 1 or list(t) != sorted(set(t)) or t[0] < 0 for t in ev):
                raise ParameterError(f"events = {self.events}: give one increasing tuple of steps >= 0 per synapse "
                                     f"type in {syn}.")
            object.__setattr__(self, "events", ev)
        if self.n_steps is not None and (int(self.n_steps) != self.n_steps or self.n_steps < 2):
            raise ParameterError(f"n_steps = {self.n_steps} must be an integer >= 2 (steps of dt = {self.dt} s).")
        self._check_events()

    def _check_events(self) -> None:
        """Inputs isolated (fit and window end before the next one), on the sampling grid, in the run."""
        events, steps = self.event_lists(), self.run_steps()
        win, fit = int(round(self.window / self.dt)), self.fit_span / self.dt + 1
        allsteps = np.sort(np.concatenate(events))
        same = min((np.diff(e).min() for e in events if e.size > 1), default=np.inf)
        if same <= fit or (allsteps.size > 1 and np.diff(allsteps).min() <= win):
            raise ParameterError(f"the inputs are not isolated (isolation = {self.isolation} s, events = "
                                 f"{self.events}): the fit ({self.fit_span} s) must end before the next input of "
                                 f"its type and the window ({self.window} s) before the next input of any type.")
        if self.every > 1 and np.any((allsteps + 1) % self.every):
            raise ParameterError(f"events must fall in steps k * every - 1 (every = {self.every}) so that a trace "
                                 f"sample follows each input; move them or pass every=1.")
        if allsteps[0] < max(win, 1) or allsteps[-1] + 1 + win > steps:
            raise ParameterError(f"events span steps {allsteps[0]}..{allsteps[-1]}; with the window of {win} steps "
                                 f"each needs room before it and n_steps = {steps} after it.")

    def conditions(self) -> dict[str, tuple[float, ...]]:
        return {} if self.dc is None else {"Isoma_const": (float(self.dc),)}

    def traces(self) -> tuple[str, ...]:
        return tuple(TRACE_OF[s] for s in self.synapses) + (("Isoma_mem",) if self.record_soma else ())

    def trace_every(self) -> int:
        return self.every

    def event_lists(self) -> list[np.ndarray]:
        """Input spike steps per synapse type (order ``synapses``), int arrays."""
        if self.events is not None:
            return [np.asarray(e, dtype=np.int64) for e in self.events]
        iso = int(round(self.isolation / self.dt / self.every)) * self.every
        first = int(np.ceil(self.lead / self.dt / self.every)) * self.every
        k = np.arange(self.repeats * len(self.synapses)).reshape(self.repeats, len(self.synapses))
        return list((first + k * iso - 1).T)

    def run_steps(self) -> int:
        """Length of the run in steps."""
        if self.n_steps is not None:
            return int(self.n_steps)
        return int(max(e.max() for e in self.event_lists())) + 1 + int(round(self.isolation / self.dt))

    def design(self, neurons: Network) -> Design:
        """One source per synapse type, to every neuron; see the module docstring."""
        types = [SYNAPSE_TYPES.index(s) for s in self.synapses]
        n, k = neurons.n_neurons, len(types)
        net = build_network(neurons, k, all_to_all(n, range(k), types, [int(w) for w in self.weights]))
        events = self.event_lists()
        stim = Stimulus(k, np.concatenate(events), np.concatenate([np.full(e.size, i) for i, e in enumerate(events)]))
        return Design(net, (stim,), self.run_steps())

    def inputs_of(self, rec: Recording) -> list[np.ndarray]:
        """Input steps per synapse type, int (N, E) padded with -1: the recording's experiment's
        (any stimulus or wiring), or (v1 files) the settings'."""
        experiment = getattr(rec, "experiment", None)
        if experiment is not None:
            return [input_steps(experiment, SYNAPSE_TYPES.index(s)) for s in self.synapses]
        return [np.broadcast_to(e, (rec.n_neurons, e.size)) for e in self.event_lists()]

    def extract(self, rec: Recording) -> dict[str, np.ndarray]:
        """Spike features always; trace features when the recording has the traces."""
        win = int(round(self.window / rec.dt))
        index = SpikeIndex(rec)
        out = {}
        for syn, steps in zip(self.synapses, self.inputs_of(rec)):
            valid = steps >= 0
            e = np.where(valid, steps + 1, 0)  # the input acts from the next step on
            after = index.counts(e, np.minimum(e + win, rec.n_steps))
            before = index.counts(np.maximum(e - win, 0), e)
            latency = index.first_after(e, np.minimum(e + win, rec.n_steps)) * rec.dt
            out[f"latency_{syn}"] = _nanmean(np.where(valid, latency, np.nan))
            out[f"evoked_{syn}"] = _mean(after - before, valid)
            if TRACE_OF[syn] in rec.traces:
                out[f"amplitude_{syn}"], out[f"tau_{syn}"] = self._fit(rec, TRACE_OF[syn], e, valid)
        n_cond = self.n_conditions
        return {key: split_conditions(v, n_cond)[..., 0] for key, v in out.items()}

    def _fit(self, rec: Recording, trace: str, starts: np.ndarray, valid: np.ndarray):
        """Amplitude (A) and time constant (s), (B, N): NaN for neurons not traced.

        Args:
            starts: int (N, E), the first step after each input; valid: bool (N, E).
        """
        every, cols = rec.trace_every, rec.trace_neurons
        x = rec.traces[trace].detach().cpu().numpy().astype(np.float64)  # (T_rec, B, R)
        s, ok = starts[cols], valid[cols]  # (R, E)
        if np.any(s[ok] % every):
            raise RecordingError(f"traces sampled every {every} steps miss inputs (at steps "
                                 f"{sorted(set((s[ok][s[ok] % every > 0] - 1).tolist()))[:5]}); record "
                                 f"with record_every dividing the input steps + 1.")
        n_fit = max(2, int(self.fit_span / (every * rec.dt)) + 1)
        i0 = s // every
        ok = ok & (i0 >= 1) & (i0 < x.shape[0])
        idx = i0[..., None] + np.arange(n_fit)  # (R, E, F)
        rows = np.arange(cols.size)[:, None, None]
        seg = x[np.clip(idx, 0, x.shape[0] - 1), :, rows]  # (R, E, F, B)
        keep = np.cumprod((seg > self.fit_min) & (idx < x.shape[0])[..., None], axis=2).astype(bool)
        t = (np.arange(n_fit) * every * rec.dt)[:, None]
        y = np.log(np.where(keep, seg, 1.0))
        m = keep.sum(2)
        with np.errstate(divide="ignore", invalid="ignore"):
            mt, my = (t * keep).sum(2) / m, (y * keep).sum(2) / m
            slope = ((t - mt[:, :, None]) * (y - my[:, :, None]) * keep).sum(2) / \
                (((t - mt[:, :, None]) ** 2) * keep).sum(2)
            tau = np.where(m >= 2, -1.0 / slope, np.nan)  # (R, E, B)
            ratio = np.exp(slope * every * rec.dt)
        prev = x[np.clip(i0 - 1, 0, x.shape[0] - 1), :, rows[..., 0]]  # (R, E, B)
        amp = seg[:, :, 0] - prev * np.where(np.isfinite(ratio), ratio, 1.0)
        full = lambda v: _scatter(_mean(np.moveaxis(v, 2, 0), ok[None]), rec)  # noqa: E731
        return full(amp), full(tau)


def _mean(x: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Mean over the valid entries of the last axis (a NaN among them gives NaN); NaN if none."""
    n = valid.sum(-1)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.where(valid, x, 0.0).sum(-1) / np.maximum(n, 1), np.nan)


def _nanmean(x: np.ndarray) -> np.ndarray:
    """Mean over the last axis ignoring NaN; NaN where all are NaN (without a warning)."""
    n = (~np.isnan(x)).sum(-1)
    return np.where(n > 0, np.nansum(x, -1) / np.maximum(n, 1), np.nan)


def _scatter(values: np.ndarray, rec: Recording) -> np.ndarray:
    """(B, R) values of the traced neurons -> (B, N) with NaN elsewhere."""
    out = np.full((rec.batch, rec.n_neurons), np.nan)
    out[:, rec.trace_neurons] = values
    return out
