"""Size before work: a run whose traces will not fit in memory is refused before it starts.

The backends call :func:`check_traces_fit` with what a run will keep: the traces
``n_traces x T_rec x B x R`` of ``itemsize`` bytes each (T_rec = ceil(T / record_every),
B parameter sets, R recorded neurons), the raster ``T x B x N`` of a gradient run, and how
many copies exist at the peak: the eager engine collects one (B, R) slice per step and
stacks them at the end (2 copies), Brian2 keeps its monitor's arrays while they are copied
out (2), and condition runs are merged into one recording (2). Spike events are left out
(their number is not known before the run; they are small beside traces).

The available memory is ``MemAvailable`` of ``/proc/meminfo`` (Linux), else
``os.sysconf`` free pages; on a CUDA device ``torch.cuda.mem_get_info``. Where it cannot be
read, nothing is refused.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Sequence

from ..errors import ParameterError

__all__ = ["check_traces_fit", "available_bytes", "format_bytes", "NEGLIGIBLE"]

log = logging.getLogger(__name__)
NEGLIGIBLE = 2 ** 28  # bytes: a run that needs less is not checked (reading the free memory costs time)


def format_bytes(n: float) -> str:
    """``49152000000`` -> ``"45.8 GiB"`` (binary units)."""
    for unit, scale in (("GiB", 2 ** 30), ("MiB", 2 ** 20), ("KiB", 2 ** 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{int(n)} bytes"


def available_bytes(device: str = "cpu") -> int | None:
    """Memory a new allocation can take now, in bytes; None where it cannot be read.

    Args:
        device: ``"cpu"`` (host memory) or a CUDA device (``"cuda"``, ``"cuda:1"``).
    """
    if str(device).startswith("cuda"):
        import torch  # noqa: PLC0415

        return int(torch.cuda.mem_get_info(torch.device(device))[0])
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_traces_fit(backend: str, names: Sequence[str], n_steps: int, every: int, batch: int, n_rec: int,
                     itemsize: int, *, n_neurons: int = 0, raster: bool = False, copies: int = 1,
                     why: str = "", device: str = "cpu") -> int:
    """Refuse a run whose traces (and raster) will not fit in the memory available.

    Args:
        backend: its name, for the message.
        names: the traced state variables; n_steps: T; every: ``record_every``.
        batch: B, every parameter set of the run (conditions included); n_rec: R.
        itemsize: bytes per value (8 for float64).
        n_neurons: N, for the raster; raster: whether a (T, B, N) raster is kept
            (gradient runs).
        copies: how many copies exist at the peak; why: the reason, for the message.
        device: where the traces live (``"cpu"``, ``"cuda:0"``).

    Returns:
        The bytes the run needs at its peak (an estimate).

    Raises:
        ParameterError: it needs more than is available; the message gives the size, what
            it is made of, and the ways to make it smaller.
    """
    t_rec = -(-int(n_steps) // int(every)) if names else 0
    traces = len(names) * t_rec * batch * n_rec * itemsize
    kept = traces + (int(n_steps) * batch * n_neurons * itemsize if raster else 0)
    need = kept * copies
    free = available_bytes(device) if need > NEGLIGIBLE else None
    if free is None or need <= free:
        return need
    sets = f"{batch} set{'s' * (batch != 1)}"
    parts = (f"the traces need {format_bytes(traces)} ({len(names)} traces x {t_rec} steps x {sets} x {n_rec} "
             f"neurons x {itemsize} bytes)")
    if raster:
        parts += (f" and the gradient run's spike raster {format_bytes(kept - traces)} ({n_steps} x {batch} x "
                  f"{n_neurons})")
    peak = f"; {copies} copies at the peak ({why}): about {format_bytes(need)}" if copies > 1 else ""
    k = int(every) * math.ceil(need / (0.5 * free))  # fills at most half of what is free
    raise ParameterError(
        f"{backend}: {parts}{peak}, more than the {format_bytes(free)} of memory available on {device}. Record "
        f"less before running: record_every={k} (keeps 1 step in {k}), record_neurons=[...] (only the neurons you "
        f"need, e.g. record_neurons=range(16)), record=[...] with fewer of {', '.join(names)}, or fewer parameter "
        f"sets per run (split the batch).")
