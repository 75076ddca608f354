"""The parameter table and Params: units, validation, shapes."""

import numpy as np
import pytest
import torch

from dynacal import PARAMETERS, Params
from dynacal.errors import ParameterError
from dynacal.params import per_core
from dynacal.units import format_quantity, parse_quantity


#: dpi-model.md, "Constants and defaults", written out here in the doc's own units (the
#: table in dynacal.params must agree with the document, so the test does not read the table)
_pA, _pF, _ms, _mV = 1e-12, 1e-12, 1e-3, 1e-3
DOCUMENTED = {
    "kn": 0.75, "kp": 0.66, "Ut": 25 * _mV, "I0": 1 * _pA,
    **{f"alpha_{x}": 4.0 for x in ("soma", "ahp", "nmda", "ampa", "gaba_a", "gaba_b")},
    "Csoma_mem": 2 * _pF, "Isoma_dpi_tau": 5 * _pA, "Isoma_th": 2000 * _pA, "Isoma_reset": 1.2 * _pA,
    "Isoma_const": 1 * _pA, "soma_refP": 5 * _ms, "Csoma_ahp": 4 * _pF, "Isoma_ahp_tau": 2 * _pA,
    "Isoma_ahp_w": 1 * _pA, "Isoma_pfb_gain": 100 * _pA, "Isoma_pfb_th": 1000 * _pA, "Isoma_pfb_norm": 20 * _pA,
    "Cnmda": 2 * _pF, "Campa": 2 * _pF, "Cgaba_a": 2 * _pF, "Cgaba_b": 2 * _pF,
    "Inmda_tau": 2 * _pA, "Iampa_tau": 20 * _pA, "Igaba_a_tau": 5 * _pA, "Igaba_b_tau": 5 * _pA,
    "Inmda_w0": 100 * _pA, "Iampa_w0": 100 * _pA, "Igaba_a_w0": 100 * _pA, "Igaba_b_w0": 100 * _pA,
    "Inmda_thr": 1 * _pA,
}


def test_defaults_are_the_documented_ones():
    assert len(DOCUMENTED) == 35
    # every parameter of the table is documented, and every documented one is in the table
    assert set(PARAMETERS) == set(DOCUMENTED), set(PARAMETERS) ^ set(DOCUMENTED)
    p = Params.from_values()
    assert p.shape == (1, 1)
    for name, value in DOCUMENTED.items():
        assert PARAMETERS[name].default == pytest.approx(value, rel=1e-12), name
        assert float(getattr(p, name)) == pytest.approx(value, rel=1e-12), name


def test_strings_with_units():
    p = Params.from_values({"Isoma_th": "2 nA", "soma_refP": "3 ms", "Csoma_mem": "1.5pF"})
    assert float(p.Isoma_th) == pytest.approx(2e-9)
    assert float(p.soma_refP) == pytest.approx(3e-3)
    assert float(p.Csoma_mem) == pytest.approx(1.5e-12)
    with pytest.raises(ParameterError, match="unit 'mV'"):
        Params.from_values(Isoma_th="2 mV")


@pytest.mark.parametrize("name,value,match", [
    ("Isoma_dpi_tau", 5.0, "pA given as A: pass 5e-12"),
    ("Csoma_mem", 2.0, "pF given as F"),
    ("soma_refP", 5.0, "ms given as s"),
    ("Ut", 25.0, "mV given as V"),
    ("Isoma_th", float("nan"), "NaN"),
    ("Isoma_dpi_tau", -1e-12, "negative"),
    ("Isoma_dpi_tau", 0.0, "> 0"),
])
def test_bad_values_are_named_with_fix(name, value, match):
    with pytest.raises(ParameterError, match=match) as info:
        Params.from_values({name: value})
    assert name in str(info.value)


def test_unknown_name_suggests_closest():
    with pytest.raises(ParameterError, match="Did you mean 'Isoma_dpi_tau'"):
        Params.from_values(Isoma_dpi_tua=5e-12)


def test_shapes_scalar_neuron_batch_and_broadcast_errors():
    p = Params.from_values(Isoma_dpi_tau=np.full(7, 5e-12), Iampa_w0=torch.full((3, 1), 1e-10, dtype=torch.float64))
    assert p.shape == (3, 7)
    assert p.expand(3, 7).Isoma_th.shape == (3, 7)
    with pytest.raises(ParameterError, match="does not broadcast"):
        Params.from_values(Isoma_dpi_tau=np.full(7, 5e-12), Iampa_w0=np.full(5, 1e-10))
    with pytest.raises(ParameterError, match="expected a scalar"):
        Params.from_values(Isoma_th=np.ones((2, 2, 2)) * 1e-9)
    with pytest.raises(ParameterError, match="do not fit"):
        p.expand(4, 7)


def test_replace_validates_and_keeps_others():
    p = Params.from_values(Isoma_th="1 nA")
    q = p.replace(Iampa_w0="50 pA")
    assert float(q.Isoma_th) == pytest.approx(1e-9) and float(q.Iampa_w0) == pytest.approx(5e-11)
    with pytest.raises(ParameterError):
        p.replace(Iampa_w0=-1.0)


def test_per_core_expansion():
    core_of = np.array([0, 0, 1, 1, 1])
    out = per_core([1e-12, 2e-12], core_of)
    assert out.tolist() == [1e-12, 1e-12, 2e-12, 2e-12, 2e-12]
    batched = per_core(np.array([[1.0, 2.0], [3.0, 4.0]]), core_of)
    assert batched.shape == (2, 5)
    with pytest.raises(ParameterError, match="one value per core"):
        per_core([1.0], core_of)


def test_every_parameter_has_unit_doc_and_plausible_default():
    for name, spec in PARAMETERS.items():
        assert spec.name == name and spec.doc
        assert spec.low <= spec.default <= spec.high, name


def test_quantity_round_trip():
    assert parse_quantity("5 pA", "A") == pytest.approx(5e-12)
    assert parse_quantity("100us", "s") == pytest.approx(1e-4)
    assert format_quantity(5e-12, "A") == "5 pA"
    assert format_quantity(2e-9, "A") == "2 nA"
    with pytest.raises(ParameterError):
        parse_quantity("five pA", "A")


def test_float32_params_keep_dtype():
    p = Params.from_values(dtype=torch.float32)
    assert p.Isoma_th.dtype == torch.float32 and p.dtype == torch.float32
