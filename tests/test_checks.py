"""Issue 13 items 3 and 4: every public argument checked where it enters, files checked on load.

Each case of the issue's probes is here: the bad value gets one of dynacal's errors naming
the argument and the value, and the advice given is accepted.
"""

import json

import h5py
import numpy as np
import pytest
import torch

from dynacal.backends import get_backend
from dynacal.chip import Chip
from dynacal.errors import NetworkError, ParameterError, RecordingError
from dynacal.experiment import Experiment
from dynacal.params import Params
from dynacal.recording import Recording
from dynacal.stimulus import Stimulus, poisson, regular
from dynacal.units import parse_quantity


def _pathway(n_targets=3, n_inputs=2):
    chip = Chip()
    syn = chip.add_connection(chip.add_inputs(n_inputs), chip.get_neurons(n_targets), "AMPA")
    return chip, syn


# --- item 3: the chip API ---------------------------------------------------------------

def test_negative_neuron_count_is_refused_and_ids_stay_valid():
    chip = Chip()
    with pytest.raises(NetworkError, match=r"get_neurons n = -5 must be >= 0"):
        chip.get_neurons(-5)
    chip.get_neurons(256)  # the core is still whole after the refusal
    assert chip.network().neuron_id.tolist() == list(range(256))


@pytest.mark.parametrize("call, match", [
    (lambda c: c.get_neurons(2.5), r"get_neurons n = 2.5 must be a whole number"),
    (lambda c: c.get_neurons("3"), r"get_neurons n = '3' must be a whole number"),
    (lambda c: c.get_neurons(True), r"get_neurons n = True"),
    (lambda c: c.get_neurons(2, 1.7), r"core = 1.7 must be a whole number.*Core_0"),
    (lambda c: c.get_neurons(2, (0, 4)), r"core \(chip, core\): core = 4 must be in 0..3"),
    (lambda c: c.add_inputs(-3), r"add_inputs n = -3 must be in 0..1048576"),
    (lambda c: c.add_inputs(1.5), r"add_inputs n = 1.5 must be a whole number"),
])
def test_counts_and_cores_are_whole_numbers_in_range(call, match):
    with pytest.raises(NetworkError, match=match):
        call(Chip())


@pytest.mark.parametrize("n_chips, match", [(2.5, "n_chips = 2.5 must be a whole number"),
                                            (0, "n_chips = 0 must be in 1..1024"), ("2", "n_chips = '2'")])
def test_chip_count_is_checked(n_chips, match):
    with pytest.raises(NetworkError, match=match):
        Chip(n_chips=n_chips)


def test_numpy_scalars_are_accepted_like_python_numbers():
    chip = Chip(n_chips=np.int64(2))
    group = chip.get_neurons(np.int32(3), np.int64(5))
    inputs = chip.add_inputs(np.uint8(2))
    syn = chip.add_connection(inputs, group)
    chip.connect(syn, True, p=np.float64(1.0), seed=np.int64(3))
    syn.weight = np.int64(2)
    net = chip.network()
    assert net.core.tolist() == [5, 5, 5] and net.inputs.weight.tolist() == [2] * 6
    assert chip.get_neurons(2.0).indices.tolist() == [3, 4]  # an integral float is a whole number


@pytest.mark.parametrize("p", [2, -0.1, float("nan"), "0.5", True])
def test_connection_probability_is_in_0_1(p):
    chip, syn = _pathway()
    with pytest.raises(NetworkError, match=rf"connect p = {p!r}.*number in 0..1"):
        chip.connect(syn, True, p=p)


def test_connect_indices_must_be_whole_and_in_range():
    chip, syn = _pathway()
    with pytest.raises(NetworkError, match=r"connect i must hold whole-number indices"):
        chip.connect(syn, i=[0.5], j=[1])
    with pytest.raises(NetworkError, match=r"connect j holds index 3, out of range 0..2"):
        chip.connect(syn, i=[0], j=[3])
    with pytest.raises(NetworkError, match=r"both i= and j="):
        chip.connect(syn, i=[0])
    chip.connect(syn, i=np.array([0.0, 1.0]), j=[2, 1])  # integral floats are indices
    assert syn.i.tolist() == [0, 1] and syn.j.tolist() == [2, 1]


def test_weight_before_connect_is_refused_not_dropped():
    chip, syn = _pathway()
    with pytest.raises(NetworkError, match=r"no connections yet.*connect"):
        syn.weight = 3
    chip.connect(syn, True)
    syn.weight = 3
    assert chip.network().inputs.weight.tolist() == [3] * 6


@pytest.mark.parametrize("weight, match", [(1e30, r"weight 1e\+30 is not allowed"), ("5", r"weight = '5' is not a number"),
                                           (-1, "weight -1 is not allowed"), (2.5, "weight 2.5 is not allowed"),
                                           ([1, 2], "weight has shape \\(2,\\) for 6 connections")])
def test_bad_weights_name_the_value(weight, match):
    chip, syn = _pathway()
    chip.connect(syn, True)
    with pytest.raises(NetworkError, match=match):
        syn.weight = weight
    assert syn.weight.tolist() == [1] * 6  # unchanged by the refused value


def test_float_index_into_a_group_is_a_network_error():
    group = Chip().get_neurons(4)
    with pytest.raises(NetworkError, match=r"NeuronGroup\[2.5\]"):
        group[2.5]
    assert group[np.int64(1)].indices.tolist() == [1]


def test_set_bias_needs_a_mapping():
    with pytest.raises(ParameterError, match=r"values = \['Isoma_th'\] is a list; give a mapping"):
        Chip().set_bias(["Isoma_th"])


# --- item 3: parameters and units -------------------------------------------------------

@pytest.mark.parametrize("values, match", [({"Isoma_th": []}, r"Isoma_th = \[\] is empty"),
                                           ({"Isoma_th": None}, r"Isoma_th = None"),
                                           ({"Isoma_th": {"a": 1}}, r"Isoma_th = \{'a': 1\} is not a number")])
def test_empty_none_and_containers_are_parameter_errors(values, match):
    with pytest.raises(ParameterError, match=match):
        Params.from_values(values)


def test_values_that_are_not_a_mapping_are_refused():
    with pytest.raises(ParameterError, match=r"values = \[1, 2\] is a list; give a mapping"):
        Params.from_values([1, 2])


@pytest.mark.parametrize("backend", ["torch", "brian2"])  # refused before Brian2 builds anything
def test_a_dict_passed_as_params_to_a_backend_is_a_parameter_error(backend):
    pytest.importorskip("brian2") if backend == "brian2" else None
    chip = Chip()
    chip.get_neurons(1)
    exp = Experiment(chip.network(), Stimulus(0), 1e-4, 10)
    with pytest.raises(ParameterError, match=r"params is a dict; give a Params.*network.params"):
        get_backend(backend).run(exp, {"Isoma_th": 1e-9})


def test_a_string_with_the_wrong_prefix_is_not_told_pa_given_as_a():
    with pytest.raises(ParameterError) as info:
        Params.from_values(Isoma_th="5 mA")
    message = str(info.value)
    assert "'5 mA'" in message and "pA given as A" not in message and "prefix" in message
    with pytest.raises(ParameterError, match="pA given as A"):  # a bare 5 is the unit mistake
        Params.from_values(Isoma_th=5.0)


def test_the_advice_for_dt_is_accepted_and_exact():
    chip = Chip()
    chip.get_neurons(1)
    chip.add_inputs(1)
    net = chip.network()
    with pytest.raises(ParameterError, match=r'"100 us"') as info:
        Experiment(net, Stimulus(1), 1, 10)
    assert "1e-4" in str(info.value)
    assert parse_quantity("100 us", "s") == 1e-4 and parse_quantity("0.1 ms", "s") == 1e-4
    stim = poisson(1, 200, 100, 1e-4, seed=2)
    text, number = Experiment(net, stim, "100 us", 100), Experiment(net, stim, 1e-4, 100)
    assert text.dt == 1e-4 and text.content_hash() == number.content_hash()
    assert Experiment(net, stim, np.float64(1e-4), np.int64(100)).content_hash() == number.content_hash()
    assert Experiment.from_duration(net, stim, "100 us", "10 ms").n_steps == 100


@pytest.mark.parametrize("text, unit, value", [("5 pA", "A", 5e-12), ("3 nA", "A", 3e-9), ("1.5 nA", "A", 1.5e-9),
                                               ("25 mV", "V", 25e-3), ("2 pF", "F", 2e-12), ("80 Hz", "Hz", 80.0)])
def test_prefixed_values_are_the_nearest_float(text, unit, value):
    assert parse_quantity(text, unit) == value


# --- item 3: stimulus and generators ----------------------------------------------------

@pytest.mark.parametrize("call, match", [
    (lambda: poisson(1, 10, -1, 1e-4), r"n_steps = -1 must be >= 0"),
    (lambda: poisson(1, float("nan"), 10, 1e-4), r"rate_hz = nan Hz must be finite"),
    (lambda: poisson(1, [10, 20], 10, 1e-4), r"rate_hz = \[10, 20\] must be a rate in Hz"),
    (lambda: poisson(2.5, 10, 10, 1e-4), r"n_sources = 2.5 must be a whole number"),
    (lambda: poisson(1, 10, 10, -1e-4), r"dt = -0.0001 must be the time step in s"),
    (lambda: poisson(1, 10, 10, 1e-4, seed=-1), r"seed = -1"),
    (lambda: poisson(1, 10, 10, 1e-4, start_step=5, stop_step=2), r"stop_step = 2 must be in 5..10"),
    (lambda: regular(1, float("nan"), 10, 1e-4), r"rate_hz = nan must be a number in Hz"),
    (lambda: regular(1, 10, 10, 1e-4, first_step=-2), r"first_step = -2 must be >= 0"),
    (lambda: Stimulus(2, [1.5], [0]), r"steps holds 1.5; give whole numbers"),
    (lambda: Stimulus(2.5), r"n_sources = 2.5 must be a whole number"),
    (lambda: Stimulus(0, dc=[]), r"dc must be finite, non-negative"),
])
def test_generator_and_stimulus_arguments(call, match):
    with pytest.raises(ParameterError, match=match):
        call()


def test_stimulus_events_past_the_end_are_refused():
    chip = Chip()
    chip.get_neurons(1)
    chip.add_inputs(1)
    stim = Stimulus(1, [5, 50, 99], [0, 0, 0])
    with pytest.raises(ParameterError, match=r"1 input spikes at or after step 60.*n_steps=60.*100 steps long"):
        Experiment(chip.network(), stim, 1e-4, 60)
    assert Experiment(chip.network(), stim, 1e-4, 100).stimulus.steps.tolist() == [5, 50, 99]


# --- item 4: files checked on load ------------------------------------------------------

def _small_recording(tmp_path, **overrides):
    chip, syn = _pathway()
    chip.connect(syn, True)
    exp = Experiment(chip.network(), poisson(2, 300, 100, 1e-4, seed=1), 1e-4, 100, "tiny")
    fields = dict(traces={"Isoma_mem": torch.full((50, 2, 2), 1e-12)}, trace_neurons=np.array([0, 2]), trace_every=2,
                  metadata={"experiment": exp.summary()}, experiment=exp, unstable=np.zeros((2, 3), bool))
    fields.update(overrides)
    rec = Recording.from_steps("torch", 1e-4, 100, 2, 3, [0, 1, 1], [0, 2, 1], [5, 7, 90], **fields)
    return rec.save(tmp_path / "rec.h5")


def _edit(path, change):
    with h5py.File(path, "r+") as f:
        change(f)
    return path


def _replace(f, name, data):
    del f[name]
    f[name] = data


@pytest.mark.parametrize("change, match", [
    (lambda f: _replace(f, "traces/Isoma_mem", np.zeros((50, 2, 3))), r"/traces/Isoma_mem has shape \(50, 2, 3\)"),
    (lambda f: _replace(f, "traces/Isoma_mem", np.full((50, 2, 2), np.nan)), r"/traces/Isoma_mem holds non-finite"),
    (lambda f: _replace(f, "spikes/step", np.array([5, 7, 100])), r"/spikes/step holds 5..100, outside 0..99"),
    (lambda f: _replace(f, "spikes/neuron", np.array([0, 2, -1])), r"/spikes/neuron holds -1..2"),
    (lambda f: _replace(f, "spikes/time", np.array([5e-4, np.inf, 9e-3])), r"/spikes/time holds non-finite"),
    (lambda f: _replace(f, "spikes/step", np.array([5.0, 7.0, 9.0])), r"/spikes/step has dtype float64"),
    (lambda f: f.attrs.__setitem__("dt", -1e-4), r"dt = -0.0001 s is not a time step"),
    (lambda f: f.attrs.__setitem__("dt", np.nan), r"dt = nan s is not a time step"),
    (lambda f: f.attrs.__setitem__("n_steps", 2.5), r"attribute n_steps = 2.5 is not an integer"),
    (lambda f: f.attrs.__setitem__("metadata", "[1]"), r"metadata is a JSON list"),
    (lambda f: f["traces"].attrs.__setitem__("neurons", np.array([0, 7])), r"/traces neurons .* not indices in 0..2"),
    (lambda f: f["experiment/network"].attrs.__setitem__("n_inputs", 5), r"experiment"),
    (lambda f: f.attrs.__setitem__("metadata", json.dumps({"experiment": {"hash": "0" * 64}})), r"/experiment has content hash"),
    (lambda f: _replace(f, "experiment/stimulus/steps", np.array([[1, 2]])), r"experiment"),
    (lambda f: f.__delitem__("traces"), r"no /traces group"),
    (lambda f: f.__delitem__("spikes"), r"holds an experiment, not a recording"),
])
def test_damaged_recording_parts_are_named(tmp_path, change, match):
    path = _edit(_small_recording(tmp_path), change)
    with pytest.raises(RecordingError, match=match):
        Recording.load(path)


def test_non_finite_traces_of_unstable_runs_still_load(tmp_path):
    unstable = np.zeros((2, 3), bool)
    unstable[1, 2] = True
    trace = torch.full((50, 2, 2), 1e-12)
    trace[10:, 1, 1] = float("nan")  # set 1, recorded neuron 2
    rec = Recording.load(_small_recording(tmp_path, traces={"Isoma_mem": trace}, unstable=unstable))
    assert torch.isnan(rec.traces["Isoma_mem"][:, 1, 1]).sum() == 40


@pytest.mark.parametrize("content", [b"", b"not hdf5 at all\n" * 10, b"\x89HDF\r\n\x1a\n" + bytes(200)])
def test_foreign_files_are_recording_errors(tmp_path, content):
    path = tmp_path / "foreign.h5"
    path.write_bytes(content)
    for load in (Recording.load, Experiment.load):
        with pytest.raises(RecordingError):
            load(path)


def test_an_hdf5_file_of_someone_else_is_named(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(3)
        f.attrs["schema_version"] = 2
    with pytest.raises(RecordingError, match="no /spikes group"):
        Recording.load(path)
    with pytest.raises(RecordingError, match="holds no experiment"):
        Experiment.load(path)


def test_experiment_from_a_malformed_dict_is_a_recording_error():
    chip = Chip()
    chip.get_neurons(1)
    good = Experiment(chip.network(), Stimulus(0), 1e-4, 10).to_dict()
    for bad in ([], {**good, "network": []}, {**good, "stimulus": {"n_sources": 0, "steps": "x", "sources": []}},
                {**good, "n_steps": "ten"}):
        with pytest.raises(RecordingError):
            Experiment.from_dict(bad)


# --- bounds that keep a typo from exhausting memory, and the finds of tests/test_properties.py

@pytest.mark.parametrize("call, match", [
    (lambda: Chip(n_chips=10 ** 9), r"n_chips = 1000000000 must be in 1..1024"),
    (lambda: Chip().add_inputs(1e12), r"add_inputs n = 1000000000000 must be in 0..1048576"),
    (lambda: poisson(1024, 10, 10 ** 12, 1e-4), r"source-steps exceed"),
    (lambda: regular(1024, 1e4, 10 ** 7, 1e-4), r"exceed 2.68e\+08"),
    (lambda: Stimulus(2, [1e300], [0]), r"steps holds 1e\+300; give whole numbers"),
    (lambda: poisson(0, 1e9, 10, 1e-4), r"rate_hz = 1e\+09 Hz must be finite"),  # checked even for 0 sources
])
def test_sizes_and_values_checked_before_any_work(call, match):
    with pytest.raises((NetworkError, ParameterError), match=match):
        call()


def test_poisson_drawn_in_blocks_is_the_same_train(monkeypatch):
    import dynacal.stimulus as stimulus
    whole_draw = poisson(7, 300, 3000, 1e-4, seed=4, start_step=10, stop_step=2500)
    monkeypatch.setattr(stimulus, "_BLOCK", 50)  # 7 steps per block
    blocks = poisson(7, 300, 3000, 1e-4, seed=4, start_step=10, stop_step=2500)
    rng = np.random.default_rng(4)
    mask = rng.random((3000, 7)) < 300 * 1e-4  # the documented draw: spike if U < rate * dt
    mask[:10] = mask[2500:] = False
    steps, sources = np.nonzero(mask)
    for s in (whole_draw, blocks):
        assert s.steps.tolist() == steps.tolist() and s.sources.tolist() == sources.tolist()


def test_network_params_candidates_are_checked():
    chip = Chip()
    chip.get_neurons(2, "Core_0")
    net = chip.network()
    with pytest.raises(ParameterError, match=r"unknown parameter '5'"):
        net.params({5: 1})
    with pytest.raises(ParameterError, match=r"'5 mA' is 5 mA, far outside.*prefix"):
        net.params({"Isoma_th": "5 mA"})
    with pytest.raises(ParameterError, match=r"Isoma_th = \[\] is empty"):
        net.params({"Isoma_th": {0: []}})
