import numpy as np
import pytest

from dynacal.errors import ParameterError
from dynacal.fitting.space import NOT_BIASES, Parameter, SearchSpace, core_parameter, reachable_range

from .synthetic import target


def test_parameter_unit_round_trip_and_bounds():
    p = Parameter("Isoma_dpi_tau", 1e-12, 1e-10)
    x = np.array([1e-12, 1e-11, 1e-10])
    assert np.allclose(p.from_unit(p.to_unit(x)), x)
    assert p.default == pytest.approx(1e-11)
    assert p.from_unit(np.array([-1.0, 2.0])).tolist() == pytest.approx([1e-12, 1e-10])
    with pytest.raises(ParameterError, match="outside its search range"):
        p.check([5e-10])
    with pytest.raises(ParameterError, match="low < high"):
        Parameter("Isoma_dpi_tau", 1e-10, 1e-12)
    with pytest.raises(ParameterError, match="Isoma_dpi_taw|Isoma_dpi_tau"):
        Parameter("Isoma_dpi_taw", 1e-12, 1e-10)


def test_default_space_follows_the_protocols():
    space = SearchSpace.default(target())
    assert {"Isoma_dpi_tau", "alpha_soma", "soma_refP"} <= set(space.core)
    assert not set(space.core) & set(NOT_BIASES)
    assert "Isoma_th" not in space.core  # no bias sets it
    assert "Isoma_const" not in space.core  # the f-I curve's condition, not a fitted value
    assert {"Isoma_dpi_tau", "alpha_soma"} <= set(space.mismatch)
    assert "soma_refP" not in space.mismatch  # the silicon does not spread it (twin MISMATCHED)
    leak = space.core["Isoma_dpi_tau"]
    assert leak.log and leak.low == pytest.approx(leak.default / 10) and leak.high == pytest.approx(leak.default * 10)
    assert space.mismatch["alpha_soma"].sigma == 0.2 and space.mismatch["alpha_soma"].default == 1.0
    assert space.scales == {}
    assert "Isoma_th" in SearchSpace.default(target(), include=("Isoma_th",)).core


def test_board_target_gets_condition_scales():
    space = SearchSpace.default(target(board=True))
    assert set(space.scales) == {"Isoma_const"}
    assert space.scales["Isoma_const"].default == 1.0


def test_values_the_dac_cannot_reach_are_refused():
    lo, hi = reachable_range("Isoma_dpi_tau")
    with pytest.raises(ParameterError) as err:
        core_parameter("Isoma_dpi_tau", hi * 10)
    msg = str(err.value)
    assert "Isoma_dpi_tau" in msg and "uA" in msg and "reach" in msg and "give a value inside" in msg
    with pytest.raises(ParameterError, match="Isoma_dpi_tau"):
        SearchSpace({"Isoma_dpi_tau": Parameter("Isoma_dpi_tau", 1e-12, hi * 100)})
    assert core_parameter("Isoma_dpi_tau", 5e-12).high <= hi


def test_code_grid_keeps_values_on_dac_codes():
    from dynacal.hardware.biasgen import BiasDAC

    space = SearchSpace.default(target(), code_grid=True)
    leak = space.core["Isoma_dpi_tau"]
    table = np.unique(BiasDAC().table("IF_TAU1_N"))
    v = leak.from_unit(np.linspace(0, 1, 17))
    assert all(np.isclose(table, x, rtol=1e-12).any() for x in v)
    assert np.unique(v).size > 5


def test_empty_space_is_refused():
    with pytest.raises(ParameterError, match="empty"):
        SearchSpace({}, {})
