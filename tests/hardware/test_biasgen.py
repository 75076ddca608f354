"""The bias DAC: forward and inverse maps, conventions, files, errors, vectorised speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from dynacal.errors import ParameterError
from dynacal.hardware.biasgen import (BIAS_NAMES, DEFAULT_COARSE_CURRENTS, N_COARSE, N_FINE, BiasDAC,
                                      reverse_coarse)
from dynacal.hardware.dacfile import load_dac, save_dac


def test_default_table_is_the_community_approximation():
    dac = BiasDAC()
    # I = I_coarse[c] * f / 255 (shared/docs/dynapse1-hardware.md)
    for c, top in enumerate(DEFAULT_COARSE_CURRENTS):
        assert dac.current(c, 255) == pytest.approx(top, rel=1e-12)
        assert dac.current(c, 51) == pytest.approx(top * 51 / 255, rel=1e-12)
        assert dac.current(c, 0) == 0.0
    assert BiasDAC(fine_formula="(f+1)/256").current(7, 0) == pytest.approx(24e-6 / 256)


@pytest.mark.parametrize("dac", [BiasDAC(), BiasDAC(floor=3e-13, scale={"IF_THR_N": 1.3}),
                                 BiasDAC(fine_formula="(f+1)/256")], ids=["default", "floor-scale", "f+1"])
def test_monotone_within_each_coarse_range(dac):
    for bias in ("IF_THR_N", "IF_TAU1_N"):
        t = dac.table(bias)
        assert t.shape == (N_COARSE, N_FINE)
        assert np.all(np.diff(t, axis=1) > 0), f"{bias}: not strictly increasing in fine within a coarse range"


def test_round_trip_current_code_current_within_the_grid_step():
    dac = BiasDAC(floor=2e-13, scale={"NPDPIE_THR_F_P": 0.8})
    lo, hi = dac.reachable("NPDPIE_THR_F_P")
    targets = np.geomspace(lo, hi, 5000)
    r = dac.code(targets, "NPDPIE_THR_F_P")
    table = dac.table("NPDPIE_THR_F_P")
    np.testing.assert_allclose(r.current, table[r.coarse, r.fine], rtol=0)
    # the achieved current is one of the two grid values around the target: within one grid step,
    # and within half a step in ratio (the inverse picks the nearest code in ratio)
    values = np.unique(table.ravel())
    k = np.clip(np.searchsorted(values, targets), 1, values.size - 1)
    step = values[k] - values[k - 1]
    assert np.all(np.abs(r.error) <= step * (1 + 1e-9))
    ratio = np.abs(np.log(r.current / targets))
    assert np.all(ratio <= 0.5 * np.log(values[k] / values[k - 1]) + 1e-12)
    assert np.all(ratio <= np.abs(np.log(values[k] / targets)) + 1e-12)
    assert np.all(ratio <= np.abs(np.log(values[k - 1] / targets)) + 1e-12)
    # a current that is on the grid comes back exactly
    on_grid = dac.current(np.array([2, 5, 6]), np.array([10, 200, 255]), "NPDPIE_THR_F_P")
    back = dac.code(on_grid, "NPDPIE_THR_F_P")
    np.testing.assert_array_equal(back.current, on_grid)


def test_ties_prefer_the_lowest_coarse_range():
    # with this table 1 pA is exactly (0, 255), (1, 85), (2, 51) and (3, 17): a four-way tie
    dac = BiasDAC(coarse_currents=(1e-12, 3e-12, 5e-12, 15e-12, 16e-12, 32e-12, 64e-12, 128e-12))
    ties = [(0, 255), (1, 85), (2, 51), (3, 17)]
    assert len({float(dac.current(c, f)) for c, f in ties}) == 1  # the tie is real
    r = dac.code(1e-12)
    assert (int(r.coarse), int(r.fine)) == (0, 255) and float(r.error) == 0.0
    assert int(dac.code(0.0).fine) == 0 and float(dac.code(0.0).current) == 0.0


def test_bit_reversed_convention():
    assert reverse_coarse(np.arange(8)).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]
    logical, reversed_ = BiasDAC(), BiasDAC(bit_reversed=True)
    assert reversed_.current(reverse_coarse(3), 200) == logical.current(3, 200)
    r, q = logical.code(3.3e-9), reversed_.code(3.3e-9)
    assert int(q.coarse) == int(reverse_coarse(r.coarse)) and int(q.fine) == int(r.fine)


def test_out_of_range_codes_are_errors_naming_the_code_and_range():
    dac = BiasDAC()
    with pytest.raises(ParameterError, match=r"coarse code 8 of IF_DC_P is out of range 0\.\.7"):
        dac.current(8, 10, "IF_DC_P")
    with pytest.raises(ParameterError, match=r"fine code 256 .* out of range 0\.\.255"):
        dac.current(1, 256)
    with pytest.raises(ParameterError, match="fine code -1"):
        dac.current(np.array([[1, 2]]), np.array([[3, -1]]), ["IF_DC_P", "IF_THR_N"])
    with pytest.raises(ParameterError, match="integers"):
        dac.current(1.5, 3)


def test_unreachable_currents_are_errors_that_state_the_range():
    dac = BiasDAC(floor=1e-13)
    with pytest.raises(ParameterError, match=r"IF_TAU1_N: target 30 uA is above the reachable range "
                                             r"100 fA\.\.24 uA"):
        dac.code(30e-6, "IF_TAU1_N")
    with pytest.raises(ParameterError, match=r"below the reachable range 100 fA"):
        dac.code(5e-14, "IF_TAU1_N")
    with pytest.raises(ParameterError, match="negative or not finite"):
        dac.code(np.array([1e-12, np.nan]))
    assert BiasDAC().reachable() == (pytest.approx(15e-12 / 255), 24e-6)


def test_unknown_bias_names_list_the_valid_ones():
    with pytest.raises(ParameterError, match=r"unknown bias 'IF_TAU_N'\. Did you mean 'IF_TAU[12]_N'\?.*R2R_P"):
        BiasDAC().current(1, 1, "IF_TAU_N")
    with pytest.raises(ParameterError, match="unknown bias"):
        BiasDAC(scale={"NOPE": 1.0})


def test_vectorised_1024_neurons_by_25_biases_and_torch(record_property):
    dac = BiasDAC(floor=2e-13, scale={b: 1 + 0.01 * k for k, b in enumerate(BIAS_NAMES)})
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 8, (1024, 25))
    fine = rng.integers(1, 256, (1024, 25))
    t0 = time.perf_counter()
    currents = dac.current(coarse, fine, BIAS_NAMES)
    t1 = time.perf_counter()
    back = dac.code(currents, BIAS_NAMES)
    t2 = time.perf_counter()
    record_property("dac_forward_1024x25_s", t1 - t0)
    record_property("dac_inverse_1024x25_s", t2 - t1)
    print(f"\nDAC 1024 x 25: forward {1e3 * (t1 - t0):.2f} ms, inverse {1e3 * (t2 - t1):.2f} ms")
    assert currents.shape == (1024, 25) and back.coarse.shape == (1024, 25)
    np.testing.assert_array_equal(back.current, currents)  # on-grid currents come back exactly
    np.testing.assert_allclose(currents[:, 3], dac.current(coarse[:, 3], fine[:, 3], BIAS_NAMES[3]))
    # torch codes in, torch currents out, same values
    tc = dac.current(torch.as_tensor(coarse), torch.as_tensor(fine), BIAS_NAMES)
    assert isinstance(tc, torch.Tensor) and tc.dtype == torch.float64
    np.testing.assert_array_equal(tc.numpy(), currents)
    np.testing.assert_array_equal(dac.code(torch.as_tensor(currents), BIAS_NAMES).fine, back.fine)


def test_json_and_csv_files_round_trip(tmp_path):
    dac = BiasDAC(floor=2e-13, scale={"IF_THR_N": 1.2}, bit_reversed=True, name="lab chip 7")
    again = load_dac(save_dac(dac, tmp_path / "dac.json"))
    assert again.bit_reversed and again.name == "lab chip 7"
    np.testing.assert_array_equal(again.table("IF_THR_N"), dac.table("IF_THR_N"))
    table = load_dac(save_dac(dac, tmp_path / "dac.csv"))
    for bias in ("IF_THR_N", "R2R_P"):
        np.testing.assert_allclose(table.table(bias), dac.table(bias), rtol=1e-15)


def test_measured_csv_table_fills_unmeasured_codes(tmp_path):
    path = tmp_path / "chip7.csv"
    # IF_TAU1_N measured 10 % above the model in coarse 3, written in the reversed convention
    rows = [f"IF_TAU1_N,{int(reverse_coarse(3))},{f},{1.1 * 6.5e-9 * f / 255!r}" for f in (10, 100, 200)]
    rows += ["*,0,255,1.6e-11"]
    path.write_text("# coarse_convention: reversed\n# name: chip7\nbias,coarse,fine,current_A\n" + "\n".join(rows))
    dac = load_dac(path)
    assert dac.name == "chip7" and not dac.bit_reversed
    assert dac.current(3, 100, "IF_TAU1_N") == pytest.approx(1.1 * 6.5e-9 * 100 / 255)
    assert dac.current(3, 50, "IF_TAU1_N") == pytest.approx(1.1 * 6.5e-9 * 50 / 255)  # filled, scaled
    assert dac.current(4, 50, "IF_TAU1_N") == pytest.approx(50e-9 * 50 / 255)  # unmeasured range: model
    assert dac.current(0, 255, "IF_THR_N") == pytest.approx(1.6e-11)  # the "*" rows
    bad = tmp_path / "bad.csv"
    bad.write_text("bias,coarse,fine,current_A\nIF_TAU1_N,9,1,1e-9\n")
    with pytest.raises(ParameterError, match="coarse code 9"):
        load_dac(bad)
    bad.write_text("bias,coarse,current_A\n")
    with pytest.raises(ParameterError, match="header must be"):
        load_dac(bad)
