"""The stimulus on the board: FPGA spike-generator events with inter-spike intervals.

The FPGA spike generator of the Dynap-SE1 kit plays a preloaded list of
``FpgaSpikeEvent(core_mask, neuron_id, target_chip, isi)``. Event k is sent ``isi_k`` units
after event k-1 (the first: after ``start()``); a unit is ``isi_multiplier`` FPGA clock ticks
(90 MHz, 11.1 ns). Limits: ``isi`` has 16 bits and must be < 65535 units (``MAX_ISI`` = 65534) and the generator holds
2**15 - 1 events (``MAX_EVENTS``).

:func:`schedule` turns a stimulus (spike steps of dt) into such a list:

- every input spike becomes one event per target chip of that input (``BoardPlan`` routes),
  with ``neuron_id`` = the input's virtual address and ``core_mask`` = its target cores;
- the multiplier: when ``dt`` is a whole number of ticks, the largest divisor of it not
  above ``max_multiplier`` (spike times are then exact); otherwise 90 (1 us units, times
  rounded to the nearest us). ``isi_multiplier=`` pins it;
- a gap longer than 65534 units is split by filler events (``core_mask`` 0 and the plan's
  ``dummy_address``, which no CAM listens to).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dynacal.errors import ParameterError
from dynacal.stimulus import Stimulus

from .config import BoardPlan

__all__ = ["FpgaSchedule", "schedule", "choose_multiplier", "FPGA_CLOCK_HZ", "ISI_BITS", "MAX_ISI", "MAX_EVENTS",
           "MAX_MULTIPLIER"]

FPGA_CLOCK_HZ = 90e6
ISI_BITS = 16
#: Largest ISI sent: the vendor's helper asserts ``isi < 65535`` (``fake_samna.facts.ISI_LIMIT``).
MAX_ISI = 2 ** ISI_BITS - 2
MAX_EVENTS = 2 ** 15 - 1
#: Largest multiplier chosen automatically: public code uses 90 and 900; larger values are
#: allowed when pinned, up to the 16-bit register we assume (not verified on a board).
MAX_MULTIPLIER = 900
_REGISTER_MAX = 2 ** 16 - 1


@dataclasses.dataclass(frozen=True, eq=False)
class FpgaSchedule:
    """Events for the FPGA spike generator, int64 arrays of length E.

    Attributes:
        core_mask, neuron_id, target_chip, isi: the event fields (isi in units).
        isi_multiplier: FPGA ticks per isi unit.
        n_dummy: filler events among the E.
        max_time_error_s: largest difference between an event's time and its spike step's
            time ``step * dt``, s (0 when the multiplier divides dt).
    """

    core_mask: np.ndarray
    neuron_id: np.ndarray
    target_chip: np.ndarray
    isi: np.ndarray
    isi_multiplier: int
    n_dummy: int
    max_time_error_s: float

    @property
    def unit_s(self) -> float:
        """Length of one isi unit in s."""
        return self.isi_multiplier / FPGA_CLOCK_HZ

    def ticks(self) -> np.ndarray:
        """Time of every event after start, in FPGA ticks (int64)."""
        return np.cumsum(self.isi) * self.isi_multiplier

    def times_s(self) -> np.ndarray:
        """Time of every event after start, in s."""
        return self.ticks() / FPGA_CLOCK_HZ

    def summary(self) -> dict:
        return {"n_events": int(self.isi.size), "n_dummy": self.n_dummy, "isi_multiplier": self.isi_multiplier,
                "unit_s": self.unit_s, "max_time_error_s": self.max_time_error_s}


def choose_multiplier(dt: float, max_multiplier: int = MAX_MULTIPLIER) -> int:
    """The multiplier for steps of ``dt`` s: the largest divisor of dt in ticks that is at
    most ``max_multiplier``, or 90 (1 us) when dt is not a whole number of ticks."""
    ticks = dt * FPGA_CLOCK_HZ
    whole = round(ticks)
    if whole < 1 or abs(ticks - whole) > 1e-6 * max(1.0, ticks):
        return 90
    best = 1
    for d in range(1, int(math.isqrt(whole)) + 1):
        if whole % d == 0:
            for cand in (d, whole // d):
                if cand <= max_multiplier:
                    best = max(best, cand)
    return best


def schedule(plan: BoardPlan, stimulus: Stimulus, dt: float, *, isi_multiplier: int | None = None,
             max_multiplier: int = MAX_MULTIPLIER, n_steps: int | None = None) -> FpgaSchedule:
    """FPGA spike-generator events for a stimulus.

    Args:
        plan: the board placement (input addresses and routes).
        stimulus: input spikes in steps of ``dt``.
        dt: time step in s.
        isi_multiplier: FPGA ticks per isi unit (None: :func:`choose_multiplier`).
        max_multiplier: largest multiplier chosen automatically.
        n_steps: length of the measurement in steps; when given, filler events run the
            generator to its end, so the program spans the whole measurement (a twin board
            simulates exactly as long as the program runs; a real board is unaffected).

    Raises:
        ParameterError: naming the limit: a multiplier outside 1..65535, or more than
            ``MAX_EVENTS`` events (the generator's memory).
    """
    mult = choose_multiplier(dt, max_multiplier) if isi_multiplier is None else int(isi_multiplier)
    if not 1 <= mult <= _REGISTER_MAX:
        raise ParameterError(f"isi_multiplier = {isi_multiplier} is outside 1..{_REGISTER_MAX} (the multiplier "
                             f"register; 90 gives 1 us units).")
    order = np.argsort(plan.input_route_input, kind="stable")
    route_in = plan.input_route_input[order]
    first = np.searchsorted(route_in, stimulus.sources, side="left")
    count = np.searchsorted(route_in, stimulus.sources, side="right") - first
    ev = np.repeat(np.arange(stimulus.steps.size), count)
    within = np.arange(ev.size) - np.repeat(np.cumsum(count) - count, count)
    route = order[np.repeat(first, count) + within]
    per_step = dt * FPGA_CLOCK_HZ  # ticks per step
    if abs(per_step - round(per_step)) <= 1e-6 * per_step and round(per_step) % mult == 0:
        units = stimulus.steps[ev] * (round(per_step) // mult)  # exact, in integers
        err_s = 0.0
    else:
        exact = stimulus.steps[ev] * per_step / mult  # time of each event in units
        units = np.rint(exact).astype(np.int64)
        err_s = float(np.max(np.abs(units - exact))) * mult / FPGA_CLOCK_HZ if units.size else 0.0
    gaps = np.diff(units, prepend=0)
    n_fill = np.maximum(0, -(-gaps // MAX_ISI) - 1)  # filler events before each event
    last = int(units[-1]) if units.size else 0
    end = last if n_steps is None else max(last, int(round(n_steps * per_step / mult)))
    n_tail = -(-(end - last) // MAX_ISI)  # fillers from the last event to the end
    total = int(units.size + n_fill.sum() + n_tail)
    if total > MAX_EVENTS:
        raise ParameterError(
            f"FPGA event limit: the stimulus needs {total} spike-generator events ({units.size} input events, "
            f"{int(n_fill.sum()) + n_tail} fillers), over the generator's memory of {MAX_EVENTS}; shorten the "
            f"experiment or lower the input rate, and run it in parts.")
    pos = np.arange(units.size) + np.cumsum(n_fill)  # index of each real event
    isi = np.full(total, MAX_ISI, dtype=np.int64)
    isi[pos] = gaps - n_fill * MAX_ISI
    if n_tail:
        isi[-1] = (end - last) - (n_tail - 1) * MAX_ISI
    core_mask = np.zeros(total, dtype=np.int64)
    neuron_id = np.full(total, plan.dummy_address, dtype=np.int64)
    target_chip = np.zeros(total, dtype=np.int64)
    core_mask[pos] = plan.input_route_mask[route]
    neuron_id[pos] = plan.input_address[plan.input_route_input[route]]
    target_chip[pos] = plan.input_route_chip[route]
    return FpgaSchedule(core_mask, neuron_id, target_chip, isi, mult, int(n_fill.sum()) + n_tail, err_s)
