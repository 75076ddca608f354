"""The twin board's settings and its record of each run: :class:`TwinNoise` (what the
measurement adds), :class:`TwinFaults` (faults on request) and :class:`TwinRun` (the
ground truth of a run). Their meaning is described in :mod:`.twin`, which uses them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from dynacal.errors import ParameterError
from dynacal.experiment import Experiment
from dynacal.params import Params

__all__ = ["TwinNoise", "TwinFaults", "TwinRun"]


def _check_setting(owner: str, name: str, value, low: float, high: float = math.inf, *, unit: str = "s") -> None:
    """A finite number in [low, high] (or a clear ParameterError naming the setting)."""
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    if not ok or not (math.isfinite(float(value)) and low <= float(value) <= high):
        span = f"{low:g}..{high:g}" if math.isfinite(high) else f">= {low:g}"
        raise ParameterError(f"{owner}({name}={value!r}): {name} must be a finite number {span}"
                             f"{' ' + unit if unit else ''}; e.g. {owner}({name}={low if low > 0 else 0})")


@dataclasses.dataclass(frozen=True)
class TwinNoise:
    """Measurement noise of the twin (see the module doc); times in s.

    Raises:
        ParameterError: a negative or non-finite time, or ``drop_rate`` outside 0..1.
    """

    latency_s: float = 2e-6
    jitter_s: float = 1e-6
    drop_rate: float = 1e-3
    usb_latency_s: float = 1e-3

    def __post_init__(self):
        for name in ("latency_s", "jitter_s", "usb_latency_s"):
            _check_setting("TwinNoise", name, getattr(self, name), 0.0)
        _check_setting("TwinNoise", "drop_rate", self.drop_rate, 0.0, 1.0, unit="")


@dataclasses.dataclass(frozen=True)
class TwinFaults:
    """Faults on request.

    Attributes:
        disconnect_runs: indices of generator starts (0 = the board's first run, counted over
            its life) at which the device disappears.
        disconnect_at_s: how long after that start, s.
        reconnect_after_s: virtual s until it re-enumerates, powered up; None: never.
        late_fraction: fraction of events that reach the host late; late_delay_s: by how much.
        wrap_at_reset: the counter wraps just before each ``reset_timestamp`` and its
            ``TimestampWrapEvent`` reaches the host just after it.

    Raises:
        ParameterError: a setting outside its range (fractions 0..1, times finite and >= 0).
    """

    disconnect_runs: tuple = ()
    disconnect_at_s: float = 0.05
    reconnect_after_s: float | None = 0.0
    late_fraction: float = 0.0
    late_delay_s: float = 0.0
    wrap_at_reset: bool = False

    def __post_init__(self):
        runs = self.disconnect_runs
        if not isinstance(runs, (tuple, list)) or not all(
                isinstance(r, (int, np.integer)) and not isinstance(r, bool) and r >= 0 for r in runs):
            raise ParameterError(f"TwinFaults(disconnect_runs={runs!r}): give a tuple of run indices >= 0, "
                                 f"e.g. disconnect_runs=(1,).")
        _check_setting("TwinFaults", "disconnect_at_s", self.disconnect_at_s, 0.0)
        if self.reconnect_after_s is not None:
            _check_setting("TwinFaults", "reconnect_after_s", self.reconnect_after_s, 0.0)
        _check_setting("TwinFaults", "late_fraction", self.late_fraction, 0.0, 1.0, unit="")
        _check_setting("TwinFaults", "late_delay_s", self.late_delay_s, 0.0)


@dataclasses.dataclass
class TwinRun:
    """Ground truth of the last run (for tests and debugging): the experiment and parameters
    simulated, the simulated neurons' global ids, the replayed prefix in steps, the noise-free
    spikes (step after the generator start, global id) and what became of each."""

    experiment: Experiment
    params: Params
    ids: np.ndarray
    prefix_steps: int
    spike_step: np.ndarray
    spike_id: np.ndarray
    n_dropped: int
    n_late: int
    kept: np.ndarray | None = None  # bool (S,): the spike reached the host buffer
    late: np.ndarray | None = None  # bool (S,): it arrived late_delay_s late
    lost_routes: int = 0  # SRAM routes that left the 2 x 2 chip grid (their events are lost)
    n_cut: int = 0  # kept spikes not fired: the chip was reconfigured before their time
