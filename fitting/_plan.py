"""What an identifiability analysis runs (see :mod:`.identify`): the parameters asked for and
their partners, the source's protocols with their experiments and noise, a spread subset of
the neurons, and the protocols that would constrain what the chosen ones do not.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Mapping, Sequence

import numpy as np

from dynacal.errors import ParameterError, unknown_name
from dynacal.params import PARAMETERS, SYNAPSE_TYPES

from .sensitivity import Sensitivity, column_norms, sensitivity

__all__ = ["SKIP", "names_of", "partners", "cut_point", "runs_of", "spread_subset", "subset", "noise_levels",
           "join", "suggest_protocols"]

log = logging.getLogger(__name__)

#: Protocols never analysed by default: held-out validation and generic imported features.
SKIP = ("heldout", "recorded")


def cut_point(at: Mapping | None, kept: np.ndarray, n: int) -> dict:
    """``at`` with its per-neuron values (length n) cut down to the neurons ``kept``."""
    out = {}
    for name, value in (at or {}).items():
        if not isinstance(value, (str, Mapping)) and np.ndim(value) >= 1 and np.shape(value)[-1] == n \
                and kept.size != n:
            value = np.asarray(value)[..., kept]
        out[name] = value
    return out


def partners(names: Sequence[str]) -> list[str]:
    """The parameters no bias sets that act with a requested bias only through a product or
    ratio (calibration.md): ``I_X_w0`` -> ``alpha_X``, ``I_X_tau`` -> ``C_X``, the soma's
    and adaptation's leaks -> their capacitances, ``Isoma_ahp_w`` -> ``alpha_ahp``."""
    pairs = {"Isoma_dpi_tau": "Csoma_mem", "Isoma_ahp_tau": "Csoma_ahp", "Isoma_ahp_w": "alpha_ahp"}
    for syn in SYNAPSE_TYPES:
        pairs[f"I{syn}_w0"], pairs[f"I{syn}_tau"] = f"alpha_{syn}", f"C{syn}"
    return list(dict.fromkeys(pairs[n] for n in names if n in pairs))


def names_of(space_or_names) -> list[str]:
    if isinstance(space_or_names, str):
        space_or_names = [space_or_names]
    if hasattr(space_or_names, "core") and hasattr(space_or_names, "mismatch"):
        names = list(space_or_names.core) + [m for m in space_or_names.mismatch if m not in space_or_names.core]
    else:
        names = list(dict.fromkeys(space_or_names))
    if not names:
        raise ParameterError("no parameters to analyse; give parameter names (e.g. ['Isoma_dpi_tau', "
                             "'Iampa_w0']) or a SearchSpace.")
    for name in names:
        if name not in PARAMETERS:
            raise unknown_name("parameter", name, PARAMETERS)
    return names


def suggest_protocols(sensitive, names, used: Mapping, network, point, backend, *, step, retry, min_sensitivity,
                      check, n_check, traces) -> dict[str, tuple[str, ...]]:
    """Unconstrained parameter -> protocols that would constrain it.

    Args:
        sensitive: bool (N, P) of the analysis; a parameter sensitive in fewer than half the
            neurons is unconstrained.
        names, point: the P parameter names and their values (N,).
        used: name -> Protocol analysed (a used protocol is a candidate again only with
            other settings: its defaults, or those in ``check``).
        check: True / a mapping name -> Protocol: every candidate protocol of the lab order
            runs on ``n_check`` neurons and is named where its features move with the
            parameter (a disagreement with its ``sensitive_to`` is logged); False: the
            candidates whose ``sensitive_to`` lists it.
    """
    from dynacal.protocols import ORDER, PROTOCOLS  # noqa: PLC0415

    loose = [nm for i, nm in enumerate(names) if sensitive[:, i].mean() < 0.5]
    given = check if isinstance(check, Mapping) else {}
    others = {c: given.get(c) or PROTOCOLS[c]() for c in ORDER if c not in SKIP}
    others = {c: proto for c, proto in others.items() if used.get(c) != proto}
    if not loose:
        return {}
    if check is False:
        return {nm: tuple(c for c in others if nm in PROTOCOLS[c].sensitive_to) for nm in loose}
    sub = subset(network, n_check)
    asked = {nm: point[nm][:sub.n_neurons] for nm in loose}
    confirmed: dict[str, list[str]] = {nm: [] for nm in loose}
    for name, proto in others.items():
        s = sensitivity(proto, proto.experiment(sub), asked, backend=backend, step=step, traces=traces,
                        retry=retry, min_sensitivity=min_sensitivity)
        for j, nm in enumerate(asked):
            moves = bool(np.median(column_norms(s)[:, j]) >= min_sensitivity)
            if moves:
                confirmed[nm].append(name)
            if moves != (nm in proto.sensitive_to):
                log.debug("%s %s %s in sensitive_to, but its features %s with it here", name,
                          "does not list" if moves else "lists", nm, "move" if moves else "do not move")
    return {nm: tuple(v) for nm, v in confirmed.items()}


def subset(network, k):
    """Neurons of ``network`` (with their core biases and per-neuron values): the first ``k``
    for an int, else the given indices."""
    idx = np.arange(max(1, min(int(k), network.n_neurons))) if np.ndim(k) == 0 else np.asarray(k, dtype=np.int64)
    return dataclasses.replace(network, core=network.core[idx], neuron_id=network.neuron_id[idx],
                               neuron_values={nm: np.asarray(v)[idx] for nm, v in network.neuron_values.items()})


def spread_subset(runs: list[tuple], k: int) -> tuple[list[tuple], np.ndarray]:
    """``runs`` (:func:`runs_of`) on ``k`` neurons spread evenly over the network, and their
    indices: each experiment rebuilt by its protocol on those neurons. An experiment the
    protocol did not build as it is (its own stimulus or wiring) cannot be cut down: then
    every neuron is kept (logged)."""
    network = runs[0][1].network
    n = network.n_neurons
    if k is None or k >= n:
        return runs, np.arange(n)
    if k < 1:
        raise ParameterError(f"neurons = {k}: give a number of neurons >= 1 (or None for all {n}).")
    for proto, exp, _, _ in runs:
        if proto.experiment(exp.network).content_hash() != exp.content_hash():
            log.info("the %s experiment has its own stimulus or wiring: analysing all %d neurons", proto.name, n)
            return runs, np.arange(n)
    idx = np.unique(np.linspace(0, n - 1, int(k)).round().astype(np.int64))
    sub = subset(network, idx)
    return [(proto, proto.experiment(sub), tr, keys) for proto, exp, tr, keys in runs], idx


def runs_of(source, protocols, traces) -> list[tuple]:
    """What to run for ``source`` (``identify.identifiability``): per analysed protocol,
    (protocol, experiment, traces, feature keys or None). A Target gives its recordings'
    protocols with their recorded settings, the traces they hold and the features they
    give; experiments give their own protocol, traces unless ``traces`` is False.

    Raises:
        ParameterError: an empty or unknown source, unknown protocol names, neurons that
            differ between experiments.
    """
    from dynacal.experiment import Experiment  # noqa: PLC0415
    from dynacal.protocols import PROTOCOLS, get_protocol  # noqa: PLC0415

    if isinstance(source, Experiment):
        source = {source.name: source}
    runs = []
    if hasattr(source, "recordings"):  # a Target: what its recordings hold
        for name, rec in source.recordings.items():
            proto = get_protocol(rec)
            feats = proto.features(rec)
            keys = [k for k, v in feats.items() if np.isfinite(np.asarray(v, dtype=float)).any()]
            runs.append((proto, rec.experiment, bool(rec.traces) if traces is None else traces, keys))
    elif isinstance(source, Mapping):
        for name, exp in source.items():
            if not isinstance(exp, Experiment):
                raise ParameterError(f"source[{name!r}] is a {type(exp).__name__}; give Experiments "
                                     f"(get_protocol({name!r}).experiment('core0')) or a Target.")
            if not exp.protocol:
                raise ParameterError(f"experiment {name!r} names no protocol; build it with "
                                     f"get_protocol(name).experiment(...) so its features can be read.")
            runs.append((get_protocol(exp.protocol), exp, True if traces is None else traces, None))
    else:
        raise ParameterError(f"source is a {type(source).__name__}; give a Target, or {{name: Experiment}}.")
    if protocols is not None:
        for p in protocols:
            if p not in PROTOCOLS:
                raise unknown_name("protocol", p, PROTOCOLS)
        runs = [r for r in runs if r[0].name in protocols]
    else:
        runs = [r for r in runs if r[0].name not in SKIP]
    if not runs:
        raise ParameterError(f"no protocol to analyse in the source (protocols={protocols}); give the "
                             f"experiments or recordings of e.g. 'fi' and 'kernels'.")
    first = runs[0][1].network
    for proto, exp, _, _ in runs[1:]:
        net = exp.network
        if not (np.array_equal(net.core, first.core) and np.array_equal(net.neuron_id, first.neuron_id)):
            raise ParameterError(f"the {proto.name} experiment holds other neurons than the "
                                 f"{runs[0][0].name} one; build every experiment on the same neurons.")
    return runs


def noise_levels(source, protocols, noise: float) -> dict[str, float]:
    """Relative feature noise per protocol: ``noise``, or a target's measured noise floor
    (``NoiseFloor.level``) where that is larger."""
    floor = getattr(source, "noise", None)
    out = {}
    for name in protocols:
        level = noise
        if floor is not None and name in getattr(floor, "spreads", {}):
            measured = floor.level(name)
            level = max(noise, measured) if np.isfinite(measured) else noise
        out[name] = float(level)
    return out


def join(parts: Sequence[Sensitivity], n: int, p: int) -> Sensitivity:
    """The protocols' sensitivities as one (N, sum F, P)."""
    if not any(s.features for s in parts):
        return Sensitivity(np.zeros((n, 0, p)), np.zeros((n, 0), bool), [], np.zeros((n, 0)), np.zeros(p))
    keep = [s for s in parts if s.features]
    return Sensitivity(np.concatenate([s.matrix for s in keep], axis=1),
                       np.concatenate([s.valid for s in keep], axis=1),
                       [f for s in keep for f in s.features], np.concatenate([s.values for s in keep], axis=1),
                       np.max([s.steps for s in keep], axis=0))
