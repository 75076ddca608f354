"""The report of a calibration folder (``dynacal report DIR``): one HTML page and its PNGs.

:func:`write_report` reads what ``dynacal calibrate --out DIR`` wrote (``calibration.json``,
the target's recordings in ``DIR/target`` or where the manifest says, the Optuna study) and
writes ``report.html`` with its figures beside it as PNG files linked by relative paths, so
the folder can be zipped, attached or served as it is:

- ``raster.png``, ``counts.png``, ``traces.png``: the held-out protocol of the target against
  the simulator before (the table's nominal values, no mismatch) and after calibration:
  rasters, every neuron's spike count, membrane traces;
- ``fi.png``: per-neuron f-I curves, target against calibrated simulator (and before);
- ``mismatch.png``: histograms of the fitted per-neuron factors (the true ones behind, on the twin);
- ``truth.png``: fitted against true per-neuron values, where the truth is known (a twin
  target: :class:`dynacal.hardware.twin_chip.TwinChip` of its serial, under its codes);
- ``identifiability.png``, ``convergence.png``, ``importance.png`` (Optuna's fANOVA
  importances of each study in the storage: the fit's trials stage by stage).

A figure whose data the folder lacks is left out with the reason in its place. Figure
drawing is in :mod:`.report_plots`; this module gathers the data and writes the page.
"""

from __future__ import annotations

import dataclasses
import html
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from dynacal.files import atomic_write
from dynacal._outdir import MANIFEST, RunFolder
from dynacal.plots import save_figure
from dynacal.recording import Recording

from . import report_plots as rp

__all__ = ["write_report", "find_target", "twin_truth", "PAGE"]

log = logging.getLogger(__name__)
PAGE = "report.html"
MAX_PANELS = 16  # neurons drawn one by one (f-I panels)
TRACED = 3       # neurons whose traces are drawn
WINDOW = 0.3     # s of the held-out protocol drawn as rasters and traces (spikes stay legible)


@dataclasses.dataclass
class _Data:
    folder: Path
    result: Any
    recordings: dict[str, Recording]     # protocol name -> the target's recording
    target: Path | None
    loaded: Any = None                   # the Target (cut to the calibrated neurons), None without one


def find_target(folder: Path, result=None) -> Path | None:
    """The target folder of a calibration: ``folder/target`` (measured on a board), else
    the ``target`` option in the manifest (``--target DIR``), else the provenance's."""
    if (folder / "target").is_dir():
        return folder / "target"
    candidates = []
    if (folder / MANIFEST).is_file():
        candidates.append(json.loads((folder / MANIFEST).read_text()).get("options", {}).get("target"))
    provenance = getattr(result, "provenance", None) or {}
    candidates += [provenance.get("target"), provenance.get("target_folder")]
    for path in candidates:
        if isinstance(path, str) and Path(path).is_dir():
            return Path(path)
    return None


def _load_target(target: Path | None, result):
    """The target cut to the calibrated neurons, in the calibration's order (None without one)."""
    if target is None:
        return None
    from .target import Target  # noqa: PLC0415

    heldout = tuple((getattr(result, "options", None) or {}).get("heldout") or ("heldout",))
    return Target.load(target, neurons=np.asarray(result.neurons).reshape(-1, 3), heldout=heldout)


def _recordings(loaded) -> dict[str, Recording]:
    """Protocol name -> the target's recording, held-out ones too."""
    return {} if loaded is None else {**loaded.recordings, **loaded.heldout}


def write_report(folder: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of the calibration in ``folder`` into ``out`` (default ``folder/report``).

    Returns:
        The path of ``report.html``.

    Raises:
        ParameterError: ``out`` cannot be written or holds another run than an older report.
    """
    from .result import CalibrationResult  # noqa: PLC0415

    folder = Path(folder)
    out = Path(out) if out is not None else folder / "report"
    old = out / MANIFEST
    redo = old.is_file() and json.loads(old.read_text()).get("command") == "dynacal report"
    result = CalibrationResult.load(folder)
    target = find_target(folder, result)
    loaded = _load_target(target, result)
    data = _Data(folder, result, _recordings(loaded), target, loaded)
    with RunFolder(out, "dynacal report", {"folder": str(folder.resolve())}, mode="overwrite" if redo else "new",
                   option="--out") as run:
        start = time.perf_counter()
        sections = [(title, _section(make, data, run)) for title, make in _SECTIONS]
        page = _page(data, sections, time.perf_counter() - start)
        run.add(atomic_write(run.path / PAGE, lambda fh: fh.write(page.encode())), part="page")
        run.finish()
    return run.path / PAGE


def _section(make: Callable, data: _Data, run: RunFolder) -> list[tuple[str, str]]:
    """Draw one section: [(png name or "", caption or the reason it is missing)]."""
    items = []
    for name, fig_or_reason, caption in make(data):
        if isinstance(fig_or_reason, str):
            items.append(("", fig_or_reason))
            continue
        run.add(save_figure(fig_or_reason, run.path / name), part=name)
        items.append((name, caption))
    return items


# --- the simulator before and after -----------------------------------------------------

def _simulate(data: _Data, rec: Recording, *, calibrated: bool, **record) -> Recording:
    from dynacal.backends.registry import get_backend  # noqa: PLC0415

    experiment = rec.require_experiment()
    if not calibrated:
        return get_backend("torch").run(experiment, **record)
    scales = dict(getattr(data.result, "scales", None) or {})
    conditions = {k: np.asarray(v) * scales.get(k, 1.0) for k, v in experiment.conditions.items()}
    scaled = dataclasses.replace(experiment, conditions=conditions) if conditions else experiment
    return get_backend("torch").run(scaled, data.result.params(experiment.network), **record)


def _heldout(data: _Data) -> Recording | None:
    names = list((getattr(data.result, "options", None) or {}).get("heldout") or ["heldout"])
    return next((data.recordings[n] for n in names if n in data.recordings), None)


def _raster_section(data: _Data):
    rec = _heldout(data)
    if rec is None:
        yield "raster.png", f"No held-out recording in the target ({_where(data)}): no raster.", ""
        return
    neurons = list(range(min(TRACED, rec.n_neurons)))
    record = {"record": ["Isoma_mem"], "record_neurons": neurons}  # every neuron's spikes, a few traces
    sims = {"before": _simulate(data, rec, calibrated=False, **record),
            "after": _simulate(data, rec, calibrated=True, **record)}
    runs = {"target": rec, **sims}
    rasters = {k: (r.spike_time[r.spike_batch == 0], r.spike_neuron[r.spike_batch == 0]) for k, r in runs.items()}
    name = (rec.metadata.get("protocol") or {}).get("name", "held out")
    shown = min(rec.duration, WINDOW)
    yield "raster.png", rp.raster_overlay(rasters, rec.n_neurons, shown, f"{name}: target, before, after"), \
        f"Spike rasters of the held-out protocol ({name}, set 0, the first {shown * 1e3:g} ms): the target, the " \
        f"simulator before calibration (nominal values, no mismatch) and after."
    from .verify import spike_counts  # noqa: PLC0415

    yield "counts.png", rp.counts_scatter(spike_counts(rec), {k: spike_counts(runs[k]) for k in ("before", "after")}), \
        "Spike count of every neuron over the whole held-out protocol, simulator against target, before and " \
        "after calibration (the error dynacal verify checks)."
    traces = {k: np.stack([r.trace("Isoma_mem", neuron=n) for n in neurons], axis=1) for k, r in sims.items()}
    if "Isoma_mem" in rec.traces and all(n in set(rec.trace_neurons.tolist()) for n in neurons):
        traces = {"target": np.stack([rec.trace("Isoma_mem", neuron=n) for n in neurons], axis=1), **traces}
    t = np.arange(next(iter(traces.values())).shape[0]) * sims["after"].trace_every * rec.dt
    spikes = {k: [r.spike_time[(r.spike_batch == 0) & (r.spike_neuron == n)] for n in neurons]
              for k, r in {"target": rec, **sims}.items()}
    yield "traces.png", rp.trace_overlay(t, traces, spikes, neurons, window=WINDOW), \
        "Membrane current of the first neurons before and after calibration (the target's own trace where it has " \
        "one; a board has none), with each run's spikes as ticks."


def _fi_section(data: _Data):
    rec = data.recordings.get("fi")
    if rec is None:
        yield "fi.png", f"No f-I recording in the target ({_where(data)}): no f-I curves.", ""
        return
    from dynacal.protocols import get_protocol  # noqa: PLC0415

    protocol = get_protocol(rec)
    pick = np.unique(np.linspace(0, rec.n_neurons - 1, min(MAX_PANELS, rec.n_neurons)).round().astype(int))
    curves = {"target": protocol.features(rec)["rate"][0][pick],
              "before": protocol.features(_simulate(data, rec, calibrated=False))["rate"][0][pick],
              "after": protocol.features(_simulate(data, rec, calibrated=True))["rate"][0][pick]}
    yield "fi.png", rp.fi_grid(np.asarray(protocol.levels), curves, pick.tolist()), \
        f"f-I curves of {pick.size} of {rec.n_neurons} neurons (evenly spaced): target (points), calibrated " \
        f"simulator and the simulator before calibration."


def _factors(result) -> dict[str, np.ndarray]:
    """Parameter -> fitted factors of the calibrated neurons (M,), in ``result.neurons`` order."""
    neurons = np.asarray(result.neurons).reshape(-1, 3)
    out = {}
    for name, per_core in (result.mismatch or {}).items():
        per_core = {int(k): np.asarray(v) for k, v in per_core.items()}
        out[name] = np.array([per_core[c * 4 + k][i] if c * 4 + k in per_core else 1.0 for c, k, i in neurons])
    return out


def _mismatch_section(data: _Data):
    factors = _factors(data.result)
    if not factors:
        yield "mismatch.png", "The calibration fitted no per-neuron mismatch: no histograms.", ""
        return
    truth = twin_truth(data)
    yield "mismatch.png", rp.mismatch_histograms(factors, truth and truth["factors"]), \
        "Fitted per-neuron mismatch factors" + (" (outline) and the twin's true ones (grey)." if truth else ".")


def twin_truth(data: _Data) -> dict[str, dict[str, np.ndarray]] | None:
    """On a twin target: ``{"factors": {name: (M,)}, "values": {name: (M,)}, "core": {global
    core: {name: value}}}``, the true factors, effective values of the calibrated neurons (hot
    neurons' extra DC aside) and core values under the target's codes; None for any other target."""
    rec = _heldout(data) or next(iter(data.recordings.values()), None)
    if rec is None or rec.backend != "twin" or "codes" not in (rec.metadata.get("board") or {}):
        return None
    from dynacal.hardware.biasgen import BIAS_NAMES  # noqa: PLC0415
    from dynacal.hardware.twin_chip import TwinChip  # noqa: PLC0415

    chip = TwinChip(int(rec.metadata["serial"]))
    codes = np.zeros((chip.n_chips, 4, len(BIAS_NAMES), 2), dtype=np.int64)
    for key, biases in rec.metadata["board"]["codes"][0].items():  # set 0: the protocol's own core biases
        c, k = (int(x) for x in key.split(","))
        codes[c, k] = [biases[name] for name in BIAS_NAMES]
    neurons = np.asarray(data.result.neurons).reshape(-1, 3)
    cores = neurons[:, 0] * 4 + neurons[:, 1]
    layers = chip.layers(codes, np.unique(cores))
    factors = {n: np.array([layers.mismatch[n][g][i] for g, i in zip(cores, neurons[:, 2])])
               for n in layers.mismatch}
    values = {}
    for name in (getattr(data.result, "per_neuron", None) or {}):
        core = np.array([layers.core_values[g].get(name, np.nan) for g in cores])
        values[name] = core * factors.get(name, 1.0)
    return {"factors": factors, "values": values, "core": {g: dict(v) for g, v in layers.core_values.items()}}


def _truth_section(data: _Data):
    truth = twin_truth(data)
    if truth is None:
        yield "truth.png", "The truth is known only on a twin target: no fitted-vs-true scatter.", ""
        return
    fitted = {n: np.asarray(v, dtype=float) for n, v in data.result.per_neuron.items()}
    # per-neuron parameters only: a core value without mismatch is one number (the core table has it)
    names = [n for n in _factors(data.result) if n in truth["values"] and np.all(np.isfinite(truth["values"][n]))]
    pairs = {n: (fitted[n], truth["values"][n]) for n in names}
    for combo in getattr(data.result, "combinations", None) or []:
        exps = combo.get("exponents") or {}
        if exps and all(p in truth["values"] for p in exps) and combo.get("values") is not None:
            true = np.prod([truth["values"][p] ** float(e) for p, e in exps.items()], axis=0)
            pairs[combo.get("name", " x ".join(exps))] = (np.asarray(combo["values"], dtype=float), true)
    if not pairs:
        yield "truth.png", "The calibration fitted no per-neuron value to compare with the twin's truth.", ""
        return
    yield "truth.png", rp.truth_scatter({k: f for k, (f, _) in pairs.items()}, {k: t for k, (_, t) in pairs.items()}), \
        "Fitted against true per-neuron effective values (core value x factor) on the twin, for the parameters " \
        "with fitted mismatch and the identifiable combinations; identity dotted. Core values: the table above."


def _fitted_core(result) -> set[str]:
    return {n for values in (result.core_values or {}).values() for n in values}


def _ident_section(data: _Data):
    """The identifiability matrices as ``fitting.identify.Identifiability.to_dict`` wrote them."""
    ident, computed = getattr(data.result, "identifiability", None) or {}, False
    if not isinstance(ident.get("matrix"), dict) and data.loaded is not None:
        ident, computed = _identifiability(data), True
    matrices = [(key, ident[key]) for key in ("matrix", "correlation") if isinstance(ident.get(key), dict)]
    if not matrices:
        yield "identifiability.png", "The calibration holds no identifiability analysis, and has no target to " \
            "compute one from.", ""
        return
    combos = "; ".join(c.get("name", "?") for c in (getattr(data.result, "combinations", None) or []))
    loose = "; ".join(f"{k} (would need {' or '.join(v) or 'no dynacal protocol'})"
                      for k, v in (ident.get("unconstrained") or {}).items())
    rank = (ident.get("rank") or {}).get("median")
    for key, m in matrices:
        signed = m.get("kind") == "correlation"
        title = ("Correlation of the log-parameter estimates (median over neurons)" if signed else
                 "Sensitivity |d ln feature / d ln parameter| (median over neurons)")
        name = "identifiability.png" if key == "matrix" else f"identifiability-{key}.png"
        yield name, rp.matrix_figure(m["values"], m["rows"], m["columns"], title, signed=signed), \
            f"{title}" + (f"; median rank {rank:g} of {len(m['columns'])}" if rank is not None and not signed else "") \
            + f". Identifiable combinations: {combos or 'none reported'}." \
            + (f" Not constrained: {loose}." if loose and not signed else "") \
            + (" (Computed by the report at the fitted values: the calibration holds none.)" if computed else "")


def _identifiability(data: _Data) -> dict:
    """The identifiability of the fitted parameters at the fitted per-neuron values, from
    the target's protocols (``fitting.identify``), for a calibration that holds none."""
    from .identify import identifiability  # noqa: PLC0415

    names = sorted(_fitted_core(data.result) | set(data.result.mismatch or {}))
    if not names:
        return {}
    at = {n: np.asarray(data.result.per_neuron[n], dtype=float) for n in names}
    return identifiability(data.loaded, names, at).to_dict()


def _convergence_section(data: _Data):
    studies = _studies(data)
    trials = sorted((t.datetime_complete, t.datetime_start, name.rsplit(".", 1)[-1], t.value)
                    for name, study in studies for t in study.trials
                    if t.value is not None and t.datetime_complete is not None)
    if trials:
        t0 = min(start for _, start, _, _ in trials)
        yield "convergence.png", rp.convergence_figure([v for *_, v in trials], [s for _, _, s, _ in trials],
                                                       np.array([(c - t0).total_seconds() for c, *_ in trials])), \
            f"Loss of every trial of the {len(studies)} Optuna studies (one per stage; each stage scores its own " \
            f"protocols, so the levels differ) and the best so far of each."
    else:
        yield "convergence.png", "No Optuna trials in the calibration's storage: no convergence plot.", ""
    for k, (name, study) in enumerate(studies):
        done = [t for t in study.trials if t.value is not None and t.params]
        if len(done) < 2 or len({tuple(sorted(t.params.items())) for t in done}) < 2:
            continue
        import optuna  # noqa: PLC0415

        importances = optuna.importance.get_param_importances(study)
        yield f"importance-{k}.png", rp.importance_figure(importances, f"Study {name}"), \
            f"Optuna's fANOVA importance of each parameter in study {name} ({len(done)} trials)."


def _studies(data: _Data) -> list:
    """(name, study) of every single-objective study in the calibration's Optuna storage."""
    import optuna  # noqa: PLC0415

    provenance = getattr(data.result, "provenance", None) or {}
    storage = provenance.get("storage") or (getattr(data.result, "options", None) or {}).get("storage")
    if not storage and (data.folder / "study.db").is_file():
        storage = f"sqlite:///{(data.folder / 'study.db').resolve()}"
    if not storage or (storage.startswith("sqlite:///") and not Path(storage[len("sqlite:///"):]).is_file()):
        return []  # a moved folder's absolute path, or none: nothing to read (never create a database)
    summaries = optuna.get_all_study_summaries(storage)
    studies = [(s.study_name, optuna.load_study(study_name=s.study_name, storage=storage)) for s in summaries]
    return [(n, st) for n, st in studies if len(st.directions) == 1]


def _where(data: _Data) -> str:
    return str(data.target) if data.target else "no target folder found"


_SECTIONS = (("Before and after: the held-out protocol", _raster_section), ("f-I curves", _fi_section),
             ("Fitted mismatch", _mismatch_section), ("Fitted against true (the twin)", _truth_section),
             ("Identifiability", _ident_section), ("Convergence and importance", _convergence_section))


# --- the page ---------------------------------------------------------------------------

_STYLE = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}img{max-width:100%}"
          "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
          "th{background:#f3f3f3}figcaption,.missing{color:#555;font-size:90%}.missing{font-style:italic}")


def _page(data: _Data, sections, draw_s: float) -> str:
    e = html.escape
    result = data.result
    provenance = getattr(result, "provenance", None) or {}
    n = len(np.asarray(result.neurons).reshape(-1, 3))
    ok = int(np.sum(np.asarray(result.ok, dtype=bool)))
    serial = provenance.get("serial")
    fitter = (getattr(result, "options", None) or {}).get("fitter")
    wall = provenance.get("wall_s")
    facts = [f"{n} neurons, {ok} calibrated", f"target {_where(data)}"] + ([f"fitter {fitter}"] if fitter else []) \
        + ([f"fit wall time {float(wall):.0f} s"] if isinstance(wall, (int, float)) else []) \
        + [f"report drawn in {draw_s:.1f} s"]
    head = [f"<h1>Calibration of {e('board serial ' + str(serial) if serial is not None else 'a chip')}</h1>",
            f"<p>{e('; '.join(facts))}.</p>", _quality(result), _core_table(result, twin_truth(data))]
    body = []
    for title, items in sections:
        body.append(f"<h2>{e(title)}</h2>")
        for png, text in items:
            body.append(f'<figure><img src="{e(png)}" alt="{e(png)}"><figcaption>{e(text)}</figcaption></figure>'
                        if png else f'<p class="missing">{e(text)}</p>')
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>dynacal calibration report"
            f"</title><style>{_STYLE}</style></head><body>\n" + "\n".join(head + body) + "\n</body></html>\n")


def _core_table(result, truth) -> str:
    """Fitted core values beside the table's defaults (and the twin's true values)."""
    from dynacal.params import PARAMETERS  # noqa: PLC0415
    from dynacal.units import format_quantity  # noqa: PLC0415

    def q(name, value):
        return html.escape(format_quantity(float(value), PARAMETERS[name].unit)) if value is not None else ""

    rows = []
    for core, values in sorted((result.core_values or {}).items()):
        true = (truth or {}).get("core", {}).get(int(core), {})
        for name, value in sorted(values.items()):
            err = f"{float(value) / true[name] - 1:+.1%}" if name in true and true[name] else ""
            rows.append(f"<tr><th>{int(core)}</th><th>{html.escape(name)}</th><td>{q(name, value)}</td>"
                        f"<td>{q(name, PARAMETERS[name].default)}</td><td>{q(name, true.get(name))}</td>"
                        f"<td>{err}</td></tr>")
    return ("<h2>Core values</h2><table><tr><th>core</th><th>parameter</th><th>fitted</th><th>table default</th>"
            "<th>true (twin)</th><th>error</th></tr>" + "".join(rows) + "</table>")


def _quality(result) -> str:
    rows = "".join(f"<tr><th>{html.escape(p)}</th><td>{q.get('median', float('nan')):.4g}</td></tr>"
                   for p, q in (getattr(result, "quality", None) or {}).items())
    failed = "; ".join(f"{html.escape(str(k))}: {len(v)}" for k, v in (result.failed or {}).items() if len(v))
    table = f"<table><tr><th>protocol</th><th>median per-neuron loss</th></tr>{rows}</table>" if rows else ""
    return table + (f"<p>Failed neurons: {failed}</p>" if failed else "")
