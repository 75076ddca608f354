"""The figures of a calibration report (:mod:`.report`), drawn from plain arrays.

Every function takes numpy arrays in SI units (currents are drawn in pA or nA, times in ms)
and returns a matplotlib Figure made with the object-oriented API on the Agg canvas, as
:mod:`dynacal.plots` does (no pyplot, no change to a notebook's backend). Labels: "target"
(the chip or recordings fitted), "before" (the simulator with the table's nominal values, no
mismatch), "after" (the calibrated simulator).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from dynacal.plots import _new_figure

__all__ = ["raster_overlay", "counts_scatter", "trace_overlay", "fi_grid", "mismatch_histograms", "truth_scatter",
           "matrix_figure", "convergence_figure", "importance_figure", "COLORS"]

#: One color per role, in every figure.
COLORS = {"target": "k", "before": "C3", "after": "C0"}


def _plain_figure(figsize):
    """A figure with fixed margins: the constrained layout of 16 panels costs seconds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: PLC0415
    from matplotlib.figure import Figure  # noqa: PLC0415

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def _color(label: str, k: int) -> str:
    return COLORS.get(label, f"C{k + 1}")


def raster_overlay(rasters: Mapping[str, tuple[np.ndarray, np.ndarray]], n_neurons: int, duration: float,
                   title: str = "", figsize=(10, 5)):
    """Spike rasters one above the other (target, before, after), sharing the time axis.

    Args:
        rasters: label -> (spike times (S,) in s, neuron indices (S,)).
        n_neurons: neurons on the y axis. duration: the time drawn, s (from 0).
    """
    fig = _new_figure(figsize)
    axes = np.atleast_1d(fig.subplots(len(rasters), 1, sharex=True, squeeze=False).ravel())
    for k, (ax, (label, (t, n))) in enumerate(zip(axes, rasters.items())):
        keep = np.asarray(t) <= duration
        ax.plot(np.asarray(t)[keep] * 1e3, np.asarray(n)[keep], "|", color=_color(label, k), ms=2, alpha=0.7)
        ax.set_ylim(-0.5, n_neurons - 0.5)
        ax.set_ylabel("Neuron")
        ax.set_title(f"{label}: {int(keep.sum())} spikes", fontsize="medium", loc="left")
    axes[-1].set_xlim(0, duration * 1e3)
    axes[-1].set_xlabel("Time (ms)")
    if title:
        fig.suptitle(title)
    return fig


def counts_scatter(target: np.ndarray, runs: Mapping[str, np.ndarray], figsize=(5.5, 5)):
    """Each neuron's spike count in the simulator against the target's (before, after), with
    the median per-neuron error ``|sim - target| / max(target, 1)`` in the legend.

    Args:
        target: (N,) spike counts of the target. runs: label -> (N,) counts of a simulator run.
    """
    fig = _new_figure(figsize)
    ax = fig.add_subplot()
    target = np.asarray(target, dtype=float)
    for k, (label, counts) in enumerate(runs.items()):
        counts = np.asarray(counts, dtype=float)
        err = float(np.median(np.abs(counts - target) / np.maximum(target, 1.0))) if target.size else float("nan")
        ax.plot(target, counts, ".", color=_color(label, k), ms=5, alpha=0.7, label=f"{label}: median error {err:.1%}")
    top = max([float(target.max(initial=0))] + [float(np.max(c, initial=0)) for c in runs.values()] + [1.0])
    ax.plot([0, top], [0, top], "k:", lw=1)
    ax.set_xlabel("Target spike count")
    ax.set_ylabel("Simulator spike count")
    ax.set_title("Spike count per neuron, held-out protocol")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def trace_overlay(t: np.ndarray, traces: Mapping[str, np.ndarray], spikes: Mapping[str, np.ndarray],
                  neurons: Sequence[int], name: str = "Isoma_mem", window: float = 0.3, figsize=(10, 6)):
    """A state trace of a few neurons, before and after (and the target's where it has one),
    with each run's spike times as a row of ticks above the traces.

    Args:
        t: (T,) sample times, s. traces: label -> (T, R) current in A, one column per neuron.
        spikes: label -> sequence (R,) of spike-time arrays (s), one per drawn neuron.
        neurons: the neuron index of each column (for the titles).
        window: the first ``window`` seconds are drawn (spikes are legible there).
    """
    fig = _new_figure(figsize)
    axes = fig.subplots(len(neurons), 1, sharex=True, squeeze=False).ravel()
    t = np.asarray(t)
    keep = t <= window
    for j, (ax, n) in enumerate(zip(axes, neurons)):
        top = 1e-12
        for k, (label, y) in enumerate(traces.items()):
            y = np.maximum(np.asarray(y)[keep, j], 1e-15) * 1e12
            top = max(top, float(y.max()))
            ax.semilogy(t[keep] * 1e3, y, "-", color=_color(label, k), lw=1, label=f"{name} {label}")
        for k, (label, times) in enumerate(spikes.items()):
            times = np.asarray(times[j])
            times = times[times <= window]
            ax.plot(times * 1e3, np.full(times.size, top * 3.0 ** (k + 1)), "|", color=_color(label, k), ms=7,
                    label=f"spikes {label}")
        ax.set_ylim(top=top * 3.0 ** (len(spikes) + 1))
        ax.set_ylabel("Current (pA)")
        ax.set_title(f"neuron {n}", fontsize="medium", loc="left")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(loc="lower right", fontsize="x-small", ncol=2)
    axes[-1].set_xlabel("Time (ms)")
    return fig


def fi_grid(levels: np.ndarray, curves: Mapping[str, np.ndarray], neurons: Sequence[int], columns: int = 4,
            figsize=None):
    """Per-neuron f-I curves, one small panel per neuron, target vs calibrated (vs before).

    Args:
        levels: (L,) DC levels, A. curves: label -> (N, L) rates, Hz, rows in ``neurons`` order.
        neurons: the neuron index of each row (panel titles).
    """
    rows = -(-len(neurons) // columns)
    fig = _plain_figure(figsize or (2.6 * columns, 2.1 * rows + 0.4))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.95, wspace=0.12, hspace=0.35)
    axes = fig.subplots(rows, columns, sharex=True, sharey=True, squeeze=False).ravel()
    x = np.asarray(levels) * 1e12
    for j, ax in enumerate(axes):
        if j >= len(neurons):
            ax.set_visible(False)
            continue
        for k, (label, y) in enumerate(curves.items()):
            ax.plot(x, np.asarray(y)[j], "o-" if label == "target" else "-", color=_color(label, k), ms=3, lw=1.2,
                    label=label)
        ax.set_xscale("log")
        ax.set_title(f"neuron {neurons[j]}", fontsize="small")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize="x-small")
    fig.supxlabel("DC input Isoma_const (pA)", y=0.01)
    fig.supylabel("Firing rate (Hz)", x=0.01)
    return fig


def _rel_rms(fitted: np.ndarray, true: np.ndarray) -> float:
    return float(np.sqrt(np.mean(((fitted - true) / true) ** 2)))


def mismatch_histograms(factors: Mapping[str, np.ndarray], truth: Mapping[str, np.ndarray] | None = None,
                        columns: int = 3, figsize=None):
    """Histograms of the fitted per-neuron mismatch factors (log x), the true ones behind
    where known.

    Args:
        factors: parameter -> (M,) fitted factors (1 = none). truth: parameter -> (M,) true factors.
    """
    names = list(factors)
    rows = max(1, -(-len(names) // columns))
    fig = _new_figure(figsize or (3.4 * columns, 2.6 * rows))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        values = [np.asarray(factors[name], dtype=float)] + ([np.asarray(truth[name], dtype=float)]
                                                              if truth and name in truth else [])
        low, high = (min(np.nanmin(v) for v in values), max(np.nanmax(v) for v in values))
        bins = np.geomspace(max(low, 1e-3) * 0.95, max(high, low * 1.01) * 1.05, 30)
        if len(values) > 1:
            ax.hist(values[1], bins=bins, color="0.7", label="true")
        ax.hist(values[0], bins=bins, histtype="step", lw=2, color=COLORS["after"], label="fitted")
        ax.set_xscale("log")
        sigma = float(np.nanstd(np.log(values[0])))
        ax.set_title(f"{name} (log sigma {sigma:.3f})", fontsize="small")
        ax.set_xlabel("factor")
        ax.legend(fontsize="x-small")
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return fig


def truth_scatter(fitted: Mapping[str, np.ndarray], true: Mapping[str, np.ndarray], columns: int = 3, figsize=None):
    """Fitted against true per-neuron values (log axes over wide ranges) with the identity line; each title
    gives the relative RMS error and the correlation.

    Args:
        fitted, true: name -> (M,) values (a parameter's effective value or a combination's).
    """
    names = [n for n in fitted if n in true]
    rows = max(1, -(-len(names) // columns))
    fig = _new_figure(figsize or (3.4 * columns, 3.2 * rows))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax, name in zip(axes, names):
        f, t = np.asarray(fitted[name], dtype=float), np.asarray(true[name], dtype=float)
        span = [min(t.min(), f.min()), max(t.max(), f.max())]
        ax.plot(t, f, ".", color=COLORS["after"], ms=4, alpha=0.7)
        ax.plot(span, span, "k:", lw=1)
        if span[0] > 0 and span[1] / span[0] > 20:  # log axes for wide ranges; a narrow one reads better linear
            ax.set_xscale("log")
            ax.set_yscale("log")
        else:
            ax.ticklabel_format(style="sci", scilimits=(-2, 3))
        corr = float(np.corrcoef(np.log(t), np.log(f))[0, 1]) if t.size > 1 and np.ptp(t) > 0 else float("nan")
        ax.set_title(f"{name}\nrel RMS {_rel_rms(f, t):.1%}, r = {corr:.3f}", fontsize="small")
        ax.set_xlabel("true")
        ax.set_ylabel("fitted")
        ax.grid(True, which="both", alpha=0.3)
    for ax in axes[len(names):]:
        ax.set_visible(False)
    return fig


def matrix_figure(matrix: np.ndarray, rows: Sequence[str], cols: Sequence[str], title: str, *,
                  signed: bool = True, figsize=None):
    """A labelled heat map (the identifiability matrix: sensitivities or correlations).

    Args:
        matrix: (R, C) values. rows, cols: their labels. signed: a diverging map around 0.
    """
    m = np.asarray(matrix, dtype=float)
    fig = _new_figure(figsize or (1.2 + 0.55 * len(cols) + 2.5, 1.2 + 0.4 * len(rows) + 0.8))
    ax = fig.add_subplot()
    lim = float(np.nanmax(np.abs(m))) if m.size and np.isfinite(m).any() else 1.0
    image = ax.imshow(m, cmap="RdBu_r" if signed else "viridis", vmin=-lim if signed else None,
                      vmax=lim if signed else None, aspect="auto")
    ax.set_xticks(range(len(cols)), cols, rotation=60, ha="right", fontsize="small")
    ax.set_yticks(range(len(rows)), rows, fontsize="small")
    if m.size <= 400:
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2g}", ha="center", va="center", fontsize="x-small")
    fig.colorbar(image, ax=ax)
    ax.set_title(title)
    return fig


def convergence_figure(loss: np.ndarray, stage: Sequence[str] | None = None, seconds: np.ndarray | None = None,
                       figsize=(8, 4)):
    """Each evaluation's loss (points) and the best so far of its stage (line), by stage.

    Args:
        loss: (K,) the loss of each evaluation in order. stage: (K,) its stage name.
        seconds: (K,) wall time at each, s (the x axis when given, else the evaluation number).
    """
    loss = np.asarray(loss, dtype=float)
    x = np.arange(loss.size) if seconds is None else np.asarray(seconds, dtype=float)
    stage = list(stage) if stage is not None else ["fit"] * loss.size
    fig = _new_figure(figsize)
    ax = fig.add_subplot()
    for k, name in enumerate(dict.fromkeys(stage)):
        sel = np.array([s == name for s in stage])
        finite = np.where(np.isfinite(loss[sel]), loss[sel], np.inf)
        ax.plot(x[sel], loss[sel], ".", color=f"C{k}", ms=4, alpha=0.5)
        ax.step(x[sel], np.minimum.accumulate(finite), where="post", color=f"C{k}", lw=2, label=f"{name}: best so far")
    if loss.size and np.all(loss[np.isfinite(loss)] > 0):
        ax.set_yscale("log")
    ax.set_xlabel("Evaluation" if seconds is None else "Wall time (s)")
    ax.set_ylabel("Loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def importance_figure(importances: Mapping[str, float], title: str = "Parameter importance", figsize=None):
    """A bar chart of importances (Optuna's, summing to 1), largest on top."""
    items = sorted(importances.items(), key=lambda kv: kv[1])
    fig = _new_figure(figsize or (7, 1.0 + 0.35 * max(len(items), 1)))
    ax = fig.add_subplot()
    ax.barh([k for k, _ in items], [v for _, v in items], color=COLORS["after"])
    ax.set_xlabel("Importance (fANOVA)")
    ax.set_title(title)
    ax.grid(True, axis="x", alpha=0.3)
    return fig
