"""Make the source checkout importable as the installed package is.

``python -m pytest`` (the README's test command) puts the checkout first on ``sys.path``,
so the tests import ``dynacal/`` from the source tree rather than the installed copy. There,
the subpackages that pyproject.toml maps in (``hardware/`` -> ``dynacal.hardware``,
``fitting/`` -> ``dynacal.fitting``) are missing: an editable install maps them, a regular
``pip install .`` does not. This applies the same mapping, and only where it is missing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import dynacal

_ROOT = Path(__file__).resolve().parent
_MAPPED = {"dynacal.hardware": _ROOT / "hardware", "dynacal.fitting": _ROOT / "fitting"}

for _name, _folder in _MAPPED.items():
    if _name in sys.modules or importlib.util.find_spec(_name) is not None:
        continue
    _spec = importlib.util.spec_from_file_location(_name, _folder / "__init__.py",
                                                   submodule_search_locations=[str(_folder)])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_name] = _module
    _spec.loader.exec_module(_module)
    setattr(dynacal, _name.rpartition(".")[2], _module)
