"""Codes the chip accepts: measured on the twin, they beat the nominal table (truth known)."""

from __future__ import annotations

import numpy as np
import pytest

from dynacal.backends import get_backend
from dynacal.errors import ParameterError
from dynacal.fitting.codes import CodeTable, _invert, check_codes, measure_codes
from dynacal.fitting._codes_probe import _affine
from dynacal.fitting.result import CalibrationResult
from dynacal.hardware.biasgen import BIAS_NAMES
from dynacal.hardware.biasmap import MODEL_PARAMETERS, params_to_codes
from dynacal.hardware.twin_chip import TwinChip
from dynacal.params import PARAMETERS

SERIAL = 7
BIASES = ("IF_TAU1_N", "IF_THR_N", "IF_RFR_N", "PS_WEIGHT_EXC_F_N")
#: requested values away from what the reference codes give: the codes must be found, not kept
REQUEST = {"Isoma_dpi_tau": 7.5e-12, "alpha_soma": 5.0, "soma_refP": 3.8e-3, "Iampa_w0": 1.5e-10}
#: how close each value must come on the chip: the f-I rates are read from ISIs (refractory
#: period limited by the 0.1 ms step), the evoked rate from spike counts (~1 %)
TOLERANCE = {"Isoma_dpi_tau": 0.01, "alpha_soma": 0.01, "soma_refP": 0.01, "Iampa_w0": 0.03}


def reference_codes() -> np.ndarray:
    """The nominal codes of the table defaults (what a target is measured at), every core."""
    codes = params_to_codes({0: {p: PARAMETERS[p].default for p in MODEL_PARAMETERS}}).codes[(0, 0)]
    return np.broadcast_to(np.array([codes[b] for b in BIAS_NAMES]), (4, 4, 25, 2)).copy()


def truth(chip: TwinChip, codes: dict) -> dict:
    full = reference_codes()[0, 0]
    for bias, code in codes.items():
        full[BIAS_NAMES.index(bias)] = code
    return chip.core_params(0, 0, full)


@pytest.fixture(scope="module")
def twin_case():
    """A perfect calibration of core 0 (the twin's own layers at the reference codes) and the
    codes measured for REQUEST through 64 neurons."""
    chip = TwinChip(SERIAL)
    layers = chip.layers(reference_codes(), cores=[0])
    result = CalibrationResult(layers.core_values, layers.mismatch, provenance={"serial": SERIAL})
    # tail_s: the board listens past the twin's 0.5 s tail, so that no set's late spikes reach the next
    board = get_backend(f"twin:{SERIAL}", tail_s=0.6)
    table = measure_codes(result, board, "core0:64", biases=BIASES, values=REQUEST, progress=False)
    return chip, result, board, table


def test_measured_codes_give_the_requested_values_on_the_chip(twin_case):
    chip, result, _, table = twin_case
    nominal_codes = params_to_codes({0: {**result.core_values[0], **REQUEST}}).codes[(0, 0)]
    at_measured, at_nominal = truth(chip, table.codes[0]), truth(chip, nominal_codes)
    for name, want in REQUEST.items():
        err_m, err_n = at_measured[name] / want - 1, at_nominal[name] / want - 1
        assert abs(err_m) < TOLERANCE[name], (name, err_m)
        assert abs(err_m) < abs(err_n), (name, err_m, err_n)
    rows = {r["bias"]: r for r in table.rows}
    for bias in BIASES:  # the table's own prediction agrees with the truth
        r = rows[bias]
        assert r["predicted"] == pytest.approx(at_measured[r["parameter"]], rel=TOLERANCE[r["parameter"]])
        assert len(r["sweep"]) == 3 and all(s["neurons"] >= 7 for s in r["sweep"])
    # the DC each probe code gives on this chip, against the twin's own DAC
    dac = chip.dac(0, 0)
    for s in rows["IF_DC_P"]["sweep"]:
        assert s["measured"] == pytest.approx(float(dac.current(*s["code"], "IF_DC_P")), rel=0.01)
    # an unmeasured bias keeps the reference code, where the calibration holds
    ref = params_to_codes({0: {p: PARAMETERS[p].default for p in MODEL_PARAMETERS}}).codes[(0, 0)]
    assert tuple(table.codes[0]["NPDPIE_TAU_F_P"]) == ref["NPDPIE_TAU_F_P"]
    assert "reference code" in table.unmeasured[0]["NPDPIE_TAU_F_P"]
    assert table.settings["board_runs"] <= 30  # a short sweep


def test_board_at_measured_codes_behaves_like_the_calibrated_simulator(twin_case):
    _, result, board, table = twin_case
    check = check_codes(table, result, board, "core0:64", values=REQUEST)
    assert check["error_measured"] < 0.02
    assert check["error_measured"] < check["error_nominal"] / 3


def test_code_table_in_the_calibration_file(twin_case, tmp_path):
    _, result, _, table = twin_case
    with_codes = result.with_codes(table)
    back = CalibrationResult.load(with_codes.save(tmp_path))
    assert back.export_codes()[0]["IF_TAU1_N"] == list(table.codes[0]["IF_TAU1_N"])
    assert back.codes == result.codes  # the nominal ones are kept beside them
    again = CodeTable.from_dict(back.code_table)
    assert again.codes == {0: {b: list(c) for b, c in table.codes[0].items()}}
    assert "IF_TAU1_N" in again.to_text()


def test_invert_finds_each_neurons_value_and_refuses_what_it_cannot_reach():
    grid = np.geomspace(1, 10, 30)
    sim = np.stack([100 / grid, 50 / grid, np.full(30, 7.0)], axis=1)  # falling, falling, flat
    board = np.array([[100 / 3, 50 / 3, 7.0], [200.0, 50 / 4, 7.0]])
    out, usable = _invert(sim, grid, board)
    assert usable.tolist() == [True, True, False]
    assert out[0, 0] == pytest.approx(3, rel=0.01) and out[0, 1] == pytest.approx(3, rel=0.01)
    assert np.isnan(out[1, 0]) and out[1, 1] == pytest.approx(4, rel=0.01) and np.isnan(out[:, 2]).all()


def test_affine_recovers_a_floor_and_a_scale():
    nominal = np.array([4e-12, 6e-12, 8e-12])
    offset, slope = _affine(nominal, 3e-13 + 0.9 * nominal)
    assert offset == pytest.approx(3e-13, rel=1e-6) and slope == pytest.approx(0.9, rel=1e-9)
    assert _affine(nominal[:1], nominal[:1] * 1.1) == pytest.approx((0.0, 1.1))


def test_bad_requests():
    layers = TwinChip(SERIAL).layers(reference_codes(), cores=[0])
    board = object()
    with pytest.raises(ParameterError, match="no probe measures NPDPIE_TAU_F_P"):
        measure_codes(layers, board, "core0", biases=["NPDPIE_TAU_F_P"])
    with pytest.raises(ParameterError, match="IF_TAU1"):
        measure_codes(layers, board, "core0", biases=["IF_TAU1"])
    with pytest.raises(ParameterError, match="one calibrated core at a time"):
        measure_codes(layers, board, "core1")
    with pytest.raises(ParameterError, match="Isoma_dpi_tua|closest"):
        measure_codes(layers, board, "core0", values={"Isoma_dpi_tua": 1e-12})
    with pytest.raises(ParameterError, match="n_codes"):
        measure_codes(layers, board, "core0", n_codes=1)
    with pytest.raises(ParameterError, match="CalibrationResult or ChipLayers"):
        measure_codes({"Isoma_dpi_tau": 1e-12}, board, "core0")


def test_calibrated_values_find_the_reference_codes_not_the_nominal_ones(twin_case):
    """At the calibrated values the chip's answer is the codes the target was measured at."""
    chip, result, board, _ = twin_case
    table = measure_codes(result, board, "core0:64", biases=["IF_RFR_N"], progress=False)
    ref = params_to_codes({0: {p: PARAMETERS[p].default for p in MODEL_PARAMETERS}}).codes[(0, 0)]
    assert tuple(table.codes[0]["IF_RFR_N"]) == ref["IF_RFR_N"]
    assert tuple(result.codes[0]["IF_RFR_N"]) != ref["IF_RFR_N"]  # the nominal table misses them
    got = truth(chip, table.codes[0])
    assert got["soma_refP"] == pytest.approx(result.core_values[0]["soma_refP"], rel=1e-9)
