"""Protocol features agree between the torch simulator and the Brian2 reference.

The same network, parameters (a per-neuron mismatch) and protocol run on both backends;
spike features must be identical (both integrate the same Euler steps: identical spike
steps, issue 2) and trace features (kernel fits) equal within 1e-6 relative. Settings
are shortened to keep Brian2's numpy runtime (about 0.7 ms per step) to seconds.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("brian2")

from dynacal import get_backend  # noqa: E402
from dynacal.protocols import get_protocol  # noqa: E402

from .conftest import mismatch  # noqa: E402

pytestmark = pytest.mark.brian2
N = 3
SHORT = {
    "fi": {"levels": (3e-10, 6e-10, 2e-9, 8e-9), "duration": 0.12, "settle": 0.02},
    "refractory": {"duration": 0.05, "settle": 0.01},
    "adaptation": {"duration": 0.3, "steady": 0.1},
    "kernels": {"repeats": 1, "isolation": 0.07, "window": 0.02, "fit_span": 0.05},
    "rate_transfer": {"rates": (20.0, 50.0), "rates_by_type": (("gaba_a", (5.0, 10.0)),), "segment": 0.1,
                      "settle": 0.02, "gap": 0.03, "baseline": 0.1},
    "heldout": {"duration": 0.2},
}
TRACE_FEATURES = ("amplitude_", "tau_")


@pytest.mark.parametrize("name", list(SHORT))
def test_features_agree(name):
    protocol = get_protocol(name, **SHORT[name])
    p = mismatch(N, seed=4)
    ref = protocol.features(protocol.run(get_backend("brian2"), f"core0:{N}", p))
    got = protocol.features(protocol.run(get_backend("torch"), f"core0:{N}", p))
    assert set(ref) == set(got)
    for key in ref:
        if key.startswith(TRACE_FEATURES):
            np.testing.assert_allclose(got[key], ref[key], rtol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(got[key], ref[key], err_msg=key)
    spiking = [v for k, v in ref.items() if not k.startswith(TRACE_FEATURES)]
    assert any(np.nanmax(np.abs(v)) > 0 for v in spiking)  # not a comparison of empty runs
