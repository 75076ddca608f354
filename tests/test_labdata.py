"""Lab data in: ``Recording.from_events`` and the plain ``.npz`` format of ``dynacal import``.

The acceptance test runs the Brian2 reference on the seed network (the shape the other
Brian2 tests use, so its build cache is hit), writes what a lab would have (input and output
events, the membrane trace) in the documented format, imports it with ``dynacal import``
and checks the same experiment, spikes and features as the direct recording.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from dynacal import Recording, RecordingError, get_backend
from dynacal.cli import main
from dynacal.seed import seed_experiment
from dynacal.labformat import read_plain
from dynacal.metrics import isi_statistics

from .conftest import single_neuron_experiment

SEED_CONNECTIONS = [{"source": k, "target": 0, "synapse": s, "weight": w}
                    for k, (s, w) in enumerate((("NMDA", 10), ("AMPA", 5), ("GABA_A", 1), ("GABA_B", 2)))]


def _description(exp, **extra):
    """The seed network as a lab would describe it: human units, one neuron on Core_1."""
    desc = {"name": "seed", "dt": "100 us", "duration": f"{exp.n_steps * 0.1:g} ms", "neurons": {"Core_1": 1},
            "n_inputs": 4, "input_connections": [dict(c) for c in SEED_CONNECTIONS],
            "biases": {"Core_1": {"Isoma_th": "2 nA", "Isoma_pfb_th": "1000 pA"}}, "backend": "brian2-notebook"}
    desc.update(extra)
    return desc


def _write(path, exp, rec, desc=None, **override):
    """The plain file of ``rec``: input events, output spikes and Isoma_mem as (sets, R, T)."""
    arrays = {"experiment": json.dumps(desc or _description(exp)), "input_source": exp.stimulus.sources,
              "input_time": exp.stimulus.steps * exp.dt, "spike_neuron": rec.spike_neuron,
              "spike_time": rec.spike_time, "spike_set": rec.spike_batch}
    if rec.traces:
        arrays["trace_Isoma_mem"] = rec.traces["Isoma_mem"].numpy().transpose(1, 2, 0)
        arrays["trace_neurons"] = rec.trace_neurons
    arrays.update(override)
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    return path


def _same(got: Recording, direct: Recording) -> None:
    for key in ("spike_batch", "spike_neuron", "spike_step"):
        np.testing.assert_array_equal(getattr(got, key), getattr(direct, key))
    np.testing.assert_array_equal(got.spike_counts(), direct.spike_counts())
    for key, value in isi_statistics(direct).items():
        np.testing.assert_array_equal(isi_statistics(got)[key], value)
    for name, value in direct.traces.items():
        np.testing.assert_array_equal(got.traces[name].numpy(), value.numpy())


@pytest.fixture(scope="module")
def brian2_seed():
    pytest.importorskip("brian2")
    exp = seed_experiment(seed=0)
    return exp, get_backend("brian2").run(exp, record=["Isoma_mem"])


@pytest.mark.brian2
def test_brian2_run_imported_from_the_plain_format_is_the_direct_recording(tmp_path, brian2_seed, capsys):
    exp, direct = brian2_seed
    assert direct.spike_step.size >= 3  # enough spikes for ISIs
    path = _write(tmp_path / "lab.npz", exp, direct)
    assert main(["import", str(path), "--out", str(tmp_path / "target")]) == 0
    assert "replay:" in capsys.readouterr().out
    got = Recording.load(tmp_path / "target" / "lab.h5")
    assert got.experiment.content_hash() == exp.content_hash()  # the JSON rebuilt the same experiment
    assert got.backend == "brian2-notebook"
    _same(got, direct)
    served = get_backend(f"replay:{tmp_path / 'target'}").run(exp, record=["Isoma_mem"])
    _same(served, direct)


def test_conditions_and_sets_round_trip_through_the_plain_format(tmp_path):
    levels = [1e-10, 5e-9]
    base = seed_experiment(seed=1, duration=0.05)
    exp = dataclasses.replace(base, conditions={"Isoma_const": levels})
    direct = get_backend("torch").run(exp, record=["Isoma_mem"])
    assert direct.batch == 2 and direct.spike_counts()[1, 0] > direct.spike_counts()[0, 0]
    desc = _description(exp, conditions={"Isoma_const": ["100 pA", "5 nA"]})
    got = read_plain(_write(tmp_path / "dc.npz", exp, direct, desc))
    assert got.experiment.content_hash() == exp.content_hash()
    _same(got, direct)


def test_explicit_neuron_ids_and_per_neuron_values(tmp_path):
    exp = seed_experiment(seed=0, duration=0.02)
    rec = get_backend("torch").run(exp)
    desc = _description(exp, neurons=[[0, 1, 17]], neuron_values={"Isoma_dpi_tau": ["5 pA"]})
    got = read_plain(_write(tmp_path / "ids.npz", exp, rec, desc))
    assert got.experiment.network.neuron_id.tolist() == [17]
    assert got.experiment.network.neuron_values["Isoma_dpi_tau"].tolist() == [5e-12]


def test_times_are_rounded_to_steps_as_the_board_backend_does():
    exp = single_neuron_experiment(n_steps=100)
    times = np.array([0.0, 3e-4, 7.99e-4, 1.04e-3])
    rec = Recording.from_events(exp, neuron=np.zeros(4, int), time=times)
    board = Recording.from_times("board", exp.dt, exp.n_steps, 1, 1, np.zeros(4, int), np.zeros(4, int), times)
    np.testing.assert_array_equal(rec.spike_step, board.spike_step)
    np.testing.assert_array_equal(rec.spike_step, [0, 3, 7, 10])
    np.testing.assert_array_equal(rec.spike_time, times)
    assert rec.backend == "imported" and rec.metadata["experiment"]["hash"] == exp.content_hash()


def test_conditions_go_into_the_experiment_and_fix_the_number_of_sets():
    exp = single_neuron_experiment(n_steps=50)
    rec = Recording.from_events(exp, neuron=[0, 0, 0], step=[2, 9, 5], batch=[0, 0, 1], n_sets=2,
                                conditions={"Isoma_const": ["50 pA", 1e-10]})
    assert rec.n_conditions == 2
    np.testing.assert_array_equal(rec.experiment.conditions["Isoma_const"], [5e-11, 1e-10])
    np.testing.assert_array_equal(rec.spike_counts(), [[2], [1]])
    with pytest.raises(RecordingError, match="n_sets = 1 but the experiment has 2"):
        Recording.from_events(exp, neuron=[0], step=[1], conditions={"Isoma_const": [1e-11, 2e-11]})


def _trace(value, shape=(1, 1, 100)):
    return {"traces": {"Isoma_mem": np.full(shape, value)}, "trace_neurons": [0]}


@pytest.mark.parametrize("kwargs, message", [
    (dict(neuron=[0, 1], step=[1, 2]), "neuron = 1 is out of range"),
    (dict(neuron=[0], step=[1], batch=[1]), "batch = 1 is out of range"),
    (dict(neuron=[0, 0], step=[5, 2]), "step: the events of set 0 are not sorted"),
    (dict(neuron=[0, 0], time=[5e-4, 2e-4]), "time: the events of set 0 are not sorted"),
    (dict(neuron=[0, 0], step=[3, 3]), "step: neuron 0 of set 0 spikes twice in step 3"),
    (dict(neuron=[0, 0], time=[3e-4, 3.5e-4]), "time: neuron 0 of set 0 spikes twice in step 3"),
    (dict(neuron=[0], time=[0.02]), "time: a spike at 20 ms .* past the end"),
    (dict(neuron=[0], step=[100]), "step: a spike .* past the end"),
    (dict(neuron=[0], step=[1.5]), "step = 1.5 is not an integer"),
    (dict(neuron=[0], step=[1], time=[1e-4]), "exactly one of them"),
    (dict(neuron=[0], step=[1], **_trace(2.0)), r"traces\['Isoma_mem'\] .* looks like pA"),
    (dict(neuron=[0], step=[1], **_trace(2e-24)), r"traces\['Isoma_mem'\] .*multiply by 1e12"),
    (dict(neuron=[0], step=[1], **_trace(2e-12, (1, 100))), r"traces\['Isoma_mem'\] has shape \(1, 100\)"),
    (dict(neuron=[0], step=[1], **_trace(2e-12, (1, 1, 99))), r"traces\['Isoma_mem'\] has shape"),
    (dict(neuron=[0], step=[1], traces={"Imem": np.full((1, 1, 100), 2e-12)}), r"traces\['Imem'\] is not a state"),
])
def test_bad_events_are_refused_naming_the_field(kwargs, message):
    exp = single_neuron_experiment(n_steps=100)
    with pytest.raises(RecordingError, match=message):
        Recording.from_events(exp, **kwargs)


@pytest.fixture(scope="module")
def torch_seed():
    exp = seed_experiment(seed=0, duration=0.02)
    return exp, get_backend("torch").run(exp, record=["Isoma_mem"])


@pytest.mark.parametrize("edit, override, message", [
    (lambda d: d["input_connections"][0].update(synapse="AMPX"), {}, "input_connections: .*AMPX"),
    (lambda d: d["input_connections"][0].update(weight=70), {}, r"network \(chip limits\): .*fan-in 78"),
    (lambda d: d.update(dc="5 A"), {}, "dc: .*looks like pA"),
    (lambda d: d.update(conditions={"Isoma_const": ["1 pA", "2 pA"]}), {}, r"spikes: traces\['Isoma_mem'\] has shape \(1, 1, 200\); expected .* = \(2, 1, 200\)"),
    (lambda d: d["biases"].update(Core_9={}), {}, "biases: .*Core_9"),
    (lambda d: d["biases"]["Core_1"].update(Isoma_th="2 nV"), {}, "biases: .*Isoma_th"),
    (lambda d: d.update(neurons=[[0, 1, 300]]), {}, "neurons: .*neuron id"),
    (lambda d: d.update(neurons={"Core_1": 300}), {}, "neurons: .*free neurons"),
    (lambda d: d.update(duration="1 ms"), {}, "input events: an input spike at step .* outside"),
    (lambda d: d.pop("dt"), {}, r"lacks \['dt'\]"),
    (lambda d: None, {"trace_Isoma_mem": "pA"}, r"traces\['Isoma_mem'\] .* looks like pA"),
    (lambda d: None, {"spike_neuron": "+3"}, "spikes: neuron = 3 is out of range"),
    (lambda d: None, {"input_source": "+4"}, "input events: .*out of range"),
    (lambda d: None, {"speed": np.array(1)}, r"unknown entries \['speed'\]"),
    (lambda d: None, {"experiment": "{not json"}, "experiment is malformed"),
])
def test_bad_plain_files_are_refused_naming_the_field(tmp_path, torch_seed, edit, override, message, capsys):
    exp, rec = torch_seed
    desc = _description(exp)
    edit(desc)
    if override.get("trace_Isoma_mem") == "pA":
        override = {"trace_Isoma_mem": rec.traces["Isoma_mem"].numpy().transpose(1, 2, 0) * 1e12}
    if override.get("spike_neuron") == "+3":
        override = {"spike_neuron": rec.spike_neuron + 3}
    if override.get("input_source") == "+4":
        override = {"input_source": exp.stimulus.sources + 4}
    path = _write(tmp_path / "bad.npz", exp, rec, desc, **override)
    with pytest.raises(RecordingError, match=message):
        read_plain(path)
    assert main(["import", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dynacal import: error: ") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_not_an_npz_is_refused(tmp_path, capsys):
    (tmp_path / "x.npz").write_text("hello")
    assert main(["import", str(tmp_path / "x.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "not a readable .npz" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "missing.npz"), "--out", str(tmp_path / "o")]) == 2
    assert "does not exist" in capsys.readouterr().err
