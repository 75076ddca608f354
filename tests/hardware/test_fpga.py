"""The stimulus on the board: FPGA spike-generator events, ISI units, the 16-bit limit."""

from __future__ import annotations

import numpy as np
import pytest

from dynacal import Stimulus
from dynacal.errors import ParameterError
from dynacal.hardware.config import plan_network
from dynacal.hardware.fpga import FPGA_CLOCK_HZ, MAX_EVENTS, MAX_ISI, choose_multiplier, schedule

from .conftest import small_network


def test_event_times_are_the_spike_steps_exactly():
    plan = plan_network(small_network())
    stim = Stimulus(4, [0, 0, 3, 250, 251], [1, 3, 0, 2, 2])
    sched = schedule(plan, stim, 1e-4)
    assert sched.isi_multiplier == 900 and sched.unit_s == pytest.approx(1e-5) and sched.max_time_error_s == 0
    np.testing.assert_array_equal(sched.ticks(), (np.array([0, 0, 3, 250, 251]) * 1e-4 * FPGA_CLOCK_HZ).round())
    np.testing.assert_array_equal(sched.neuron_id, plan.input_address[[1, 3, 0, 2, 2]])
    assert sched.core_mask.tolist() == [0b0010] * 5 and sched.target_chip.tolist() == [0] * 5
    assert sched.isi.tolist() == [0, 0, 30, 2470, 10]


def test_multiplier_choice():
    assert choose_multiplier(1e-4) == 900  # 9000 ticks: the largest divisor <= 900
    assert choose_multiplier(1e-3) == 900
    assert choose_multiplier(1e-4, max_multiplier=9000) == 9000
    assert choose_multiplier(3.3e-5) == 594  # 2970 ticks
    assert choose_multiplier(1.23456789e-5) == 90  # not a whole number of ticks: 1 us units, rounded
    sched = schedule(plan_network(small_network()), Stimulus(4, [1, 2], [0, 0]), 1.23456789e-5)
    assert 0 < sched.max_time_error_s <= 0.5e-6


def test_gaps_over_16_bits_are_split_by_filler_events():
    plan = plan_network(small_network())
    stim = Stimulus(4, [0, 70_000], [0, 1])  # 7 s at dt = 100 us: 700,000 units of 10 us
    sched = schedule(plan, stim, 1e-4)
    assert np.all(sched.isi <= MAX_ISI) and sched.n_dummy == 10
    real = sched.core_mask != 0
    assert real.sum() == 2 and np.all(sched.neuron_id[~real] == plan.dummy_address)
    np.testing.assert_allclose(sched.times_s()[real], [0.0, 7.0])
    pinned = schedule(plan, stim, 1e-4, isi_multiplier=45_000)  # 0.5 ms units: no filler needed
    assert pinned.n_dummy == 0 and pinned.isi.tolist() == [0, 14_000]


def test_limits_name_the_limit():
    plan = plan_network(small_network())
    with pytest.raises(ParameterError, match=r"isi_multiplier = 0 is outside 1\.\.65535"):
        schedule(plan, Stimulus(4, [1], [0]), 1e-4, isi_multiplier=0)
    n = MAX_EVENTS // 4 + 1
    stim = Stimulus(4, np.repeat(np.arange(n), 4), np.tile(np.arange(4), n))
    with pytest.raises(ParameterError, match=rf"FPGA event limit: .* {4 * n} spike-generator events .* memory of "
                                             rf"{MAX_EVENTS}"):
        schedule(plan, stim, 1e-4)


def test_program_spans_the_measurement_with_tail_fillers():
    """With n_steps, filler events run the generator to the end of the measurement, so a
    DC-only experiment (no input at all) still lasts its full duration."""
    plan = plan_network(small_network())
    stim = Stimulus(4, [10], [0])
    sched = schedule(plan, stim, 1e-4, n_steps=20_000)  # 2 s: longer than one 16-bit isi
    assert sched.times_s()[-1] == pytest.approx(2.0, abs=1e-6)
    assert np.all(sched.core_mask[1:] == 0) and sched.core_mask[0] != 0
    assert np.all(sched.isi < 65535)  # the vendor helper asserts isi < 65535
    empty = schedule(plan, Stimulus(4), 1e-4, n_steps=5000)
    assert empty.times_s()[-1] == pytest.approx(0.5, abs=1e-6) and np.all(empty.core_mask == 0)
    assert schedule(plan, stim, 1e-4).times_s()[-1] == pytest.approx(1e-3, abs=1e-6)
