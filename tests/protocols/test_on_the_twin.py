"""The protocols on the twin board (the board path: spikes only, parameter sets one by one).

The twin simulates a chip with its own hidden mismatch behind the fake samna; here the
protocols must run unchanged on it and give the spike features, no trace features.
"""

from __future__ import annotations

import numpy as np
import pytest

from dynacal import get_backend
from dynacal.protocols import get_protocol

pytestmark = pytest.mark.hardware
SETTINGS = {"fi": {"levels": (3e-10, 1e-9, 3e-9, 1e-8), "duration": 0.3, "settle": 0.05},
            "refractory": {},
            "kernels": {},
            "adaptation": {},  # 1 s of DC, no input spikes: the run must last the whole second
            "heldout": {"duration": 0.3}}


@pytest.fixture(scope="module")
def twin():
    return get_backend("twin")


@pytest.mark.parametrize("name", list(SETTINGS))
def test_protocol_runs_on_the_twin(twin, name):
    protocol = get_protocol(name, **SETTINGS[name])
    rec = protocol.run(twin, "core0:8")
    assert rec.backend == "twin" and rec.batch == protocol.n_conditions and not rec.traces
    f = protocol.features(rec)
    assert not any(k.startswith(("tau_", "amplitude_")) for k in f)
    if name == "fi":
        assert (np.diff(f["rate"], axis=-1) >= 0).all() and f["rate"][..., -1].min() > 50
    if name == "refractory":  # the twin's refractory period comes from its own bias DAC
        assert np.all((f["refractory"] > 1e-3) & (f["refractory"] < 20e-3))
    if name == "kernels":
        assert np.all(f["evoked_gaba_a"] < 0)
    if name == "adaptation":
        assert np.isfinite(f["steady_isi"]).all() and (f["ratio"] > 1).all()
    if name == "heldout":
        assert f["rate"].min() > 5
