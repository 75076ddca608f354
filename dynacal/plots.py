"""The seed notebook's three figures, for any number of recordings of one experiment.

- :func:`membrane_figure`: the membrane current ``Isoma_mem`` of every backend, overlaid;
- :func:`soma_nmda_figure`: ``Isoma_mem`` and ``Inmda`` over 0-30 ms;
- :func:`synapses_figure`: the four synaptic currents over 30-50 ms, 2 x 2.

Currents are drawn in nA against time in ms; trace[k] is the state at the start of step k,
at time k * dt. matplotlib is imported only when a figure is made, and only its
object-oriented API with the Agg canvas is used: no pyplot, no change to the global
backend of a notebook that imports dynacal.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ._files import atomic_write
from .errors import RecordingError
from .recording import Recording

__all__ = ["membrane_figure", "soma_nmda_figure", "synapses_figure", "save_figures", "FIGURES"]

#: File name of each figure written by :func:`save_figures`.
FIGURES = ("membrane.png", "soma_nmda.png", "synapses.png")
_STYLES = ("-", "--", ":", "-.")
_SYNAPSES = (("Inmda", "NMDA"), ("Iampa", "AMPA"), ("Igaba_a", "GABA_A"), ("Igaba_b", "GABA_B"))


def _new_figure(figsize):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _series(rec: Recording, name: str, window: tuple[float, float] | None):
    """Time (ms) and current (nA) of the first traced neuron, inside ``window`` (s)."""
    if rec.batch < 1 or not rec.trace_neurons.size:
        raise RecordingError(f"recording of {rec.backend} has no traced neuron to plot; run with record='all'.")
    values = rec.trace(name, neuron=int(rec.trace_neurons[0]))
    t = np.arange(values.shape[0]) * rec.trace_every * rec.dt
    keep = slice(None)
    if window is not None:
        keep = (t >= window[0] - rec.dt / 2) & (t < window[1] - rec.dt / 2)
    return t[keep] * 1e3, values[keep] * 1e9


def _window(recs: Mapping[str, Recording], start: float, stop: float) -> tuple[float, float]:
    """The window clipped to the run; the whole run if the window lies beyond its end."""
    duration = min(r.duration for r in recs.values())
    if start >= duration:
        return 0.0, duration
    return start, min(stop, duration)


def _finish(ax, title: str) -> None:
    ax.set_title(title)
    ax.set_xlabel("Time (ms)")
    ax.set_ylabel("Current (nA)")
    ax.grid(True)
    ax.legend(loc="best", fontsize="small")


def _check(recs: Mapping[str, Recording]) -> None:
    if not recs:
        raise RecordingError("no recording to plot; pass at least one {label: Recording}.")


def membrane_figure(recs: Mapping[str, Recording], figsize=(10, 3.5)):
    """``Isoma_mem`` of every recording over the whole run (a matplotlib Figure)."""
    _check(recs)
    fig = _new_figure(figsize)
    ax = fig.add_subplot()
    for k, (label, rec) in enumerate(recs.items()):
        ax.plot(*_series(rec, "Isoma_mem", None), _STYLES[k % 4], color=f"C{k}", label=label)
    _finish(ax, "Neuron membrane current")
    return fig


def soma_nmda_figure(recs: Mapping[str, Recording], window=(0.0, 30e-3), figsize=(10, 4)):
    """``Isoma_mem`` and ``Inmda`` over ``window`` (s; default 0-30 ms)."""
    _check(recs)
    start, stop = _window(recs, *window)
    fig = _new_figure(figsize)
    ax = fig.add_subplot()
    for k, (label, rec) in enumerate(recs.items()):
        ax.plot(*_series(rec, "Isoma_mem", (start, stop)), _STYLES[k % 4], color="C0", label=f"soma {label}")
        ax.plot(*_series(rec, "Inmda", (start, stop)), _STYLES[k % 4], color="C1", label=f"NMDA {label}")
    _finish(ax, f"Soma and NMDA currents, {start * 1e3:g}-{stop * 1e3:g} ms")
    return fig


def synapses_figure(recs: Mapping[str, Recording], window=(30e-3, 50e-3), figsize=(10, 6)):
    """The four synaptic currents over ``window`` (s; default 30-50 ms), 2 x 2."""
    _check(recs)
    start, stop = _window(recs, *window)
    fig = _new_figure(figsize)
    axes = fig.subplots(2, 2)
    for ax, (name, title) in zip(axes.ravel(), _SYNAPSES):
        for k, (label, rec) in enumerate(recs.items()):
            ax.plot(*_series(rec, name, (start, stop)), _STYLES[k % 4], color=f"C{k}", label=label)
        _finish(ax, title)
    fig.suptitle(f"Synaptic currents, {start * 1e3:g}-{stop * 1e3:g} ms")
    return fig


def save_figures(recs: Mapping[str, Recording], out: str | os.PathLike, dpi: int = 100) -> list[Path]:
    """Write the three figures as PNG (``FIGURES``) into ``out``, atomically.

    Args:
        recs: label -> Recording of one single-neuron experiment, with every trace.
        out: output folder (created). dpi: resolution.

    Returns:
        The paths written.
    """
    out = Path(out)
    written = []
    for name, make in zip(FIGURES, (membrane_figure, soma_nmda_figure, synapses_figure)):
        fig = make(recs)
        written.append(atomic_write(out / name, lambda fh, f=fig: f.savefig(fh, format="png", dpi=dpi)))
    return written
