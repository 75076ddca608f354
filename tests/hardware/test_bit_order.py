"""The coarse code's bit order on the wire for a bit-reversed DAC: in the exported bias file and
in what reaches samna's ``Dynapse1Parameter`` (whole configuration and live updates)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dynacal import Params
from dynacal.hardware.biasgen import BIAS_NAMES, BiasDAC, reverse_coarse
from dynacal.hardware.biasmap import export_biases, import_biases, params_to_codes
from dynacal.hardware.twin import twin_backend

from .conftest import small_experiment

pytestmark = pytest.mark.hardware

ASYMMETRIC = {1, 3, 4, 6}  # coarse codes that bit reversal changes


def test_reverse_coarse_swaps_the_outer_bits():
    assert reverse_coarse(np.arange(8)).tolist() == [0, 4, 2, 6, 1, 5, 3, 7]


def test_the_exported_file_holds_reversed_coarse_codes(tmp_path):
    per_core = {(0, 1): {"Iampa_w0": 50e-12, "Isoma_dpi_tau": 2e-12, "Inmda_w0": 3e-9}}
    setting = export_biases(tmp_path / "b.json", per_core, coarse_convention="reversed")
    export_biases(tmp_path / "l.json", per_core, coarse_convention="logical")
    rev = json.loads((tmp_path / "b.json").read_text())["0"]["1"]
    log = json.loads((tmp_path / "l.json").read_text())["0"]["1"]
    logical = setting.codes[(0, 1)]
    assert {c for c, _ in logical.values()} & ASYMMETRIC  # the test can tell the two orders apart
    for bias in BIAS_NAMES:
        assert log[bias] == list(logical[bias])
        assert rev[bias] == [int(reverse_coarse(logical[bias][0])), logical[bias][1]]
    back = import_biases(tmp_path / "b.json")
    assert back.codes[(0, 1)] == logical


def test_a_bit_reversed_dac_sends_reversed_coarse_codes_to_samna():
    dac = BiasDAC(bit_reversed=True)
    backend = twin_backend(dac=dac, discharge=False)
    exp = small_experiment(n_steps=300)
    weights = torch.tensor([[60e-12], [3e-9]], dtype=torch.float64)
    rec = backend.run(exp, Params.from_values(Iampa_w0=weights))
    logical = [{k: tuple(v) for k, v in codes["0,1"].items()} for codes in rec.metadata["board"]["codes"]]
    assert {c for c, _ in logical[1].values()} & ASYMMETRIC
    wire = backend.twin.state.codes[0, 1]  # what samna's Dynapse1Parameter carried, after set 1's update
    for i, bias in enumerate(BIAS_NAMES):
        c, f = logical[1][bias]
        assert tuple(wire[i]) == (int(reverse_coarse(c)), f), bias
    # the logical codes are what the DAC model gives the wanted currents for
    want = params_to_codes({(0, 1): {"Iampa_w0": 3e-9, "Inmda_w0": 200e-12}}, dac).codes[(0, 1)]
    assert logical[1]["PS_WEIGHT_EXC_F_N"] == want["PS_WEIGHT_EXC_F_N"]
    assert logical[0]["PS_WEIGHT_EXC_F_N"] != logical[1]["PS_WEIGHT_EXC_F_N"]  # set 1 was a live update
