"""Backends: the Backend protocol, the registry, and the simulators."""

from .base import Backend, resolve_params
from .registry import BACKENDS, get_backend

__all__ = ["Backend", "BACKENDS", "get_backend", "resolve_params"]
