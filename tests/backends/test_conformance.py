"""One suite every backend passes: shapes, units, determinism, batch independence,
record names. A new backend joins by adding its name to BACKENDS.

The replay backend serves what the torch simulator recorded of this suite's experiment
(every trace, every step); it does not simulate, so the batch test does not apply to it.
"""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from dynacal import Params, Recording, get_backend
from dynacal.errors import ParameterError

from ..conftest import single_neuron_experiment

_brian2 = pytest.mark.skipif(importlib.util.find_spec("brian2") is None, reason="brian2 not installed")
BACKENDS = [
    pytest.param(("torch", {"engine": "eager"}), id="torch-eager"),
    pytest.param(("torch", {"engine": "fused"}), id="torch-fused"),
    pytest.param(("brian2", {"target": "runtime"}), id="brian2-runtime", marks=[pytest.mark.brian2, _brian2]),
    pytest.param(("replay", {}), id="replay"),
]


@pytest.fixture(params=BACKENDS)
def backend(request, tmp_path_factory):
    name, options = request.param
    if name == "replay":
        folder = tmp_path_factory.mktemp("conformance")
        exp = _experiment()
        get_backend("torch").run(exp, exp.network.params(), record="all").save(folder / "conformance.h5")
        return get_backend(f"replay:{folder}")
    return get_backend(name, **options)


def _experiment():
    return single_neuron_experiment(weights={"NMDA": 10, "AMPA": 8, "GABA_A": 1, "GABA_B": 2}, n_steps=400)


def test_shapes_units_and_record_names(backend):
    exp = _experiment()
    rec = backend.run(exp, record=["Isoma_mem", "Inmda"], record_every=4)
    assert rec.backend == backend.name and rec.dt == exp.dt and rec.n_steps == exp.n_steps
    assert set(rec.traces) == {"Isoma_mem", "Inmda"}
    assert rec.traces["Isoma_mem"].shape == (100, 1, 1)
    assert rec.spike_step.size > 0
    np.testing.assert_allclose(rec.spike_time, rec.spike_step * exp.dt)
    # SI units: the membrane current is in A (pA..uA), not in pA or nA numbers.
    mem = rec.traces["Isoma_mem"]
    assert 1e-13 < float(mem.min()) and float(mem.max()) < 1e-6
    with pytest.raises(ParameterError, match="Isoma_mem"):
        backend.run(exp, record=["Isoma_memm"])


def test_deterministic_and_does_not_mutate(backend):
    exp = _experiment()
    p = exp.network.params()
    before = {k: v.copy() for k, v in p.as_dict().items()}
    a = backend.run(exp, p, record=["Iampa"])
    b = backend.run(exp, p, record=["Iampa"])
    np.testing.assert_array_equal(a.spike_step, b.spike_step)
    torch.testing.assert_close(a.traces["Iampa"], b.traces["Iampa"], rtol=0, atol=0)
    for k, v in p.as_dict().items():
        np.testing.assert_array_equal(v, before[k])


def test_batch_sets_are_independent_chips(backend):
    if backend.name == "replay":
        pytest.skip("replay serves recordings; it does not simulate parameter sets")
    exp = _experiment()
    values = [60e-12, 100e-12, 160e-12]
    batched = backend.run(exp, Params.from_values(Iampa_w0=torch.tensor(values, dtype=torch.float64).reshape(3, 1)),
                          record=["Isoma_mem"])
    assert batched.batch == 3 and batched.traces["Isoma_mem"].shape == (400, 3, 1)
    counts = []
    for b, v in enumerate(values):
        single = backend.run(exp, Params.from_values(Iampa_w0=v), record=["Isoma_mem"])
        np.testing.assert_array_equal(batched.spike_steps(batch=b), single.spike_steps())
        torch.testing.assert_close(batched.traces["Isoma_mem"][:, b], single.traces["Isoma_mem"][:, 0],
                                   rtol=1e-12, atol=0)
        counts.append(single.spike_steps().size)
    # The sets really differ (a stronger AMPA weight changes the membrane trace).
    assert not torch.equal(batched.traces["Isoma_mem"][:, 0], batched.traces["Isoma_mem"][:, 2])


def test_wrong_parameter_shape_is_refused(backend):
    exp = _experiment()
    with pytest.raises(ParameterError, match="neurons"):
        backend.run(exp, Params.from_values(Isoma_dpi_tau=np.full(3, 5e-12)))


def test_recording_carries_the_experiment_and_run_health(backend, tmp_path):
    """Schema 2: every backend's recording holds its experiment; simulators the unstable mask."""
    exp = _experiment()
    rec = backend.run(exp, record=["Isoma_mem"])
    assert rec.experiment.content_hash() == exp.content_hash() and rec.n_conditions == 1
    if backend.name != "replay":
        assert rec.experiment is exp
    assert rec.unstable is not None and rec.unstable.shape == (rec.batch, 1) and not rec.unstable.any()
    back = Recording.load(rec.save(tmp_path / "r.h5"))
    assert back.experiment.content_hash() == exp.content_hash()
    np.testing.assert_array_equal(back.unstable, rec.unstable)
