"""One resolver for backends by name. The only place the core names optional modules.

>>> get_backend(None).name
'torch'
"""

from __future__ import annotations

import difflib
import importlib
import inspect
import re
from typing import Any, Callable

from ..errors import BackendUnavailable, ParameterError, unknown_name

__all__ = ["get_backend", "BACKENDS", "ARGUMENTS"]

#: name -> "module:object" (imported only when asked for) and the extra that provides it.
BACKENDS: dict[str, tuple[str, str | None]] = {
    "torch": ("dynacal.backends.torch_sim:TorchBackend", None),
    "brian2": ("dynacal.backends.brian2_ref:Brian2Backend", "brian2"),
    "replay": ("dynacal.backends.replay:ReplayBackend", None),
    # the physical board through samna, and the twin board (a simulated chip behind a fake samna)
    "board": ("dynacal.hardware.samna_board:BoardBackend", "hardware"),
    "twin": ("dynacal.hardware.twin:twin_backend", None),
}


def _serial(value: Any, spec: str) -> int:
    """A twin's serial number: a non-negative integer, or its decimal digits."""
    if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if hasattr(value, "__index__") and not isinstance(value, bool) and int(value.__index__()) >= 0:
        return int(value.__index__())  # numpy integers
    raise ParameterError(f"backend {spec!r}: the twin's serial number must be a non-negative integer, not "
                         f"{value!r}; the serial seeds the twin's hidden chip. Write e.g. 'twin:1234', or "
                         f"'twin' for the default twin.")


#: name -> (constructor keyword that the text after ":" fills, what it is, how it is read).
ARGUMENTS: dict[str, tuple[str, str, Callable[[Any, str], Any] | None]] = {
    "torch": ("engine", "the engine: auto, eager or fused (torch:eager)", None),
    "brian2": ("target", "the Brian2 target: runtime or cpp_standalone (brian2:cpp_standalone)", None),
    "replay": ("path", "a folder or .h5 file of recordings (replay:recordings/)", None),
    "board": ("device_name", "samna's device name (board:Dynapse1DevKit)", None),
    "twin": ("serial", "the twin chip's serial number, a non-negative integer (twin:1234)", _serial),
}


def get_backend(spec: Any = None, **options: Any):
    """Resolve a backend.

    Args:
        spec: None (the torch simulator), a name (``"torch"``, ``"brian2"``, ``"board"``,
            ``"twin"``), a name with one argument (``ARGUMENTS``: ``"torch:eager"``,
            ``"brian2:cpp_standalone"``, ``"replay:recordings/fi.h5"``, ``"twin:1234"`` for a
            twin with serial 1234), or an object with ``name`` and ``run``, which passes through.
        **options: keyword arguments of the backend's constructor.

    Raises:
        ParameterError: an unknown name or option, an argument that is not what the backend
            takes, or an argument given twice (after ":" and as an option).
        BackendUnavailable: its extra is not installed.
    """
    if spec is None:
        spec = "torch"
    if not isinstance(spec, str):
        if hasattr(spec, "run") and hasattr(spec, "name"):
            if options:
                raise ParameterError(f"options {sorted(options)} were given with a backend object "
                                     f"({type(spec).__name__}); options apply only to a backend named "
                                     f"by a string. Configure the object itself instead.")
            return spec
        raise ParameterError(f"backend must be a name ({', '.join(BACKENDS)}) or an object with .name and "
                             f".run, not {type(spec).__name__} {spec!r}.")
    name, colon, arg = spec.partition(":")
    if name not in BACKENDS:
        raise unknown_name("backend", name, BACKENDS)
    keyword, meaning, read = ARGUMENTS[name]
    if colon and arg:
        if keyword in options:
            raise ParameterError(f"backend {spec!r} gives {keyword} twice: {arg!r} after ':' and "
                                 f"{keyword}={options[keyword]!r}; keep one of them.")
        options = {keyword: arg, **options}
    elif colon:
        raise ParameterError(f"backend {spec!r} has nothing after ':'; after '{name}:' comes {meaning}.")
    if read is not None and keyword in options:
        options[keyword] = read(options[keyword], spec)
    factory = _load(name)
    _check_options(name, factory, options)
    return factory(**options)


def _load(name: str):
    target, extra = BACKENDS[name]
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        if isinstance(exc, BackendUnavailable):
            raise
        hint = f" Install it with: pip install 'dynacal[{extra}]'" if extra else ""
        raise BackendUnavailable(f"backend {name!r} cannot be loaded: {exc}.{hint}") from exc
    return getattr(module, attr)


def _check_options(name: str, factory, options: dict[str, Any]) -> None:
    """An unknown option names the valid ones (before the constructor's bare TypeError)."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # a builtin without a signature: the constructor checks
        return
    params = signature.parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return  # passes options on to another constructor, which checks them
    valid = [p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    for key in options:
        if key not in valid:
            close = difflib.get_close_matches(key, valid, n=1, cutoff=0.5)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            raise ParameterError(f"backend {name!r} has no option {key!r}.{hint} Its options: {', '.join(valid)}.")
