"""Human units at the edges: parse "5 pA" into 5e-12 and print 5e-12 as "5 pA".

Inside dynacal every physical quantity is an SI float (A, F, V, s, Hz). Only the CLI,
file readers and writers and the ``Params`` constructors accept strings with units.
"""

from __future__ import annotations

import decimal
import math
import re

from .errors import ParameterError

__all__ = ["parse_quantity", "format_quantity", "PREFIXES"]

PREFIXES = {"f": 1e-15, "p": 1e-12, "n": 1e-9, "u": 1e-6, "µ": 1e-6, "μ": 1e-6,
            "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6}
# The power of ten of each prefix: scaling in decimal keeps "100 us" exactly 1e-4 (the
# float product 100 * 1e-6 is 9.999999999999999e-05, and content hashes use repr(dt)).
_EXPONENTS = {"f": -15, "p": -12, "n": -9, "u": -6, "µ": -6, "μ": -6, "m": -3, "": 0, "k": 3, "M": 6}
_BASE_UNITS = ("A", "F", "V", "s", "Hz")
#: an example for error messages, in the units a user writes (not '5 pHz' or '5 ps')
_EXAMPLES = {"A": "5 pA", "F": "2 pF", "V": "25 mV", "s": "100 ms", "Hz": "80 Hz"}
_QUANTITY = re.compile(r"^\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*([a-zA-Zµμ]*)\s*$")


def parse_quantity(text: str, unit: str, *, name: str = "value") -> float:
    """Parse a number with an optional unit into SI.

    Args:
        text: e.g. ``"5 pA"``, ``"100us"``, ``"2e-12"`` (a bare number is taken as SI).
        unit: the SI unit expected, e.g. ``"A"``; ``""`` for dimensionless values.
        name: the parameter's name, for the error message.

    Returns:
        The value in SI units.

    Raises:
        ParameterError: the text is not a number, or its unit is not a prefixed ``unit``.

    >>> parse_quantity("5 pA", "A")
    5e-12
    >>> parse_quantity("100 us", "s")
    0.0001
    """
    match = _QUANTITY.match(str(text))
    if not match:
        raise ParameterError(f"{name} = {text!r} is not a number with a unit; write e.g. "
                             f"'{_EXAMPLES.get(unit, '5 ' + unit)}'.")
    number, suffix = match.group(1), match.group(2)
    if suffix == "":
        return float(number)
    if unit and suffix.endswith(unit) and suffix[: -len(unit)] in _EXPONENTS:
        # correctly rounded: the float nearest to the decimal value the user wrote
        return float(decimal.Decimal(number).scaleb(_EXPONENTS[suffix[: -len(unit)]]))
    expected = f"a prefixed {unit!r} (fA, pA, nA, ...)" if unit else "no unit"
    raise ParameterError(f"{name} = {text!r} has unit {suffix!r}; expected {expected}.")


def format_quantity(value: float, unit: str, digits: int = 4) -> str:
    """Format an SI value with the best prefix: ``format_quantity(5e-12, "A") == "5 pA"``."""
    if unit == "" or value == 0 or not math.isfinite(value):
        return f"{value:.{digits}g}" + (f" {unit}" if unit else "")
    exponent = math.floor(math.log10(abs(value)) / 3) * 3
    exponent = min(max(exponent, -15), 6)
    prefix = {-15: "f", -12: "p", -9: "n", -6: "u", -3: "m", 0: "", 3: "k", 6: "M"}[exponent]
    return f"{value / 10 ** exponent:.{digits}g} {prefix}{unit}"
