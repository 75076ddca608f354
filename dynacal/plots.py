"""Figures: the seed notebook's three (``dynacal compare``) and the characterisation ones.

- :func:`membrane_figure`: the membrane current ``Isoma_mem`` of every backend, overlaid;
- :func:`soma_nmda_figure`: ``Isoma_mem`` and ``Inmda`` over 0-30 ms;
- :func:`synapses_figure`: the four synaptic currents over 30-50 ms, 2 x 2;
- :func:`fi_figure`, :func:`rate_transfer_figure`, :func:`kernels_figure`, :func:`raster_figure`:
  the protocols' results (``dynacal characterize``), every neuron with the median bold.

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

from .files import atomic_write
from .errors import RecordingError
from .recording import Recording

__all__ = ["membrane_figure", "soma_nmda_figure", "synapses_figure", "save_figures", "FIGURES", "fi_figure",
           "rate_transfer_figure", "kernels_figure", "raster_figure", "save_figure"]

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


# --- characterisation figures (``dynacal characterize``) ---------------------------------

def _median_and_all(ax, x, curves, color="C0", label=None):
    """Every neuron's curve thin and grey, the median over neurons bold."""
    for y in curves:
        ax.plot(x, y, color="0.6", lw=0.5, alpha=0.4)
    ax.plot(x, np.nanmedian(curves, axis=0), "o-", color=color, lw=2.5, label=label or "median")


def fi_figure(features: Mapping[str, np.ndarray], levels, figsize=(6, 4)):
    """f-I curves of every neuron of parameter set 0 (rate in Hz against DC in pA, log
    axis), the median highlighted."""
    fig = _new_figure(figsize)
    ax = fig.add_subplot()
    _median_and_all(ax, np.asarray(levels) * 1e12, features["rate"][0])
    ax.set_xscale("log")
    ax.set_xlabel("DC input Isoma_const (pA)")
    ax.set_ylabel("Firing rate (Hz)")
    ax.set_title(f"f-I curves of {features['rate'].shape[1]} neurons")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="upper left")
    return fig


def rate_transfer_figure(features: Mapping[str, np.ndarray], rates_of, synapses, figsize=(10, 6)):
    """Output against input rate, one panel per synapse type, all neurons and the median."""
    fig = _new_figure(figsize)
    axes = fig.subplots(2, 2).ravel()
    for ax, syn in zip(axes, synapses):
        _median_and_all(ax, rates_of(syn), features[f"rate_{syn}"][0], color="C1")
        ax.axhline(np.nanmedian(features["baseline"][0]), color="k", ls=":", label="baseline (median)")
        ax.set_title(syn.upper())
        ax.set_xlabel("Input rate (Hz)")
        ax.set_ylabel("Output rate (Hz)")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize="small")
    return fig


def kernels_figure(rec: Recording, protocol, features: Mapping[str, np.ndarray], neurons=(0,), figsize=(10, 6)):
    """Each synapse current after its first input spike (points, log scale) and the fitted
    exponential ``amplitude * exp(-t / tau)`` (lines), for a few traced neurons (network
    indices)."""
    fig = _new_figure(figsize)
    axes = fig.subplots(2, 2).ravel()
    events = protocol.event_lists()
    for ax, (k, syn) in zip(axes, enumerate(protocol.synapses)):
        name = {"nmda": "Inmda", "ampa": "Iampa", "gaba_a": "Igaba_a", "gaba_b": "Igaba_b"}[syn]
        i0 = (events[k][0] + 1) // rec.trace_every
        span = int(protocol.fit_span / (rec.dt * rec.trace_every)) + 1
        t = np.arange(span) * rec.trace_every * rec.dt
        for j, n in enumerate(neurons):
            y = rec.trace(name, neuron=int(n))[i0:i0 + span]
            amp, tau = features[f"amplitude_{syn}"][0, n], features[f"tau_{syn}"][0, n]
            ax.semilogy(t[:y.size] * 1e3, y * 1e12, "o", color=f"C{j}", ms=3, label=f"neuron {n}")
            ax.semilogy(t * 1e3, amp * np.exp(-t / tau) * 1e12, "-", color=f"C{j}", lw=1,
                        label=f"fit tau = {tau * 1e3:.3g} ms")
        ax.set_ylim(bottom=0.5)  # the dark current I0 (1 pA) is the floor
        ax.set_title(f"{syn.upper()} ({name})")
        ax.set_xlabel("Time after the input spike (ms)")
        ax.set_ylabel("Current (pA)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(loc="upper right", fontsize="x-small")
    return fig


def raster_figure(rec: Recording, batch: int = 0, figsize=(10, 4)):
    """Spike raster of one parameter set: neuron index against time (ms)."""
    fig = _new_figure(figsize)
    ax = fig.add_subplot()
    sel = rec.spike_batch == batch
    ax.plot(rec.spike_time[sel] * 1e3, rec.spike_neuron[sel], "|", color="k", ms=2, alpha=0.6)
    ax.set_xlim(0, rec.duration * 1e3)
    ax.set_ylim(-0.5, rec.n_neurons - 0.5)
    ax.set_xlabel("Time (ms)")
    ax.set_ylabel("Neuron")
    name = rec.metadata.get("protocol", {}).get("name", rec.backend)
    ax.set_title(f"Raster: {name}, {sel.sum()} spikes of {rec.n_neurons} neurons")
    return fig


def save_figure(fig, path: str | os.PathLike, dpi: int = 100) -> Path:
    """Write one figure as PNG, atomically."""
    return atomic_write(path, lambda fh: fig.savefig(fh, format="png", dpi=dpi))
