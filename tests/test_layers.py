"""The one order of parameters: a test per layer, candidates over network biases, mismatch kept
while a core bias changes, ChipLayers keyed by physical neuron, and the errors."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from dynacal import PARAMETERS, Chip, ChipLayers, Params
from dynacal.errors import ParameterError, RecordingError

pA, nA = 1e-12, 1e-9


def _net(core0_bias=None, core1_bias=None, states=None):
    """Three neurons on Core_0 (ids 0..2) and two on Core_1 (ids 0..1)."""
    chip = Chip()
    a = chip.get_neurons(3, "Core_0")
    chip.get_neurons(2, "Core_1")
    if core0_bias:
        chip.set_bias(core0_bias, "Core_0")
    if core1_bias:
        chip.set_bias(core1_bias, "Core_1")
    if states:
        a[1:2].set_states(states)
    return chip.network()


def _factors(*first):
    f = np.ones(256)
    f[:len(first)] = first
    return f


def _row(t):
    return t.detach().expand(1, 5)[0].tolist() if t.shape[0] == 1 else t.detach().tolist()


def test_layer_1_table_defaults_stay_scalars():
    p = _net().params()
    for name, spec in PARAMETERS.items():
        assert getattr(p, name).shape == (1, 1) and float(getattr(p, name)) == spec.default, name


def test_layer_2_calibration_core_values_per_global_core():
    layers = ChipLayers({0: {"Isoma_dpi_tau": 7 * pA}, (0, 3): {"Isoma_dpi_tau": 9 * pA}})
    p = _net().params(layers=layers)
    # Core_1 is not covered: its neurons keep the table default; Core_3 holds no neuron here
    assert _row(p.Isoma_dpi_tau) == pytest.approx([7 * pA] * 3 + [5 * pA] * 2)
    assert p.Isoma_th.shape == (1, 1)


def test_layer_3_network_biases_over_calibration_core_values():
    layers = ChipLayers({0: {"Isoma_dpi_tau": 7 * pA}, 1: {"Isoma_dpi_tau": 8 * pA}})
    p = _net(core1_bias={"Isoma_dpi_tau": "4 pA"}).params(layers=layers)
    assert _row(p.Isoma_dpi_tau) == pytest.approx([7 * pA] * 3 + [4 * pA] * 2)


def test_layer_4_mismatch_multiplies_whatever_core_value_results():
    layers = ChipLayers({0: {"Isoma_dpi_tau": 8 * pA}},
                        {"Isoma_dpi_tau": {0: _factors(0.5, 1.0, 2.0), 1: _factors(1.5, 0.75)}})
    p = _net().params(layers=layers)  # core 0: the calibration's value; core 1: the table default
    assert _row(p.Isoma_dpi_tau) == pytest.approx([4 * pA, 8 * pA, 16 * pA, 7.5 * pA, 3.75 * pA])
    q = _net(core0_bias={"Isoma_dpi_tau": "2 pA"}).params(layers=layers)  # the network's bias
    assert _row(q.Isoma_dpi_tau)[:3] == pytest.approx([1 * pA, 2 * pA, 4 * pA])


def test_a_calibrations_mismatch_is_kept_while_a_core_bias_changes():
    factors = np.random.default_rng(1).lognormal(0, 0.2, 256)
    layers = ChipLayers({0: {"Iampa_w0": 100 * pA}}, {"Iampa_w0": {0: factors}})
    before = _net().params(layers=layers).Iampa_w0[0, :3]
    after = _net(core0_bias={"Iampa_w0": "250 pA"}).params(layers=layers).Iampa_w0[0, :3]
    np.testing.assert_allclose(before.numpy(), 100 * pA * factors[:3], rtol=1e-12)
    np.testing.assert_allclose((after / before).numpy(), 2.5, rtol=1e-12)  # every neuron's factor kept


def test_layer_5_network_neuron_values_over_mismatched_core_values():
    layers = ChipLayers(mismatch={"Isoma_th": {0: _factors(2.0, 2.0, 2.0)}})
    p = _net(core0_bias={"Isoma_th": "1 nA"}, states={"Isoma_th": "3 nA"}).params(layers=layers)
    assert _row(p.Isoma_th) == pytest.approx([2 * nA, 3 * nA, 2 * nA, 2 * nA, 2 * nA])


def test_candidates_win_over_network_biases():
    # the bug of issue 8: a candidate Isoma_th [1 nA, 3 nA] came back as the core bias [2 nA, 2 nA]
    chip = Chip()
    chip.get_neurons(2, "Core_0")
    chip.set_bias({"Isoma_th": "2 nA"}, "Core_0")
    net = chip.network()
    assert net.params({"Isoma_th": [1 * nA, 3 * nA]}).Isoma_th.tolist() == [[1 * nA, 3 * nA]]
    assert net.params({"Isoma_th": ["1 nA", "3 nA"]}).Isoma_th.tolist() == [[1e-9, 3e-9]]  # parsed exactly
    assert net.params({"Isoma_th": "1.5 nA"}).Isoma_th.tolist() == [[1.5e-9]]
    batched = net.params({"Isoma_th": torch.tensor([[1 * nA], [3 * nA]], dtype=torch.float64)})
    assert batched.shape == (2, 1) and batched.Isoma_th.tolist() == [[1 * nA], [3 * nA]]
    assert net.params().Isoma_th.tolist() == [[2 * nA, 2 * nA]]


def test_candidates_win_over_every_layer_and_leave_other_names_alone():
    layers = ChipLayers({0: {"Isoma_th": 5 * nA}}, {"Isoma_th": {0: _factors(2.0)}})
    net = _net(core0_bias={"Isoma_th": "1 nA", "Iampa_tau": "30 pA"}, states={"Isoma_th": "4 nA"})
    cand = np.array([[1.0, 2, 3, 4, 5], [6, 7, 8, 9, 10]]) * 0.1 * nA
    p = net.params({"Isoma_th": cand}, layers=layers)
    np.testing.assert_array_equal(p.Isoma_th.numpy(), cand)  # no factor applied to a candidate
    assert p.shape == (2, 5) and _row(p.Iampa_tau) == pytest.approx([30 * pA] * 3 + [20 * pA] * 2)


def test_per_core_candidates_and_batches_per_core():
    net = _net(core0_bias={"Iampa_w0": "300 pA"}, core1_bias={"Iampa_w0": "400 pA"})
    p = net.params({"Iampa_w0": {"Core_1": "50 pA"}})
    assert _row(p.Iampa_w0) == pytest.approx([300 * pA] * 3 + [50 * pA] * 2)
    q = net.params({"Iampa_w0": {0: [10 * pA, 20 * pA], (0, 1): 30 * pA}})
    assert q.shape == (2, 5)
    np.testing.assert_allclose(q.Iampa_w0.numpy(), [[10 * pA] * 3 + [30 * pA] * 2, [20 * pA] * 3 + [30 * pA] * 2])
    layers = ChipLayers(mismatch={"Iampa_w0": {0: _factors(3.0)}})
    r = net.params({"Iampa_w0": {"Core_0": 10 * pA}}, layers=layers)  # the caller's value, not times 3
    assert _row(r.Iampa_w0)[:3] == pytest.approx([10 * pA] * 3)
    kept = ChipLayers.neuron_factors(layers, net)["Iampa_w0"]  # how a fitter keeps the mismatch itself
    assert kept.tolist() == [3.0, 1, 1, 1, 1]


def test_candidate_tensors_keep_their_gradients():
    net = _net(core0_bias={"Iampa_w0": "300 pA"})
    w = torch.full((1, 5), 100 * pA, dtype=torch.float64, requires_grad=True)
    c = torch.tensor([40 * pA, 60 * pA], dtype=torch.float64, requires_grad=True)
    p = net.params({"Iampa_w0": w, "Isoma_dpi_tau": {0: c}})
    (p.Iampa_w0 * torch.arange(5.0, dtype=torch.float64)).sum().backward()
    (p.Isoma_dpi_tau.sum() * 1.0).backward()
    assert w.grad.tolist() == [[0.0, 1, 2, 3, 4]]
    assert c.grad.tolist() == [3.0, 3.0]  # three neurons on core 0 per candidate set


def test_a_calibration_applies_to_any_network_on_the_calibrated_neurons():
    layers = ChipLayers({1: {"Isoma_dpi_tau": 6 * pA}}, {"Isoma_dpi_tau": {1: np.linspace(0.5, 1.5, 256)}})
    chip = Chip()
    chip.get_neurons(10, "Core_1")  # ids 0..9, not used
    b = chip.get_neurons(2, "Core_1")  # ids 10, 11
    chip.get_neurons(1, "Core_0")
    p = chip.network().params(layers=layers)
    want = 6 * pA * np.linspace(0.5, 1.5, 256)[[10, 11]]
    np.testing.assert_allclose(p.Isoma_dpi_tau[0, b.indices].numpy(), want, rtol=1e-12)
    assert float(p.Isoma_dpi_tau[0, 12]) == PARAMETERS["Isoma_dpi_tau"].default  # core 0: not calibrated


def test_chip_layers_round_trip_through_json():
    import json
    layers = ChipLayers({(1, 2): {"Isoma_dpi_tau": "6 pA", "alpha_soma": 3.0}},
                        {"Iampa_w0": {6: np.linspace(0.9, 1.1, 256)}}, name="chip 7")
    back = ChipLayers.from_dict(json.loads(json.dumps(layers.to_dict())))
    assert back.core_values == {6: {"Isoma_dpi_tau": 6 * pA, "alpha_soma": 3.0}} and back.name == "chip 7"
    np.testing.assert_array_equal(back.mismatch["Iampa_w0"][6], layers.mismatch["Iampa_w0"][6])
    with pytest.raises(ParameterError, match="format must be 'dynacal-chip-layers'"):
        ChipLayers.from_dict({"core_values": {}})


@pytest.mark.parametrize("make,match", [
    (lambda: ChipLayers({0: {"Isoma_tau": 1e-12}}), "unknown parameter 'Isoma_tau'.*Did you mean"),
    (lambda: ChipLayers({0: {"Isoma_th": float("nan")}}), r"core_values\[0\].*Isoma_th contains NaN"),
    (lambda: ChipLayers({"Core_x": {"Isoma_th": 1e-9}}), "'Core_x' is not a core"),
    (lambda: ChipLayers({2: {"Isoma_dpi_tau": 5.0}}), r"core_values\[2\].*pA given as A"),
    (lambda: ChipLayers(mismatch={"Iampa_w0": {0: np.zeros(256)}}), r"factor of neuron 0 is 0\.0.*> 0"),
    (lambda: ChipLayers(mismatch={"Iampa_w0": {0: np.full(256, np.nan)}}), "must be finite and > 0"),
    (lambda: ChipLayers(mismatch={"Iampa_w0": {0: np.ones(3)}}), r"shape \(3,\); give \(256,\) factors"),
    (lambda: ChipLayers(mismatch={"Iampa_w00": {0: np.ones(256)}}), "Did you mean 'Iampa_w0'"),
])
def test_chip_layers_errors(make, match):
    with pytest.raises(ParameterError, match=match):
        make()


@pytest.mark.parametrize("candidates,match", [
    ({"Isoma_thr": 1e-9}, "unknown parameter 'Isoma_thr'.*Did you mean 'Isoma_th'"),
    ({"Isoma_th": [1e-9, 2e-9]}, r"values for 2 neurons, but the network has 5.*\(5,\) per neuron"),
    ({"Isoma_th": np.full(5, np.nan)}, "Isoma_th contains NaN"),
    ({"Isoma_th": 2.0}, "pA given as A"),
    ({"Isoma_th": {3: 1e-9}}, "core 3, which holds no neuron of this network.*cores \\[0, 1\\]"),
    ({"Isoma_th": {0: np.ones((2, 2)) * 1e-9}}, r"per-core value is one value or \(B,\) values"),
    ({"Isoma_th": np.ones((2, 5)) * 1e-9, "Iampa_w0": np.ones((3, 1)) * 1e-10}, "does not broadcast"),
    ([("Isoma_th", 1e-9)], "candidates must be a mapping"),
])
def test_candidate_errors(candidates, match):
    with pytest.raises(ParameterError, match=match):
        _net().params(candidates)


def test_layers_must_be_chip_layers():
    with pytest.raises(ParameterError, match="layers must be a ChipLayers"):
        _net().params(layers={0: {"Isoma_th": 1e-9}})


def test_base_is_deprecated_and_says_what_it_replaced(caplog):
    net = _net(core0_bias={"Isoma_th": "2 nA"})
    base = Params.from_values(Isoma_th=np.array([1, 3, 1, 3, 1]) * nA, Iampa_tau=30 * pA)
    with pytest.warns(DeprecationWarning, match="pass the values you set"), caplog.at_level(logging.WARNING):
        p = net.params(base=base)
    assert "Isoma_th" in caplog.text and "Iampa_tau" not in caplog.text  # named, not silent
    assert _row(p.Isoma_th) == pytest.approx([2 * nA] * 3 + [3 * nA, 1 * nA])  # base is the lowest layer
    assert float(p.Iampa_tau) == 30 * pA
    with pytest.warns(DeprecationWarning):
        q = net.params(base)  # a Params given as candidates means the same
    assert _row(q.Isoma_th) == _row(p.Isoma_th)
    with pytest.raises(ParameterError, match="both as candidates and as base"):
        net.params(base, base=base)


def test_base_equal_to_what_the_network_gives_is_not_reported(caplog):
    net = _net(core0_bias={"Isoma_th": "2 nA"})
    with pytest.warns(DeprecationWarning), caplog.at_level(logging.WARNING):
        p = net.params(net.params())
    assert "replaced" not in caplog.text and _row(p.Isoma_th) == _row(net.params().Isoma_th)


# --- files: ChipLayers.save / load, and a calibration's calibration.json -----------------

def _layers():
    return ChipLayers({"Core_0": {"Isoma_dpi_tau": 4 * pA}, (0, 1): {"Isoma_th": 1.5 * nA}},
                      {"Isoma_dpi_tau": {0: np.linspace(0.5, 1.5, 256)}}, name="chip 7")


def _same(a: ChipLayers, b: ChipLayers) -> bool:
    return json.dumps(a.to_dict()) == json.dumps(b.to_dict())


def test_save_then_load_gives_the_same_layers_and_parameters(tmp_path):
    layers = _layers()
    path = layers.save(tmp_path / "sub" / "chip.json")
    assert path == tmp_path / "sub" / "chip.json" and not list(path.parent.glob("*.tmp"))
    back = ChipLayers.load(path)
    assert _same(back, layers) and back.name == "chip 7"
    net = _net()
    for a, b in zip(vars(net.params(layers=back)).values(), vars(net.params(layers=layers)).values()):
        assert torch.equal(a, b)


def test_load_reads_the_layers_entry_of_a_calibration_file_and_its_folder(tmp_path):
    layers = _layers()
    calib = {"format": "dynacal-calibration", "layers": layers.to_dict(), "quality": {"fi": {"median": 0.1}}}
    (tmp_path / "calibration.json").write_text(json.dumps(calib))
    assert _same(ChipLayers.load(tmp_path / "calibration.json"), layers)
    assert _same(ChipLayers.load(tmp_path), layers)  # the folder a calibration wrote


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    ("{not json", "cannot be read as JSON"),
    ('{"quality": 1}', "holds no chip layers"),
    ('[1, 2]', "holds no chip layers"),
    ('{"layers": {"format": "other"}}', "holds no chip layers"),
])
def test_load_of_a_file_without_layers_names_the_file(tmp_path, content, message):
    path = tmp_path / "calibration.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(RecordingError, match=message) as err:
        ChipLayers.load(path)
    assert str(path) in str(err.value) and "ChipLayers.save" in str(err.value)


def test_load_of_invalid_layers_names_the_file_and_the_value(tmp_path):
    data = _layers().to_dict()
    data["mismatch"]["Isoma_dpi_tau"]["0"][3] = -1.0
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"layers": data}))
    with pytest.raises(ParameterError, match=r"bad.json: ChipLayers.mismatch\['Isoma_dpi_tau'\]\[0\]: the factor of "
                                             r"neuron 3 is -1.0"):
        ChipLayers.load(path)
