"""The fused CPU engine (torch_sim.cpu) against the reference step function (eager engine).

Every regime of dpi-model.md runs through both engines on the same input; the spike
steps must be identical and the traces equal within rounding (float64: 1e-12 relative,
float32: 1e-5; the engines share the order of operations and differ only where ``exp``
rounds differently). Each test also checks that its regime is what it claims (spikes or
none, adaptation growing, inhibition acting), so that agreement is not trivially reached.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from dynacal import Chip, Experiment, Params, Stimulus, poisson, regular
from dynacal.backends.torch_sim import cpu as fused_cpu, eager
from dynacal.backends.base import resolve_params
from dynacal.backends.torch_sim import Request, TorchBackend
from dynacal.errors import ParameterError
from dynacal.params import STATE_NAMES

from ...conftest import single_neuron_experiment

RTOL = {torch.float64: 1e-12, torch.float32: 1e-5}
ATOL = 1e-24  # A; far below I0 = 1 pA, only for traces that sit at exactly 0


def _network(n, inputs=(), recurrent=(), n_sources=None, enforce_limits=False):
    """n neurons on Core_0; ``inputs``: (synapse type, weight) per source, each source to
    every neuron; ``recurrent``: (pre, post, type, weight) tuples."""
    chip = Chip(enforce_limits=enforce_limits)
    neurons = chip.get_neurons(n, "Core_0")
    src = chip.add_inputs(n_sources or len(inputs))
    for k, (syn_type, w) in enumerate(inputs):
        syn = chip.add_connection(src[k], neurons, synapse_type=syn_type)
        chip.connect(syn, True)
        syn.weight = w
    for pre, post, syn_type, w in recurrent:
        syn = chip.add_connection(neurons, neurons, synapse_type=syn_type)
        chip.connect(syn, i=[pre], j=[post])
        syn.weight = w
    return chip.network()


def _dc(stim, dc):
    return Stimulus(stim.n_sources, stim.steps, stim.sources, dc=np.asarray(dc, dtype=float))


def run_engines(experiment, params=None, *, dtype=torch.float64, names=STATE_NAMES, idx=None, every=1,
                substeps=1, chunk_steps=1000):
    """(fused, eager) outputs of both engines on the same resolved parameters."""
    p = resolve_params(experiment, params, dtype=dtype)
    n = experiment.network.n_neurons
    b = p.shape[0]
    idx = np.arange(n) if idx is None else np.asarray(idx, dtype=np.int64)
    request = Request(tuple(names), idx, every, substeps, chunk_steps)
    eager_out = eager.simulate(experiment, p, request)
    fused = fused_cpu.simulate(experiment, p.expand(b, n), request)
    return fused, eager_out


def assert_agree(fused, eager, dtype=torch.float64):
    """Identical spike events and stability flags; traces and peaks within rounding."""
    for got, want in zip(fused[:3], eager[:3]):
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, want)
    assert fused[3].keys() == eager[3].keys()
    for name, want in eager[3].items():
        got = fused[3][name]
        assert got.dtype == want.dtype and got.shape == want.shape, name
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=RTOL[dtype], atol=ATOL, err_msg=name)
    assert fused[4].dtype == torch.bool and torch.equal(fused[4], eager[4])
    np.testing.assert_allclose(fused[5].numpy(), eager[5].numpy(), rtol=RTOL[dtype], atol=ATOL)
    assert fused[6] is None


def n_spikes(out):
    return out[0].size


# --- regimes of dpi-model.md ---------------------------------------------------------------

def test_seed_experiment_spiking():
    fused, eager = run_engines(single_neuron_experiment(n_steps=700))
    assert n_spikes(eager) >= 3
    assert_agree(fused, eager)


def test_subthreshold():
    exp = single_neuron_experiment({"NMDA": 1, "AMPA": 1, "GABA_A": 1, "GABA_B": 1}, rate=60, n_steps=400)
    fused, eager = run_engines(exp)
    mem = eager[3]["Isoma_mem"]
    assert n_spikes(eager) == 0 and mem.max() > 2e-12 and mem.max() < 1e-9  # moved, never near threshold
    assert_agree(fused, eager)


def test_adaptation_dominated():
    exp = Experiment(_network(1), Stimulus(0, dc=[5e-9]), 1e-4, 500)
    fused, eager = run_engines(exp, Params.from_values(Isoma_ahp_w="10 pA"))
    isi = np.diff(eager[2])
    assert len(isi) >= 3 and np.all(np.diff(isi) > 0)  # inter-spike intervals grow
    assert eager[3]["Isoma_ahp"].max() > 1e-10
    assert_agree(fused, eager)


def test_dc_driven_per_neuron():
    exp = Experiment(_network(3), Stimulus(0, dc=[0.0, 5e-10, 2e-8]), 1e-4, 400)
    fused, eager = run_engines(exp)
    counts = np.bincount(eager[1], minlength=3)
    assert counts[0] == 0 and 0 < counts[1] < counts[2]
    assert_agree(fused, eager)


@pytest.mark.parametrize("syn_type,name", [("NMDA", "Inmda"), ("AMPA", "Iampa"), ("GABA_A", "Igaba_a"),
                                           ("GABA_B", "Igaba_b")])
def test_each_synapse_type(syn_type, name):
    """One regular input of each type on top of a DC that alone makes the neuron fire."""
    stim = _dc(regular(1, 200, 300, 1e-4), [2e-9])
    exp = Experiment(_network(1, [(syn_type, 3)]), stim, 1e-4, 300)
    fused, eager = run_engines(exp)
    alone, _ = run_engines(Experiment(_network(1, [(syn_type, 0)]), stim, 1e-4, 300), names=())
    assert eager[3][name].max() > 1e-9                                      # the jumps arrived
    assert not np.array_equal(eager[2], alone[2])                           # and changed the spikes
    assert_agree(fused, eager)


def test_refractory_period_per_neuron_with_brian2_rounding():
    """soma_refP per neuron. Isoma_mem is frozen for timestep(refP) - 1 steps after a spike,
    so with the same drive the first inter-spike interval grows by exactly that; 0.3 ms at
    0.1 ms truncates to 2 steps but Brian2 rounds to 3."""
    refp = np.array([0.0, 0.3e-3, 1e-3, 2.05e-3])
    exp = Experiment(_network(4), Stimulus(0, dc=[2e-8] * 4), 1e-4, 300)
    fused, eager = run_engines(exp, Params.from_values(soma_refP=refp))
    steps = np.floor((refp + 1e-7) / 1e-4).astype(int)
    assert list(steps) == [0, 3, 10, 20] and int(0.3e-3 / 1e-4) == 2
    first_isi = [np.diff(eager[2][eager[1] == k])[0] for k in range(4)]
    assert [isi - first_isi[0] for isi in first_isi] == [max(r - 1, 0) for r in steps]
    assert_agree(fused, eager)


def test_unstable_regime_flags_and_peak(caplog):
    """Large GABA_A currents make Euler overshoot: both engines flag the same neurons."""
    stim = _dc(poisson(1, 400, 300, 1e-4, seed=3), [2e-8, 2e-8])
    exp = Experiment(_network(2, [("GABA_A", 20)]), stim, 1e-4, 300)
    p = Params.from_values(Igaba_a_w0=np.array([1e-12, 2e-9]))
    fused, eager = run_engines(exp, p)
    assert eager[4].tolist() == [[False, True]]
    assert_agree(fused, eager)
    with caplog.at_level(logging.WARNING):
        TorchBackend(engine="fused").run(exp, p)
    assert "unstable in 1 of 2 neurons" in caplog.text


# --- batches, networks, options ------------------------------------------------------------

@pytest.mark.parametrize("n_sets,n_neurons", [(3, 5), (2, 40)])  # sets share a block / two blocks per set
def test_batch_per_set_and_per_neuron_params_equal_single_runs(n_sets, n_neurons):
    rng = np.random.default_rng(1)
    stim = poisson(4, 150, 300, 1e-4, seed=2)
    exp = Experiment(_network(n_neurons, [("NMDA", 4), ("AMPA", 6), ("GABA_A", 1), ("GABA_B", 2)]),
                     _dc(stim, rng.uniform(1e-9, 5e-9, n_neurons)), 1e-4, 300)
    values = {"Isoma_dpi_tau": rng.uniform(3e-12, 8e-12, (n_sets, 1)),        # per set
              "Isoma_ahp_w": rng.uniform(0.5e-12, 5e-12, n_neurons),          # per neuron
              "Iampa_w0": rng.uniform(50e-12, 150e-12, (n_sets, n_neurons))}  # per set and neuron
    p = Params.from_values(values)
    fused, eager = run_engines(exp, p)
    assert len(np.unique(eager[0])) == n_sets
    assert_agree(fused, eager)
    for b in range(n_sets):
        single, _ = run_engines(exp, Params.from_values({k: v[b] if np.ndim(v) == 2 else v
                                                         for k, v in values.items()}))
        sel = fused[0] == b
        np.testing.assert_array_equal(single[1], fused[1][sel])
        np.testing.assert_array_equal(single[2], fused[2][sel])
        for name in STATE_NAMES:  # the same arithmetic lane by lane: bit-identical
            assert torch.equal(single[3][name][:, 0], fused[3][name][:, b])


def test_recurrent_network_all_types():
    rng = np.random.default_rng(4)
    n = 10
    rec = [(int(i), int(j), t, int(rng.integers(1, 4)))
           for t in ("NMDA", "AMPA", "GABA_A", "GABA_B") for i, j in rng.integers(0, n, (8, 2))]
    stim = _dc(poisson(2, 200, 400, 1e-4, seed=5), rng.uniform(0, 1e-9, n))
    exp = Experiment(_network(n, [("AMPA", 8), ("NMDA", 4)], rec), stim, 1e-4, 400)
    p = Params.from_values(Iampa_w0=np.array([[80e-12], [120e-12]]))    # B = 2 sets
    fused, eager = run_engines(exp, p)
    plain, _ = run_engines(Experiment(_network(n, [("AMPA", 8), ("NMDA", 4)]), stim, 1e-4, 400), p, names=())
    assert n_spikes(eager) > 20 and not np.array_equal(eager[2], plain[2])  # recurrence matters
    assert_agree(fused, eager)


def test_substeps():
    fused, eager = run_engines(single_neuron_experiment(n_steps=500), substeps=3)
    assert n_spikes(eager) >= 2
    assert_agree(fused, eager)


def test_record_every_and_neuron_subset():
    exp = Experiment(_network(5), Stimulus(0, dc=np.linspace(0, 2e-8, 5)), 1e-4, 200)
    p = Params.from_values(Isoma_dpi_tau=np.array([[4e-12], [6e-12]]))
    fused, eager = run_engines(exp, p, names=("Isoma_ahp", "Isoma_mem"), idx=[4, 1, 1], every=7)
    assert fused[3]["Isoma_mem"].shape == (29, 2, 3)
    assert_agree(fused, eager)


def test_chunk_boundaries_carry_state():
    exp = single_neuron_experiment(n_steps=500, rate=150)
    fused, eager = run_engines(exp, chunk_steps=7, every=3)
    assert_agree(fused, eager)
    whole, _ = run_engines(exp, every=3)
    for name in STATE_NAMES:  # chunking changes nothing, to the last bit
        assert torch.equal(whole[3][name], fused[3][name])


@pytest.mark.parametrize("parallel", [True, False])
def test_parallel_and_serial_kernels_agree(monkeypatch, parallel):
    monkeypatch.setattr(fused_cpu, "_PARALLEL_WORK", 0 if parallel else 10 ** 12)
    rng = np.random.default_rng(6)
    stim = _dc(poisson(2, 300, 200, 1e-4, seed=7), rng.uniform(0, 3e-9, 70))
    exp = Experiment(_network(70, [("AMPA", 6), ("GABA_B", 2)]), stim, 1e-4, 200)
    fused, eager = run_engines(exp, Params.from_values(Isoma_dpi_tau=np.array([[4e-12], [6e-12]])))
    assert n_spikes(eager) > 50
    assert_agree(fused, eager)
    rec = [(0, 1, "AMPA", 5), (1, 2, "NMDA", 5), (2, 0, "GABA_A", 1)]
    exp = Experiment(_network(70, [("AMPA", 6), ("GABA_B", 2)], rec), stim, 1e-4, 200)
    fused, eager = run_engines(exp, Params.from_values(Isoma_dpi_tau=np.array([[4e-12], [6e-12]])))
    assert_agree(fused, eager)


@pytest.mark.parametrize("n_sets,substeps", [(1, 1), (4, 2)])
def test_float32(n_sets, substeps):
    exp = single_neuron_experiment(n_steps=600, rate=150)
    p = Params.from_values(Isoma_dpi_tau=np.linspace(4e-12, 6e-12, n_sets)[:, None], dtype=torch.float32)
    fused, eager = run_engines(exp, p, dtype=torch.float32, substeps=substeps)
    assert fused[3]["Isoma_mem"].dtype == torch.float32 and n_spikes(eager) >= 3 * n_sets
    assert_agree(fused, eager, torch.float32)


def test_peak_and_instability_flag_propagate_nan_like_the_reference():
    """A NaN state flags the lane and makes its peak NaN for good (torch.maximum)."""
    from dynacal.backends.torch_sim import cpu_kernels as K
    lane = K.BLK - 1
    w = np.zeros(K.N_ROWS * K.BLK)
    w[np.arange(6) * K.BLK + lane] = 1e-12
    peak = torch.zeros((), dtype=torch.float64)
    for iga in (2e-12, np.nan, 5e-9):
        w[K.GA * K.BLK + lane] = iga
        K._settle_pass(w, K.BLK)
        peak = torch.maximum(peak, torch.tensor(iga + w[K.AHP * K.BLK + lane], dtype=torch.float64))
        np.testing.assert_equal(w[K.PEAK * K.BLK + lane], peak.item())
    assert w[K.UNST * K.BLK + lane] == 1.0 and w[K.UNST * K.BLK] == 1.0  # lane 0: Iahp, ... = 0 is unstable


def test_backend_run_uses_fused_engine():
    exp = single_neuron_experiment(n_steps=300)
    fused = TorchBackend(engine="fused").run(exp, record="all", record_every=2)
    eager = TorchBackend(engine="eager").run(exp, record="all", record_every=2)
    assert fused.metadata["engine"] == "fused"
    np.testing.assert_array_equal(fused.spike_step, eager.spike_step)
    for name in STATE_NAMES:
        np.testing.assert_allclose(fused.trace(name), eager.trace(name), rtol=1e-12, atol=ATOL)


def test_float32_refractory_too_long_to_count():
    exp = Experiment(_network(1), Stimulus(0), 1e-9, 1)
    p = Params.from_values(soma_refP="20 ms", dtype=torch.float32)
    with pytest.raises(ParameterError, match="soma_refP"):
        fused_cpu.simulate(exp, p.expand(1, 1), Request())


def test_repeated_runs_follow_in_place_edits_of_params():
    """Runs reuse what they derived from an unchanged Params object (torch_sim.backend._prepare,
    cpu._pack); an in-place edit must be seen, as a fresh object would be."""
    exp = single_neuron_experiment(n_steps=300)
    backend = TorchBackend(engine="fused")
    p = Params.from_values(Isoma_th="2 nA")
    first = backend.run(exp, p).spike_step
    np.testing.assert_array_equal(backend.run(exp, p).spike_step, first)
    with torch.no_grad():
        p.Isoma_th.mul_(0.5)
    edited = backend.run(exp, p).spike_step
    np.testing.assert_array_equal(edited, backend.run(exp, Params.from_values(Isoma_th="1 nA")).spike_step)
    assert not np.array_equal(edited, first)
