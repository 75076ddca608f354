"""Issue 13 item 1: every board event goes to its own measurement by its timestamp, losses are
in the metadata, a lossy run warns or fails, fault settings are validated, and a device that
comes back is waited for."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch

from dynacal import Params
from dynacal.errors import ParameterError
from dynacal.hardware.config import plan_network
from dynacal.hardware.samna_board import BoardRunError
from dynacal.hardware.twin import TwinFaults, TwinNoise, twin_backend

from .conftest import small_experiment

pytestmark = pytest.mark.hardware

THREE = Params.from_values(Iampa_w0=torch.tensor([[150e-12], [300e-12], [500e-12]], dtype=torch.float64))


def _emitted(backend, exp, runs):
    """What the twin emitted and delivered inside each run's window: set -> {(neuron, step)}."""
    ids = {int(g): k for k, g in enumerate(plan_network(exp.network).global_ids())}
    out = []
    for run in runs:
        keep = run.kept & (run.spike_step < exp.n_steps)
        out.append({(ids[int(g)], int(s)) for g, s in zip(run.spike_id[keep], run.spike_step[keep]) if int(g) in ids})
    return out


def _sets(rec):
    return [set(zip(rec.spike_neuron[rec.spike_batch == b].tolist(), rec.spike_step[rec.spike_batch == b].tolist()))
            for b in range(rec.batch)]


@pytest.mark.parametrize("params, n_sets", [(THREE, 3), (None, 1)])
def test_late_events_go_to_their_own_set(params, n_sets):
    exp = small_experiment(n_steps=3000)
    backend = twin_backend(faults=TwinFaults(late_fraction=0.3, late_delay_s=0.5))
    rec = backend.run(exp, params)
    truth = _emitted(backend, exp, backend.twin.history)
    assert len(truth) == n_sets
    got = _sets(rec)
    for b in range(n_sets):
        assert got[b] == truth[b], f"set {b}: {len(got[b] - truth[b])} foreign, {len(truth[b] - got[b])} missing"
    meta = rec.metadata["board"]
    late = [meta["sets"][str(b)]["n_late"] for b in range(n_sets)]
    # the twin's own record of which delivered spikes of our neurons, in the window, came late
    ours = set(plan_network(exp.network).global_ids().tolist())
    came_late = [int((run.late & run.kept & (run.spike_step < exp.n_steps)
                      & np.isin(run.spike_id, list(ours))).sum()) for run in backend.twin.history]
    assert late == came_late
    assert all(n > 0.2 * len(truth[b]) for b, n in enumerate(late))  # about 30 % came late, all were placed
    dropped = [meta["sets"][str(b)]["n_dropped"] for b in range(n_sets)]
    assert dropped == [run.n_dropped for run in backend.twin.history]
    losses = meta["losses"]
    assert losses["n_late"] == sum(late) and losses["n_spikes"] == sum(len(t) for t in truth)
    assert losses["n_dropped"] == sum(dropped) and losses["n_outside_every_window"] == 0


def test_dropped_events_are_reported_and_a_lossy_run_warns_or_fails(caplog):
    exp = small_experiment(n_steps=2000)
    noise = TwinNoise(drop_rate=0.5)
    with caplog.at_level(logging.WARNING):
        rec = twin_backend(noise=noise).run(exp)
    losses = rec.metadata["board"]["losses"]
    assert 0.4 < losses["fraction"] < 0.6 and losses["n_dropped"] == rec.metadata["board"]["sets"]["0"]["n_dropped"]
    assert "the board lost" in caplog.text and "max_loss_fraction" in caplog.text
    with pytest.raises(BoardRunError, match=r"the board lost \d+ of \d+ events") as info:
        twin_backend(noise=noise, on_loss="raise").run(exp)
    assert info.value.failed is None and info.value.partial.metadata["board"]["completed_sets"] == [0]
    rec = twin_backend(noise=noise, on_loss="raise", max_loss_fraction=0.7).run(exp)  # a stated threshold
    assert rec.spike_time.size > 0


@pytest.mark.parametrize("make, field", [
    (lambda: TwinNoise(drop_rate=-1), "drop_rate"),
    (lambda: TwinNoise(jitter_s=math.inf), "jitter_s"),
    (lambda: TwinFaults(late_fraction=2), "late_fraction"),
    (lambda: TwinFaults(late_delay_s=-1), "late_delay_s"),
    (lambda: TwinFaults(disconnect_at_s=math.nan), "disconnect_at_s"),
    (lambda: TwinFaults(reconnect_after_s=-0.5), "reconnect_after_s"),
    (lambda: TwinFaults(disconnect_runs=(-1,)), "disconnect_runs"),
    (lambda: TwinFaults(late_fraction="0.3"), "late_fraction"),
])
def test_fault_and_noise_settings_are_validated(make, field):
    with pytest.raises(ParameterError, match=rf"\({field}=.*\): {field} must be|{field}=.*give a tuple"):
        make()


def test_backend_settings_are_validated():
    with pytest.raises(ParameterError, match="max_loss_fraction = 2"):
        twin_backend(max_loss_fraction=2)
    with pytest.raises(ParameterError, match="on_loss"):
        twin_backend(on_loss="ignore")


def test_a_device_that_comes_back_after_a_second_is_waited_for():
    exp = small_experiment(n_steps=2000, recurrent=False)
    faults = TwinFaults(disconnect_runs=(1,), disconnect_at_s=0.1, reconnect_after_s=1.0)
    backend = twin_backend(faults=faults, retries=1)
    rec = backend.run(exp, THREE)
    meta = rec.metadata["board"]
    assert meta["completed_sets"] == [0, 1, 2]
    assert [meta["sets"][str(i)]["attempts"] for i in range(3)] == [1, 2, 1]
    assert 1.0 <= meta["waited_for_device_s"] <= 3.0  # bounded backoff, not a fixed long sleep
    truth = _emitted(backend, exp, [backend.twin.history[i] for i in (0, 2, 3)])
    assert _sets(rec) == truth


def test_a_device_that_stays_away_is_given_up_after_the_timeout():
    exp = small_experiment(n_steps=2000, recurrent=False)
    faults = TwinFaults(disconnect_runs=(0,), disconnect_at_s=0.05, reconnect_after_s=None)
    backend = twin_backend(faults=faults, retries=1, reconnect_timeout_s=2.0)
    t0 = backend.twin.now_s
    with pytest.raises(BoardRunError, match="no longer connected"):
        backend.run(exp)
    assert 2.0 <= backend.twin.now_s - t0 < 6.0


@pytest.mark.parametrize("bits", [20, 31, 32])
def test_a_wrap_event_right_after_the_reset_does_not_shift_the_spikes(bits):
    exp = small_experiment(n_steps=3000)
    options = {"board_options": {"timestamp_bits": bits}}
    clean = twin_backend(**options).run(exp)
    rec = twin_backend(faults=TwinFaults(wrap_at_reset=True), **options).run(exp)
    assert _sets(rec) == _sets(clean) and rec.spike_time.size > 50
    assert rec.metadata["board"]["epochs"][0]["n_ignored_wraps"] == 1
