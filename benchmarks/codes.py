"""Codes the chip accepts, on the twin (issue 9 item 7): measured codes against the nominal table.

A perfect calibration of one twin core (the twin's own layers at the reference codes, the
nominal codes of the table defaults: what a target is measured at) is turned into codes by
:func:`dynacal.fitting.codes.measure_codes`, for the calibrated values and for requested
values away from them. For each, the table prints the chip's true value (``TwinChip``, ground
truth) at the measured codes and at the nominal table's codes, and the median per-neuron f-I
rate error of the board at each against the calibrated simulator (``check_codes``).

Usage (repository root)::

    python benchmarks/codes.py [--serial 7] [--neurons core0]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from dynacal.backends import get_backend
from dynacal.fitting.codes import check_codes, measure_codes
from dynacal.fitting.result import CalibrationResult
from dynacal.hardware.biasgen import BIAS_NAMES
from dynacal.hardware.biasmap import MODEL_PARAMETERS, params_to_codes
from dynacal.hardware.twin_chip import TwinChip
from dynacal.params import PARAMETERS

BIASES = ("IF_TAU1_N", "IF_THR_N", "IF_RFR_N", "PS_WEIGHT_EXC_F_N")
REQUEST = {"Isoma_dpi_tau": 7.5e-12, "alpha_soma": 5.0, "soma_refP": 3.8e-3, "Iampa_w0": 1.5e-10}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--serial", type=int, default=7)
    ap.add_argument("--neurons", default="core0")
    args = ap.parse_args()
    chip = TwinChip(args.serial)
    ref = params_to_codes({0: {p: PARAMETERS[p].default for p in MODEL_PARAMETERS}}).codes[(0, 0)]
    ref_arr = np.array([ref[b] for b in BIAS_NAMES])
    layers = chip.layers(np.broadcast_to(ref_arr, (4, 4, 25, 2)).copy(), cores=[0])
    result = CalibrationResult(layers.core_values, layers.mismatch, provenance={"serial": args.serial})
    board = get_backend(f"twin:{args.serial}", tail_s=0.6)  # see measure_codes' note on the twin's tail

    def truth(codes):
        full = ref_arr.copy()
        for bias, code in codes.items():
            full[BIAS_NAMES.index(bias)] = code
        return chip.core_params(0, 0, full)

    for label, values in (("calibrated values", None), ("requested values", REQUEST)):
        t = time.perf_counter()
        table = measure_codes(result, board, args.neurons, biases=BIASES, values=values, progress=False)
        wall = time.perf_counter() - t
        check = check_codes(table, result, board, args.neurons, values=values)
        want = {**result.core_values[0], **(values or {})}
        nominal = params_to_codes({0: want}).codes[(0, 0)]
        got_m, got_n = truth(table.codes[0]), truth(nominal)
        print(f"\n{label} ({args.neurons}, twin:{args.serial}): {table.settings['board_runs']} board runs, "
              f"{wall:.0f} s")
        print(table.to_text())
        print(f"{'parameter':<14} {'wanted':>10} {'measured codes':>15} {'nominal codes':>14}   (true value error)")
        for name in REQUEST:
            print(f"{name:<14} {want[name]:>10.4g} {100 * (got_m[name] / want[name] - 1):>+14.2f}% "
                  f"{100 * (got_n[name] / want[name] - 1):>+13.2f}%")
        print(f"f-I rate error vs the calibrated simulator (median over neurons and {len(check['levels'])} levels): "
              f"measured codes {100 * check['error_measured']:.2f}%, nominal codes {100 * check['error_nominal']:.2f}%")


if __name__ == "__main__":
    main()
