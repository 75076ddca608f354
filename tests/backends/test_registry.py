"""``get_backend``: names, the argument after ':', options, and the errors for each."""

from __future__ import annotations

import numpy as np
import pytest

from dynacal import ParameterError, get_backend
from dynacal.backends.registry import ARGUMENTS, BACKENDS
from dynacal.backends.torch_sim import TorchBackend


def test_every_backend_says_what_its_argument_is():
    assert set(ARGUMENTS) == set(BACKENDS)


def test_the_argument_fills_the_constructor_keyword():
    assert get_backend("torch:eager").engine == "eager"
    assert get_backend("torch", engine="eager").engine == "eager"
    assert get_backend("twin:1234").twin.serial_number == 1234
    assert get_backend("twin", serial=np.int64(77)).twin.serial_number == 77
    assert get_backend("twin", serial="78").twin.serial_number == 78
    sim = TorchBackend()
    assert get_backend(sim) is sim


@pytest.mark.parametrize("text", ["abc", "-5", "1.5", "0x10", "12 34"])
def test_a_twin_serial_that_is_not_an_integer_is_refused_with_the_fix(text):
    with pytest.raises(ParameterError, match=r"serial number must be a non-negative integer.*'twin:1234'") as info:
        get_backend(f"twin:{text}")
    assert repr(text) in str(info.value) and f"'twin:{text}'" in str(info.value)


@pytest.mark.parametrize("value", [-1, 2.0, True, None, "x"])
def test_a_twin_serial_option_is_checked_too(value):
    with pytest.raises(ParameterError, match="serial number must be a non-negative integer"):
        get_backend("twin", serial=value)


@pytest.mark.parametrize("name", sorted(BACKENDS))
def test_nothing_after_the_colon_says_what_belongs_there(name):
    with pytest.raises(ParameterError, match=f"nothing after ':'; after '{name}:' comes "):
        get_backend(f"{name}:")


def test_the_argument_and_the_option_both_given_is_refused():
    with pytest.raises(ParameterError, match="gives engine twice: 'eager' after ':' and engine='fused'"):
        get_backend("torch:eager", engine="fused")


def test_an_unknown_option_lists_the_valid_ones_closest_first():
    with pytest.raises(ParameterError, match="no option 'egine'. Did you mean 'engine'.*substeps"):
        get_backend("torch", egine="fused")


def test_an_unknown_name_or_a_wrong_type_is_refused():
    with pytest.raises(ParameterError, match="unknown backend 'tourch'. Did you mean 'torch'"):
        get_backend("tourch")
    with pytest.raises(ParameterError, match="not int 5"):
        get_backend(5)
    with pytest.raises(ParameterError, match="options apply only to a backend named by a string"):
        get_backend(TorchBackend(), engine="eager")
