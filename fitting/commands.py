"""The ``dynacal calibrate``, ``verify`` and ``report`` commands (parsers in :mod:`dynacal.cli`).

``dynacal.cli`` defines the options and imports this module only when one of these commands
runs, so that ``import dynacal`` never imports the fitting package. Human units live here
(``--budget '10 min'``, ``--tolerance 5%``); the library gets SI values. Exit codes are the
ones of :mod:`dynacal.cli`: 0 done (``verify``: the calibration agrees with the chip), 1
``verify`` found a disagreement or a file could not be written, 2 bad arguments or input, 130
interrupted, 143 terminated.

``dynacal calibrate --out DIR`` writes, through :class:`dynacal._outdir.RunFolder`:

- ``manifest.json``: the run, its options and every finished file (``--resume`` finishes an
  interrupted run, ``--overwrite`` replaces one);
- ``target/``: the recordings measured on the board (``--board`` only; its own manifest);
- ``study.db``: the Optuna study (unless ``--storage`` names another), which ``--resume``
  continues without losing or repeating a trial;
- ``calibration.json`` and ``calibration.npz``: the :class:`CalibrationResult`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from dynacal._cli_support import ProgressBar, check_writable
from dynacal._outdir import MANIFEST, RunFolder
from dynacal.errors import DynacalError, ParameterError, RecordingError
from dynacal.units import parse_quantity

__all__ = ["run", "parse_budget", "parse_tolerance", "parse_board", "COMMANDS"]

COMMANDS = ("calibrate", "verify", "report")
BOARDS = "twin, twin:SERIAL (e.g. twin:7) or board"
STUDY = "study.db"


def run(args: argparse.Namespace) -> int:
    """Run the command ``args.command`` (one of :data:`COMMANDS`); returns the exit code."""
    return {"calibrate": calibrate_command, "verify": verify_command, "report": report_command}[args.command](args)


# --- arguments --------------------------------------------------------------------------

def parse_budget(text: str) -> float:
    """``--budget``: ``600``, ``'600 s'`` or ``'10 min'`` -> seconds (> 0)."""
    text = str(text).strip()
    minutes = text.endswith("min")
    value = parse_quantity(text[:-3] if minutes else text, "s", name="--budget") * (60.0 if minutes else 1.0)
    if not value > 0:
        raise ParameterError(f"--budget {text} must be a positive wall time, e.g. --budget 600 (s) or '10 min'.")
    return value


def parse_tolerance(text: str) -> float:
    """``--tolerance``: ``'5%'`` or ``0.05`` -> a fraction in (0, 1]."""
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100.0 if raw.endswith("%") else float(raw)
    except ValueError:
        raise ParameterError(f"--tolerance {text!r} is not a fraction; write e.g. 5% or 0.05.") from None
    if not 0 < value <= 1:
        raise ParameterError(f"--tolerance {text} is {value:.4g} as a fraction; give a value in (0, 1], e.g. 5% "
                             f"(a relative error of the median neuron's spike count).")
    return value


def parse_board(spec: str) -> str:
    """``--board``: checked to be a board or the twin (other backends are simulators)."""
    name, _, serial = spec.partition(":")
    if name == "twin" and (not serial or serial.isdigit()) or (name == "board" and not serial):
        return spec
    raise ParameterError(f"--board {spec!r} is not a board; give {BOARDS}. To calibrate against recordings "
                         f"(of a simulator, replay or imported data) give --target DIR.")


def _heldout(text: str) -> tuple[str, ...]:
    from dynacal.protocols import get_protocol  # noqa: PLC0415

    names = tuple(s.strip() for s in str(text).split(",") if s.strip())
    if not names:
        raise ParameterError(f"--heldout {text!r} names no protocol; give e.g. heldout.")
    for name in names:
        get_protocol(name)  # an unknown name gets the valid ones
    return names


def _neurons(spec: str | None) -> str | None:
    """``--neurons`` checked by the protocols' own parser (a NetworkError names the forms),
    and to sit on one core: a calibration fits one core's values (before any measurement)."""
    if spec is not None:
        from dynacal.protocols import layout  # noqa: PLC0415

        cores = sorted(set(layout(spec).core.tolist()))
        if len(cores) > 1:
            raise ParameterError(f"--neurons {spec} spans cores {cores}; a calibration fits one core's biases at a "
                                 f"time: run dynacal calibrate once per core (--neurons core{cores[0]}, "
                                 f"core{cores[1]}, ...) into separate --out folders.")
    return spec


def _target_folder(path: str, option: str = "--target") -> Path:
    folder = Path(path)
    if not folder.is_dir():
        what = "is a file" if folder.exists() else "does not exist"
        raise RecordingError(f"{option} {path} {what}; give the folder of a target's recordings (<protocol>.h5, "
                             f"e.g. from dynacal characterize or dynacal import).")
    return folder


# --- calibrate --------------------------------------------------------------------------

def _calibrate_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The checked options of ``dynacal calibrate`` (nothing runs before they are)."""
    settings = {"target": None, "board": None, "neurons": _neurons(args.neurons), "fitter": args.fitter,
                "storage": args.storage, "budget_s": parse_budget(args.budget), "heldout": list(_heldout(args.heldout))}
    if args.target is not None:
        settings["target"] = str(_target_folder(args.target).resolve())
    else:
        settings["board"] = parse_board(args.board)
        settings["neurons"] = settings["neurons"] or "core0"
    if args.storage is not None and "://" not in args.storage:
        raise ParameterError(f"--storage {args.storage!r} is not a storage URL; give e.g. sqlite:///study.db or "
                             f"postgresql://user@host/db (default: sqlite:///OUT/{STUDY}).")
    return settings


def calibrate_command(args: argparse.Namespace) -> int:
    """``dynacal calibrate``: measure (``--board``) or load (``--target``) a target, fit, save."""
    settings = _calibrate_settings(args)
    check_writable(args.out, "--out", folder=True)
    mode = "resume" if args.resume else "overwrite" if args.overwrite else "new"
    # the budget is left out of the options a resumed run must repeat: resuming with a larger one
    # continues the same studies (the result's options record the budget it ran with)
    folder = RunFolder(args.out, "dynacal calibrate", {k: v for k, v in settings.items() if k != "budget_s"},
                       mode=mode, option="--out")
    if mode == "overwrite":
        _clear_leftovers(folder.path, settings)
    with folder:
        if folder.reuse("calibration.json") and folder.reuse("calibration.npz"):
            print(f"dynacal calibrate: {args.out} holds a finished calibration (run {folder.run_id}); nothing to do. "
                  f"Draw it with: dynacal report {args.out}")
            folder.finish()
            return 0
        start = time.perf_counter()
        target = _target(settings, folder, resume=mode == "resume")
        try:
            result = _fit(target, settings, folder, resume=mode == "resume")
        except DynacalError as exc:
            if settings["board"] is None:
                raise
            raise type(exc)(f"{exc} (the measurements are kept in {folder.path / 'target'}: rerun with --resume, a "
                            f"larger --budget is allowed, to fit them without measuring again)") from exc
        if not (folder.path / "calibration.json").is_file():
            result.save(folder.path)
        # every file of the fit (calibration, study, checkpoints) is this run's: --overwrite removes them
        for path in sorted(p for p in folder.path.iterdir() if p.is_file() and p.name != MANIFEST):
            folder.add(path, part="calibration" if path.stem == "calibration" else "fit")
        folder.finish()
    _print_summary(result, args.out, time.perf_counter() - start)
    return 0


def _clear_leftovers(out: Path, settings: dict) -> None:
    """Files of the replaced run that its manifest may not list yet (it was interrupted): its
    study and the fitter's checkpoints (the new fit must not resume them) and a measured
    target (its own run folder)."""
    if settings["storage"] is None:
        (out / STUDY).unlink(missing_ok=True)
    for checkpoint in out.glob("neurons.*.npz"):
        checkpoint.unlink()
    if (out / "target" / MANIFEST).is_file():
        shutil.rmtree(out / "target")


def _target(settings: dict, folder: RunFolder, *, resume: bool):
    from dynacal.fitting.target import Target  # noqa: PLC0415

    heldout = tuple(settings["heldout"])
    if settings["target"] is not None:
        return Target.load(settings["target"], neurons=settings["neurons"], heldout=heldout)
    from dynacal.backends.registry import get_backend  # noqa: PLC0415

    backend = get_backend(settings["board"])
    print(f"dynacal calibrate: measuring the lab protocols on {settings['board']} ({settings['neurons']}) "
          f"into {folder.path / 'target'}", file=sys.stderr)
    try:
        with ProgressBar("protocol") as progress:
            return Target.measure(backend, settings["neurons"], out=folder.path / "target", progress=progress,
                                  heldout=heldout, mode="resume" if resume else "new")
    finally:
        getattr(backend, "close", lambda: None)()


def _fit(target, settings: dict, folder: RunFolder, *, resume: bool):
    from dynacal.fitting.calibrate import CalibrationOptions, calibrate  # noqa: PLC0415

    # the fitter's own bar (stderr, on a terminal) shows the stage, trial, best loss and time left
    options = CalibrationOptions(fitter=settings["fitter"], storage=settings["storage"], budget_s=settings["budget_s"],
                                 heldout=tuple(settings["heldout"]), resume=resume, progress=True)
    return calibrate(target, None, options, out=folder.path)


def _print_summary(result, out: str, wall_s: float) -> None:
    print(f"dynacal calibrate: done in {wall_s:.1f} s")
    for core, values in sorted(result.core_values.items()):
        shown = ", ".join(f"{k} = {_si(k, v)}" for k, v in sorted(values.items()))
        print(f"  core {core}: {shown}")
    for protocol, q in result.quality.items():
        print(f"  {protocol:<14} median per-neuron error {q['median']:.4g}")
    failed = {reason: len(ids) for reason, ids in (result.failed or {}).items() if len(ids)}
    ok = int(sum(bool(x) for x in result.ok))
    print(f"  {ok} of {len(result.ok)} neurons calibrated" + (f"; failed: {failed}" if failed else ""))
    print(f"wrote {out}/; draw it with: dynacal report {out}")


def _si(name: str, value: float) -> str:
    """A parameter's value with its unit ("12.3 pA")."""
    from dynacal.params import PARAMETERS  # noqa: PLC0415
    from dynacal.units import format_quantity  # noqa: PLC0415

    spec = PARAMETERS.get(name)
    return format_quantity(float(value), spec.unit) if spec is not None else f"{float(value):.4g}"


# --- verify -----------------------------------------------------------------------------

def verify_command(args: argparse.Namespace) -> int:
    """``dynacal verify``: the held-out protocols on the chip and on the calibrated simulator."""
    from . import verify  # noqa: PLC0415

    tolerance = parse_tolerance(args.tolerance)
    names = _heldout(args.heldout)
    board = parse_board(args.board) if args.board is not None else None
    target = _target_folder(args.target) if args.target is not None else None
    result = verify.load_calibration(args.calibration)
    rows = verify.verify(result, names, board=board, target=target, tolerance=tolerance)
    print(verify.format_table(rows, tolerance))
    return 0 if all(r["agree"] for r in rows) else 1


# --- report -----------------------------------------------------------------------------

def report_command(args: argparse.Namespace) -> int:
    """``dynacal report DIR``: one HTML page and its PNG figures (default ``DIR/report``)."""
    from . import report  # noqa: PLC0415

    folder = Path(args.folder)
    if not (folder / "calibration.json").is_file():
        what = "does not exist" if not folder.exists() else "holds no calibration.json"
        raise ParameterError(f"dynacal report {args.folder}: the folder {what}; give the --out folder of "
                             f"dynacal calibrate.")
    out = Path(args.out) if args.out is not None else folder / "report"
    check_writable(out, "--out", folder=True)
    start = time.perf_counter()
    page = report.write_report(folder, out)
    print(f"dynacal report: wrote {page} ({len(list(out.glob('*.png')))} figures) in "
          f"{time.perf_counter() - start:.1f} s; open it in a browser")
    return 0

