"""Board events -> the measurement each belongs to, by its timestamp (never by its arrival).

The board backend resets the timestamp counter once per connection (an *epoch*) and keeps
every event of the epoch in arrival order, with a *window* per measured parameter set: the
board time ``start_us`` at which its generator started, its ``duration_us`` and the end of
its listening span (``span_us`` after the start: the tail, the drain and the wait for late
events; never past the next set's start). :func:`attribute` unwraps the whole stream once
and gives each spike to the set whose span holds its time, so that a spike that reaches the
host late (during the next set, or after the last drain) still lands in its own set, and
counts what it cannot place:

- ``n_spikes``: the set's network spikes inside its window ``[0, duration)``;
- ``n_late``: of those, the ones that arrived after the set's own drain had ended;
- ``n_after_window``: network spikes in the span but after the window (the tail);
- ``n_other_neurons``: spikes of neurons outside the network, in the span; ``n_events``:
  every spike in the span (the base of the loss fraction, as a device counts drops over
  all neurons);
- per epoch, ``n_outside_every_window``: spikes in no set's span (before the first start,
  between spans, from a failed attempt or an earlier run), and ``n_discarded``: events that
  arrived before the reset (their time base is gone).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from .events import UnwrapState, detect_period, lookup_neurons, split_events, unwrap

__all__ = ["Window", "Epoch", "RunState", "attribute", "loss_message"]


@dataclasses.dataclass
class Window:
    """One measured set in board time (us since the epoch's reset).

    Attributes:
        set_index: the parameter set. start_us: generator start. duration_us: the window.
        span_us: how long after the start its events may carry times (set when it closes).
        drained_at: number of epoch events that had arrived when its drain ended.
    """

    set_index: int
    start_us: float
    duration_us: float
    span_us: float = np.inf
    drained_at: int = 0


@dataclasses.dataclass
class Epoch:
    """Everything received since one ``reset_timestamp``: events in arrival order, the windows
    of the sets measured in it, the host clock at the reset (s) and the events discarded
    because they arrived before it."""

    reset_clock: float
    events: list = dataclasses.field(default_factory=list)
    windows: list = dataclasses.field(default_factory=list)
    n_discarded: int = 0
    state: UnwrapState = UnwrapState()  # at the first of ``events``
    live: UnwrapState = UnwrapState()  # after the last of them
    arrived_us: list = dataclasses.field(default_factory=list)  # host time since the reset, per event

    def add(self, events: list, elapsed_us: float) -> None:
        self.events.extend(events)
        self.arrived_us.extend([float(elapsed_us)] * len(events))


def attribute(epoch: Epoch, spike_type: type, wrap_type: type, global_ids: np.ndarray, *,
              period_us: int | None, start_latency_s: float = 0.0) -> tuple[dict, dict]:
    """Spikes of each window of ``epoch``, by timestamp.

    Args:
        epoch: the events and windows.
        spike_type, wrap_type: samna's ``Spike`` and ``TimestampWrapEvent`` classes.
        global_ids: (N,) board-wide ids of the network's neurons.
        period_us: the counter's period; None: :func:`~.events.detect_period`.
        start_latency_s: subtracted from every spike time within its window.

    Returns:
        ``(per_set, summary)``: set index -> (neuron index (K,), time in s (K,), stats dict);
        summary: ``n_outside_every_window``, ``n_discarded``, ``n_wraps``,
        ``n_ignored_wraps``, ``timestamp_period_us``.
    """
    batch = split_events(epoch.events, spike_type, wrap_type)
    period = int(period_us) if period_us is not None else detect_period(batch)
    counts: dict[str, Any] = {}
    # a wrap event is judged by the host time at which it arrived (Epoch.arrived_us)
    t_us = unwrap(batch, period, state=epoch.state, elapsed_us=np.asarray(epoch.arrived_us, dtype=np.float64),
                  counts=counts).astype(np.float64)
    arrival = np.flatnonzero(batch.kind == 1)  # arrival index of each spike in the epoch
    idx = lookup_neurons(batch, global_ids)
    placed = np.zeros(t_us.size, dtype=bool)
    per_set = {}
    for w in epoch.windows:
        rel = t_us - w.start_us
        inside = (rel >= 0) & (rel < w.span_us)
        placed |= inside
        mine = inside & (idx >= 0)
        t = rel * 1e-6 - start_latency_s
        keep = mine & (t >= 0) & (t < w.duration_us * 1e-6)
        per_set[w.set_index] = (idx[keep], t[keep], {
            "n_spikes": int(keep.sum()), "n_events": int(inside.sum()),
            "n_late": int((keep & (arrival >= w.drained_at)).sum()),
            "n_after_window": int((mine & ~keep).sum()), "n_other_neurons": int((inside & (idx < 0)).sum()),
            "start_us": float(w.start_us)})
    summary = {"n_outside_every_window": int((~placed).sum()), "n_discarded": int(epoch.n_discarded),
               "n_wraps": int(counts["wraps"]), "n_ignored_wraps": int(counts["ignored_wraps"]),
               "timestamp_period_us": period}
    return per_set, summary


class RunState:
    """The state of one ``BoardBackend.run``: what is sent, and what came back per set."""

    def __init__(self, experiment, plan, sched, settings, ignored):
        self.experiment, self.plan, self.sched, self.settings, self.ignored = experiment, plan, sched, settings, ignored
        self.results: dict[int, tuple] = {}
        self.paths: dict[int, Path | None] = {}
        self.attempts: dict[int, int] = {}
        self.dropped: dict[int, int | None] = {}
        self.pending: list[int] = []  # measured, not yet placed
        self.epochs: list[dict] = []

    def losses(self) -> dict:
        """What the run lost: dropped (where reported) and outside every window, as counts
        and a fraction of all events (lost + received in the sets' spans)."""
        sets = [r[2] for r in self.results.values()]
        dropped = [s.get("n_dropped") for s in sets]
        known = [d for d in dropped if d is not None]
        n_dropped = int(sum(known)) if known else None
        outside = int(sum(e["n_outside_every_window"] for e in self.epochs))
        spikes = int(sum(s.get("n_spikes", 0) for s in sets))
        events = int(sum(s.get("n_events", s.get("n_spikes", 0)) for s in sets))  # every neuron's, as the device counts
        lost = outside + (n_dropped or 0)
        return {"n_spikes": spikes, "n_events": events, "n_dropped": n_dropped, "n_outside_every_window": outside,
                "n_discarded": int(sum(e["n_discarded"] for e in self.epochs)),
                "n_late": int(sum(s.get("n_late", 0) for s in sets)), "n_lost": lost,
                "fraction": lost / (events + lost) if events + lost else 0.0}


def loss_message(losses: dict, limit: float) -> str | None:
    """A message when the run's losses (``RunState.losses``) exceed the fraction ``limit``."""
    if losses["fraction"] <= limit:
        return None
    return (f"the board lost {losses['n_lost']} of {losses['n_lost'] + losses['n_events']} events "
            f"({losses['fraction']:.1%}, over max_loss_fraction = {limit:g}): {losses['n_dropped']} dropped by the "
            f"device, {losses['n_outside_every_window']} outside every measurement window. Lower the input rate, "
            f"raise late_wait_s or grace_s, or check the USB link; max_loss_fraction= and on_loss= set the rule.")
