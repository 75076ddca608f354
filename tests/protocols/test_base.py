"""Protocol experiments carry their conditions and settings; inputs through any wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dynacal import Recording, Stimulus, get_backend
from dynacal.chip import Connections
from dynacal.errors import ParameterError, RecordingError
from dynacal.protocols import FICurve, HeldOut, Protocol, RateTransfer, SynapticKernels, get_protocol, input_steps

from .conftest import mismatch

RECORDINGS = Path(__file__).resolve().parents[2] / "recordings"
FI = FICurve(levels=(3e-10, 6e-10, 2e-9), duration=0.08, settle=0.01, min_rate=20.0)


def test_features_are_read_with_the_settings_of_the_file(tmp_path):
    # a recording made with non-default settings, saved and loaded: the default protocol
    # (and get_protocol of the file) reads it with the settings it was made with
    rec = FI.run(get_backend("torch"), "core0:3", mismatch(3))
    direct = FI.features(rec)
    loaded = Recording.load(rec.save(tmp_path / "fi.h5"))
    assert loaded.experiment.protocol["settings"]["levels"] == list(FI.levels)
    assert get_protocol(loaded) == FI == FICurve.from_recording(loaded) == Protocol.from_recording(loaded)
    again = FICurve().features(loaded)
    assert set(again) == set(direct)
    for key in direct:
        np.testing.assert_array_equal(again[key], direct[key], err_msg=key)
    with pytest.raises(RecordingError, match="'fi', not 'kernels'"):
        SynapticKernels.from_recording(loaded)


def test_a_v1_recording_is_read_with_the_settings_in_its_metadata():
    rec = Recording.load(RECORDINGS / "refractory.h5")
    assert rec.experiment is None
    protocol = get_protocol(rec)
    assert protocol.name == "refractory" and protocol.levels == tuple(rec.metadata["protocol"]["settings"]["levels"])
    f = get_protocol("refractory", duration=0.05).features(rec)  # other settings: the file's win
    assert f["isi"].shape == (1, 256, 2) and np.isfinite(f["refractory"]).all()
    # in memory too: a recording without experiment, its settings in the metadata
    made = FI.run(get_backend("torch"), "core0:2")
    made.experiment = None
    np.testing.assert_array_equal(FICurve().features(made)["rate"], FI.features(FI.run(get_backend("torch"),
                                                                                      "core0:2"))["rate"])


def test_unknown_settings_are_refused():
    with pytest.raises(RecordingError, match="no settings \\['spin'\\]"):
        get_protocol({"name": "fi", "settings": {"spin": 1}})
    with pytest.raises(ParameterError, match="Did you mean 'fi'"):
        get_protocol({"name": "fii", "settings": {}})
    assert get_protocol({"name": "fi", "settings": {"levels": [1e-10, 2e-10]}}, duration=0.2).duration == 0.2


def test_one_to_one_wiring_delivers_the_same_inputs():
    kernels = SynapticKernels(repeats=1, isolation=0.07)
    shared, own = kernels.experiment("core0:3"), kernels.experiment("core0:3", wiring="one_to_one")
    assert shared.network.n_inputs == 4 and own.network.n_inputs == 4 * 3
    assert np.bincount(own.network.inputs.pre).tolist() == [1] * 12  # one source per neuron and type
    for t in range(4):
        np.testing.assert_array_equal(input_steps(own, t), input_steps(shared, t))
    backend, p = get_backend("torch"), mismatch(3)
    a = kernels.features(kernels.run(backend, "core0:3", p))
    b = kernels.features(kernels.run(backend, "core0:3", p, wiring="one_to_one"))
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)


def test_rate_transfer_one_to_one_gives_the_same_rates():
    protocol = RateTransfer(rates=(20.0, 50.0), rates_by_type=(("gaba_a", (5.0, 10.0)),), segment=0.1, settle=0.02,
                            gap=0.03, baseline=0.1)
    backend = get_backend("torch")
    a = protocol.features(protocol.run(backend, "core0:2"))
    b = protocol.features(protocol.run(backend, "core0:2", wiring="one_to_one"))
    for key in a:
        np.testing.assert_array_equal(b[key], a[key], err_msg=key)


def test_any_wiring_with_an_explicit_stimulus():
    # neuron 0 gets its AMPA input from source 0, neuron 1 from source 1 one step later:
    # the kernel features follow the inputs each neuron actually receives
    kernels = SynapticKernels(synapses=("ampa",), weights=(8,), every=1, events=((499, 1499),), n_steps=2500)
    conns = Connections(np.array([0, 1]), np.array([0, 1]), np.array([1, 1]), np.array([8, 8]))
    stim = Stimulus(2, [499, 500, 1499, 1500], [0, 1, 0, 1])
    exp = kernels.experiment("core0:2", stimulus=stim, wiring=conns)
    assert input_steps(exp, 1).tolist() == [[499, 1499], [500, 1500]]
    p = mismatch(2)
    f = kernels.features(kernels.run(get_backend("torch"), "core0:2", p, stimulus=stim, wiring=conns))
    g = kernels.features(kernels.run(get_backend("torch"), "core0:2", p))
    np.testing.assert_allclose(f["tau_ampa"], g["tau_ampa"], rtol=1e-9)
    np.testing.assert_allclose(f["amplitude_ampa"], g["amplitude_ampa"], rtol=1e-9)
    with pytest.raises(ParameterError, match="needs stimulus="):
        kernels.experiment("core0:2", wiring=conns)


def test_explicit_stimuli_replace_the_generated_ones():
    held = HeldOut(duration=0.05)
    own = held.experiment("core0:2")
    quiet = Stimulus(own.network.n_inputs)
    exp = held.experiment("core0:2", stimulus=quiet)
    assert exp.stimulus.steps.size == 0 and exp.network.inputs.pre.size == own.network.inputs.pre.size
    with pytest.raises(ParameterError, match="64"):
        held.experiment("core0:2", stimulus=Stimulus(3))
    with pytest.raises(ParameterError, match="wiring"):
        held.experiment("core0:2", wiring="star")
    # one stimulus per condition: separate runs
    runs = FI.experiment("core0:2", stimulus=[Stimulus(0)] * 3)
    assert len(runs.condition_stimuli) == 3
    with pytest.raises(ParameterError, match="3 separate conditions|one per condition"):
        FI.experiment("core0:2", stimulus=[Stimulus(0)] * 2)
