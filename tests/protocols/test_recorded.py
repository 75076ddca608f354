"""The generic Recorded protocol: per-neuron features of every condition of any experiment."""

from __future__ import annotations

import numpy as np
import pytest

from dynacal import Experiment, Params, Recording, Stimulus, get_backend
from dynacal.errors import ParameterError
from dynacal.protocols import ORDER, PROTOCOLS, FICurve, Recorded, get_protocol

from ..conftest import single_neuron_experiment

DT = 1e-3


def _imported() -> Recording:
    """Lab data as it comes in: an experiment of 2 neurons under 2 DC levels, spikes as
    events with the set (condition) of each, no protocol of ours."""
    net = FICurve().experiment("core0:2").network
    exp = Experiment(net, Stimulus(0), DT, 100, "lab", conditions={"Isoma_const": [5e-10, 2e-9]})
    # set 0 (level 0): neuron 0 at steps 10, 30, 60; set 1 (level 1): neuron 0 at 5, 10, 20, 30; neuron 1 at 90
    return Recording.from_steps("imported", DT, 100, 2, 2, [0, 0, 0, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 1],
                                [10, 30, 60, 5, 10, 20, 30, 90], experiment=exp)


def test_features_of_an_imported_experiment():
    f = Recorded().features(_imported())
    assert all(v.shape == (1, 2, 2) for v in f.values())  # (B, N, L)
    assert f["spike_count"][0].tolist() == [[3, 4], [0, 1]]
    np.testing.assert_allclose(f["rate"][0], [[30.0, 40.0], [0.0, 10.0]])
    np.testing.assert_allclose(f["first_spike_latency"][0, 0], [10e-3, 5e-3])
    assert np.isnan(f["first_spike_latency"][0, 1, 0]) and f["first_spike_latency"][0, 1, 1] == pytest.approx(0.09)
    isi0, isi1 = np.array([20e-3, 30e-3]), np.array([5e-3, 10e-3, 10e-3])
    np.testing.assert_allclose(f["isi_mean"][0, 0], [isi0.mean(), isi1.mean()])
    np.testing.assert_allclose(f["isi_cv"][0, 0], [isi0.std() / isi0.mean(), isi1.std() / isi1.mean()])
    assert np.isnan(f["isi_mean"][0, 1]).all()  # fewer than 2 spikes
    # a window: from 15 ms on
    g = Recorded(start=0.015).features(_imported())
    assert g["spike_count"][0, 0].tolist() == [2, 2]
    np.testing.assert_allclose(g["first_spike_latency"][0, 0], [15e-3, 5e-3])


def test_candidates_times_conditions_and_traces():
    exp = single_neuron_experiment(n_steps=400)
    cond = Experiment(exp.network, exp.stimulus, exp.dt, exp.n_steps, conditions={"Isoma_const": [0.0, 5e-9]})
    protocol = Recorded(trace_names=("Isoma_mem", "Iampa"), every=2)
    p = Params.from_values(Isoma_dpi_tau=np.array([[4e-12], [6e-12]]))
    rec = protocol.run(get_backend("torch"), cond, p)
    assert rec.batch == 4 and rec.experiment.protocol["name"] == "recorded" and rec.trace_every == 2
    f = Recorded().features(rec)  # its own settings come back from the recording
    assert f["rate"].shape == (2, 1, 2) and f["Isoma_mem_peak"].shape == (2, 1, 2)
    counts = rec.spike_counts()  # set b * L + l
    assert f["spike_count"][1, 0, 1] == counts[3, 0] and f["spike_count"][0, 0, 0] == counts[0, 0]
    x = rec.traces["Isoma_mem"].numpy()
    np.testing.assert_allclose(f["Isoma_mem_mean"][1, 0, 0], x[:, 2, 0].mean(), rtol=1e-12)
    np.testing.assert_allclose(f["Isoma_mem_peak"][0, 0, 1], x[:, 1, 0].max(), rtol=1e-12)
    assert (f["spike_count"][:, :, 1] > f["spike_count"][:, :, 0]).all()  # the DC adds spikes


def test_any_recording_and_the_registry():
    # a recording of another protocol: generic features of its conditions
    fi = FICurve(levels=(3e-10, 2e-9), duration=0.05, settle=0.0)
    f = get_protocol("recorded").features(fi.run(get_backend("torch"), "core0:2"))
    assert f["rate"].shape == (1, 2, 2) and (f["rate"][..., 1] > 0).all()
    assert "recorded" in PROTOCOLS and "recorded" not in ORDER
    with pytest.raises(ParameterError, match="pass an Experiment"):
        Recorded().experiment("core0")
    with pytest.raises(ParameterError, match="start"):
        Recorded(start=0.2, stop=0.1)
    with pytest.raises(ParameterError, match="Isoma_mm"):
        Recorded(trace_names=("Isoma_mm",))
