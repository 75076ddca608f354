"""The refractory estimate equals soma_refP within one step."""

from __future__ import annotations

import numpy as np
import pytest

from dynacal import Recording, get_backend
from dynacal.errors import ParameterError
from dynacal.protocols import Refractory

from .conftest import mismatch

DT = 1e-4


def test_estimate_is_soma_refP_in_whole_steps():
    ref_p = np.random.default_rng(3).uniform(2e-3, 10e-3, 8)
    p = mismatch(8).replace(soma_refP=ref_p)
    protocol = Refractory()
    f = protocol.features(protocol.run(get_backend("torch"), "core0:8", p))
    assert np.all(np.abs(f["refractory"][0] - ref_p) <= DT)
    # Brian2 counts whole steps: timestep(refP) = floor(refP / dt) (dpi-model.md)
    whole = np.floor(ref_p / DT + 1e-6) * DT
    np.testing.assert_allclose(f["refractory"][0], whole, rtol=1e-9)
    np.testing.assert_allclose(f["max_rate"][0], 1 / whole, rtol=1e-9)


def test_estimator_removes_a_continuous_integration_time():
    # a continuous-time neuron (the board): ISI = refP + c / I, spike times not on the grid
    protocol = Refractory(duration=0.2, settle=0.0)
    ref_p, c = 4.2e-3, 3e-9  # s, A s
    times, batch = [], []
    for k, level in enumerate(protocol.levels):
        t = np.arange(0, 0.2, ref_p + c / level) + 1e-5
        times.append(t)
        batch.append(np.full(t.size, k))
    rec = Recording.from_times("board", DT, 2000, 2, 1, np.concatenate(batch), np.zeros(sum(map(len, times))),
                               np.concatenate(times))
    f = protocol.features(rec)
    np.testing.assert_allclose(f["isi"][0, 0], ref_p + c / np.asarray(protocol.levels), rtol=1e-3)
    assert abs(f["refractory"][0, 0] - ref_p) < 1e-3 * ref_p


def test_levels_are_checked():
    with pytest.raises(ParameterError, match="levels"):
        Refractory(levels=(1e-5, 3e-6))
