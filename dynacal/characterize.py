"""Characterise neurons with the protocols: recordings, a features table and figures.

:func:`characterize` runs protocols on one backend in the lab order (``protocols.ORDER``),
and writes into ``out``:

- ``<protocol>.h5``: the Recording of each protocol (replayable: ``replay:OUT``; a protocol
  given by name on a replay backend is run with the settings and experiment of its
  recording there, so recordings made with non-default settings characterise too);
- ``features.csv``: one row per parameter set and neuron (``set``, ``core``, ``neuron_id``),
  one column per feature, ``<protocol>.<feature>`` for (B, N) features and
  ``<protocol>.<feature>[<label>]`` for each entry of (B, N, K) ones (``axis_labels``); SI
  units (Hz, s, A), empty where undefined (NaN);
- figures: ``fi.png`` (every neuron's f-I curve, the median bold), ``kernels.png`` (synapse
  currents and their fitted exponentials), ``rate_transfer.png``, and ``raster.png`` (of the
  held-out protocol, else the last one run);
- ``manifest.json``: the run (id, options, every file with its SHA-256; :mod:`dynacal._outdir`).
  A folder holds one run: another is refused unless ``mode="resume"`` (an interrupted run is
  finished: its intact recordings are read, not run again, so the table is the one an
  uninterrupted run writes) or ``mode="overwrite"``.

This module logs and never prints; the CLI (``dynacal characterize``) prints and shows a
progress bar through the ``progress`` callback.
"""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from .files import atomic_write
from ._outdir import RunFolder
from .errors import ParameterError, RecordingError
from .experiment import Experiment
from .params import Params
from .protocols import ORDER, Protocol, get_protocol
from .recording import Recording

__all__ = ["characterize", "parse_protocols", "features_table"]

log = logging.getLogger(__name__)


def parse_protocols(text: str | Sequence[str]) -> list[str]:
    """``"fi,kernels"`` or ``"all"`` -> protocol names in the lab order.

    Raises:
        ParameterError: an unknown name (the message lists the valid ones), or none.
    """
    names = ORDER if text in ("all", ("all",)) else [s.strip() for s in
                                                      (text.split(",") if isinstance(text, str) else text) if s.strip()]
    if not names:
        raise ParameterError(f"--protocol {text!r} names no protocol; give e.g. fi,kernels or all.")
    protocols = [get_protocol(name).name for name in names]  # validates
    return [name for name in ORDER if name in protocols]


def characterize(backend, protocols: Sequence[str | Protocol], out: str | os.PathLike, neurons: Any = "core0",
                 params: Params | None = None, *, figures: bool = True,
                 progress: Callable[[str, int, int], None] | None = None, mode: str = "new",
                 options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run ``protocols`` on ``backend`` and write recordings, ``features.csv`` and figures.

    Args:
        backend: an object with ``name`` and ``run`` (``dynacal.get_backend(...)``).
        protocols: names (``PROTOCOLS``) or protocol objects; run in the lab order.
        out: output folder (created), one run in it (:mod:`dynacal._outdir`: ``manifest.json``).
        neurons: which neurons (``protocols.layout``: ``"core0"``, ``"chip0"``, ...).
        params: (B, N)-broadcastable parameters, None for the network's own.
        figures: whether to draw the figures (matplotlib).
        progress: called as ``progress(name, done, total)`` before each protocol and
            once at the end with ``name = ""``.
        mode: ``"new"`` (refuse a folder that holds another run), ``"resume"`` (reuse the
            recordings of an interrupted run with the same options whose files are intact)
            or ``"overwrite"``.
        options: more entries for the manifest's options (the CLI's backend spec), beside
            the backend, protocol settings, neurons, parameters and figures.

    Returns:
        ``{"features": {name: {feature: array}}, "files": [paths], "wall_s": {name: s},
        "reused": [names]}``: the wall time of each protocol's run (or, reused, reading)
        and feature extraction, not the file writing; the protocols taken from the folder.

    Raises:
        ParameterError: no protocol, recordings of different neurons, or a folder that
            cannot be written or holds another run (``_outdir.RunFolder``); nothing is
            run or written then.
    """
    if not protocols:
        raise ParameterError("no protocol to run: give at least one, e.g. ['fi'] (or 'all').")
    plans = [_plan(backend, p, neurons) for p in protocols]
    plans.sort(key=lambda pe: ORDER.index(pe[0].name) if pe[0].name in ORDER else len(ORDER))
    objects = {p.name: p for p, _ in plans}
    if len({e.network.n_neurons for _, e in plans}) > 1:
        raise ParameterError(f"the recordings measure different neurons ({[e.network.n_neurons for _, e in plans]}); "
                             f"characterise them one protocol at a time.")
    settings = {"backend": repr(backend), "protocols": [p.describe() for p in objects.values()],
                "neurons": neurons, "params": _params_key(params), "figures": figures, **(options or {})}
    features, recordings, wall, reused = {}, {}, {}, []
    with RunFolder(out, "dynacal characterize", settings, mode=mode) as folder:
        for k, (protocol, experiment) in enumerate(plans):
            if progress:
                progress(protocol.name, k, len(plans))
            start = time.perf_counter()
            kept = folder.reuse(f"{protocol.name}.h5")
            rec = Recording.load(kept) if kept else protocol.run_experiment(backend, experiment, params)
            features[protocol.name] = protocol.features(rec)
            wall[protocol.name] = time.perf_counter() - start  # run (or read) and features
            recordings[protocol.name] = rec
            if kept:
                reused.append(protocol.name)
            else:
                folder.add(rec.save(folder.path / f"{protocol.name}.h5"), part=protocol.name)
            log.info("characterize: %s on %s: %d neurons, %d spikes, %.2f s%s", protocol.name, backend.name,
                     rec.n_neurons, rec.spike_step.size, wall[protocol.name], " (reused)" if kept else "")
        if progress:
            progress("", len(plans), len(plans))
        text = features_table(features, objects, plans[0][1].network)
        folder.add(atomic_write(folder.path / "features.csv", lambda fh: fh.write(text.encode())))
        for path in _figures(folder.path, objects, features, recordings) if figures else ():
            folder.add(path)
        folder.finish()
    files = [folder.path / name for name in folder.files]
    return {"features": features, "files": files, "wall_s": wall, "reused": reused}


def _params_key(params: Params | None) -> str | None:
    """A digest of the parameter values (the manifest's ``params``): equal for equal values."""
    if params is None:
        return None
    digest = hashlib.sha256()
    for name, value in sorted(vars(params).items()):
        arr = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
        digest.update(f"{name}{arr.shape}{arr.dtype}".encode() + np.ascontiguousarray(arr).tobytes())
    return digest.hexdigest()[:16]


def _plan(backend, protocol: str | Protocol, neurons) -> tuple[Protocol, Experiment]:
    """The protocol and the experiment to run: a name on a replay backend gets the settings
    and experiment of its recording there (``_recorded``), else the protocol's own."""
    if isinstance(protocol, str):
        protocol, experiment = _recorded(backend, protocol) or (get_protocol(protocol), None)
        if experiment is not None:
            return protocol, experiment
    return protocol, protocol.experiment(neurons)


def _recorded(backend, name: str) -> tuple[Protocol, Experiment | None] | None:
    """On a replay backend: the protocol ``name`` with the settings of its recording there,
    and the recording's experiment (None for a v1 file); None when it holds none."""
    found = sorted((path, meta) for entries in (getattr(backend, "index", None) or {}).values()
                   for path, meta in entries if (meta.get("protocol") or {}).get("name") == name)
    if not found:
        return None
    path, meta = found[0]
    if len(found) > 1:
        log.info("characterize: %d recordings of %s; using %s", len(found), name, path)
    try:
        experiment = Experiment.load(path)
    except RecordingError:  # a v1 file: rebuilt from the recorded settings
        experiment = None
    return get_protocol(meta["protocol"]), experiment


def features_table(features: Mapping[str, Mapping[str, np.ndarray]], protocols: Mapping[str, Protocol],
                   neurons) -> str:
    """The features as CSV text (module docstring); ``neurons`` a Network for core and id."""
    columns, values = [], []
    for name, feats in features.items():
        labels = protocols[name].axis_labels()
        for key, arr in feats.items():
            if arr.ndim == 2:
                columns.append(f"{name}.{key}")
                values.append(arr)
            else:
                tags = labels.get(key) or [str(i) for i in range(arr.shape[-1])]
                for i, tag in enumerate(tags):
                    columns.append(f"{name}.{key}[{tag}]")
                    values.append(arr[..., i])
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["set", "core", "neuron_id"] + columns)
    batch = values[0].shape[0] if values and neurons is not None else 0
    for b in range(batch):
        for n in range(neurons.n_neurons):
            cells = ["" if not np.isfinite(v[b, n]) else f"{float(v[b, n]):.10g}" for v in values]
            writer.writerow([b, int(neurons.core[n]), int(neurons.neuron_id[n])] + cells)
    return buf.getvalue()


def _figures(out: Path, protocols: Mapping[str, Protocol], features, recordings: Mapping[str, Recording]) -> list[Path]:
    from . import plots  # noqa: PLC0415  (matplotlib only when figures are made)

    written = []
    if "fi" in features:
        written.append(plots.save_figure(plots.fi_figure(features["fi"], protocols["fi"].levels), out / "fi.png"))
    kernels = protocols.get("kernels")
    if kernels is not None and any(k.startswith("tau_") for k in features["kernels"]):
        rec = recordings["kernels"]
        fig = plots.kernels_figure(rec, kernels, features["kernels"], neurons=rec.trace_neurons[:3].tolist())
        written.append(plots.save_figure(fig, out / "kernels.png"))
    transfer = protocols.get("rate_transfer")
    if transfer is not None:
        fig = plots.rate_transfer_figure(features["rate_transfer"], transfer.rates_of, transfer.synapses)
        written.append(plots.save_figure(fig, out / "rate_transfer.png"))
    raster = recordings.get("heldout") or list(recordings.values())[-1]
    written.append(plots.save_figure(plots.raster_figure(raster), out / "raster.png"))
    return written
