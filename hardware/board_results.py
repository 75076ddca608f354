"""What a board run gives back: per-set checkpoints, the loss check and the Recording.

:class:`~.samna_board.BoardBackend` measures; this module keeps what it measured:

- a checkpoint per parameter set (one HDF5 recording in ``checkpoint_dir``, named by the
  experiment's content hash, the set's codes and the backend's name), reused by a later run
  of the same experiment and codes;
- the loss check (``max_loss_fraction``, ``on_loss``) and :class:`BoardRunError`, which
  carries the partial result;
- the Recording of the run, with the board's metadata (``metadata["board"]``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from dynacal.errors import BoardError, RecordingError
from dynacal.experiment import Experiment
from dynacal.recording import Recording

from .attribution import RunState, loss_message
from .biasmap import BiasSetting

__all__ = ["BoardRunError", "checkpoint_path", "load_checkpoint", "save_checkpoint", "check_losses",
           "board_recording"]

log = logging.getLogger(__name__)


class BoardRunError(BoardError):
    """The board failed part-way through a run (or lost too many events); what was measured
    is kept.

    Attributes:
        partial: a :class:`Recording` with the completed sets (metadata lists them).
        completed: indices of the completed parameter sets; failed: the set that failed
            (None when the run failed on its losses).
    """

    def __init__(self, message: str, partial: Recording, completed: list[int], failed: int | None):
        super().__init__(message)
        self.partial, self.completed, self.failed = partial, completed, failed




def checkpoint_path(folder: Path | None, experiment: Experiment, setting: BiasSetting, i: int,
                    backend_name: str) -> Path | None:
    """The checkpoint file of parameter set ``i`` (None without a ``folder``)."""
    if folder is None:
        return None
    codes = json.dumps({f"{c},{k}": v for (c, k), v in sorted(setting.codes.items())}, sort_keys=True)
    key = hashlib.sha256((experiment.content_hash() + codes + backend_name).encode()).hexdigest()[:16]
    return folder / f"set{i:04d}_{key}.h5"


def load_checkpoint(path: Path | None, i: int) -> tuple[np.ndarray, np.ndarray, dict] | None:
    """Set ``i``'s (neurons, spike times in s, stats) from its checkpoint; None when there is
    none or it cannot be read (the set is then measured again)."""
    if path is None or not path.exists():
        return None
    try:
        rec = Recording.load(path)
    except RecordingError as exc:
        log.warning("checkpoint %s is unreadable (%s); measuring again", path, exc)
        return None
    log.info("parameter set %d: reusing %s", i, path)
    return rec.spike_neuron, rec.spike_time, dict(rec.metadata.get("board_set", {}), reused=str(path))


def save_checkpoint(path: Path, backend_name: str, run: RunState, i: int) -> None:
    """Write set ``i``'s final result (``run.results[i]``) to ``path`` (atomically)."""
    neurons, times, stats = run.results[i]
    Recording.from_times(backend_name, run.experiment.dt, run.experiment.n_steps, 1, run.plan.n_neurons,
                         np.zeros(times.size, np.int64), neurons, times,
                         metadata={"board_set": stats, "set": i}).save(path)


def check_losses(rec: Recording, run: RunState, max_loss_fraction: float, on_loss: str) -> None:
    """Warn, or raise :class:`BoardRunError` (``on_loss="raise"``), when the run's losses
    exceed ``max_loss_fraction`` of its events."""
    message = loss_message(rec.metadata["board"]["losses"], max_loss_fraction)
    if message and on_loss == "raise":
        raise BoardRunError(message, rec, sorted(run.results), None)
    if message:
        log.warning("%s", message)


def board_recording(run: RunState, backend_name: str, failed: int | None, device: Mapping[str, Any]) -> Recording:
    """The Recording of the sets measured so far (``run.results``), spikes only.

    Args:
        run: the run's state; backend_name: the Recording's backend.
        failed: the set that failed, or None.
        device: ``device``, ``serial``, ``samna_version``, ``sink_wiring`` and
            ``waited_for_device_s`` of the device link, for the metadata.
    """
    b, results = len(run.settings), run.results
    parts = [(np.full(results[i][0].size, i), results[i][0], results[i][1]) for i in sorted(results)]
    if parts:
        sb, sn, st = (np.concatenate(x) for x in zip(*parts))
    else:
        sb, sn, st = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    meta = {"experiment": run.experiment.summary(), "device": device["device"], "serial": device["serial"],
            "samna_version": device["samna_version"],
            "board": {"plan": run.plan.summary(), "fpga": run.sched.summary(), "completed_sets": sorted(results),
                      "missing_sets": [i for i in range(b) if i not in results],
                      "failed_set": failed, "ignored_parameters": run.ignored,
                      "sink_wiring": device["sink_wiring"], "waited_for_device_s": device["waited_for_device_s"],
                      "codes": [{f"{c},{k}": v for (c, k), v in sorted(s.codes.items())} for s in run.settings],
                      "max_param_rel_error": [s.report.max_rel_error for s in run.settings],
                      "sets": {str(i): results[i][2] for i in sorted(results)},
                      "losses": run.losses(), "epochs": run.epochs}}
    return Recording.from_times(backend_name, run.experiment.dt, run.experiment.n_steps, b, run.plan.n_neurons,
                                sb, sn, st, metadata=meta, experiment=run.experiment)
