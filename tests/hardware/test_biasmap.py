"""Bias names <-> model parameters: the map, rounding reports, bias files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dynacal.errors import ParameterError
from dynacal.hardware.biasgen import BIAS_NAMES, BiasDAC
from dynacal.hardware.biasmap import (BIAS_MAP, FIXED_CODES, MODEL_PARAMETERS, BiasConstants, currents_to_params,
                                      export_biases, import_biases, params_to_codes, params_to_currents)
from dynacal.params import PARAMETERS


def test_every_bias_is_mapped_and_the_documented_ratios_hold():
    assert set(BIAS_MAP) == set(BIAS_NAMES) and len(BIAS_NAMES) == 25
    assert len(MODEL_PARAMETERS) == 20 and set(MODEL_PARAMETERS) <= set(PARAMETERS)
    k = BiasConstants()
    cur = {b: 1e-9 for b in BIAS_NAMES}
    cur.update(IF_TAU1_N=5e-12, IF_THR_N=20e-12, IF_RFR_N=4e-12, PULSE_PWLK_P=2 * k.pulse_reference,
               PS_WEIGHT_EXC_F_N=200e-12, NPDPIE_TAU_S_P=2e-12, NPDPIE_THR_S_P=10e-12)
    p = currents_to_params(cur, k)
    assert p["Isoma_dpi_tau"] == 5e-12 and p["alpha_soma"] == pytest.approx(4.0)  # I(IF_THR_N) / Isoma_dpi_tau
    assert p["alpha_nmda"] == pytest.approx(5.0) and p["Inmda_tau"] == 2e-12
    assert p["soma_refP"] == pytest.approx(5e-3)  # 2e-14 C / 4 pA
    assert p["Iampa_w0"] == pytest.approx(100e-12)  # twice the pulse current halves the pulse width
    assert set(p) == set(MODEL_PARAMETERS)
    # and back: the ideal currents of those parameters are the currents we started from
    ideal = params_to_currents(p, BiasConstants(pulse_current=2 * k.pulse_reference))
    for bias in ("IF_TAU1_N", "IF_THR_N", "IF_RFR_N", "PS_WEIGHT_EXC_F_N", "NPDPIE_THR_S_P"):
        assert ideal[bias] == pytest.approx(cur[bias], rel=1e-12)


def test_codes_report_the_rounding_of_every_bias_and_gains_use_the_achieved_leak():
    dac = BiasDAC()
    s = params_to_codes({5: {"Isoma_dpi_tau": 7.3e-12, "alpha_soma": 3.0, "soma_refP": 2e-3, "Iampa_w0": 250e-12},
                         (0, 0): {}}, dac)
    assert set(s.codes) == {(1, 1), (0, 0)}
    assert len(s.report.rows) == 2 * 25 and {r["bias"] for r in s.report.rows} == set(BIAS_NAMES)
    c = s.codes[(1, 1)]
    assert c["IF_TAU2_N"] == FIXED_CODES["IF_TAU2_N"]
    tau = dac.current(*c["IF_TAU1_N"], "IF_TAU1_N")
    thr = dac.current(*c["IF_THR_N"], "IF_THR_N")
    assert s.params[(1, 1)]["alpha_soma"] == pytest.approx(thr / tau)
    for row in s.report.rows:
        if row.get("parameter"):
            got, want = row["achieved_param"], row["target_param"]
            assert row["param_rel_error"] == pytest.approx((got - want) / want)
    assert 0 < s.report.max_rel_error < 0.01  # the community grid is about 0.4 % .. 1 % fine at these values
    assert "IF_THR_N" in s.report.to_text()
    # the gain error is the rounding of one bias (the leak's rounding is compensated), not of two
    fine = c["IF_THR_N"][1]  # I is proportional to the fine code: one step is 1 / fine of the current
    assert abs(s.params[(1, 1)]["alpha_soma"] / 3.0 - 1) <= 0.5 / fine * 1.001


def test_export_import_round_trip(tmp_path):
    per_core = {(0, 1): {"Isoma_dpi_tau": 6e-12, "alpha_ampa": 5.0, "Iampa_w0": 321e-12},
                6: {"soma_refP": 3e-3, "Isoma_const": 40e-12}}
    for convention in ("logical", "reversed"):
        path = tmp_path / f"biases-{convention}.json"
        written = export_biases(path, per_core, coarse_convention=convention)
        data = json.loads(path.read_text())
        assert set(data) == {"_meta", "0", "1"} and set(data["0"]) == {"1"} and set(data["1"]) == {"2"}
        assert len(data["1"]["2"]) == 25 and all(len(v) == 2 for v in data["1"]["2"].values())
        assert data["_meta"]["coarse_convention"] == convention
        back = import_biases(path)
        assert back.codes == written.codes
        for key in written.params:
            for name, value in written.params[key].items():
                assert back.params[key][name] == pytest.approx(value, rel=1e-12), name
        assert back.params[(0, 1)]["Iampa_w0"] == pytest.approx(321e-12, rel=0.01)
    assert not list(tmp_path.glob(".*.tmp"))  # written atomically, nothing left behind


def test_bias_file_errors(tmp_path):
    path = tmp_path / "b.json"
    path.write_text(json.dumps({"_meta": {"coarse_convention": "logical"}, "0": {"0": {"IF_TAU1N": [1, 2]}}}))
    with pytest.raises(ParameterError, match=r"unknown bias 'IF_TAU1N'.*Valid names: .*IF_TAU1_N"):
        import_biases(path)
    path.write_text(json.dumps({"0": {"0": {"IF_TAU1_N": [1, 2]}}}))
    with pytest.raises(ParameterError, match="coarse convention"):
        import_biases(path)
    assert import_biases(path, coarse_convention="logical").codes[(0, 0)] == {"IF_TAU1_N": (1, 2)}
    path.write_text(json.dumps({"_meta": {"coarse_convention": "logical"}, "0": {"0": {"IF_TAU1_N": [9, 2]}}}))
    with pytest.raises(ParameterError, match=r"coarse code 9 of IF_TAU1_N is out of range 0\.\.7"):
        import_biases(path)
    path.write_text(json.dumps({"_meta": {"coarse_convention": "logical"}, "4": {"0": {"IF_TAU1_N": [1, 2]}}}))
    with pytest.raises(ParameterError, match="does not exist on a Dynap-SE1 board"):
        import_biases(path)


def test_parameter_errors_name_the_parameter_and_limit():
    with pytest.raises(ParameterError, match="unknown parameter 'Isoma_tau'"):
        params_to_codes({0: {"Isoma_tau": 1e-12}})
    with pytest.raises(ParameterError, match=r"Iampa_w0 = 50 uA needs PS_WEIGHT_EXC_F_N outside its DAC range.*"
                                             r"reachable range"):
        params_to_codes({0: {"Iampa_w0": 50e-6}})
    with pytest.raises(ParameterError, match="one value per core"):
        params_to_codes({0: {"Iampa_w0": np.array([1e-10, 2e-10])}})
    with pytest.raises(ParameterError, match="IF_TAU1_N = 0 A"):
        currents_to_params({"IF_TAU1_N": 0.0, "IF_THR_N": 1e-12})
    with pytest.raises(ParameterError, match="unknown bias"):
        currents_to_params({"IF_TAU1": 1e-12})


# --- codes <-> parameters per core (hardware/codemap.py): the board's, the twin's, a calibration's ----------

from dynacal import Chip, ChipLayers  # noqa: E402
from dynacal.hardware.codemap import (MODEL_BIASES, SATURATION, codes_to_layers, codes_to_network_params,  # noqa: E402
                                      codes_to_params, core_codes_to_params, layers_to_codes,
                                      network_params_to_codes, params_to_core_values)
from dynacal.hardware.twin_chip import MISMATCHED, TwinChip  # noqa: E402

_VALUES = {"Isoma_dpi_tau": 6.1e-12, "alpha_soma": 3.3, "soma_refP": 2.5e-3, "Isoma_const": 30e-12,
           "Inmda_thr": 2e-12, "Isoma_ahp_tau": 1.7e-12, "alpha_ahp": 5.0, "Isoma_ahp_w": 3e-12,
           "Iampa_tau": 22e-12, "alpha_ampa": 4.5, "Inmda_tau": 2.4e-12, "alpha_nmda": 2.0,
           "Igaba_a_tau": 4e-12, "alpha_gaba_a": 6.0, "Igaba_b_tau": 7e-12, "alpha_gaba_b": 3.0,
           "Iampa_w0": 150e-12, "Inmda_w0": 90e-12, "Igaba_a_w0": 30e-12, "Igaba_b_w0": 210e-12}


def test_codes_give_back_every_model_parameter_with_the_reported_rounding():
    assert set(_VALUES) == set(MODEL_PARAMETERS) and len(MODEL_BIASES) == 21
    s = params_to_codes({(0, 2): _VALUES, 5: {}})
    back = codes_to_params(s.codes)
    assert set(back) == {(0, 2), (1, 1)} and set(back[(0, 2)]) == set(MODEL_PARAMETERS)
    for row in s.report.rows:
        if row.get("parameter") and row["core"] == (0, 2):  # the codes give what the report says they achieve
            assert back[(0, 2)][row["parameter"]] == pytest.approx(row["achieved_param"], rel=1e-12)
            assert back[(0, 2)][row["parameter"]] == pytest.approx(_VALUES[row["parameter"]],
                                                                    rel=abs(row["param_rel_error"]) + 1e-12)
    assert back[(1, 1)]["Isoma_dpi_tau"] == pytest.approx(PARAMETERS["Isoma_dpi_tau"].default, rel=0.01)
    # the same codes as an int array (25, 2) in BIAS_NAMES order, and on a bit-reversed DAC
    arr = np.array([s.codes[(0, 2)][b] for b in BIAS_NAMES])
    assert core_codes_to_params(arr) == back[(0, 2)]
    assert core_codes_to_params(s.codes[(0, 2)], BiasDAC(bit_reversed=True)) == back[(0, 2)]


def test_code_errors_name_the_core_the_bias_and_the_fix():
    good = params_to_codes({6: {}}).codes[(1, 2)]
    cases = [({**good, "IF_TAU1_N": (8, 10)}, r"chip 1 core 2: coarse code 8 of IF_TAU1_N is out of range 0\.\.7"),
             ({**good, "IF_DC_P": (3, 256)}, r"fine code 256 of IF_DC_P is out of range 0\.\.255"),
             ({**good, "IF_THR_N": (3, 2.5)}, r"IF_THR_N = \(3, 2\.5\); a code is two integers"),
             ({**good, "IF_TAU1N": (1, 1)}, r"unknown bias 'IF_TAU1N'.*Did you mean 'IF_TAU1_N'"),
             ({k: v for k, v in good.items() if k != "IF_RFR_N"}, "no code for IF_RFR_N; every model bias needs one"),
             ({**good, "IF_TAU1_N": (2, 0)}, "IF_TAU1_N = 0 A: alpha_soma divides by it")]
    for codes, match in cases:
        with pytest.raises(ParameterError, match=match):
            codes_to_params({6: codes})
    with pytest.raises(ParameterError, match=r"codes of shape \(24, 2\)"):
        core_codes_to_params(np.zeros((24, 2), dtype=int))
    # partial codes: only the parameters whose biases are given, and a gain needs its leak
    assert core_codes_to_params({"IF_DC_P": (2, 10)}, complete=False) == {
        "Isoma_const": pytest.approx(BiasDAC().current(2, 10, "IF_DC_P"))}
    with pytest.raises(ParameterError, match="IF_THR_N sets alpha_soma relative to IF_TAU1_N, which has no code"):
        core_codes_to_params({"IF_THR_N": (2, 10)}, complete=False)


def test_chip_layers_to_codes_and_back():
    layers = ChipLayers({1: dict(_VALUES, Isoma_th=1.5e-9), 4: {"Iampa_w0": 400e-12}})
    s = layers_to_codes(layers)  # Isoma_th is not a bias: left out, with a warning
    assert set(s.codes) == {(0, 1), (1, 0)}
    again = codes_to_layers(s.codes, name="measured")
    assert set(again.core_values) == {1, 4} and again.name == "measured"
    for name, value in _VALUES.items():
        assert again.core_values[1][name] == pytest.approx(value, rel=0.01), name
    assert again.core_values[4]["Iampa_w0"] == pytest.approx(400e-12, rel=0.01)


def test_a_network_on_coded_cores_runs_the_codes_values_below_its_own_biases():
    chip = Chip()
    chip.get_neurons(2, "Core_0")
    chip.get_neurons(1, "Core_1")
    chip.set_bias({"Iampa_w0": "300 pA"}, "Core_1")
    net = chip.network()
    s = params_to_codes({0: {"Iampa_w0": 120e-12, "Isoma_dpi_tau": 8e-12}, 1: {"Iampa_w0": 50e-12}})
    factors = np.full(256, 2.0)
    p = codes_to_network_params(net, s.codes, mismatch={"Isoma_dpi_tau": {0: factors}},
                                candidates={"Isoma_th": 1e-9})
    w0 = [s.params[(0, 0)]["Iampa_w0"]] * 2 + [300e-12]  # the network's bias over the code's value
    np.testing.assert_allclose(p.Iampa_w0[0].numpy(), w0, rtol=1e-12)
    np.testing.assert_allclose(p.Isoma_dpi_tau[0, :2].numpy(), 2 * s.params[(0, 0)]["Isoma_dpi_tau"], rtol=1e-12)
    assert float(p.Isoma_th) == 1e-9
    with pytest.raises(ParameterError, match=r"uses chip/core \[\(0, 1\)\] but codes are given for \[\(0, 0\)\]"):
        codes_to_network_params(net, {0: s.codes[(0, 0)]})
    # and back: a network's Params (one value per core) -> codes, the same values again
    plain = codes_to_network_params(net, s.codes, candidates={"Iampa_w0": {1: 50e-12}})
    again = network_params_to_codes(plain, net)
    for key in s.params:
        for name, value in s.params[key].items():
            assert again.params[key][name] == pytest.approx(value, rel=1e-9), (key, name)
    with pytest.raises(ParameterError, match=r"Isoma_dpi_tau differs between the neurons of chip 0 core 0 in "
                                             r"parameter set 1 .*chip's mismatch"):
        params_to_core_values(p.replace(Isoma_dpi_tau=torch.tensor([[5e-12] * 3, [5e-12, 6e-12, 5e-12]],
                                                                      dtype=torch.float64)), net, 1)


def _twin_codes(chip: TwinChip, values: dict) -> np.ndarray:
    """(n_chips, 4, 25, 2) codes with ``values`` on every core."""
    s = params_to_codes({g: values for g in range(chip.n_chips * 4)})
    return np.array([[[s.codes[(c, k)][b] for b in BIAS_NAMES] for k in range(4)] for c in range(chip.n_chips)])


def test_the_twins_hidden_chip_is_the_same_mapping_and_order():
    chip = TwinChip(20231)
    codes = _twin_codes(chip, {"Isoma_dpi_tau": 6e-12, "Iampa_w0": 200e-12})
    ids = np.array([5, 300, 1030, 4095, *chip.hot_neurons()[:2]])
    hidden = chip.neuron_params(ids, codes)
    # the core values are what the twin's true DAC and chip constants give for these codes
    layers = chip.layers(codes)
    for g in (0, 1, 4, 15):
        c, k = divmod(g, 4)
        want = codes_to_params({g: codes[c, k]}, chip.dac(c, k), chip._constants[c], saturate=True)[(c, k)]
        assert layers.core_values[g] == want
    # and the twin's neurons run Network.params(layers=...) of those neurons, plus the hot neurons' DC
    net = Chip(n_chips=4).network()
    net = type(net)(core=ids // 256, neuron_id=ids % 256, n_inputs=0, inputs=net.inputs, recurrent=net.recurrent,
                    n_chips=4)
    direct = net.params(layers=layers)
    for name in PARAMETERS:
        got, want = getattr(hidden, name).expand(1, ids.size), getattr(direct, name).expand(1, ids.size)
        if name == "Isoma_const":
            extra = (got - want)[0].numpy()
            assert np.all(extra[:4] == 0) and np.all(extra[4:] > 0.1e-9), extra  # only the hot neurons
        else:
            np.testing.assert_array_equal(got.numpy(), want.numpy(), err_msg=name)
    assert set(layers.mismatch) == set(MISMATCHED)


def test_the_twin_keeps_each_neurons_mismatch_when_a_code_changes_and_saturates_gains():
    chip = TwinChip(777)
    ids = np.arange(256, 266)
    low_codes, high_codes = (_twin_codes(chip, {"Isoma_dpi_tau": v}) for v in (3e-12, 30e-12))
    low, high = chip.neuron_params(ids, low_codes), chip.neuron_params(ids, high_codes)
    ratio = (high.Isoma_dpi_tau / low.Isoma_dpi_tau)[0].numpy()
    np.testing.assert_allclose(ratio, ratio[0], rtol=1e-12)  # one core factor: every neuron's mismatch kept
    # that factor is the one of the core's hidden DAC at the two IF_TAU1_N codes (chip 0, core 1),
    # not the community table's (about 10)
    b = BIAS_NAMES.index("IF_TAU1_N")
    (cl, fl), (ch, fh) = low_codes[0, 1, b], high_codes[0, 1, b]
    dac = chip.dac(0, 1)
    want = float(dac.current(ch, fh, "IF_TAU1_N")) / float(dac.current(cl, fl, "IF_TAU1_N"))
    assert ratio[0] == pytest.approx(want, rel=1e-12)
    assert abs(want / 10 - 1) > 0.01  # the hidden DAC differs from the table: the check can tell
    codes = _twin_codes(chip, {})
    thr = BIAS_NAMES.index("IF_THR_N")
    codes[:, :, thr] = (7, 255)  # a gain far above what the simulator runs
    assert chip.core_params(0, 1, codes[0, 1])["alpha_soma"] == SATURATION["alpha"][1]
