"""Measuring a target on a board, its twin or any backend (:meth:`Target.measure`).

The lab protocols run in ``protocols.ORDER``, every recording saved atomically into the
output folder as it is made, the folder a :class:`dynacal._outdir.RunFolder` (a manifest
with each file's hash): a measurement interrupted (Ctrl-C, a lost board) and started again
with the same options measures only what is missing, and a file is reused only when it
holds the very experiment planned (content hash).

**Noise floor first.** The noise protocol (``fi`` when measured, else the first) runs
``repeats`` times; its repeats give the :class:`~dynacal.fitting.noise.NoiseFloor` (saved as
``noise.json``), and its level decides how often every other protocol is measured:
``noise.repeats_needed(level, tolerance, repeats)`` = ``ceil((level / tolerance)^2)``
clipped to 1..repeats (one measurement when the floor is under the tolerance, all
``repeats`` when it is far above). Repeat k > 0 of protocol ``p`` is saved as
``p.rK.h5``, which :meth:`Target.load` finds as a repeat of ``p.h5``.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

from dynacal._outdir import RunFolder
from dynacal.errors import ParameterError
from dynacal.experiment import Experiment
from dynacal.protocols import ORDER, Protocol, get_protocol
from dynacal.recording import Recording

from .noise import NoiseFloor, repeats_needed

__all__ = ["measure", "NOISE_FILE", "repeat_name"]

log = logging.getLogger(__name__)
NOISE_FILE = "noise.json"
COMMAND = "dynacal.fitting Target.measure"


def repeat_name(name: str, k: int) -> str:
    """The file of repeat ``k`` of protocol ``name``: ``fi.h5``, ``fi.r1.h5``, ..."""
    return f"{name}.h5" if k == 0 else f"{name}.r{k}.h5"


def _plans(protocols: Sequence[str | Protocol], neurons: Any) -> list[tuple[Protocol, Experiment]]:
    if isinstance(protocols, (str, Protocol)):
        protocols = [protocols]
    objects = [get_protocol(p) if isinstance(p, str) else p for p in protocols]
    if not objects:
        raise ParameterError("protocols is empty; give protocol names or objects to measure, e.g. ORDER.")
    if not all(isinstance(p, Protocol) for p in objects):
        raise ParameterError(f"protocols must be names ({', '.join(ORDER)}) or Protocol objects.")
    names = [p.name for p in objects]
    if len(set(names)) != len(names):
        raise ParameterError(f"protocols {names} name one protocol twice; a target holds one experiment per "
                             f"protocol (repeats come from repeats=).")
    objects.sort(key=lambda p: ORDER.index(p.name) if p.name in ORDER else len(ORDER))
    return [(p, p.experiment(neurons)) for p in objects]


def measure(target_cls, backend, neurons: Any = "core0", protocols: Sequence[str | Protocol] = ORDER, *,
            out: str | os.PathLike, repeats: int = 3, progress: Any = True, tolerance: float = 0.02,
            noise_protocol: str = "fi", heldout: Sequence[str] = ("heldout",), mode: str = "resume",
            resume: bool = False):
    """Measure, save and load a target (module docstring; arguments as :meth:`Target.measure`)."""
    from dynacal.backends import get_backend
    backend = get_backend(backend)
    mode = "resume" if resume else mode
    if isinstance(repeats, bool) or int(repeats) != repeats or repeats < 1:
        raise ParameterError(f"repeats = {repeats!r} must be an integer >= 1 (3 gives a noise floor).")
    repeats = int(repeats)
    repeats_needed(0.0, tolerance, repeats)  # checks the tolerance before anything runs
    plans = _plans(protocols, neurons)
    first = next((k for k, (p, _) in enumerate(plans) if p.name == noise_protocol), 0)
    plans.insert(0, plans.pop(first))  # the noise floor first
    options = {"backend": repr(backend), "neurons": str(neurons), "protocols": [p.describe() for p, _ in plans],
               "repeats": repeats, "tolerance": tolerance}
    bar = _Progress(progress, repeats * len(plans))
    try:
        with RunFolder(out, COMMAND, options, mode=mode) as folder:
            noise_name = plans[0][0].name
            floor = [_one(folder, backend, *plans[0], k, bar) for k in range(repeats)]
            n_other = 1
            if repeats > 1:
                noise = NoiseFloor.from_repeats({noise_name: floor})
                level = noise.level(noise_name)
                n_other = repeats_needed(level, tolerance, repeats)
                log.info("noise floor of %s on %s: relative spread %.3g (median over neurons); measuring the other "
                         "protocols %d time(s)", noise_name, backend.name, level, n_other)
                folder.add(noise.save(folder.path / NOISE_FILE), part="noise")
            bar.set_total(repeats + n_other * (len(plans) - 1))
            for protocol, experiment in plans[1:]:
                for k in range(n_other):
                    _one(folder, backend, protocol, experiment, k, bar)
            folder.finish()
    finally:
        bar.close()
    return target_cls.load(out, heldout=heldout)


def _one(folder: RunFolder, backend, protocol: Protocol, experiment: Experiment, k: int,
         bar: "_Progress") -> Recording:
    """Repeat ``k`` of one protocol: the folder's file when it holds this experiment, else measured."""
    name = repeat_name(protocol.name, k)
    bar.start(name)
    kept = folder.reuse(name)
    rec = Recording.load(kept) if kept else None
    if rec is not None and (rec.experiment is None or rec.experiment.content_hash() != experiment.content_hash()):
        log.info("%s holds another experiment; measuring it again", kept)
        folder.files.pop(name, None)
        rec = None
    if rec is None:
        start = time.perf_counter()
        rec = protocol.run_experiment(backend, experiment)
        folder.add(rec.save(folder.path / name), part=protocol.name)
        log.info("measured %s on %s: %d spikes, %.2f s", name, backend.name, rec.spike_step.size,
                 time.perf_counter() - start)
    bar.finished()
    return rec


class _Progress:
    """One step per measurement: a tqdm bar on stderr (``progress=True``), the caller's
    ``progress(name, done, total)`` (as ``dynacal characterize`` calls it; ``name = ""`` at
    the end), or nothing."""

    def __init__(self, progress, total: int):
        self.callback = progress if callable(progress) else None
        self.done, self.total, self.bar = 0, total, None
        if progress is True:
            import sys

            from tqdm import tqdm
            self.bar = tqdm(total=total, desc="measuring target", unit="run", file=sys.stderr, leave=False)

    def start(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(name)
        if self.callback is not None:
            self.callback(name, self.done, self.total)

    def finished(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)

    def set_total(self, total: int) -> None:
        self.total = total
        if self.bar is not None:
            self.bar.total = total
            self.bar.refresh()

    def close(self) -> None:
        if self.callback is not None:
            self.callback("", self.done, self.total)
        if self.bar is not None:
            self.bar.close()
