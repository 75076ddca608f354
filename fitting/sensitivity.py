r"""Sensitivity of a protocol's features to log-parameters, every neuron, from one batched run.

For a protocol, a point ``theta`` (every neuron's value of P named parameters) and a step
``h`` (log units), one run of B = 2P + 1 candidate sets gives every neuron's Jacobian:
candidate 0 is the point, candidates 2i + 1 and 2i + 2 multiply parameter i by
``exp(+h)`` and ``exp(-h)`` in every neuron at once. The protocols' neurons do not talk to
each other, so neuron n's features respond only to neuron n's values, and

    S[n, f, i] = (g_f(theta_i * e^h) - g_f(theta_i * e^-h)) / (2 h)     (central difference)

is d g_f / d ln theta_i, with ``g_f`` the feature on the log scale (``ln f``: S is then an
elasticity, the relative change of the feature per relative change of the parameter), or,
for features that change sign or count spikes (``LINEAR_FEATURES``), ``f / scale`` with
``scale`` the median magnitude of that feature over the run.

Why central differences and not the fused forward-mode gradients: most features come from
spike times (rates from mean ISIs, latencies, spike-count differences), which are piecewise
constant in the parameters, so their exact derivative is zero almost everywhere; a finite
step of 10 % (``h = 0.1``) measures how they move. Rates over long windows (f-I curve) are
nearly smooth at that step; kernel amplitudes and decay times read from current traces
(where a target has traces) are smooth; latencies and evoked counts of a spike-only kernel
recording are quantised to a step and noisy. An exact degeneracy (two parameters acting only
through their product) still gives identical simulations, so it shows as an exact zero
singular value whatever the feature's noise.

A parameter that moves no feature by ``min_sensitivity`` at that step in most neurons (the
latency of a strong input shifts by less than one step) is measured again at ``retry``
times the step in a second run of its own (``Sensitivity.steps`` says which step each
column used): a spike feature then shows what it does over a coarser change, and a
parameter that moves nothing at either step is insensitive.

Parameters of a synapse type that no connection of the experiment uses (the f-I curve's
synapses) cannot act: their columns are zeros and cost no candidates.

Entries are taken only where the feature is finite at the point; where only one side is
finite (a rate that stops at ``-h``), the one-sided difference is used; where it is zero at
all three (a silent level), the entry is a valid zero. Spike features of sets the simulator
flags Euler-unstable (``Recording.unstable``) are dropped; trace features of synapses
(``TRACE_FEATURES``) are kept, since a synapse current does not depend on the soma.
"""

from __future__ import annotations

import logging
import time
from typing import Mapping, NamedTuple, Sequence

import numpy as np
import torch

from dynacal.errors import ParameterError
from dynacal.experiment import Experiment
from dynacal.params import PARAMETERS, SYNAPSE_TYPES

__all__ = ["Sensitivity", "sensitivity", "point_of", "candidates", "column_norms", "LINEAR_FEATURES", "TRACE_FEATURES"]

log = logging.getLogger(__name__)

#: Feature-name prefixes read on a linear scale (they change sign or count a few spikes).
LINEAR_FEATURES = ("evoked_",)
#: protocol -> feature-name prefixes computed from synapse traces (valid where the soma is unstable).
TRACE_FEATURES = {"kernels": ("amplitude_", "tau_")}


class Sensitivity(NamedTuple):
    """Sensitivities of one protocol's features.

    Attributes:
        matrix: float (N, F, P), d g_f / d ln theta_p (module docstring); 0 where not valid.
        valid: bool (N, F), where the entry could be measured.
        features: F labels ``"<protocol>.<feature>"`` or ``"<protocol>.<feature>[<label>]"``.
        values: float (N, F), the features at the point (NaN where undefined).
        steps: float (P,), the log step each column was measured with.
    """

    matrix: np.ndarray
    valid: np.ndarray
    features: list[str]
    values: np.ndarray
    steps: np.ndarray


def point_of(network, names: Sequence[str], at: Mapping | None = None) -> dict[str, np.ndarray]:
    """Every neuron's value (SI, float64 (N,)) of ``names``: the network's parameters
    (table defaults, its core biases and per-neuron values) with ``at`` (any value
    ``Network.params`` accepts: ``"5 pA"``, (N,), per core) winning.

    Raises:
        ParameterError: unknown names, a batch of candidates in ``at``, or a value <= 0
            (a log-parameter needs a positive value).
    """
    p = network.params(dict(at or {}))
    n = network.n_neurons
    out = {}
    for name in names:
        v = getattr(p, name).detach().to("cpu", torch.float64)
        if v.shape[0] != 1:
            raise ParameterError(f"at[{name!r}] has {v.shape[0]} candidate sets; give one point: a value, "
                                 f"or one value per neuron ({n},).")
        v = v.expand(1, n)[0].numpy().copy()
        if np.any(v <= 0):
            spec = PARAMETERS[name]
            raise ParameterError(f"{name} = {float(v.min()):g} {spec.unit} at the point of the analysis; "
                                 f"log-parameter sensitivities need a value > 0: pass at={{{name!r}: ...}} "
                                 f"with a positive value (default {spec.default:g} {spec.unit}).")
        out[name] = v
    return out


def candidates(point: Mapping[str, np.ndarray], step: float) -> dict[str, torch.Tensor]:
    """The 2P + 1 candidate sets (B, N) of the central differences (module docstring)."""
    names = list(point)
    b = 2 * len(names) + 1
    out = {}
    for i, name in enumerate(names):
        v = torch.as_tensor(point[name], dtype=torch.float64).reshape(1, -1).repeat(b, 1)
        v[2 * i + 1] *= float(np.exp(step))
        v[2 * i + 2] *= float(np.exp(-step))
        out[name] = v
    return out


def sensitivity(protocol, experiment: Experiment, point: Mapping[str, np.ndarray], *, backend,
                step: float = 0.1, traces: bool = True, keys: Sequence[str] | None = None,
                retry: float = 4.0, min_sensitivity: float = 0.05) -> Sensitivity:
    """Every neuron's sensitivity of ``protocol``'s features at ``point``, from one run.

    Args:
        protocol: the Protocol whose experiment this is (``get_protocol(...)``).
        experiment: its Experiment (N neurons).
        point: name -> float (N,) SI values (:func:`point_of`), all > 0.
        backend: a backend object (``get_backend(...)``) that runs batches.
        step: h, the log step (0.1 = 10 %).
        traces: record the protocol's traces (False: spike features only, as on the board).
        keys: feature names to use (None: every feature the run gives).
        retry, min_sensitivity: a parameter whose column is below ``min_sensitivity`` in
            most neurons is measured again at ``retry * step`` (1 or less: never).

    Returns:
        :class:`Sensitivity` with F = the finite features' columns.
    """
    if not step > 0:
        raise ParameterError(f"step = {step} must be a log step > 0, e.g. 0.1 (10 %).")
    names = list(point)
    inert = _inert(experiment, names)
    active = [nm for nm in names if nm not in inert]  # inert columns are exact zeros, not run
    fine = _one_step(protocol, experiment, {nm: point[nm] for nm in active}, backend, step, traces, keys)
    loose = [i for i in range(len(active)) if np.median(column_norms(fine)[:, i]) < min_sensitivity]
    if loose and retry > 1 and fine.features:
        fine = _retry(fine, loose, protocol, experiment, {nm: point[nm] for nm in active}, backend,
                      step * retry, traces, keys)
    cols = [names.index(nm) for nm in active]
    matrix = np.zeros(fine.matrix.shape[:2] + (len(names),))
    matrix[:, :, cols] = fine.matrix
    steps = np.full(len(names), float(step))
    steps[cols] = fine.steps
    return Sensitivity(matrix, fine.valid, fine.features, fine.values, steps)


def _retry(fine: Sensitivity, loose, protocol, experiment, point, backend, step, traces, keys) -> Sensitivity:
    """``fine`` with the columns ``loose`` measured again at ``step``."""
    names = list(point)
    coarse = _one_step(protocol, experiment, {names[i]: point[names[i]] for i in loose}, backend, step, traces, keys)
    rows = [coarse.features.index(f) if f in coarse.features else -1 for f in fine.features]
    have, src = np.asarray([r >= 0 for r in rows]), [r for r in rows if r >= 0]
    matrix, valid, steps = fine.matrix.copy(), fine.valid.copy(), fine.steps.copy()
    for j, i in enumerate(loose):
        matrix[:, have, i] = coarse.matrix[:, src, j]
        matrix[:, ~have, i] = 0.0
        steps[i] = step
    valid[:, have] &= coarse.valid[:, src]
    return Sensitivity(matrix, valid, fine.features, fine.values, steps)


def _inert(experiment: Experiment, names) -> set[str]:
    """Parameters of synapse types no connection of the experiment uses: they cannot act,
    so their columns are zeros without a run."""
    net = experiment.network
    used = set(np.concatenate([net.inputs.syn_type, net.recurrent.syn_type]).tolist())
    out = set()
    for k, syn in enumerate(SYNAPSE_TYPES):
        if k not in used:
            own = {f"I{syn}_tau", f"I{syn}_w0", f"alpha_{syn}", f"C{syn}"} | ({"Inmda_thr"} if syn == "nmda" else set())
            out |= own & set(names)
    return out


def column_norms(s: Sensitivity) -> np.ndarray:
    """(N, P) RMS-sum of each column over the valid features."""
    return np.sqrt((np.where(s.valid[..., None], s.matrix, 0.0) ** 2).sum(axis=1))


def _one_step(protocol, experiment, point, backend, step, traces, keys) -> Sensitivity:
    n_par = len(point)
    params = experiment.network.params(candidates(point, step))
    t0 = time.perf_counter()
    if traces:
        rec = protocol.run_experiment(backend, experiment, params)
    else:
        rec = backend.run(experiment, params)
        rec.metadata["protocol"] = experiment.protocol or protocol.describe()
    t1 = time.perf_counter()
    feats = protocol.features(rec)
    log.info("sensitivity of %s: %d candidates x %d conditions x %d neurons, step %g: run %.2f s, features %.2f s",
             protocol.name, 2 * n_par + 1, experiment.n_conditions, experiment.network.n_neurons, step, t1 - t0,
             time.perf_counter() - t1)
    b, n = 2 * n_par + 1, experiment.network.n_neurons
    unstable = np.zeros((b, n), dtype=bool)
    if rec.unstable is not None:
        unstable = np.asarray(rec.unstable).reshape(b, -1, n).any(axis=1)
    if unstable[0].any():
        log.info("%s: %d of %d neurons Euler-unstable at the point; their spike features are left out",
                 protocol.name, int(unstable[0].sum()), n)
    mats, valids, labels, values = [], [], [], []
    trace_prefixes = TRACE_FEATURES.get(protocol.name, ())
    axis = protocol.axis_labels()
    for key, value in feats.items():
        if keys is not None and key not in keys:
            continue
        v = np.asarray(value, dtype=np.float64).reshape(b, n, -1)
        if not key.startswith(trace_prefixes):
            v = np.where(unstable[..., None], np.nan, v)
        names = axis.get(key, [])
        for k in range(v.shape[2]):
            x = v[:, :, k]
            if not np.isfinite(x[0]).any():
                continue
            d, ok = _differences(x, step, linear=key.startswith(LINEAR_FEATURES) or bool(np.any(x < 0)))
            mats.append(d)
            valids.append(ok)
            label = names[k] if k < len(names) else (str(k) if v.shape[2] > 1 else "")
            labels.append(f"{protocol.name}.{key}" + (f"[{label}]" if label else ""))
            values.append(x[0])
    steps = np.full(n_par, float(step))
    if not mats:
        return Sensitivity(np.zeros((n, 0, n_par)), np.zeros((n, 0), bool), [], np.zeros((n, 0)), steps)
    return Sensitivity(np.stack(mats, axis=1), np.stack(valids, axis=1), labels, np.stack(values, axis=1), steps)


def _differences(x: np.ndarray, step: float, *, linear: bool) -> tuple[np.ndarray, np.ndarray]:
    """(B, N) feature values of the 2P + 1 candidates -> (N, P) derivatives and (N,) validity."""
    if linear:
        finite = x[np.isfinite(x) & (x != 0)]
        scale = float(np.median(np.abs(finite))) if finite.size else 1.0
        g = x / scale
        zero = np.zeros(x.shape[1], dtype=bool)
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            g = np.where(x > 0, np.log(np.where(x > 0, x, 1.0)), np.where(x == 0, -np.inf, np.nan))
        zero = np.all(x == 0, axis=0)  # silent at the point and at every step: a valid zero
    g0, gp, gm = g[0], g[1::2], g[2::2]  # (N,), (P, N), (P, N)
    fp, fm = np.isfinite(gp), np.isfinite(gm)
    with np.errstate(invalid="ignore"):
        central = (gp - gm) / (2 * step)
        d = np.where(fp & fm, central, np.where(fp, (gp - g0) / step, (g0 - gm) / step))
    ok0 = np.isfinite(g0)
    usable = (fp | fm) & ok0
    d = np.where(usable, d, 0.0)
    valid = (ok0 & usable.all(axis=0)) | zero
    d[:, zero] = 0.0
    return d.T, valid
