"""The board path end to end: network -> configuration -> samna -> events -> Recording.

Tests taking ``board_backend`` run on the twin in CI and on a real board where one is
attached; the others check, on the twin, what was sent to the device."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacal import Experiment, Params, Stimulus, get_backend, poisson
from dynacal.errors import NetworkError, ParameterError
from dynacal.hardware.biasmap import params_to_codes
from dynacal.hardware.config import plan_network

from .conftest import small_experiment, small_network

pytestmark = pytest.mark.hardware


def test_full_path_gives_a_recording_of_measured_spikes(board_backend):
    exp = small_experiment(n_steps=3000, rate=150.0)
    rec = board_backend.run(exp)
    assert rec.backend == board_backend.name and rec.batch == 1 and rec.n_neurons == 15
    assert rec.dt == exp.dt and rec.n_steps == exp.n_steps and rec.traces == {}
    assert rec.spike_time.size > 0 and np.all((rec.spike_time >= 0) & (rec.spike_time < exp.duration))
    np.testing.assert_array_equal(rec.spike_step, np.floor(rec.spike_time / exp.dt + 1e-9).astype(np.int64))
    counts = rec.spike_counts()[0]
    assert counts[:8].sum() > 0  # the driven neurons answer their input
    meta = rec.metadata["board"]
    assert meta["completed_sets"] == [0] and meta["fpga"]["isi_multiplier"] == 900
    assert len(meta["codes"][0]) == 3 and meta["max_param_rel_error"][0] < 0.02


def test_parameter_sets_run_one_after_another(board_backend):
    exp = small_experiment(n_steps=2000, recurrent=False)
    weights = torch.tensor([[60e-12], [400e-12]], dtype=torch.float64)
    rec = board_backend.run(exp, Params.from_values(Iampa_w0=weights))  # the same on every core
    assert rec.batch == 2 and rec.metadata["board"]["completed_sets"] == [0, 1]
    counts = rec.spike_counts()
    assert counts[1, :8].sum() > counts[0, :8].sum()  # a stronger AMPA weight, more spikes
    codes = rec.metadata["board"]["codes"]
    assert codes[0]["0,1"]["PS_WEIGHT_EXC_F_N"] != codes[1]["0,1"]["PS_WEIGHT_EXC_F_N"]


def test_twin_sets_equal_single_runs():
    exp = small_experiment(n_steps=2000, recurrent=False)
    values = [80e-12, 300e-12]
    batched = get_backend("twin").run(exp, Params.from_values(Iampa_w0=torch.tensor(values).reshape(2, 1)))
    single = get_backend("twin")
    for b, v in enumerate(values):
        one = single.run(exp, Params.from_values(Iampa_w0=v))
        both = set(zip(batched.spike_neuron[batched.spike_batch == b].tolist(),
                       batched.spike_step[batched.spike_batch == b].tolist()))
        alone = set(zip(one.spike_neuron.tolist(), one.spike_step.tolist()))
        assert len(both ^ alone) <= 0.01 * len(alone) + 2  # only dropped events differ


def test_what_the_board_cannot_do_is_refused_before_anything_is_sent(board_backend):
    exp = small_experiment(n_steps=500)
    with pytest.raises(ParameterError, match="spikes only"):
        board_backend.run(exp, record=["Isoma_mem"])
    per_neuron = Params.from_values(Isoma_dpi_tau=np.linspace(4e-12, 6e-12, 15))
    with pytest.raises(ParameterError, match=r"Isoma_dpi_tau differs between the neurons of chip 0 core 1 .* one "
                                             r"value per core"):
        board_backend.run(exp, per_neuron)
    dc = Stimulus(4, exp.stimulus.steps, exp.stimulus.sources, dc=np.linspace(1e-12, 5e-12, 15))
    with pytest.raises(ParameterError, match="IF_DC_P is one bias per core"):
        board_backend.run(Experiment(exp.network, dc, exp.dt, exp.n_steps))
    with pytest.raises(ParameterError, match=r"Iampa_w0 = 50 uA needs PS_WEIGHT_EXC_F_N outside its DAC range"):
        board_backend.run(exp, Params.from_values(Iampa_w0=50e-6))
    net = small_network()
    heavy = type(net)(core=net.core, neuron_id=net.neuron_id, n_inputs=net.n_inputs,
                      inputs=net.inputs._replace(weight=net.inputs.weight * 10), recurrent=net.recurrent,
                      n_chips=net.n_chips, enforce_limits=False)
    with pytest.raises(NetworkError, match="fan-in limit"):
        board_backend.run(Experiment(heavy, exp.stimulus, exp.dt, exp.n_steps))


def test_what_the_twin_received():
    backend = get_backend("twin")
    exp = small_experiment(n_steps=2000)
    p = exp.network.params({"Isoma_th": 3e-9, "Iampa_tau": 25e-12})  # Isoma_th: not a bias
    rec = backend.run(exp, p)
    assert rec.metadata["board"]["ignored_parameters"] == ["Isoma_th = 3e-09 A"]
    state = backend.twin.state
    plan = plan_network(exp.network)
    assert state.ids.tolist() == plan.global_ids().tolist()  # the applied configuration is the plan
    run = backend.twin.last_run
    # the twin rebuilt the network from CAM entries and routes: same connections and weights
    net, twin_net = exp.network, run.experiment.network
    assert int(twin_net.inputs.weight.sum()) == int(net.inputs.weight.sum())
    assert int(twin_net.recurrent.weight.sum()) == int(net.recurrent.weight.sum())
    assert run.experiment.stimulus.steps.size == exp.stimulus.steps.size  # one FPGA event per input spike
    np.testing.assert_array_equal(run.experiment.stimulus.steps, exp.stimulus.steps)
    # dc of one value per core reaches IF_DC_P
    dc = Stimulus(4, exp.stimulus.steps, exp.stimulus.sources, dc=np.full(15, 20e-12))
    rec = backend.run(Experiment(exp.network, dc, exp.dt, exp.n_steps))
    want = params_to_codes({(0, 1): {"Isoma_const": 20e-12}}).codes[(0, 1)]["IF_DC_P"]
    assert rec.metadata["board"]["codes"][0]["0,1"]["IF_DC_P"] == want != (0, 17)  # (0, 17) is the 1 pA default


def test_close_is_clean_and_the_backend_reopens():
    backend = get_backend("twin")
    exp = small_experiment(n_steps=500)
    backend.run(exp)
    assert backend.twin.opened
    backend.close()
    backend.close()
    assert not backend.twin.opened
    with backend:
        assert backend.run(exp).spike_time.size > 0
    assert not backend.twin.opened


def test_a_stimulus_dt_other_than_the_twin_step():
    # dt = 50 us: input events fall between the twin's 100 us steps; times stay in the 50 us grid
    exp = Experiment(small_network(), poisson(4, 100, 6000, 5e-5, seed=3), 5e-5, 6000)
    rec = get_backend("twin").run(exp)
    assert rec.dt == 5e-5 and rec.spike_time.size > 0 and rec.metadata["board"]["fpga"]["isi_multiplier"] == 900
    np.testing.assert_array_equal(rec.spike_step, np.floor(rec.spike_time / 5e-5 + 1e-9).astype(np.int64))


def test_start_latency_shifts_every_spike_time():
    exp = small_experiment(n_steps=2000)
    plain = get_backend("twin").run(exp)
    shifted = get_backend("twin", start_latency_s=1e-3).run(exp)
    # spikes in the first ms fall before t = 0 and are left out; the window's last ms gets new ones
    kept = (plain.spike_time >= 1e-3)
    inner = shifted.spike_time < exp.duration - 1e-3
    np.testing.assert_allclose(shifted.spike_time[inner], np.sort(plain.spike_time[kept]) - 1e-3, atol=1e-12)
    assert shifted.spike_time.size > inner.sum()


def test_every_hardware_subpackage_is_installed():
    import tomllib
    from pathlib import Path
    root = Path(__file__).resolve().parents[2]
    listed = set(tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {"dynacal." + ".".join(p.parent.relative_to(root).parts)
             for p in (root / "hardware").rglob("__init__.py")}
    assert found <= listed, f"add {sorted(found - listed)} to [tool.setuptools] packages in pyproject.toml"
