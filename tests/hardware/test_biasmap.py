"""Bias names <-> model parameters: the map, rounding reports, bias files."""

from __future__ import annotations

import json

import numpy as np
import pytest

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
