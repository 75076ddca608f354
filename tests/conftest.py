"""Shared builders for tests: small networks and experiments used across the suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacal import Chip, Experiment, poisson

SEED_WEIGHTS = {"NMDA": 10, "AMPA": 5, "GABA_A": 1, "GABA_B": 2}


def single_neuron_experiment(weights=None, rate=80.0, n_steps=1000, dt=1e-4, seed=0, dc=None):
    """One neuron on Core_1 driven by one Poisson source per synapse type (the seed)."""
    weights = dict(SEED_WEIGHTS if weights is None else weights)
    chip = Chip()
    neuron = chip.get_neurons(1, "Core_1")
    inputs = chip.add_inputs(4)
    for k, (syn_type, w) in enumerate(weights.items()):
        syn = chip.add_connection(inputs[k], neuron, synapse_type=syn_type)
        chip.connect(syn, True)
        syn.weight = w
    stim = poisson(4, rate, n_steps, dt, seed=seed)
    if dc is not None:
        stim = type(stim)(stim.n_sources, stim.steps, stim.sources, dc=np.atleast_1d(dc))
    return Experiment(chip.network(), stim, dt, n_steps)


@pytest.fixture
def seed_experiment():
    return single_neuron_experiment()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
