"""A board spike time -> a simulation step: the latency (2 us) and jitter (1 us) of the twin,
the us quantisation of the timestamp and a start time that is not a whole us must land every
spike in the step the twin emitted it from, for any dt (above the latency)."""

from __future__ import annotations

import pytest
import torch

from dynacal import Experiment, Params, poisson
from dynacal.hardware.config import plan_network
from dynacal.hardware.twin import TwinNoise, twin_backend

from .conftest import small_network

pytestmark = pytest.mark.hardware


@pytest.mark.parametrize("dt", [1e-4, 5e-5, 3.3e-5, 1.2345e-4, 1e-5, 1e-3])
def test_every_spike_lands_in_the_step_the_twin_emitted_it_from(dt):
    n_steps = int(round(0.25 / dt))
    exp = Experiment(small_network(), poisson(4, 150, n_steps, dt, seed=2), dt, n_steps)
    noise = TwinNoise(drop_rate=0.0, jitter_s=1e-6, latency_s=2e-6)
    backend = twin_backend(noise=noise, board_options={"sim_dt": dt}, discharge_s=1.234567e-3, settle_s=3.3e-7)
    sets = Params.from_values(Iampa_w0=torch.tensor([[300e-12], [500e-12]], dtype=torch.float64))
    rec = backend.run(exp, sets)
    ids = plan_network(exp.network).global_ids()
    lookup = {int(g): k for k, g in enumerate(ids)}
    for b, run in enumerate(backend.twin.history):
        inside = run.spike_step < n_steps
        want = sorted((lookup[int(g)], int(s)) for g, s in zip(run.spike_id[inside], run.spike_step[inside])
                      if int(g) in lookup)
        sel = rec.spike_batch == b
        got = sorted(zip(rec.spike_neuron[sel].tolist(), rec.spike_step[sel].tolist()))
        assert len(want) > 20 and got == want, f"dt = {dt:g} s, set {b}"
