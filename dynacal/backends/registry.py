"""One resolver for backends by name. The only place the core names optional modules.

>>> get_backend(None).name
'torch'
"""

from __future__ import annotations

import importlib
from typing import Any

from ..errors import BackendUnavailable, unknown_name

__all__ = ["get_backend", "BACKENDS"]

#: name -> "module:object" (imported only when asked for) and the extra that provides it.
BACKENDS: dict[str, tuple[str, str | None]] = {
    "torch": ("dynacal.backends.torch_sim:TorchBackend", None),
    "brian2": ("dynacal.backends.brian2_ref:Brian2Backend", "brian2"),
    "replay": ("dynacal.backends.replay:ReplayBackend", None),
    # the physical board through samna, and the twin board (a simulated chip behind a fake samna)
    "board": ("dynacal.hardware.samna_board:BoardBackend", "hardware"),
    "twin": ("dynacal.hardware.twin:twin_backend", None),
}


def get_backend(spec: Any = None, **options: Any):
    """Resolve a backend.

    Args:
        spec: None (the torch simulator), a name (``"torch"``, ``"brian2"``, ``"board"``,
            ``"twin"``), a name with one argument (``"replay:recordings/fi.h5"``,
            ``"twin:1234"`` for a twin with serial 1234), or an object with ``name`` and
            ``run``, which passes through.
        **options: keyword arguments of the backend's constructor.

    Raises:
        ParameterError: unknown name. BackendUnavailable: its extra is not installed.
    """
    if spec is None:
        spec = "torch"
    if not isinstance(spec, str):
        if hasattr(spec, "run") and hasattr(spec, "name"):
            return spec
        raise TypeError(f"backend must be a name or an object with .name and .run, not {type(spec).__name__}")
    name, _, arg = spec.partition(":")
    if name not in BACKENDS:
        raise unknown_name("backend", name, BACKENDS)
    target, extra = BACKENDS[name]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if isinstance(exc, BackendUnavailable):
            raise
        hint = f" Install it with: pip install 'dynacal[{extra}]'" if extra else ""
        raise BackendUnavailable(f"backend {name!r} cannot be loaded: {exc}.{hint}") from exc
    cls = getattr(module, attr)
    return cls(arg, **options) if arg else cls(**options)
