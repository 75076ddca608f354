"""The ``dynacal`` command line: ``compare``, ``characterize``, ``bench``, ``import``, ``board``, and
``calibrate`` / ``verify`` / ``report`` (run by :mod:`dynacal.fitting.commands`, imported only then).

Human units live here (ms, pA, Hz on the command line and in the printout); everything
passed on to the library is SI. This is the only module that prints.

Exit codes: 0 done (and, for ``compare``, every pair of backends agrees); 1 ``compare``
found a disagreement, a file could not be written, or dynacal failed (a bug: one line on
the terminal, the traceback in a log file whose path it prints); 2 bad arguments or input
files, or a backend or module that is not installed (one message, no traceback); 130
interrupted (Ctrl-C, SIGINT); 143 terminated (SIGTERM). An interrupted run removes its
temporary files and names the finished ones it kept (``--resume`` finishes it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
from typing import Any, Sequence

from ._cli_support import ProgressBar, check_writable, internal_error, version
from ._outdir import RunFolder, Terminated, interrupt_handled, terminate_on_sigterm
from .errors import DynacalError, ParameterError, unknown_name
from .params import SYNAPSE_TYPES
from .units import format_quantity, parse_quantity

__all__ = ["main"]

DEFAULT_BACKENDS = ("torch", "brian2")
BRIAN2_INSTALL = "pip install 'dynacal[brian2]'  (from a checkout: pip install '.[brian2]')"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``dynacal`` command; returns the exit code."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    with terminate_on_sigterm():
        return _run(args)


def _run(args: argparse.Namespace) -> int:
    try:
        return args.run(args)
    except DynacalError as exc:
        print(f"dynacal {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"dynacal {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt as exc:
        interrupt_handled()
        print(f"dynacal {args.command}: {interrupted(exc)}", file=sys.stderr)
        return 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:  # noqa: BLE001  (a bug: one message and the log, not a traceback)
        return internal_error(args.command, exc, verbose=args.verbose)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dynacal", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log what the library does")
    parser.add_argument("--version", action="version", version=version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    c = sub.add_parser("compare", help="run the seed experiment on several backends and compare them",
                       description="Run the seed notebook's experiment (one neuron on Core_1, four Poisson "
                       "inputs NMDA/AMPA/GABA_A/GABA_B, Isoma_th = 2000 pA, Isoma_pfb_th = 1000 pA, dt = 100 us) "
                       "on each backend, print their wall times and how far apart their traces and spikes are, "
                       "and write figures, metrics.json and the recordings to --out. Exit code 1 if two "
                       "backends disagree.")
    c.add_argument("--seed", type=int, default=None, help="seed of the Poisson inputs (default 0)")
    c.add_argument("--duration", default=None, help="length, e.g. '100 ms' or 0.1 (s) (default 100 ms)")
    c.add_argument("--rate", default=None, help="rate of each input, e.g. 80 or '80 Hz' (default 80 Hz)")
    c.add_argument("--weights", default=None,
                   help="integer weights, e.g. nmda=10,ampa=5,gaba_a=1,gaba_b=2 (the default); missing "
                   "types keep their default")
    c.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                   help="precision of the torch simulator (Brian2 always runs float64)")
    c.add_argument("--backends", default=None,
                   help="comma-separated backends, first one is the reference for the comparison (default "
                   "torch,brian2; brian2 is skipped with a note when it is not installed); any of: "
                   + _BACKEND_HELP)
    c.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of the torch simulator")
    _add_substeps(c)
    _add_calibration(c)
    c.add_argument("--inputs", default=None, metavar="FILE.npz",
                   help="use a recorded input raster instead of Poisson inputs: keys input_spikes (uint8, (4, T), "
                   "rows nmda, ampa, gaba_a, gaba_b), dt (s), optional weights (4,) and Isoma_const (A)")
    c.add_argument("--out", default="compare-out", metavar="DIR", help="output folder (default compare-out)")
    _add_run_folder(c)
    c.set_defaults(run=_compare)

    h = sub.add_parser("characterize", help="run characterisation protocols and write features and figures",
                       description="Run characterisation protocols (f-I curve, refractory period, adaptation, "
                       "synaptic kernels, input-rate transfer, held-out Poisson drive) on every chosen neuron of one "
                       "backend, in the lab order, and write each Recording (<protocol>.h5), a features table "
                       "(features.csv: one row per neuron, SI units) and figures (fi.png, kernels.png, "
                       "rate_transfer.png, raster.png) to --out.")
    h.add_argument("--backend", default="torch", help="the backend (default torch): " + _BACKEND_HELP)
    _add_substeps(h)
    _add_calibration(h)
    h.add_argument("--protocol", default="all",
                   help="comma-separated protocols: fi,refractory,adaptation,kernels,rate_transfer,heldout "
                   "(default all)")
    h.add_argument("--neurons", default="core0",
                   help="core0 (256 neurons), core0:16 (the first 16), chip0 (1024), or a comma-joined list")
    h.add_argument("--out", default="characterize-out", metavar="DIR", help="output folder")
    h.add_argument("--no-figures", action="store_true", help="skip the figures")
    _add_run_folder(h)
    h.set_defaults(run=_characterize)

    b = sub.add_parser("bench", help="run the speed benchmarks and print a table",
                       description="Run dynacal's benchmarks (torch simulator against Brian2) and print wall "
                       "times, neuron-steps per second and ratios measured in the same run.")
    b.add_argument("--quick", action="store_true", help="small sizes only (about a minute)")
    b.add_argument("--json", default=None, metavar="FILE", help="also write the records as JSON")
    b.set_defaults(run=_bench)
    _add_import(sub)
    _add_board(sub)
    _add_fitting(sub)
    return parser


# --- options shared by compare and characterize ------------------------------------------

_BACKEND_HELP = ("torch, torch:eager, torch:fused, brian2, brian2:cpp_standalone, replay:DIR (recordings "
                 "made before), twin or twin:SERIAL (the twin board: a simulated chip behind a fake samna), "
                 "board (a Dynap-SE1 dev kit through samna); twin and board measure spikes only")


def _add_substeps(p: argparse.ArgumentParser) -> None:
    p.add_argument("--substeps", type=int, default=None, metavar="N",
                   help="Euler sub-steps per step of the torch simulator (default 1, Brian2-exact); raise it when "
                   "a warning says forward Euler is unstable and names the substeps that are safe")


def _substeps(args: argparse.Namespace, specs: Sequence[str]) -> int | None:
    """``--substeps``, checked: None when not given; it needs a torch backend among ``specs``."""
    if args.substeps is None:
        return None
    if args.substeps < 1:
        raise ParameterError(f"--substeps {args.substeps} must be an integer >= 1 (1 is Brian2-exact), e.g. "
                             f"--substeps 4.")
    if not any(s.partition(":")[0] == "torch" for s in specs):
        raise ParameterError(f"--substeps applies to the torch simulator, not to {', '.join(specs)}; run "
                             f"torch or drop --substeps.")
    return args.substeps


def _add_calibration(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calibration", default=None, metavar="FILE",
                   help="run the torch simulator as a calibrated chip: a calibration.json (or its folder) or a "
                   "file written by ChipLayers.save; its core values and mismatch lie under the network's biases")


def _calibration(args: argparse.Namespace, specs: Sequence[str]) -> dict[str, str]:
    """``--calibration``, checked, as the torch backend's option (empty when not given)."""
    if args.calibration is None:
        return {}
    if not any(s.partition(":")[0] == "torch" for s in specs):
        raise ParameterError(f"--calibration applies to the torch simulator, not to {', '.join(specs)}; run "
                             f"torch (e.g. --backend torch) or drop --calibration.")
    from .layers import ChipLayers  # noqa: PLC0415

    ChipLayers.load(args.calibration)  # a bad file is refused before any work
    return {"calibration": args.calibration}


# --- compare ----------------------------------------------------------------------------

def _duration(text: str) -> float:
    value = parse_quantity(text, "s", name="--duration")
    bare = text.strip().replace(".", "", 1).isdigit()
    if bare and value >= 10:
        raise ParameterError(f"--duration {text} is read as {value:g} s ({value / 1e-4:.0f} steps at 100 us); "
                             f"if you meant milliseconds write '{text} ms'; to run that long write '{text} s'.")
    if not value > 0:
        raise ParameterError(f"--duration {text} must be positive, e.g. '100 ms'.")
    return value


def _weights(text: str) -> dict[str, int]:
    out = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.partition("=")
        key = name.strip().lower()
        if not sep or not value.strip():
            raise ParameterError(f"--weights item {item!r} is not name=integer; write e.g. "
                                 f"nmda=10,ampa=5,gaba_a=1,gaba_b=2.")
        if key not in SYNAPSE_TYPES:
            raise unknown_name("synapse type in --weights", name.strip(), SYNAPSE_TYPES)
        try:
            weight = int(value.strip())
        except ValueError:
            raise ParameterError(f"--weights {key}={value.strip()} is not an integer; weights count CAM "
                                 f"entries (dimensionless), e.g. {key}=10.") from None
        out[key] = weight
    return out


def _backends(text: str | None) -> tuple[list[str], bool]:
    if text is None:
        return list(DEFAULT_BACKENDS), False
    specs = [s.strip() for s in text.split(",") if s.strip()]
    if not specs:
        raise ParameterError(f"--backends {text!r} names no backend; write e.g. torch,brian2.")
    return specs, True


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def _compare(args: argparse.Namespace) -> int:
    from . import compare as cmp, seed  # noqa: PLC0415  (keeps `import dynacal.cli` light)

    specs, explicit = _backends(args.backends)
    substeps = _substeps(args, specs) or 1
    chip = _calibration(args, specs)
    check_writable(args.out, "--out", folder=True)
    if args.seed is not None and args.seed < 0:
        raise ParameterError(f"--seed {args.seed} must be a non-negative integer (it seeds numpy's generator), "
                             f"e.g. --seed 0.")
    weights = _weights(args.weights) if args.weights is not None else None
    if args.inputs is not None:
        given = [f"--{k}" for k in ("seed", "duration", "rate") if getattr(args, k) is not None]
        if given:
            raise ParameterError(f"{', '.join(given)} cannot be combined with --inputs: the input file sets the "
                                 f"spikes and the duration (T steps x dt); drop {' and '.join(given)}.")
        experiment = seed.experiment_from_npz(args.inputs, weights)
    else:
        experiment = seed.seed_experiment(
            seed=0 if args.seed is None else args.seed,
            duration=0.1 if args.duration is None else _duration(args.duration),
            rate=80.0 if args.rate is None else parse_quantity(args.rate, "Hz", name="--rate"),
            weights=weights)
    if not explicit and not _importable("brian2"):
        specs.remove("brian2")
        print(f"note: brian2 is not installed, so only the torch simulator runs. Install the reference "
              f"backend with: {BRIAN2_INSTALL}", file=sys.stderr)
    stim = experiment.stimulus
    print(f"dynacal compare: {experiment.name}: {format_quantity(experiment.duration, 's')} at dt = "
          f"{format_quantity(experiment.dt, 's')} ({experiment.n_steps} steps), {stim.steps.size} input spikes; "
          f"torch in {args.dtype} on {args.device}" + (f", {substeps} substeps" if substeps > 1 else ""))
    backends = cmp.resolve_backends(specs, args.dtype, args.device, substeps,
                                    chip.get("calibration"))  # before the folder is made
    options = {"backends": specs, "dtype": args.dtype, "device": args.device, "substeps": substeps,
               "experiment": experiment.content_hash(), **chip}
    with RunFolder(args.out, "dynacal compare", options, mode=_mode(args), option="--out") as folder:
        runs = cmp.compare(backends, experiment, dtype=args.dtype, device=args.device, progress=_compare_progress,
                           substeps=substeps, done=cmp.load_runs(folder, specs),
                           on_run=lambda run: cmp.save_run(run, folder))
        print("  (wall times; the first run includes code generation, compilation and JIT)")
        labels = list(runs)
        agreements = [cmp.agreement(runs[labels[0]].recording, runs[b].recording, labels=(labels[0], b))
                      for b in labels[1:]]
        for result in agreements:
            _print_agreement(result, runs)
        if not agreements:
            print(f"one backend ran ({labels[0]}): nothing to compare; its spike steps: "
                  f"{_steps(runs[labels[0]].recording.spike_step.tolist())}")
        from . import plots  # noqa: PLC0415  (matplotlib only when figures are made)

        info = {"command": "dynacal compare", "argv": sys.argv[1:], "experiment": experiment.summary(),
                "dtype": args.dtype, "device": args.device, "substeps": substeps, "inputs": args.inputs, **chip}
        cmp.save_metrics(runs, agreements, folder, info)
        traced = _traced(runs)
        if traced:
            for path in plots.save_figures(traced, folder.path):
                folder.add(path)
        folder.finish()
    print(f"wrote {args.out}/: {' '.join(sorted(folder.files))}")
    return 0 if all(a["verdict"] == "agree" for a in agreements) else 1


def _compare_progress(label: str, run) -> None:
    if run is None:
        print(f"  running {label} ...", end="", flush=True)
    elif run.reused:
        print(f" reused from the interrupted run (warm run {run.wall_s:.4f} s, {run.recording.spike_step.size} "
              f"spikes)", flush=True)
    else:
        note = "" if run.deterministic else "; NOT deterministic: its two runs differ"
        print(f" first run {run.first_wall_s:.3f} s, warm run {run.wall_s:.4f} s, "
              f"{run.recording.spike_step.size} spikes{note}", flush=True)


def _traced(runs) -> dict:
    """The recordings that hold traces (the figures draw currents); says which ones do not."""
    spikes_only = [k for k, r in runs.items() if not r.recording.traces]
    if spikes_only:
        print(f"note: {', '.join(spikes_only)} records no traces (spikes only: the board has no analog readout); "
              f"compared on spike steps, left out of the figures")
    return {k: r.recording for k, r in runs.items() if r.recording.traces}


def _steps(steps: list[int], limit: int = 20) -> str:
    shown = " ".join(str(s) for s in steps[:limit])
    more = f" ... ({len(steps)} in all)" if len(steps) > limit else ""
    return (shown + more) if steps else "none"


def _print_agreement(result: dict[str, Any], runs) -> None:
    a, b = result["labels"]
    print(f"\n{a} vs {b}: agree when the spike steps are identical and every trace is within "
          f"{result['tolerance']:g} relative ({result['precision']})")
    print(f"  {'trace':<11} {'max rel diff':>13} {'RMS diff (log10)':>17}")
    for name, m in result["traces"].items():
        print(f"  {name:<11} {m['max_rel_diff']:>13.3g} {m['rms_log10_diff']:>17.3g}")
    width = max(len(a), len(b))
    for label, steps in zip((a, b), result["spike_steps"]):
        print(f"  spike steps {label:<{width}}: {_steps(steps)}")
    wa, wb = runs[a].wall_s, runs[b].wall_s
    fast, slow = (a, b) if wa <= wb else (b, a)
    ratio = max(wa, wb) / min(wa, wb) if min(wa, wb) > 0 else float("inf")
    print(f"  warm wall time: {a} {wa:.4f} s, {b} {wb:.4f} s ({fast} {ratio:.3g}x as fast as {slow})")
    print(f"  verdict: {result['verdict']}: {result['reason']}")


# --- characterize -----------------------------------------------------------------------

def _characterize(args: argparse.Namespace) -> int:
    from . import characterize as ch  # noqa: PLC0415
    from .backends.registry import get_backend  # noqa: PLC0415
    from .protocols import layout  # noqa: PLC0415

    names = ch.parse_protocols(args.protocol)
    n = layout(args.neurons).n_neurons
    check_writable(args.out, "--out", folder=True)
    substeps = _substeps(args, [args.backend])
    chip = _calibration(args, [args.backend])
    backend = get_backend(args.backend, **({"substeps": substeps} if substeps is not None else {}), **chip)
    print(f"dynacal characterize: {', '.join(names)} on {n} neurons ({args.neurons}), backend {args.backend}")
    mode = _mode(args)
    from . import _progress  # noqa: PLC0415

    # the bar appears once the folder is open (none before a refusal); long eager runs show theirs under it
    with ProgressBar("protocol") as progress, _progress.shown():
        result = ch.characterize(backend, names, args.out, args.neurons, figures=not args.no_figures,
                                 progress=progress, mode=mode, options={"backend": args.backend, **chip})
    for name, seconds in result["wall_s"].items():
        print(f"  {name:<14} {seconds:8.2f} s" + ("  (reused from the interrupted run)" if name in result["reused"]
                                                  else ""))
    print(f"  {'total':<14} {sum(result['wall_s'].values()):8.2f} s")
    print(f"wrote {args.out}/: {' '.join(sorted(p.name for p in result['files']))}")
    return 0


def _add_run_folder(p: argparse.ArgumentParser) -> None:
    """--resume / --overwrite: what to do with an --out folder that holds another run."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true",
                   help="finish the run in --out (interrupted): keep its finished, intact files made with the same "
                   "options and make the rest")
    g.add_argument("--overwrite", action="store_true",
                   help="replace the run in --out (without it, a folder that holds another run is refused)")


def _mode(args: argparse.Namespace) -> str:
    return "resume" if args.resume else "overwrite" if args.overwrite else "new"


def interrupted(exc: KeyboardInterrupt) -> str:
    """The one line for an interrupted command: what ended it and which finished files it kept."""
    what = "terminated (SIGTERM)" if isinstance(exc, Terminated) else "interrupted"
    folder, kept = getattr(exc, "kept", (None, ()))
    if folder is None:
        return what
    shown = " ".join(kept) if kept else "no finished file"
    return f"{what}; kept in {folder}/: {shown}; finish it with --resume"


# --- bench ------------------------------------------------------------------------------

def _bench(args: argparse.Namespace) -> int:
    try:
        bench = importlib.import_module("dynacal.bench")
    except ModuleNotFoundError as exc:
        if exc.name != "dynacal.bench":
            raise
        print("dynacal bench: error: the benchmark suite is not part of this installation (module "
              "dynacal.bench is missing). Update dynacal from a checkout that has dynacal/bench.py "
              "(pip install -e .), or run the scripts under benchmarks/ directly.", file=sys.stderr)
        return 2
    if args.json:
        check_writable(args.json, "--json", folder=False)
    with ProgressBar("case") as progress:
        records = bench.run_benchmarks(quick=args.quick, progress=progress)
    # the benchmark module knows its columns best; a generic table otherwise
    print(bench.format_table(records) if hasattr(bench, "format_table") else _table(records))
    if args.json:
        from .files import atomic_write  # noqa: PLC0415

        text = json.dumps(records, indent=2, default=str) + "\n"
        atomic_write(args.json, lambda fh: fh.write(text.encode()))
        print(f"wrote {args.json}")
    return 0


def _table(records: list[dict[str, Any]]) -> str:
    columns: list[str] = []
    for record in records:
        columns += [k for k in record if k not in columns]

    def cell(value: Any) -> str:
        return f"{value:.4g}" if isinstance(value, float) else ("" if value is None else str(value))

    rows = [[cell(r.get(c)) for c in columns] for r in records]
    widths = [max([len(c)] + [len(row[i]) for row in rows]) for i, c in enumerate(columns)]
    return "\n".join("  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in [columns] + rows)


# --- import -----------------------------------------------------------------------------

def _add_import(sub) -> None:
    i = sub.add_parser("import", help="turn lab data (a plain .npz of events + JSON) into a target folder",
                       description="Read one plain .npz file (event arrays plus the experiment described as "
                       "JSON in its 'experiment' entry; the format is in the README, 'Importing lab data') and "
                       "write it as a version 2 recording into --out, a folder that --backend replay:DIR serves.")
    i.add_argument("file", metavar="FILE", help="the .npz file to import")
    i.add_argument("--out", required=True, metavar="DIR", help="the target folder (created if missing)")
    i.set_defaults(run=_import)


def _import(args: argparse.Namespace) -> int:
    from .labformat import import_file
    from .recording import Recording

    path = import_file(args.file, args.out)
    rec = Recording.load(path)
    exp = rec.require_experiment()
    print(f"{args.file} -> {path}: {exp.network.n_neurons} neurons, {rec.n_steps} steps of "
          f"{format_quantity(rec.dt, 's')}, {rec.batch} set(s), {rec.spike_step.size} spikes"
          + (f", traces {sorted(rec.traces)}" if rec.traces else "") + f"; experiment {exp.content_hash()[:12]}.")
    print(f"serve it with --backend replay:{args.out}")
    return 0


# --- board ------------------------------------------------------------------------------

def _add_board(sub) -> None:
    g = sub.add_parser("board", help="the Dynap-SE1 board: first-board checks",
                       description="Commands for a Dynap-SE1 board driven through samna (or the twin board).")
    gsub = g.add_subparsers(dest="board_command", required=True, metavar="SUBCOMMAND")
    k = gsub.add_parser("check", help="smoke test of a new board setup; writes a report to attach to an issue",
                        description="Print the device info and field types, send one FPGA event with a large first "
                        "ISI into a strongly weighted neuron and measure the spike latency, relay spikes chip 0 -> 1 "
                        "and chip 0 -> 2 to confirm the routing signs, read back the applied configuration and "
                        "compare it with what was written. Exit code 1 if a check fails.")
    k.add_argument("--backend", default="board", help="board (default: a real board through samna) or twin")
    k.add_argument("--serial", default=None, help="serial number of the board to use (default: the first found)")
    k.add_argument("--out", default="board-check.json", metavar="FILE", help="the JSON report (default "
                   "board-check.json)")
    k.set_defaults(run=_board_check, command="board check")


def _board_check(args: argparse.Namespace) -> int:
    from .files import atomic_write  # noqa: PLC0415
    from .backends.registry import get_backend  # noqa: PLC0415

    spec = args.backend
    if args.serial is None:
        backend = get_backend(spec)
    elif spec == "twin":  # the twin's serial is its argument; a board's is an option
        spec = f"twin:{args.serial}"
        backend = get_backend(spec)
    else:
        backend = get_backend(spec, serial=args.serial)
    from dynacal.hardware.board_check import board_check, format_report  # noqa: PLC0415  (after samna is found)

    print(f"dynacal board check: running on {spec} ...", flush=True)
    try:
        results = board_check(backend)
        header = {"backend": spec, "device": backend.device_name, "serial": str(backend.serial),
                  "argv": sys.argv[1:]}
    finally:
        backend.close()
    text, data = format_report(results, header)
    print(text)
    atomic_write(args.out, lambda fh: fh.write(data.encode()))
    print(f"wrote {args.out}: attach it to an issue about this board")
    return 0 if all(r.ok for r in results) else 1



# --- calibrate, verify, report (dynacal.fitting, imported when one of them runs) ----------

def _add_fitting(sub) -> None:
    c = sub.add_parser("calibrate", help="fit the simulator to a chip: core biases and per-neuron mismatch",
                       description="Fit the torch simulator's core biases and per-neuron mismatch to a target (a "
                       "folder of recordings) or to a board, which is measured first (protocols in the lab order, "
                       "saved in OUT/target). Writes calibration.json (and .npz), the Optuna study (study.db) and "
                       "manifest.json to --out; `dynacal report OUT` draws it.")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--target", metavar="DIR", help="a folder of recordings with their experiments")
    src.add_argument("--board", metavar="SPEC", help="twin, twin:SERIAL (the twin board) or board (a Dynap-SE1)")
    c.add_argument("--neurons", default=None, help="core0 (256 neurons), core0:64 (the first 64) or chip0 "
                   "(default: core0 on a board, every neuron of the target)")
    c.add_argument("--fitter", choices=("hybrid", "optuna", "gradient"), default="hybrid", help="default hybrid")
    c.add_argument("--storage", default=None, metavar="URL", help="Optuna storage (default sqlite:///OUT/study.db)")
    c.add_argument("--budget", default="600 s", metavar="SECONDS", help="wall-time budget of the fit, e.g. 600 or "
                   "'10 min' (default 600 s)")
    c.add_argument("--heldout", default="heldout", metavar="PROTOCOL", help="comma-separated protocols kept out "
                   "of the fit to check it (default heldout)")
    c.add_argument("--out", required=True, metavar="DIR", help="output folder")
    _add_run_folder(c)
    c.set_defaults(run=_fitting)
    v = sub.add_parser("verify", help="check a calibration against the chip on held-out protocols",
                       description="Run the held-out protocols on the chip (or read them from a target folder) and "
                       "on the calibrated simulator, print per protocol how far their spike counts are apart, and "
                       "exit 1 when the median per-neuron error is beyond --tolerance.")
    v.add_argument("--calibration", required=True, metavar="FILE", help="calibration.json (or its folder)")
    src = v.add_mutually_exclusive_group(required=True)
    src.add_argument("--target", metavar="DIR", help="a folder of recordings holding the held-out protocols")
    src.add_argument("--board", metavar="SPEC", help="twin, twin:SERIAL or board: measure them now")
    v.add_argument("--heldout", default="heldout", metavar="PROTOCOL", help="comma-separated protocols "
                   "(default heldout)")
    v.add_argument("--tolerance", default="5%", help="largest median per-neuron spike-count error, e.g. 5%% or "
                   "0.05 (default 5%%)")
    v.set_defaults(run=_fitting)
    r = sub.add_parser("report", help="write an HTML report of a calibration folder",
                       description="Draw a calibration folder (dynacal calibrate --out DIR) as one HTML page with "
                       "its PNG figures beside it: before/after rasters and traces, f-I curves, mismatch, "
                       "fitted-vs-true values where the truth is known (the twin), identifiability, convergence.")
    r.add_argument("folder", metavar="DIR", help="the calibration folder")
    r.add_argument("--out", default=None, metavar="DIR", help="where the page goes (default DIR/report)")
    r.set_defaults(run=_fitting)


def _fitting(args: argparse.Namespace) -> int:
    from dynacal.fitting import commands  # noqa: PLC0415  (the core does not import fitting otherwise)

    return commands.run(args)
