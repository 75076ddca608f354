"""Target: the recordings of one chip that a calibration fits, read from a folder or measured.

A target folder holds version 2 recordings (``*.h5``, each with its experiment) from any
source: the board (``get_backend("board")``), its twin (``"twin:SERIAL"``), ``replay:``, a
simulator, or ``dynacal import`` (plain ``*.npz`` lab files are read too, as
:func:`dynacal.labformat.read_plain` reads them). Files a dynacal run writes beside its
recordings (``manifest.json``, ``features.csv``, ``noise.json``, figures) are skipped;
anything else is refused, so that a wrong folder is never fitted.

**Keys.** Each recording is filed under its protocol's name (``experiment.protocol["name"]``);
imported data without a protocol (or read with the generic ``Recorded`` one) under its file
stem. Recordings of the same protocol and the same experiment (content hash) are *repeats*
(:meth:`Target.measure` names them ``fi.h5``, ``fi.r1.h5``, ``fi.r2.h5``): all are kept in
``target.repeats[name]``, the first (by that naming) is ``target.recordings[name]``. The
first, not a merge: a merged spike train is no recording any backend made, and the fitter
scores its top candidates against every repeat (:func:`dynacal.fitting.noise.robust_loss`).
Two recordings of one protocol with different experiments are refused. Held-out protocols
(default ``"heldout"``) go to ``target.heldout``.

**Neurons.** Every recording must measure the same physical neurons (chip, core, id); with
``neurons=`` (``"core0"``, ``"core0:64"``, ``"chip0"``, an int, a Network, or (M, 3) triples)
all recordings are cut to those neurons, in that order (:mod:`._subset`).

**Board facts.** A board or twin recording has ``metadata["serial"]`` and
``metadata["board"]["codes"]`` (per set, ``{"chip,core": {bias: [coarse, fine]}}``):
``target.serial``, ``target.codes``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from dynacal._outdir import MANIFEST, file_hash
from dynacal.chip import Network
from dynacal.errors import DynacalError, ParameterError, RecordingError
from dynacal.protocols import ORDER, Protocol, Recorded, get_protocol, layout
from dynacal.recording import Recording

from ._subset import describe_neurons, neuron_keys, subset_recording, triples
from ._measure import NOISE_FILE
from .noise import NoiseFloor

__all__ = ["Target", "RECORDING_SUFFIXES", "IGNORED"]

log = logging.getLogger(__name__)

#: Files that hold recordings.
RECORDING_SUFFIXES = (".h5", ".npz")
#: Files a dynacal run writes beside its recordings; skipped (glob patterns).
IGNORED = (MANIFEST, "features.csv", NOISE_FILE, "*.png", "*.svg", "*.html", "*.log", ".*")
_REPEAT = re.compile(r"^(?P<stem>.+)\.r(?P<k>\d+)$")


def _stem_and_repeat(path: Path) -> tuple[str, int]:
    """``fi.r2.h5`` -> ("fi", 2); ``fi.h5`` -> ("fi", 0)."""
    m = _REPEAT.match(path.stem)
    return (m["stem"], int(m["k"])) if m else (path.stem, 0)


def _read(path: Path) -> Recording:
    """One recording with its experiment, or a RecordingError naming the file and the fix."""
    if path.suffix == ".npz":
        from dynacal.labformat import read_plain
        rec = read_plain(path)
    else:
        rec = Recording.load(path)
    if rec.experiment is None:
        try:
            rec.require_experiment()
        except RecordingError as exc:
            raise RecordingError(f"{path}: {exc}") from None
    return rec


def _key(rec: Recording, path: Path) -> str:
    proto = rec.experiment.protocol
    name = proto.get("name") if proto else None
    return _stem_and_repeat(path)[0] if name in (None, Recorded.name) else name


@dataclasses.dataclass(eq=False)
class Target:
    """The recordings of one chip that a calibration fits.

    Attributes:
        recordings: protocol name -> the (first) Recording of it, every one with its
            experiment and the same neurons.
        heldout: protocol name -> Recording kept out of the fit (validation).
        source: where the data came from: the recordings' backend names (``"twin"``,
            ``"board"``, ``"torch"``, ``"replay"``, ``"imported"``), joined by ``+`` if several.
        serial: the board's serial number, None for simulated or imported data.
        repeats: protocol name -> every recording of it (the first is ``recordings[name]``).
        noise: the noise floor measured from the repeats, None without repeats.
        hashes: file name -> SHA-256 of the file (provenance, cache keys).
        files: protocol name -> the file paths of its recordings (repeats in order).
    """

    recordings: dict[str, Recording]
    _: dataclasses.KW_ONLY
    heldout: dict[str, Recording] = dataclasses.field(default_factory=dict)
    source: str = "unknown"
    serial: int | None = None
    repeats: dict[str, list[Recording]] = dataclasses.field(default_factory=dict)
    noise: NoiseFloor | None = None
    hashes: dict[str, str] = dataclasses.field(default_factory=dict)
    files: dict[str, list[Path]] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.recordings:
            raise RecordingError("a Target needs at least one recording outside the held-out protocols; add "
                                 "the recordings to fit (e.g. fi.h5), or hold out fewer protocols.")
        every = {**self.recordings, **self.heldout}
        first = next(iter(every.values()))
        for name, rec in every.items():
            rec.require_experiment()
            if not np.array_equal(neuron_keys(rec.experiment.network), neuron_keys(first.experiment.network)):
                raise RecordingError(f"recording {name!r} measures other neurons than the others "
                                     f"({describe_neurons(neuron_keys(rec.experiment.network))}); build the "
                                     f"Target with Target.load(folder, neurons=...) to select common ones.")
        for name, rec in self.recordings.items():
            self.repeats.setdefault(name, [rec])

    # --- what the fitters read --------------------------------------------------------

    @property
    def network(self) -> Network:
        """The Network of the calibrated neurons (that of the first recording's experiment)."""
        return next(iter(self.recordings.values())).experiment.network

    @property
    def neurons(self) -> np.ndarray:
        """int64 (M, 3): (chip, core within the chip, id) of each calibrated neuron."""
        return triples(neuron_keys(self.network))

    @property
    def codes(self) -> dict[str, list[dict]]:
        """Protocol name -> the bias codes per set the board ran (``{"chip,core": {bias: [coarse,
        fine]}}``); only the protocols whose recordings say (board and twin)."""
        out = {}
        for name, rec in {**self.recordings, **self.heldout}.items():
            codes = (rec.metadata.get("board") or {}).get("codes")
            if codes is not None:
                out[name] = codes
        return out

    @property
    def unstable(self) -> dict[str, np.ndarray]:
        """Protocol name -> bool (N,): the neurons whose run went Euler-unstable in some set of
        its recording (a simulator's target; the board and imported data do not say: absent)."""
        return {name: rec.unstable.any(axis=0) for name, rec in {**self.recordings, **self.heldout}.items()
                if rec.unstable is not None}

    def protocol(self, name: str) -> Protocol:
        """The protocol of recording ``name`` with its recorded settings (``Recorded`` for
        imported data without a protocol).

        Raises:
            ParameterError: no recording of that name (the message lists the target's).
        """
        rec = self.recordings.get(name) or self.heldout.get(name)
        if rec is None:
            raise ParameterError(f"the target has no recording {name!r}; it has "
                                 f"{sorted(self.recordings)} (held out: {sorted(self.heldout)}).")
        proto = rec.experiment.protocol
        return get_protocol(rec) if proto and proto.get("name") != Recorded.name else Recorded()

    def __repr__(self) -> str:
        n = self.network.n_neurons
        reps = {k: len(v) for k, v in self.repeats.items() if len(v) > 1}
        return (f"Target({self.source}{f' serial {self.serial}' if self.serial is not None else ''}: {n} neurons, "
                f"{sorted(self.recordings)}, held out {sorted(self.heldout)}"
                f"{f', repeats {reps}' if reps else ''})")

    # --- reading ----------------------------------------------------------------------

    @classmethod
    def load(cls, folder: str | os.PathLike, *, neurons: Any = None,
             heldout: Sequence[str] = ("heldout",)) -> "Target":
        """Read a target folder (module docstring).

        Args:
            folder: the folder of recordings.
            neurons: None (every recording must hold the same neurons), or the neurons to
                keep in every recording: a spec (``"core0"``, ``"core0:64"``, ``"chip0"``), an
                int, a Network, or int (M, 3) (chip, core, id).
            heldout: protocol names kept apart in ``target.heldout``.

        Raises:
            RecordingError: a missing or empty folder, a folder without recordings, an
                unrelated or damaged file, a version 1 recording, recordings of different
                neurons, two different experiments of one protocol, or data from two boards.
            ParameterError: ``neurons`` names neurons a recording does not hold.
        """
        folder = Path(folder)
        paths = _recording_files(folder)
        groups: dict[str, list[tuple[Path, Recording]]] = {}
        for path in paths:
            rec = _read(path)
            groups.setdefault(_key(rec, path), []).append((path, rec))
        groups = {k: _check_repeats(k, sorted(v, key=lambda pr: _stem_and_repeat(pr[0])[1]))
                  for k, v in sorted(groups.items())}
        groups = _select_neurons(groups, neurons)
        heldout = (heldout,) if isinstance(heldout, str) else tuple(heldout)
        repeats = {k: [rec for _, rec in v] for k, v in groups.items()}
        recordings = {k: v[0] for k, v in repeats.items() if k not in heldout}
        if not recordings:
            raise RecordingError(f"{folder} holds only held-out recordings ({sorted(repeats)}); add the recordings "
                                 f"to fit, or pass heldout=() to fit these.")
        every = [rec for v in repeats.values() for rec in v]
        for name, items in groups.items():
            bad = items[0][1].unstable
            if bad is not None and bad.any():  # garbage the fitter must not chase (FITTING.md)
                log.warning("target %s: %d of %d neurons went Euler-unstable in %s (target.unstable); mask them "
                            "or record with substeps", folder, int(bad.any(0).sum()), bad.shape[1], items[0][0].name)
        return cls(recordings, heldout={k: v[0] for k, v in repeats.items() if k in heldout},
                   source="+".join(sorted({rec.backend for rec in every})), serial=_serial(groups),
                   repeats=repeats, noise=NoiseFloor.from_target_repeats(repeats),
                   hashes={p.name: file_hash(p) for p in paths},
                   files={k: [p for p, _ in v] for k, v in groups.items()})


    @classmethod
    def measure(cls, backend, neurons: Any = "core0", protocols: Sequence = ORDER, *, out: str | os.PathLike,
                repeats: int = 3, progress: Any = True, tolerance: float = 0.02, noise_protocol: str = "fi",
                heldout: Sequence[str] = ("heldout",), mode: str = "resume", resume: bool = False) -> "Target":
        """Measure the lab protocols on ``backend``, save them into ``out``, and load them.

        The noise protocol runs ``repeats`` times first; its noise floor decides how often
        the others run (``ceil((level / tolerance)^2)``, 1..repeats); every recording is
        saved atomically as it is made, and a second call with the same options measures
        only what is missing (:mod:`._measure` documents the rule and the file names).

        Args:
            backend: a backend or its name (``"twin:7"``, ``"board"``, ``"torch"``, ``"replay:DIR"``).
            neurons: the neurons to measure (``"core0"``, ``"core0:64"``, ``"chip0"``).
            protocols: names or Protocol objects (their settings), run in ``protocols.ORDER``.
            out: the target folder (created).
            repeats: measurements of the noise protocol (and the most of any other); 1 = no floor.
            progress: True: a tqdm bar on stderr (one step per measurement); a callable:
                called as ``progress(name, done, total)`` before each measurement and with
                ``name = ""`` at the end (``dynacal characterize``'s convention); False: nothing.
            tolerance: the relative noise (fraction) below which one measurement is enough.
            noise_protocol: the protocol the floor is measured with (the first one if absent).
            heldout: the protocols kept apart in ``target.heldout``.
            mode: ``"resume"`` (reuse this run's intact files), ``"new"`` or ``"overwrite"``.
            resume: True is ``mode="resume"`` (the CLI's ``--resume``).

        Raises:
            ParameterError: bad repeats or tolerance, no protocol or one twice, or a folder
                that holds another run (``mode`` says what to do).
        """
        from ._measure import measure
        return measure(cls, backend, neurons, protocols, out=out, repeats=repeats, progress=progress,
                       tolerance=tolerance, noise_protocol=noise_protocol, heldout=heldout, mode=mode, resume=resume)


def _recording_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise RecordingError(f"target folder {folder} {what}; give the folder of recordings (e.g. the --out of "
                             f"dynacal characterize or dynacal import).")
    entries = sorted(folder.iterdir())
    if not entries:
        raise RecordingError(f"target folder {folder} is empty; record the protocols into it first (dynacal "
                             f"characterize --out {folder}, dynacal import FILE --out {folder}, or "
                             f"Target.measure(backend, out={str(folder)!r})).")
    skipped = [e for e in entries if any(e.match(p) for p in IGNORED)]
    unrelated = [e.name for e in entries
                 if e not in skipped and (not e.is_file() or e.suffix not in RECORDING_SUFFIXES)]
    if unrelated:
        raise RecordingError(f"target folder {folder} holds files that are not recordings: {unrelated[:6]}; a target "
                             f"folder holds only recordings (.h5, or .npz lab files) and what dynacal writes beside "
                             f"them. Move them out, or give the folder of recordings.")
    paths = [e for e in entries if e not in skipped]
    if not paths:
        raise RecordingError(f"target folder {folder} holds no recordings (only {[e.name for e in skipped][:6]}); "
                             f"record the protocols into it first.")
    return paths


def _check_repeats(name: str, items: list[tuple[Path, Recording]]) -> list[tuple[Path, Recording]]:
    """Recordings of one protocol must be repeats: the same experiment."""
    first_path, first = items[0]
    for path, rec in items[1:]:
        if rec.experiment.content_hash() != first.experiment.content_hash():
            raise RecordingError(f"two recordings of protocol {name!r} with different experiments: {first_path.name} "
                                 f"({first.experiment.content_hash()[:12]}) and {path.name} "
                                 f"({rec.experiment.content_hash()[:12]}); a target holds one experiment per "
                                 f"protocol (repeats of it are fine). Move one of them out of the folder.")
    return items


def _serial(groups: Mapping[str, list[tuple[Path, Recording]]]) -> int | None:
    found = {}
    for items in groups.values():
        for path, rec in items:
            serial = rec.metadata.get("serial")
            if serial is not None:
                found.setdefault(str(serial), path.name)
    if len(found) > 1:
        raise RecordingError(f"the recordings come from different boards (serial: file) {found}; a target is one "
                             f"chip: keep the recordings of one board in the folder.")
    if not found:
        return None
    serial = next(iter(found))
    return int(serial) if serial.isdigit() else serial


def _wanted_keys(neurons: Any) -> np.ndarray:
    if isinstance(neurons, (str, int, np.integer, Network)):
        try:
            return neuron_keys(layout(neurons))
        except DynacalError as exc:
            raise ParameterError(f"neurons = {neurons!r}: {exc}") from None
    arr = np.asarray(neurons)
    integral = np.issubdtype(arr.dtype, np.integer) or (
        np.issubdtype(arr.dtype, np.floating) and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)))
    if arr.ndim != 2 or arr.shape[1] != 3 or not integral or arr.size == 0:
        raise ParameterError(f"neurons has shape {arr.shape} ({arr.dtype}); give a spec ('core0', 'core0:64', "
                             f"'chip0'), an int, a Network, or integer (M, 3) rows of (chip, core, id).")
    from dynacal.chip import CORES_PER_CHIP, NEURONS_PER_CORE
    arr = arr.astype(np.int64)
    keys = (arr[:, 0] * CORES_PER_CHIP + arr[:, 1]) * NEURONS_PER_CORE + arr[:, 2]
    if np.unique(keys).size != keys.size:
        raise ParameterError("neurons lists a (chip, core, id) twice; list each neuron once.")
    return keys


def _select_neurons(groups, neurons):
    """Every recording cut to the neurons asked for (or checked to hold the same ones)."""
    first_path, first = next(iter(groups.values()))[0]
    want = neuron_keys(first.experiment.network) if neurons is None else _wanted_keys(neurons)
    out = {}
    for name, items in groups.items():
        cut = []
        for path, rec in items:
            have = neuron_keys(rec.experiment.network)
            if neurons is None:
                if not np.array_equal(have, want):
                    common = np.intersect1d(have, want).size
                    raise RecordingError(
                        f"{path.name} measures {describe_neurons(have)}, but {first_path.name} measures "
                        f"{describe_neurons(want)}; every recording of a target must hold the same neurons. "
                        f"Pass neurons= to keep common ones ({common} are common), or re-record.")
                cut.append((path, rec))
                continue
            where = {int(k): i for i, k in enumerate(have)}
            missing = np.asarray([k for k in want if int(k) not in where], np.int64)
            if missing.size:
                raise ParameterError(f"neurons = {neurons!r}: {path.name} does not hold {describe_neurons(missing)} "
                                     f"(it holds {describe_neurons(have)}); ask for neurons every recording holds.")
            cut.append((path, subset_recording(rec, np.asarray([where[int(k)] for k in want], np.int64))))
        out[name] = cut
    return out
