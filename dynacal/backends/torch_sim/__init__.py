"""The torch simulator: one backend, three engines behind one contract.

- :mod:`.backend`: :class:`TorchBackend`, which resolves parameters, picks the engine
  (``engine="auto" | "eager" | "fused"``) and returns Recordings;
- :mod:`.engine`: the contract every engine keeps (:class:`Request`, :class:`EngineResult`,
  the run's health);
- :mod:`.layout`: the parameter-only terms every engine reads, derived once in torch from
  the table, in one order;
- the engines: :mod:`.eager` (the time loop over :func:`.dpi.dpi_step`, the physics), :mod:`.cpu`
  (numba, with its gradient :mod:`.cpu_grad`) and :mod:`.cuda` (Triton).
"""

from .backend import ENGINES, TorchBackend
from .eager import round_ste
from .engine import EngineResult, Request

__all__ = ["TorchBackend", "ENGINES", "EngineResult", "Request", "round_ste"]
