r"""The calibration objective: B candidates against a target, per neuron, in one run per experiment.

**Candidates.** ``evaluate(core, factors, scales)`` takes core values ``core[name]`` (B,) SI,
mismatch factors ``factors[name]`` (B, N) and condition scales ``scales[name]`` (B,); what a
name leaves out is the space's default. The values simulated are built explicitly,

    value[b, n] = core[b] x factor[b, n]

(a mismatch name without a core value multiplies the network's own per-neuron value), and
passed as (B, N) candidates to ``experiment.network.params`` (``/work/FITTING.md``), so
everything not searched comes from the experiment's network (its core biases) and the table.
A scaled condition (board targets: the f-I curve's DC came from a code, so the chip got
``scale x nominal``) is run as one batch of B * L sets with the scaled DC as a candidate.

**One run per experiment.** Every target experiment runs B candidates (B * L sets) at once,
chunked over B (``max_batch``, default from the free memory) so that rasters fit.

**Terms** (``dynacal.losses``, per neuron, target set l paired with model set b * L + l), and
their weights, ``DEFAULT_WEIGHTS``:

    term              loss                                       weight  where
    rate              log rate ratio (+1 Hz), per window          1.0    every protocol
    isi_mean          log ISI-mean ratio                          0.5    every protocol
    isi_cv            ISI CV difference                           0.25   every protocol
    van_rossum        van Rossum distance (tau 10 ms)             0.25   input-driven runs <= 20000 steps
    trace             mean square log-current error               1.0    traces in the target
    kernel_tau        log kernel time-constant ratio              1.0    kernels, traces in the target
    kernel_amplitude  relative kernel amplitude error             1.0    kernels, traces in the target

The rate windows are a protocol's own: after ``settle`` (f-I), each segment after its
``settle`` (rate transfer), else the whole run. A protocol's terms are combined per neuron
(``losses.combine``), and the protocols are averaged per neuron (each weight 1), over the
protocols that have data for that neuron.

**Target neurons that cannot inform** a protocol are masked for all its terms and listed in
``Score.reasons``: silent in every condition (only a bound), saturated (a protocol with >= 3
conditions whose rate is flat within 5 % over every condition where the neuron fires: it sits
at its refractory limit, leak and gain do not show), and Euler-unstable in the target where the
target says so (``Recording.unstable``: a simulated target's garbage is not "what the chip did").

**Euler-unstable candidates** (``Recording.unstable`` of the model run): at the table
defaults kernels / rate transfer / held-out go unstable in ~80-100 of 256 neurons at 100 us.
A candidate set unstable at neuron n in a protocol scores that protocol ``UNSTABLE_PENALTY``
(= ``losses.MISSING`` = 4, as bad as a factor e^2 rate error) there, with no gradient, and is
flagged in ``Score.unstable``: a fitter is pushed away from unstable corners instead of
chasing their garbage spikes. A twin target simulates at 100 us too, so where a target
neuron is unstable under its true parameters every candidate near the truth is penalised
alike at that neuron and the robust reductions (:meth:`Score.reduce`) leave it out.

**Gradients.** When ``core``/``factors`` are tensors that require grad, the torch backend
returns a raster with surrogate gradients, and ``Score.total`` carries them (rate, van
Rossum, trace and kernel terms; the ISI terms are constants).
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, Mapping, NamedTuple

import numpy as np
import torch
from torch import Tensor

from dynacal import losses
from dynacal.errors import ParameterError, RecordingError
from dynacal.losses import PerNeuron
from dynacal.recording import Recording

from ._target_view import protocol_of, recordings_of
from .space import SearchSpace

__all__ = ["Objective", "Score", "DEFAULT_WEIGHTS", "UNSTABLE_PENALTY"]

log = logging.getLogger(__name__)

DEFAULT_WEIGHTS: dict[str, float] = {"rate": 1.0, "isi_mean": 0.5, "isi_cv": 0.25, "van_rossum": 0.25,
                                     "trace": 1.0, "kernel_tau": 1.0, "kernel_amplitude": 1.0}
UNSTABLE_PENALTY = losses.MISSING
_VR_TAU, _VR_MAX_STEPS, _FLAT = 10e-3, 20000, 0.05


class Score(NamedTuple):
    """Per-neuron losses of B candidates.

    Attributes:
        total: float64 (B, N), >= 0; 0 where ``mask`` is False; gradients when asked for.
        terms: ``"<protocol>.<term>"`` and ``"<protocol>"`` (combined) -> PerNeuron.
        unstable: bool (B, N): the candidate was Euler-unstable at that neuron in some protocol.
        mask: bool (N,): neurons some protocol has data for.
        reasons: why neurons are masked (``"<protocol>: <reason>"`` -> indices), for all or some protocols.
    """

    total: Tensor
    terms: dict[str, PerNeuron]
    unstable: np.ndarray
    mask: np.ndarray
    reasons: dict[str, np.ndarray]

    def reduce(self, how: str = "median", trim: float = 0.1) -> Tensor:
        """One loss per candidate over the neurons with data, (B,).

        Args:
            how: ``"median"``, ``"trimmed"`` (mean without the ``trim`` fraction at each end)
                or ``"mean"``.
        """
        v = self.total[:, torch.as_tensor(self.mask)]
        if v.shape[1] == 0:
            return torch.zeros(v.shape[0], dtype=v.dtype)
        if how == "median":
            return v.median(dim=1).values
        if how == "mean":
            return v.mean(1)
        if how == "trimmed":
            s = v.sort(dim=1).values
            k = int(s.shape[1] * trim)
            return s[:, k:s.shape[1] - k].mean(1) if s.shape[1] - 2 * k > 0 else s.mean(1)
        raise ParameterError(f"how = {how!r}: give 'median', 'trimmed' or 'mean'.")


@dataclasses.dataclass
class _Exp:
    """One target experiment, prepared once."""

    name: str
    target: Recording
    protocol: Any
    windows: list
    record: tuple[str, ...]
    masked: dict[str, np.ndarray]
    scaled: tuple[str, ...]


class Objective:
    """Score candidates against a target (module docstring).

    Args:
        target: a Target (``.recordings``) or a mapping name -> Recording (v2, one chip: L sets).
        space: the SearchSpace (defaults for what a call leaves out; names of factors, scales).
        weights: term -> weight (``DEFAULT_WEIGHTS``; missing terms take the default).
        backend: a backend spec for ``dynacal.get_backend`` or an object with ``run``.
        max_batch: candidates per run (chunks over B); None: from the free memory.

    Raises:
        RecordingError: an empty target, version 1 recordings, recordings of other neurons.
        ParameterError: unknown weights, a scale for a protocol whose conditions have their own stimuli.
    """

    def __init__(self, target: Any, space: SearchSpace, *, weights: Mapping[str, float] | None = None,
                 backend: Any = "torch", max_batch: int | None = None):
        from dynacal.backends import get_backend  # noqa: PLC0415

        unknown = set(weights or {}) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ParameterError(f"unknown weights {sorted(unknown)}; the terms are {sorted(DEFAULT_WEIGHTS)}.")
        self.weights = {**DEFAULT_WEIGHTS, **dict(weights or {})}
        self.space = space
        self.backend = get_backend(backend) if isinstance(backend, (str, type(None))) else backend
        self.max_batch = max_batch
        recs = recordings_of(target)
        self.experiments = [self._prepare(name, rec) for name, rec in recs.items()]
        self.network = self.experiments[0].target.experiment.network
        self.n_neurons = self.network.n_neurons
        self.evaluations = 0  # candidates scored so far
        self.neuron_steps = 0  # neuron-steps simulated so far

    # --- preparation ------------------------------------------------------------------

    def _prepare(self, name: str, rec: Recording) -> _Exp:
        proto = protocol_of(rec)
        exp = rec.experiment
        L = exp.n_conditions
        if rec.batch != L:
            raise RecordingError(f"target[{name!r}] has {rec.batch} parameter sets for {L} conditions; a target is "
                                 f"one chip: one set per condition.")
        scaled = tuple(k for k in exp.conditions if k in self.space.scales)
        if scaled and set(scaled) != set(exp.conditions):
            raise ParameterError(f"{name}: scales {list(scaled)} given but the experiment also has conditions "
                                 f"{sorted(set(exp.conditions) - set(scaled))}; scale all its conditions or none.")
        if scaled and exp.condition_stimuli and any(s is not exp.condition_stimuli[0] and s != exp.condition_stimuli[0]
                                                    for s in exp.condition_stimuli):
            raise ParameterError(f"{name}: condition scales need the conditions to share one stimulus; this "
                                 f"experiment gives each condition its own: drop its scales from the SearchSpace.")
        return _Exp(name, rec, proto, _windows(proto, rec), tuple(rec.traces), _target_masks(name, rec, L), scaled)

    # --- candidates -------------------------------------------------------------------

    def batch_size(self, core: Mapping | None, factors: Mapping | None, scales: Mapping | None) -> int:
        sizes = {int(torch.as_tensor(v).reshape(-1).shape[0]) for v in (core or {}).values()}
        sizes |= {int(torch.as_tensor(v).shape[0]) for v in (factors or {}).values() if torch.as_tensor(v).ndim == 2}
        sizes |= {int(torch.as_tensor(v).reshape(-1).shape[0]) for v in (scales or {}).values()}
        sizes.discard(1)
        if len(sizes) > 1:
            raise ParameterError(f"candidates of different batch sizes {sorted(sizes)}; give every core value and "
                                 f"scale as (B,) and every factor as (B, N) with the same B.")
        return sizes.pop() if sizes else 1

    def values(self, core: Mapping | None = None, factors: Mapping | None = None) -> dict[str, Tensor]:
        """The (B, N) values the candidates simulate: ``core[b] x factor[b, n]`` (module docstring)."""
        core, factors = dict(core or {}), dict(factors or {})
        for group, given, allowed in (("core", core, self.space.core), ("factors", factors, self.space.mismatch)):
            extra = set(given) - set(allowed)
            if extra:
                raise ParameterError(f"{group} {sorted(extra)} are not in the search space's {group} "
                                     f"({sorted(allowed)}); add them to the SearchSpace or leave them out.")
        B, N = self.batch_size(core, factors, None), self.n_neurons
        base = None
        out = {}
        for name in dict.fromkeys([*self.space.core, *self.space.mismatch]):
            if name in self.space.core:
                c = _as_tensor(core.get(name, self.space.core[name].default)).reshape(-1, 1).expand(B, 1)
            else:
                base = base or self.network.params()
                c = getattr(base, name).to(torch.float64).expand(B, N)
            if name in self.space.mismatch:
                f = _as_tensor(factors.get(name, self.space.mismatch[name].default))
                f = f.reshape(1, -1) if f.ndim <= 1 else f
                if f.shape[-1] not in (1, N):
                    raise ParameterError(f"factors[{name!r}] has shape {tuple(f.shape)}; give (B, N) with N = {N}.")
                out[name] = (c * f).expand(B, N)
            else:
                out[name] = c.expand(B, N)
        return out

    # --- evaluation -------------------------------------------------------------------

    def evaluate(self, core: Mapping | None = None, factors: Mapping | None = None,
                 scales: Mapping | None = None) -> Score:
        """Score B candidates (module docstring).

        Args:
            core: name -> (B,) SI values (float, numpy or tensor).
            factors: name -> (B, N) factors (or (N,) / scalar, shared).
            scales: condition name -> (B,) scales.

        Returns:
            :class:`Score`.
        """
        values = self.values(core, factors)
        B = max(self.batch_size(core, factors, scales), next(iter(values.values())).shape[0] if values else 1)
        sc = {k: _as_tensor((scales or {}).get(k, p.default)).reshape(-1).expand(B) for k, p in self.space.scales.items()}
        per_protocol: dict[str, PerNeuron] = {}
        terms: dict[str, PerNeuron] = {}
        for e in self.experiments:
            chunks = [self._score_chunk(e, {k: v[b0:b1] for k, v in values.items()}, {k: v[b0:b1] for k, v in sc.items()})
                      for b0, b1 in _chunks(B, self._chunk(e, B))]
            parts = {k: _cat([c[k] for c in chunks]) for k in chunks[0]}
            for k, v in parts.items():
                terms[f"{e.name}.{k}" if k != "" else e.name] = v
            per_protocol[e.name] = parts[""]
        self.evaluations += B
        total = losses.combine(per_protocol, {k: 1.0 for k in per_protocol})
        unstable = np.logical_or.reduce([p.unstable for p in per_protocol.values() if p.unstable is not None]
                                        or [np.zeros((B, self.n_neurons), bool)])
        return Score(total.values, terms, unstable, total.mask, total.reasons)

    def _chunk(self, e: _Exp, B: int) -> int:
        if self.max_batch:
            return max(1, int(self.max_batch))
        from dynacal.backends.sizing import available_bytes  # noqa: PLC0415

        free = available_bytes() or 2 ** 32
        per = 4 * 8 * e.target.n_steps * e.target.batch * self.n_neurons  # raster, grads and filters, float64
        return max(1, min(B, int(min(free / 4, 2 ** 31) // max(per, 1))))

    def _run(self, e: _Exp, values: dict[str, Tensor], scales: dict[str, Tensor]) -> Recording:
        exp = e.target.experiment
        L = exp.n_conditions
        kwargs = {}
        if e.record:
            kwargs = {"record": e.record, "record_every": e.target.trace_every,
                      "record_neurons": np.asarray(e.target.trace_neurons)}
        if e.scaled:  # B * L candidate sets of an experiment without conditions (module docstring)
            run_exp = dataclasses.replace(exp, conditions={}, condition_stimuli=())
            cand = {k: v.repeat_interleave(L, dim=0) for k, v in values.items()}
            for k in e.scaled:
                nominal = torch.as_tensor(np.array(exp.conditions[k], dtype=np.float64))
                cand[k] = (scales[k].reshape(-1, 1) * nominal.reshape(1, -1)).reshape(-1, 1)
        else:
            run_exp, cand = exp, values
        params = run_exp.network.params(cand)
        rec = self.backend.run(run_exp, params, **kwargs)
        rec.experiment = exp
        self.neuron_steps += rec.batch * rec.n_neurons * rec.n_steps
        return rec

    def _score_chunk(self, e: _Exp, values: dict[str, Tensor], scales: dict[str, Tensor]) -> dict[str, PerNeuron]:
        model = self._run(e, values, scales)
        terms = _terms(e, model, self.weights)
        terms = {k: _apply_masks(v, e.masked) for k, v in terms.items()}
        combined = losses.combine(terms, {k: self.weights[_weight_of(k)] for k in terms})
        if combined.unstable is not None and combined.unstable.any():
            u = torch.as_tensor(combined.unstable & combined.mask[None])
            combined = combined._replace(values=torch.where(u, torch.full_like(combined.values, UNSTABLE_PENALTY),
                                                            combined.values))
        return {**terms, "": combined}


def _as_tensor(x) -> Tensor:
    t = x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x, dtype=np.float64))
    return t.to(torch.float64)


def _chunks(B: int, size: int):
    return [(b0, min(B, b0 + size)) for b0 in range(0, B, size)]


def _cat(parts: list[PerNeuron]) -> PerNeuron:
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    unstable = None if first.unstable is None else np.concatenate([p.unstable for p in parts])
    return PerNeuron(torch.cat([p.values for p in parts]), first.mask, first.reasons,
                     np.concatenate([p.penalised for p in parts]), unstable)


def _windows(proto, rec: Recording) -> list:
    """The protocol's rate windows in s (module docstring); [None] = the whole run."""
    if hasattr(proto, "segments") and hasattr(proto, "segment") and not proto.separate:
        seg, settle = proto.segment, proto.settle
        base = [(settle, proto.baseline)] if proto.baseline > settle else []
        return base + [(float(s) * rec.dt + settle, float(s) * rec.dt + seg) for k in proto.segments() for s in k]
    settle = getattr(proto, "settle", 0.0) or 0.0
    if 0 < settle < rec.duration:
        return [(settle, rec.duration)]
    return [None]


def _terms(e: _Exp, model: Recording, w: Mapping[str, float]) -> dict[str, PerNeuron]:
    t = e.target
    out = {}
    rates = [losses.rate_loss(model, t, window=win) for win in e.windows]
    out["rate"] = rates[0] if len(rates) == 1 else rates[0]._replace(
        values=sum(r.values for r in rates) / len(rates))
    if w["isi_mean"] > 0:
        out["isi_mean"] = losses.isi_loss(model, t, statistic="mean")
    if w["isi_cv"] > 0:
        out["isi_cv"] = losses.isi_loss(model, t, statistic="cv")
    has_input = t.experiment.stimulus.steps.size > 0 or any(s.steps.size for s in t.experiment.condition_stimuli)
    if w["van_rossum"] > 0 and has_input and t.n_steps <= _VR_MAX_STEPS:
        out["van_rossum"] = losses.van_rossum_loss(model, t, _VR_TAU)
    for name in e.record:
        if w["trace"] > 0:
            out[f"trace_{name}"] = losses.trace_loss(model, t, name)
        if e.protocol.name == "kernels" and name in _KERNEL_TRACES:
            starts = _kernel_starts(e.protocol, name)
            for what in ("tau", "amplitude"):
                if w[f"kernel_{what}"] > 0:
                    out[f"kernel_{what}_{name}"] = losses.kernel_loss(
                        model, t, name, starts, what=what, fit_min=e.protocol.fit_min, fit_span=e.protocol.fit_span)
    return {k: v for k, v in out.items()}


_KERNEL_TRACES = {"Inmda": "nmda", "Iampa": "ampa", "Igaba_a": "gaba_a", "Igaba_b": "gaba_b"}


def _kernel_starts(proto, trace: str) -> np.ndarray:
    syn = _KERNEL_TRACES[trace]
    return np.asarray(proto.event_lists()[list(proto.synapses).index(syn)]) + 1


def _weight_of(key: str) -> str:
    for k in ("kernel_tau", "kernel_amplitude", "trace"):
        if key.startswith(k):
            return k
    return key


def _target_masks(name: str, rec: Recording, L: int) -> dict[str, np.ndarray]:
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


def _apply_masks(term: PerNeuron, masked: dict[str, np.ndarray]) -> PerNeuron:
    if not masked:
        return term
    mask = term.mask.copy()
    for idx in masked.values():
        mask[idx] = False
    keep = torch.as_tensor(mask, device=term.values.device)
    values = torch.where(keep[None], term.values, torch.zeros_like(term.values))
    return term._replace(values=values, mask=mask, reasons={**term.reasons, **masked})
