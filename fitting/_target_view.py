"""Read what the fitters need from a target: a ``Target`` (helper "target") or a mapping
name -> Recording, so that space and objective work with either."""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from dynacal.errors import RecordingError
from dynacal.protocols import Protocol, get_protocol
from dynacal.protocols.base import description_of
from dynacal.recording import Recording

__all__ = ["recordings_of", "protocols_of", "network_values", "board_codes", "protocol_of"]


def recordings_of(target: Any) -> dict[str, Recording]:
    """The fitting recordings (not the held-out ones), name -> Recording.

    Raises:
        RecordingError: no recordings, a recording without its experiment (version 1), or
            recordings of different neurons.
    """
    recs = target.recordings if hasattr(target, "recordings") else target
    if not isinstance(recs, Mapping) or not recs:
        raise RecordingError("the target holds no recordings; give a folder of recordings made by the protocols "
                             "(dynacal characterize --out DIR) or measure one (Target.measure).")
    out = {}
    for name, rec in recs.items():
        if not isinstance(rec, Recording):
            raise RecordingError(f"target[{name!r}] is a {type(rec).__name__}, not a Recording.")
        if getattr(rec, "experiment", None) is None:
            raise RecordingError(f"target[{name!r}] is a version 1 recording without its experiment; re-record it "
                                 f"with this dynacal (it stores the experiment) to fit it.")
        out[str(name)] = rec
    first = next(iter(out.values())).experiment.network
    for name, rec in out.items():
        net = rec.experiment.network
        if net.n_neurons != first.n_neurons or not (np.array_equal(net.core, first.core)
                                                     and np.array_equal(net.neuron_id, first.neuron_id)):
            raise RecordingError(f"target[{name!r}] records other neurons than {next(iter(out))!r}; every recording "
                                 f"of a target must hold the same neurons (select a common subset).")
    return out


def protocol_of(rec: Recording) -> Protocol:
    """The protocol a recording was made with (its recorded settings); ``Recorded`` otherwise."""
    return get_protocol(rec) if description_of(rec) else get_protocol("recorded")


def protocols_of(target: Any) -> dict[str, Protocol]:
    return {name: protocol_of(rec) for name, rec in recordings_of(target).items()}


def network_values(target: Any, names) -> dict[str, float]:
    """Median over the calibrated neurons of what their network runs with, per name (SI)."""
    rec = next(iter(recordings_of(target).values()))
    p = rec.experiment.network.params()
    return {n: float(np.median(getattr(p, n).detach().cpu().numpy())) for n in names}


def board_codes(target: Any):
    """The codes a board set per parameter set (``metadata["board"]["codes"]``), or None."""
    for rec in recordings_of(target).values():
        board = rec.metadata.get("board") if isinstance(rec.metadata, Mapping) else None
        if isinstance(board, Mapping) and board.get("codes") is not None:
            return board["codes"]
    return None
