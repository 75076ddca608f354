"""Check a calibration against the chip on held-out protocols (``dynacal verify``).

For each held-out protocol, the chip's recording (measured now on a board, or read from a
target folder) and the calibrated simulator's run of the same experiment are compared neuron
by neuron on their spike counts (summed over the protocol's sets):

    error[n] = |count_sim[n] - count_chip[n]| / max(count_chip[n], 1)

The verdict of a protocol is *agree* when the median error over the calibrated neurons (those
``result.ok`` marks; neurons that failed to calibrate are left out and counted) is at most the
tolerance. The uncalibrated simulator (the table's nominal biases, no mismatch) is scored the
same way, beside it, to show what the calibration gained. Library code: logs, never prints.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from dynacal.errors import ParameterError, RecordingError
from dynacal.recording import Recording

__all__ = ["load_calibration", "verify", "spike_counts", "count_error", "format_table"]

log = logging.getLogger(__name__)


def load_calibration(path: str | Path):
    """The :class:`CalibrationResult` in ``path`` (``calibration.json`` or its folder).

    Raises:
        ParameterError: no calibration there.
    """
    from .result import CalibrationResult  # noqa: PLC0415

    p = Path(path)
    if not (p.is_file() or (p / "calibration.json").is_file()):
        what = "no such file" if not p.exists() else "no calibration.json in it"
        raise ParameterError(f"--calibration {path}: {what}; give the calibration.json written by dynacal calibrate "
                             f"(or its folder).")
    return CalibrationResult.load(p)


def spike_counts(rec: Recording) -> np.ndarray:
    """Spikes per neuron summed over the recording's sets: int64 (N,)."""
    return np.bincount(np.asarray(rec.spike_neuron, dtype=np.int64), minlength=rec.n_neurons)[:rec.n_neurons]


def count_error(sim: np.ndarray, chip: np.ndarray) -> np.ndarray:
    """Per-neuron relative spike-count error ``|sim - chip| / max(chip, 1)`` (module docstring)."""
    sim, chip = np.asarray(sim, dtype=np.float64), np.asarray(chip, dtype=np.float64)
    return np.abs(sim - chip) / np.maximum(chip, 1.0)


def _chip_recordings(result, names: Sequence[str], *, board: str | None, target: Path | None) -> dict[str, Recording]:
    """Protocol name -> the chip's recording of it: read from ``target`` (cut to the
    calibrated neurons) or measured now on ``board``."""
    if target is not None:
        from .target import Target  # noqa: PLC0415

        # heldout=(): a folder of held-out recordings alone is a valid chip record here
        loaded = Target.load(target, neurons=np.asarray(result.neurons).reshape(-1, 3), heldout=())
        missing = [n for n in names if n not in loaded.recordings]
        if missing:
            raise RecordingError(f"--target {target} holds no recording of the held-out protocol(s) {missing}; it "
                                 f"holds {sorted(loaded.recordings)}. Measure them (dynacal characterize --protocol "
                                 f"{','.join(missing)}) or give --heldout one of those.")
        return {n: loaded.recordings[n] for n in names}
    from dynacal.backends.registry import get_backend  # noqa: PLC0415
    from dynacal.protocols import get_protocol  # noqa: PLC0415

    backend, network = get_backend(board), calibrated_network(result)
    try:
        return {n: get_protocol(n).run_experiment(backend, get_protocol(n).experiment(network)) for n in names}
    finally:
        getattr(backend, "close", lambda: None)()


def _ok_mask(result, network) -> np.ndarray:
    """Which of ``network``'s neurons the calibration marks calibrated (bool (N,))."""
    neurons = np.asarray(result.neurons, dtype=np.int64).reshape(-1, 3)
    ok = dict(zip(((int(c) * 4 + int(k), int(i)) for c, k, i in neurons), np.asarray(result.ok, dtype=bool)))
    keys = list(zip(np.asarray(network.core).tolist(), np.asarray(network.neuron_id).tolist()))
    missing = [key for key in keys if key not in ok]
    if missing:
        core, nid = missing[0]
        raise ParameterError(f"the recording holds {len(missing)} neurons the calibration does not cover (first: core "
                             f"{core} neuron {nid}); verify on the calibrated neurons, or calibrate these (--neurons).")
    return np.array([ok[key] for key in keys], dtype=bool)


def calibrated_network(result):
    """A Network without connections of the calibration's neurons (in its order)."""
    from .result import neurons_network  # noqa: PLC0415

    return neurons_network(result.neurons)


def verify(result, names: Sequence[str], *, board: str | None = None, target: Path | None = None,
           tolerance: float = 0.05) -> list[dict[str, Any]]:
    """Compare the chip and the calibrated simulator on each held-out protocol.

    Args:
        result: a CalibrationResult (``result.params(network)``, ``neurons``, ``ok``).
        names: held-out protocol names.
        board: a board spec to measure on (``"twin:7"``), or None with ``target``.
        target: a folder holding ``<name>.h5`` recordings of the chip.
        tolerance: the largest median per-neuron error that agrees (a fraction).

    Returns:
        One row per protocol: ``protocol``, ``neurons`` (compared), ``skipped`` (not
        calibrated), ``median``, ``p90`` (errors, fractions), ``nominal`` (median error of
        the uncalibrated simulator), ``chip_rate`` and ``sim_rate`` (median Hz), ``agree``.
    """
    from dynacal.backends.registry import get_backend  # noqa: PLC0415
    from dynacal.protocols import get_protocol  # noqa: PLC0415

    if (board is None) == (target is None):
        raise ParameterError("give one of board= (measure now) or target= (a folder of recordings).")
    torch_backend = get_backend("torch")
    rows = []
    for name, chip in _chip_recordings(result, names, board=board, target=target).items():
        experiment = chip.require_experiment()
        protocol = get_protocol(chip) if chip.metadata.get("protocol") else get_protocol(name)
        ok = _ok_mask(result, experiment.network)
        sim = protocol.run_experiment(torch_backend, experiment, result.params(experiment.network))
        nominal = protocol.run_experiment(torch_backend, experiment)
        c, s, n = spike_counts(chip), spike_counts(sim), spike_counts(nominal)
        err, err0 = count_error(s, c)[ok], count_error(n, c)[ok]
        seconds = chip.duration * max(chip.batch, 1)
        median = float(np.median(err)) if err.size else float("nan")
        rows.append({"protocol": name, "neurons": int(ok.sum()), "skipped": int((~ok).sum()), "median": median,
                     "p90": float(np.percentile(err, 90)) if err.size else float("nan"),
                     "nominal": float(np.median(err0)) if err0.size else float("nan"),
                     "chip_rate": float(np.median(c[ok])) / seconds if ok.any() else float("nan"),
                     "sim_rate": float(np.median(s[ok])) / seconds if ok.any() else float("nan"),
                     "agree": bool(err.size) and median <= tolerance})
        log.info("verify %s: median error %.4g (nominal %.4g) over %d neurons", name, median, rows[-1]["nominal"],
                 ok.sum())
    return rows


def format_table(rows: Sequence[dict[str, Any]], tolerance: float) -> str:
    """The rows of :func:`verify` as the printed table."""
    head = (f"{'protocol':<12} {'neurons':>7} {'median err':>10} {'90th pct':>9} {'uncalibrated':>12} "
            f"{'chip Hz':>8} {'sim Hz':>8}  verdict (tolerance {tolerance:.3g})")
    lines = [head]
    for r in rows:
        skipped = f" ({r['skipped']} not calibrated, left out)" if r["skipped"] else ""
        lines.append(f"{r['protocol']:<12} {r['neurons']:>7} {r['median']:>10.2%} {r['p90']:>9.2%} "
                     f"{r['nominal']:>12.2%} {r['chip_rate']:>8.3g} {r['sim_rate']:>8.3g}  "
                     f"{'agree' if r['agree'] else 'DISAGREE'}{skipped}")
    return "\n".join(lines)
