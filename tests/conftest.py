"""Shared builders for tests: small networks and experiments used across the suite."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacal import Experiment, poisson
from dynacal.seed import SEED_WEIGHTS, seed_network


def single_neuron_experiment(weights=None, rate=80.0, n_steps=1000, dt=1e-4, seed=0, dc=None):
    """The seed network (one neuron on Core_1, one Poisson source per synapse type) with
    other weights, rate, length or a DC input."""
    weights = {k.lower(): v for k, v in (SEED_WEIGHTS if weights is None else weights).items()}
    stim = poisson(4, rate, n_steps, dt, seed=seed)
    if dc is not None:
        stim = type(stim)(stim.n_sources, stim.steps, stim.sources, dc=np.atleast_1d(dc))
    return Experiment(seed_network(weights), stim, dt, n_steps)


@pytest.fixture
def seed_experiment():
    return single_neuron_experiment()


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    yield
