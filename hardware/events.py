"""Board output events -> spike times: timestamp unwrapping and neuron lookup.

The FPGA stamps every ``Spike`` with a us counter that wraps (32 bits: every 71.6 min) and
sends a ``TimestampWrapEvent`` when it does. :func:`unwrap` gives each spike its absolute time
since the last ``reset_timestamp``: spike ``k`` gets ``timestamp + n * period`` with ``n`` the
number of periods that puts it nearest to a running reference time, which is the latest
unwrapped spike time, raised to ``w * period`` at the w-th wrap event. Events that arrive a
little out of order (late events) therefore still land in the right period, and a wrap
during a silent stretch is still counted.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

import numpy as np

__all__ = ["EventBatch", "split_events", "unwrap", "lookup_neurons"]


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


def unwrap(batch: EventBatch, period_us: int = 2 ** 32, ref_us: int = 0) -> np.ndarray:
    """Absolute times in us (int64) of the spikes of ``batch``, in their arrival order.

    Args:
        batch: events in arrival order, from :func:`split_events`.
        period_us: the counter's period (2**32 us on the board).
        ref_us: the reference time before the first event (0 right after a reset; the
            last unwrapped time when continuing an earlier batch).

    Returns:
        int64 (S,) for the S spikes of the batch (``batch.kind == 1``).
    """
    out = np.empty(int((batch.kind == 1).sum()), dtype=np.int64)
    ref, wraps, j = int(ref_us), int(ref_us) // period_us, 0
    for kind, ts in zip(batch.kind.tolist(), batch.timestamp.tolist()):
        if kind == 2:
            wraps += 1
            ref = max(ref, wraps * period_us)
        elif kind == 1:
            n = max(0, int(round((ref - ts) / period_us)))
            t = ts + n * period_us
            out[j] = t
            j += 1
            ref = max(ref, t)
    return out


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
