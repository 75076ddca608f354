"""Progress of long library work, shown only when asked for: library code never prints.

A loop whose length is known only once it runs (the eager engine's chunks of steps) makes a
:class:`Progress`, and reports each part done. After the first part it extrapolates: when the
whole will take longer than :data:`LONG_S`, it logs the estimate (INFO) and, if progress bars
are enabled (:func:`enable`, or :func:`shown` as the ``dynacal`` command does), shows a tqdm bar on stderr.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time

__all__ = ["enable", "enabled", "shown", "Progress", "LONG_S"]

log = logging.getLogger(__name__)
LONG_S = 5.0  # s: a run estimated to take longer shows its progress
_enabled = False


def enable(on: bool = True) -> None:
    """Show progress bars of long runs on stderr (the CLI does; off by default in the library)."""
    global _enabled
    _enabled = bool(on)


@contextlib.contextmanager
def shown():
    """Within: progress bars are shown (as :func:`enable`); the setting before comes back after."""
    before = _enabled
    enable()
    try:
        yield
    finally:
        enable(before)


def enabled() -> bool:
    """Whether progress bars are shown."""
    return _enabled


class Progress:
    """Progress of ``total`` units of work done in parts (a context manager).

    Args:
        total: the units of the whole (steps).
        what: a label for the log and the bar (``"torch eager"``).
        unit: the unit's name (``"step"``).
    """

    def __init__(self, total: int, what: str, unit: str = "step"):
        self.total, self.what, self.unit = int(total), what, unit
        self.done, self.bar, self.estimate_s = 0, None, None
        self._start = time.perf_counter()

    def __enter__(self) -> "Progress":
        return self

    def update(self, n: int) -> None:
        """``n`` more units are done."""
        self.done += int(n)
        if self.estimate_s is None and 0 < self.done < self.total:
            elapsed = time.perf_counter() - self._start
            self.estimate_s = elapsed * self.total / self.done
            if self.estimate_s > LONG_S:
                log.info("%s: %d %ss will take about %.0f s", self.what, self.total, self.unit, self.estimate_s)
                if _enabled:
                    from tqdm import tqdm  # noqa: PLC0415

                    self.bar = tqdm(total=self.total, initial=self.done, desc=self.what, unit=self.unit,
                                    file=sys.stderr, leave=False, unit_scale=True)
        elif self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        """Remove the bar, if one is shown."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __exit__(self, *exc) -> None:
        self.close()
