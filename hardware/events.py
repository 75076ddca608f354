"""Board output events -> spike times: timestamp unwrapping and neuron lookup.

The FPGA stamps every ``Spike`` with a us counter that wraps (at 2**32 us, 71.6 min, or at
2**31 us if only 31 bits are significant: :func:`detect_period`) and sends a
``TimestampWrapEvent`` when it does. :func:`unwrap` gives each spike its absolute time
since the last ``reset_timestamp``: spike ``k`` gets ``timestamp + n * period`` with ``n`` the
number of periods that puts it nearest to a running reference time, which is the latest
unwrapped spike time, raised to ``w * period`` at the w-th wrap event. Events that arrive a
little out of order (late events) therefore still land in the right period, and a wrap
during a silent stretch is still counted.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

__all__ = ["EventBatch", "UnwrapState", "split_events", "unwrap", "detect_period", "lookup_neurons"]


class EventBatch(NamedTuple):
    """Events in arrival order. ``kind``: int8 (K,) 1 = spike, 2 = wrap, 0 = other;
    ``chip``, ``core``, ``neuron``, ``timestamp``: int64 (K,) (-1 where not a spike)."""

    kind: np.ndarray
    chip: np.ndarray
    core: np.ndarray
    neuron: np.ndarray
    timestamp: np.ndarray


def split_events(events: Sequence[Any], spike_type: type, wrap_type: type) -> EventBatch:
    """Columns of a list of samna events (``Spike`` and ``TimestampWrapEvent`` objects)."""
    n = len(events)
    kind = np.zeros(n, dtype=np.int8)
    cols = np.full((4, n), -1, dtype=np.int64)
    for k, ev in enumerate(events):
        if isinstance(ev, spike_type):
            kind[k] = 1
            cols[:, k] = (ev.chip_id, ev.core_id, ev.neuron_id, ev.timestamp)
        elif isinstance(ev, wrap_type):
            kind[k] = 2
            cols[3, k] = ev.timestamp
    return EventBatch(kind, *cols)


class UnwrapState(NamedTuple):
    """Where unwrapping stands after some events: the reference time ``ref_us`` (latest
    unwrapped spike, raised at each accepted wrap) and the wraps accepted so far."""

    ref_us: int = 0
    wraps: int = 0


def unwrap(batch: EventBatch, period_us: int = 2 ** 32, ref_us: int = 0, *, state: UnwrapState | None = None,
           elapsed_us: float | None = None, counts: dict | None = None) -> np.ndarray:
    """Absolute times in us (int64) of the spikes of ``batch``, in their arrival order.

    A wrap event is accepted when the stream is in the upper half of its current period (the
    latest spike says the counter was near its top), or when the host clock says at least
    one more period has passed since the reset (``elapsed_us``, for wraps in a silence). Any
    other wrap event (one that reaches the host right after a ``reset_timestamp``, from the
    counter before it) is ignored and counted in ``counts["ignored_wraps"]``.

    Args:
        batch: events in arrival order, from :func:`split_events`.
        period_us: the counter's period (2**31 or 2**32 us; see :func:`detect_period`).
        ref_us: the reference time before the first event (0 right after a reset).
        state: continue from an earlier batch of the same reset (overrides ``ref_us``).
        elapsed_us: host time since the reset when each event arrived, us: a number or one
            per event (None: wraps are judged by the spikes only).
        counts: a dict to receive ``state`` (the :class:`UnwrapState` after the batch),
            ``wraps`` and ``ignored_wraps``.

    Returns:
        int64 (S,) for the S spikes of the batch (``batch.kind == 1``).
    """
    out = np.empty(int((batch.kind == 1).sum()), dtype=np.int64)
    st = state or UnwrapState(int(ref_us), int(ref_us) // period_us)
    ref, wraps, ignored, j = int(st.ref_us), int(st.wraps), 0, 0
    host = np.broadcast_to(np.asarray(np.inf if elapsed_us is None else elapsed_us, dtype=np.float64),
                           batch.kind.shape).tolist()
    for kind, ts, now in zip(batch.kind.tolist(), batch.timestamp.tolist(), host):
        if kind == 2:
            upper = ref - wraps * period_us >= period_us // 2
            due = elapsed_us is not None and (wraps + 1) * period_us <= now
            if upper or due:
                wraps += 1
                ref = max(ref, wraps * period_us)
            else:
                ignored += 1
        elif kind == 1:
            n = max(0, int(round((ref - ts) / period_us)))
            t = ts + n * period_us
            out[j] = t
            j += 1
            ref = max(ref, t)
    if counts is not None:
        counts.update(state=UnwrapState(ref, wraps), wraps=wraps - int(st.wraps), ignored_wraps=ignored)
    return out


def detect_period(batch: EventBatch, default: int = 2 ** 32) -> int:
    """The counter's period from the stream: 2**32 us when a spike timestamp reaches 2**31
    (31 bits would have wrapped), 2**31 us when a wrap event follows spikes that came near
    2**31 (above 2**30) without passing it; ``default`` when the stream does not tell."""
    spikes = batch.timestamp[batch.kind == 1]
    if spikes.size and int(spikes.max()) >= 2 ** 31:
        return 2 ** 32
    top = -1
    for kind, ts in zip(batch.kind.tolist(), batch.timestamp.tolist()):
        if kind == 1:
            top = max(top, ts)
        elif kind == 2:
            if top >= 2 ** 30:
                return 2 ** 31
            top = -1
    return int(default)


def lookup_neurons(batch: EventBatch, global_ids: np.ndarray) -> np.ndarray:
    """Network index of each spike of the batch (-1 for neurons not in the network).

    Args:
        global_ids: (N,) board-wide ids ``chip * 1024 + core * 256 + neuron`` of the network.
    """
    table = np.full(4 * 1024, -1, dtype=np.int64)
    table[np.asarray(global_ids, dtype=np.int64)] = np.arange(len(global_ids))
    spikes = batch.kind == 1
    gid = batch.chip[spikes] * 1024 + batch.core[spikes] * 256 + batch.neuron[spikes]
    ok = (gid >= 0) & (gid < table.size)
    out = np.full(gid.size, -1, dtype=np.int64)
    out[ok] = table[gid[ok]]
    return out
