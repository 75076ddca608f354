"""Synaptic kernels: fitted time constants and amplitudes against the model's values."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from dynacal import Params, get_backend
from dynacal.errors import ParameterError
from dynacal.protocols import SynapticKernels

from .conftest import mismatch, model_tau

N = 6
DT = 1e-4
#: synapse type -> (leak, capacitance, base weight, gain ratio) parameter names
NAMES = {"nmda": ("Inmda_tau", "Cnmda", "Inmda_w0", "alpha_nmda"),
         "ampa": ("Iampa_tau", "Campa", "Iampa_w0", "alpha_ampa"),
         "gaba_a": ("Igaba_a_tau", "Cgaba_a", "Igaba_a_w0", "alpha_gaba_a"),
         "gaba_b": ("Igaba_b_tau", "Cgaba_b", "Igaba_b_w0", "alpha_gaba_b")}
PROTOCOL = SynapticKernels()


@pytest.fixture(scope="module")
def mismatched():
    p = mismatch(N)
    rec = PROTOCOL.run(get_backend("torch"), f"core0:{N}", p)
    return p, rec, PROTOCOL.features(rec)


def test_time_constant_within_2_percent_at_the_defaults():
    p = Params.from_values()
    f = PROTOCOL.features(PROTOCOL.run(get_backend("torch"), "core0:2", p))
    for syn, (leak, cap, _, _) in NAMES.items():
        tau = model_tau(p, leak, cap)
        assert np.all(np.abs(f[f"tau_{syn}"] / tau - 1) < 0.02), syn


def test_time_constant_is_the_euler_decay_of_the_model(mismatched):
    p, _, f = mismatched
    for syn, (leak, cap, _, _) in NAMES.items():
        tau = model_tau(p, leak, cap)[0]
        # forward Euler decays by (1 - dt / tau) per step: the fitted continuous-time constant
        # tau_fit = -dt / ln(1 - dt / tau), so dt / (1 - exp(-dt / tau_fit)) is the model's tau
        np.testing.assert_allclose(DT / (1 - np.exp(-DT / f[f"tau_{syn}"][0])), tau, rtol=1e-6, err_msg=syn)
        assert np.all(np.abs(f[f"tau_{syn}"][0] / tau - 1) < 0.03), syn


def test_amplitude_is_the_jump(mismatched):
    p, _, f = mismatched
    for k, (syn, (_, _, w0, alpha)) in enumerate(NAMES.items()):
        jump = (getattr(p, w0) * PROTOCOL.weights[k] * getattr(p, alpha)).numpy()[0]
        # the current sits at the dark current I0 = 1 pA before the input: at most 1 pA off
        np.testing.assert_allclose(f[f"amplitude_{syn}"][0], jump, rtol=0, atol=1e-12, err_msg=syn)


def test_spike_features_show_excitation_and_inhibition():
    # against a regular baseline of about 60 Hz each input's count depends on the firing
    # phase, so excitation shows on average over repeats and neurons, inhibition in each
    protocol = dataclasses.replace(PROTOCOL, repeats=8)
    f = protocol.features(protocol.run(get_backend("torch"), f"core0:{N}", mismatch(N)))
    assert f["evoked_nmda"].mean() > 0.5 and f["evoked_ampa"].mean() > 0.25
    assert np.all(f["evoked_gaba_a"] < 0) and np.all(f["evoked_gaba_b"] < 0)
    assert np.nanmax(f["latency_nmda"]) < PROTOCOL.window
    assert np.isnan(f["latency_gaba_a"]).all()  # silenced for the whole window


class _SpikesOnly:
    """A backend that returns spikes only, as the board does."""

    name = "spikes-only"
    records_traces = False

    def run(self, experiment, params=None, **kwargs):
        assert not kwargs.get("record")
        return get_backend("torch").run(experiment, params)


def test_without_traces_only_spike_features(mismatched):
    p, _, f = mismatched
    g = PROTOCOL.features(PROTOCOL.run(_SpikesOnly(), f"core0:{N}", p))
    assert set(g) == {k for k in f if k.startswith(("latency_", "evoked_"))}
    for key in g:
        np.testing.assert_array_equal(g[key], f[key])


def test_inputs_are_isolated_and_on_the_sampling_grid():
    exp = PROTOCOL.experiment("core0:3")
    steps = exp.stimulus.steps
    assert np.all((steps + 1) % PROTOCOL.every == 0)
    assert np.all(np.diff(steps) * DT >= PROTOCOL.isolation - 1e-9)
    assert exp.stimulus.steps.size == PROTOCOL.repeats * 4
    with pytest.raises(ParameterError, match="isolation"):
        dataclasses.replace(PROTOCOL, isolation=0.01)


class _RefusesTraces:
    """A backend that does not say whether it records traces and refuses them (the board)."""

    name = "refuses-traces"

    def run(self, experiment, params=None, **kwargs):
        if kwargs.get("record"):
            raise ParameterError("the board measures spikes only; it cannot record traces")
        return get_backend("torch").run(experiment, params)


def test_a_backend_that_refuses_traces_is_run_for_spikes(mismatched):
    p, _, f = mismatched
    g = PROTOCOL.features(PROTOCOL.run(_RefusesTraces(), f"core0:{N}", p))
    assert set(g) == {k for k in f if k.startswith(("latency_", "evoked_"))}
    with pytest.raises(ParameterError, match="neurons"):  # other errors come back
        PROTOCOL.run(_RefusesTraces(), f"core0:{N}", Params.from_values(Iampa_w0=np.full(N + 1, 1e-10)))


class _Spy:
    """The torch backend, noting what each run is asked to record."""

    name = "spy"

    def __init__(self):
        self.asked = []

    def run(self, experiment, params=None, **kwargs):
        self.asked.append(tuple(kwargs.get("record", ())))
        return get_backend("torch").run(experiment, params, **kwargs)


def test_run_length_and_event_steps_of_the_callers_choosing():
    # AMPA only, three inputs at steps of our choosing in a run of our length, traced every step
    protocol = SynapticKernels(synapses=("ampa",), weights=(8,), every=1, events=((300, 1100, 2400),), n_steps=3000)
    exp = protocol.experiment(f"core0:{N}")
    assert exp.n_steps == 3000 and exp.stimulus.steps.tolist() == [300, 1100, 2400]
    spy, p = _Spy(), mismatch(N)
    rec = protocol.run(spy, f"core0:{N}", p)
    assert spy.asked == [("Iampa",)] and set(rec.traces) == {"Iampa"}  # only the trace it needs
    f = protocol.features(rec)
    assert set(f) == {"latency_ampa", "evoked_ampa", "amplitude_ampa", "tau_ampa"}
    tau = model_tau(p, "Iampa_tau", "Campa")[0]
    np.testing.assert_allclose(DT / (1 - np.exp(-DT / f["tau_ampa"][0])), tau, rtol=1e-6)
    jump = (p.Iampa_w0 * 8 * p.alpha_ampa).numpy()[0]
    np.testing.assert_allclose(f["amplitude_ampa"][0], jump, rtol=0, atol=1e-12)
    # the soma's trace on request
    soma = dataclasses.replace(protocol, record_soma=True)
    assert soma.traces() == ("Iampa", "Isoma_mem")
    assert set(soma.run(get_backend("torch"), "core0:1").traces) == {"Iampa", "Isoma_mem"}


def test_a_target_with_only_some_traces(mismatched):
    # e.g. lab data with the AMPA and GABA_B currents only: their trace features, and the
    # spike features of every type
    _, rec, f = mismatched
    some = dataclasses.replace(rec, traces={k: v for k, v in rec.traces.items() if k in ("Iampa", "Igaba_b")})
    g = SynapticKernels().features(some)
    traced = {k for k in g if k.startswith(("tau_", "amplitude_"))}
    assert traced == {"tau_ampa", "amplitude_ampa", "tau_gaba_b", "amplitude_gaba_b"}
    for key in g:
        np.testing.assert_array_equal(g[key], f[key], err_msg=key)


def test_events_are_checked():
    with pytest.raises(ParameterError, match="one increasing tuple"):
        SynapticKernels(synapses=("ampa",), weights=(8,), events=((500, 300),), every=1)
    with pytest.raises(ParameterError, match="k \\* every - 1"):
        SynapticKernels(synapses=("ampa",), weights=(8,), events=((500,),), n_steps=2000)
    with pytest.raises(ParameterError, match="not isolated"):
        SynapticKernels(synapses=("ampa",), weights=(8,), events=((500, 700),), every=1, n_steps=2000)
    with pytest.raises(ParameterError, match="n_steps"):
        SynapticKernels(synapses=("ampa",), weights=(8,), events=((500,),), every=1, n_steps=600)
