"""Board events -> spike times: unwrapping the us counter, late events, neuron lookup."""

from __future__ import annotations

import numpy as np

from dynacal.hardware.events import lookup_neurons, split_events, unwrap
from dynacal.hardware.fake_samna.dynapse1 import Spike, TimestampWrapEvent

P = 1000  # a short counter period, in us


def _batch(events):
    return split_events(events, Spike, TimestampWrapEvent)


def test_unwrap_with_wrap_events_and_late_events():
    # arrival order: the spike at 950 us arrives late, after the first wrap and the spike at 1050 us
    arrival = [100, 400, 700, "wrap", 1050, 950, 1300, 1600, 1900, "wrap", 2030, 2400]
    events = [TimestampWrapEvent(0) if t == "wrap" else Spike(0, 1, 2, t % P) for t in arrival]
    got = unwrap(_batch(events), P)
    assert got.tolist() == [t for t in arrival if t != "wrap"]


def test_unwrap_without_a_wrap_event_and_across_a_silent_period():
    # the wrap event was lost: the decrease of the timestamp shows the wrap
    assert unwrap(_batch([Spike(0, 0, 1, 990), Spike(0, 0, 1, 5)]), P).tolist() == [990, 1005]
    # two wraps while nothing spiked: only the wrap events tell
    events = [Spike(0, 0, 1, 10), TimestampWrapEvent(0), TimestampWrapEvent(0), Spike(0, 0, 1, 20)]
    assert unwrap(_batch(events), P).tolist() == [10, 2020]
    # continuing an earlier batch
    assert unwrap(_batch([Spike(0, 0, 1, 3)]), P, ref_us=1995).tolist() == [2003]


def test_lookup_neurons():
    batch = _batch([Spike(1, 2, 3, 0), TimestampWrapEvent(0), Spike(0, 0, 7, 1), Spike(3, 3, 255, 2)])
    ids = np.array([7, 1 * 1024 + 2 * 256 + 3])
    assert lookup_neurons(batch, ids).tolist() == [1, 0, -1]
    assert batch.kind.tolist() == [1, 2, 1, 1]
