"""Board events -> spike times: unwrapping the us counter, late events, neuron lookup."""

from __future__ import annotations

import numpy as np

import pytest

from dynacal.hardware.events import detect_period, lookup_neurons, split_events, unwrap
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
    # two wraps while nothing spiked: the wrap events tell, once the host clock says that much
    # time has passed (a wrap event early in a period is otherwise not believed)
    events = [Spike(0, 0, 1, 10), TimestampWrapEvent(0), TimestampWrapEvent(0), Spike(0, 0, 1, 20)]
    assert unwrap(_batch(events), P, elapsed_us=2100).tolist() == [10, 2020]
    counts = {}
    assert unwrap(_batch(events), P, elapsed_us=1500, counts=counts).tolist() == [10, 1020]
    assert counts["wraps"] == 1 and counts["ignored_wraps"] == 1
    # continuing an earlier batch
    assert unwrap(_batch([Spike(0, 0, 1, 3)]), P, ref_us=1995).tolist() == [2003]


def test_lookup_neurons():
    batch = _batch([Spike(1, 2, 3, 0), TimestampWrapEvent(0), Spike(0, 0, 7, 1), Spike(3, 3, 255, 2)])
    ids = np.array([7, 1 * 1024 + 2 * 256 + 3])
    assert lookup_neurons(batch, ids).tolist() == [1, 0, -1]
    assert batch.kind.tolist() == [1, 2, 1, 1]


@pytest.mark.parametrize("period", [2 ** 31, 2 ** 32])
def test_a_wrap_right_after_a_reset_is_not_counted(period):
    # the counter wrapped just before reset_timestamp(); its wrap event reaches the host after it
    events = [TimestampWrapEvent(0), Spike(0, 0, 1, 100), Spike(0, 0, 1, 5000), Spike(0, 0, 1, 4900)]
    counts = {}
    assert unwrap(_batch(events), period, elapsed_us=0.1e6, counts=counts).tolist() == [100, 5000, 4900]
    assert counts["ignored_wraps"] == 1 and counts["wraps"] == 0


@pytest.mark.parametrize("period", [2 ** 31, 2 ** 32])
def test_unwrap_at_both_periods_from_a_stream_near_the_top(period):
    near = [period - 3000, period - 1000, "wrap", period + 500, period - 200, period + 4000]
    events = [TimestampWrapEvent(0) if t == "wrap" else Spike(0, 0, 1, t % period) for t in near]
    batch = _batch(events)
    assert detect_period(batch) == period
    assert unwrap(batch, detect_period(batch)).tolist() == [t for t in near if t != "wrap"]
    if period == 2 ** 31:  # a 31-bit stream unwrapped as 32-bit gives wrong times: the period matters
        assert unwrap(batch, 2 ** 32).tolist() != [t for t in near if t != "wrap"]


def test_detect_period_says_the_default_when_the_stream_does_not_tell():
    assert detect_period(_batch([Spike(0, 0, 1, 10), Spike(0, 0, 1, 20)])) == 2 ** 32
    assert detect_period(_batch([Spike(0, 0, 1, 10)]), default=2 ** 31) == 2 ** 31
