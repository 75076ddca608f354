"""Faults: a device that disappears mid-run, events that arrive late. Nothing measured is lost."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacal import Params, get_backend
from dynacal.errors import BoardError
from dynacal.hardware.config import plan_network
from dynacal.hardware.samna_board import BoardRunError
from dynacal.hardware.twin import TwinFaults

from .conftest import small_experiment

pytestmark = pytest.mark.hardware

SETS = Params.from_values(Iampa_w0=torch.tensor([100e-12, 200e-12, 300e-12], dtype=torch.float64).reshape(3, 1))


def _spikes(rec, b):
    sel = rec.spike_batch == b
    return set(zip(rec.spike_neuron[sel].tolist(), rec.spike_step[sel].tolist()))


def _close(a, b, slack=5):
    """Equal up to the twin's dropped events (1e-3 of the spikes)."""
    return len(a ^ b) <= slack


def test_a_lost_device_is_retried_and_the_run_completes():
    exp = small_experiment(n_steps=3000, recurrent=False)
    clean = get_backend("twin").run(exp, SETS)
    backend = get_backend("twin", faults=TwinFaults(disconnect_runs=(1,), disconnect_at_s=0.1))
    rec = backend.run(exp, SETS)
    sets = rec.metadata["board"]["sets"]
    assert [sets[str(i)]["attempts"] for i in range(3)] == [1, 2, 1]
    assert backend.twin.generation == 3  # opened, re-enumerated after the loss, opened again
    for b in range(3):
        assert _close(_spikes(rec, b), _spikes(clean, b)), f"set {b} differs from a run without the fault"


def test_a_device_that_stays_away_gives_a_clear_error_and_keeps_what_was_measured(tmp_path):
    exp = small_experiment(n_steps=3000, recurrent=False)
    faults = TwinFaults(disconnect_runs=(1,), disconnect_at_s=0.1, reconnect_after_s=None)
    backend = get_backend("twin", faults=faults, retries=2, checkpoint_dir=tmp_path)
    with pytest.raises(BoardRunError, match=r"failed on parameter set 1 of 3 after 3 attempt\(s\): the "
                                            r"Dynapse1DevKit with serial 20231 is no longer connected .* Sets \[0\] "
                                            r"were measured and saved in") as info:
        backend.run(exp, SETS)
    err = info.value
    assert isinstance(err, BoardError) and err.completed == [0] and err.failed == 1
    assert err.partial.batch == 3 and set(err.partial.spike_batch.tolist()) == {0}
    assert err.partial.metadata["board"]["missing_sets"] == [1, 2]
    assert len(list(tmp_path.glob("set0000_*.h5"))) == 1
    clean = get_backend("twin").run(exp, SETS)
    assert _close(_spikes(err.partial, 0), _spikes(clean, 0))
    # later, with the board back: set 0 is read from the checkpoint, sets 1 and 2 are measured
    again = get_backend("twin", checkpoint_dir=tmp_path)
    rec = again.run(exp, SETS)
    assert "reused" in rec.metadata["board"]["sets"]["0"] and again.twin.runs == 2
    assert _spikes(rec, 0) == _spikes(err.partial, 0)
    assert all(_close(_spikes(rec, b), _spikes(clean, b)) for b in (1, 2))


def test_on_error_partial_returns_the_partial_recording():
    exp = small_experiment(n_steps=2000, recurrent=False)
    faults = TwinFaults(disconnect_runs=(2,), disconnect_at_s=0.05, reconnect_after_s=None)
    rec = get_backend("twin", faults=faults, retries=0, on_error="partial").run(exp, SETS)
    assert rec.metadata["board"]["completed_sets"] == [0, 1] and rec.metadata["board"]["failed_set"] == 2
    assert set(rec.spike_batch.tolist()) == {0, 1}


def test_late_events_within_the_grace_time_are_kept():
    exp = small_experiment(n_steps=3000)
    clean = get_backend("twin").run(exp)
    late = get_backend("twin", faults=TwinFaults(late_fraction=0.2, late_delay_s=0.08))
    rec = late.run(exp)
    assert late.twin.last_run.n_late > 50
    assert _spikes(rec, 0) == _spikes(clean, 0)  # the same noise draws: every late spike was collected


def test_late_events_after_the_run_are_counted_by_the_next_run_and_not_taken_as_its_own():
    exp = small_experiment(n_steps=3000)
    clean = get_backend("twin").run(exp)
    backend = get_backend("twin", faults=TwinFaults(late_fraction=0.2, late_delay_s=0.6), late_wait_s=0.1)
    first = backend.run(exp)
    lost = _spikes(clean, 0) - _spikes(first, 0)
    assert len(lost) > 50 and _spikes(first, 0) <= _spikes(clean, 0)
    second = backend.run(exp)
    # they arrive during the second run, carry times of the first, and are counted, not kept
    assert second.metadata["board"]["losses"]["n_outside_every_window"] >= len(lost)
    run = backend.twin.last_run
    ids = plan_network(exp.network).global_ids()
    truth = {(int(np.flatnonzero(ids == g)[0]), int(s)) for g, s in zip(run.spike_id, run.spike_step) if g in ids}
    assert _spikes(second, 0) <= truth and len(truth - _spikes(second, 0)) > 50  # its own late events are lost
