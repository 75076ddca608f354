"""Builders of the benchmark experiments of issue 5 ("How well").

Each builder returns an :class:`~dynacal.Experiment` (and, for the batch case, the
``Params`` of the candidate sets); nothing here runs a backend. All are seeded: the same
arguments give the same experiment.

- :func:`seed_experiment`: the seed notebook's single neuron, four Poisson inputs.
- :func:`scale_experiment`: N independent neurons, one Poisson source per neuron and
  synapse type (4 N sources), for throughput at scale.
- :func:`batch_experiment`: a 256-neuron core driven like the scale case, with B
  candidate parameter sets.
"""

from __future__ import annotations

import numpy as np
import torch

from dynacal import Chip, Experiment, Params, Stimulus
from dynacal.chip import CORES_PER_CHIP, NEURONS_PER_CORE
from dynacal.seed import SEED_WEIGHTS, seed_experiment as notebook_experiment

__all__ = ["SCALE_BIASES", "seed_experiment", "scale_experiment", "batch_experiment", "poisson_events"]



def seed_experiment(n_steps: int = 1000, rate_hz: float = 80.0, dt: float = 1e-4, seed: int = 0) -> Experiment:
    """The seed notebook's experiment (:func:`dynacal.seed.seed_experiment`) given in steps:
    1 neuron on Core_1, four Poisson inputs at ``rate_hz``, weights NMDA 10, AMPA 5, GABA_A 1,
    GABA_B 2, ``n_steps`` steps of ``dt`` s."""
    return notebook_experiment(seed=seed, duration=n_steps * dt, rate=rate_hz, dt=dt)


def poisson_events(rates_hz: np.ndarray, n_steps: int, dt: float, seed: int) -> Stimulus:
    """Bernoulli-per-step Poisson trains (a spike in a step with probability ``rate * dt``)
    for many sources, without the dense (n_steps, n_sources) matrix of
    :func:`dynacal.poisson`: the gaps between spikes of a Bernoulli process are geometric.

    Args:
        rates_hz: float (S,) rate of each source in Hz.
        n_steps: length in steps; dt: step in s; seed: numpy generator seed.
    """
    rates = np.asarray(rates_hz, dtype=np.float64)
    p = rates * dt
    rng = np.random.default_rng(seed)
    n = rates.size
    # enough gaps to pass n_steps with overwhelming probability; top up the rare rest
    k = int(np.ceil(p.max() * n_steps + 8 * np.sqrt(p.max() * n_steps + 1) + 8))
    gaps = rng.geometric(np.maximum(p, 1e-300)[:, None], size=(n, k))
    steps = np.cumsum(gaps, axis=1) - 1
    short = np.nonzero(steps[:, -1] < n_steps)[0]
    parts_s, parts_t = [], []
    for src in short:  # rare: a source that needs more gaps than drawn
        t = int(steps[src, -1])
        extra = []
        while t < n_steps:
            t += int(rng.geometric(p[src]))
            extra.append(t)
        parts_s.append(np.full(len(extra), src))
        parts_t.append(np.asarray(extra))
    keep = steps < n_steps
    src = np.nonzero(keep)[0]
    t = steps[keep]
    if parts_s:
        src = np.concatenate([src, *parts_s])
        t = np.concatenate([t, *parts_t])
    keep = (t < n_steps) & (p[src] > 0)
    return Stimulus(n, t[keep], src[keep])


#: Core biases of the scale and batch cases. At the default Igaba_a_w0 = 100 pA two close
#: GABA_A spikes (weight 1, alpha 4) push the soma's time constant below 100 us and forward
#: Euler overshoots (a third of the neurons at 20-80 Hz); 25 pA keeps every neuron stable.
SCALE_BIASES = {"Igaba_a_w0": 25e-12}


def _independent_network(n_neurons: int, weights: dict[str, int], biases: dict | None = None):
    """N neurons filling cores in order; source ``4 * i + k`` drives neuron i through
    synapse type k with ``weights[k]``; ``biases`` are set on every core used."""
    n_cores = -(-n_neurons // NEURONS_PER_CORE)
    chip = Chip(n_chips=-(-n_cores // CORES_PER_CHIP))
    groups = [chip.get_neurons(min(NEURONS_PER_CORE, n_neurons - c * NEURONS_PER_CORE), c) for c in range(n_cores)]
    for c in range(n_cores):
        chip.set_bias(SCALE_BIASES if biases is None else biases, c)
    inputs = chip.add_inputs(4 * n_neurons)
    for g in groups:
        local = np.arange(len(g))
        for k, (syn, w) in enumerate(weights.items()):
            s = chip.add_connection(inputs, g, synapse_type=syn)
            chip.connect(s, i=4 * g.indices + k, j=local)
            s.weight = w
    return chip.network()


def scale_experiment(n_neurons: int = 10_000, n_steps: int = 10_000, rate_hz=(20.0, 80.0), seed: int = 0,
                     dt: float = 1e-4, weights: dict[str, int] | None = None) -> Experiment:
    """N independent neurons, each with its own four Poisson sources (one per synapse type).

    Args:
        n_neurons: N (placed 256 per core, 4 cores per chip).
        n_steps: steps of ``dt`` (10,000 x 100 us = 1 s).
        rate_hz: a rate in Hz for every source, or ``(low, high)``: each source draws its
            rate uniformly in that range (seeded).
        seed: seed of the rates and trains.
        weights: integer weight per synapse type (default: the seed notebook's).
    """
    rng = np.random.default_rng(seed)
    n_src = 4 * n_neurons
    if np.ndim(rate_hz) == 0:
        rates = np.full(n_src, float(rate_hz))
    else:
        lo, hi = rate_hz
        rates = rng.uniform(lo, hi, n_src)
    stim = poisson_events(rates, n_steps, dt, seed=seed + 1)
    net = _independent_network(n_neurons, weights or SEED_WEIGHTS)
    return Experiment(net, stim, dt, n_steps, name=f"scale_{n_neurons}")


def batch_experiment(n_sets: int = 256, n_neurons: int = 256, n_steps: int = 10_000, rate_hz=(20.0, 80.0),
                     seed: int = 0, dt: float = 1e-4, dtype=torch.float64) -> tuple[Experiment, Params]:
    """The scale experiment on ``n_neurons`` with ``n_sets`` candidate parameter sets.

    The candidate sets differ in ``Isoma_dpi_tau`` (2..10 pA) and ``Iampa_w0`` (50..200 pA),
    per set; ``Isoma_ahp_w`` differs per neuron (mismatch, 0.5..2 pA). Returns
    ``(experiment, params)`` with params of shape (B, N) where they vary, the network's
    core biases included.
    """
    exp = scale_experiment(n_neurons, n_steps, rate_hz, seed, dt)
    rng = np.random.default_rng(seed + 2)
    p = exp.network.params({
        "Isoma_dpi_tau": rng.uniform(2e-12, 10e-12, (n_sets, 1)),
        "Iampa_w0": rng.uniform(50e-12, 200e-12, (n_sets, 1)),
        "Isoma_ahp_w": rng.uniform(0.5e-12, 2e-12, n_neurons),
    }, dtype=dtype)
    return exp, p
