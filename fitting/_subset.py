"""Neurons of a recording: their (chip, core, id) keys, and a recording cut to some of them.

A target's recordings may measure more neurons than a calibration wants (a whole chip when
one core is calibrated); :func:`subset_recording` keeps the chosen ones consistently in
everything that has a neuron axis: spikes, traces, the unstable mask, and the experiment's
network (input connections, per-neuron values), per-neuron conditions and DC levels. The
cut experiment runs the kept neurons exactly as before because protocols wire no
recurrent connections; a recurrent connection from a dropped neuron would change what the
kept ones receive, so it is refused.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from dynacal.chip import CORES_PER_CHIP, NEURONS_PER_CORE, Connections, Network
from dynacal.errors import ParameterError
from dynacal.experiment import Experiment
from dynacal.recording import Recording
from dynacal.stimulus import Stimulus

__all__ = ["neuron_keys", "triples", "describe_neurons", "subset_recording"]


def neuron_keys(network: Network) -> np.ndarray:
    """One int64 per neuron: ``global_core * 256 + id`` (global core = chip * 4 + core), (N,)."""
    return np.asarray(network.core, np.int64) * NEURONS_PER_CORE + np.asarray(network.neuron_id, np.int64)


def triples(keys: np.ndarray) -> np.ndarray:
    """Keys (:func:`neuron_keys`) -> int64 (M, 3) (chip, core within the chip, id)."""
    keys = np.asarray(keys, np.int64)
    core = keys // NEURONS_PER_CORE
    return np.stack([core // CORES_PER_CHIP, core % CORES_PER_CHIP, keys % NEURONS_PER_CORE], axis=1)


def describe_neurons(keys: np.ndarray, limit: int = 6) -> str:
    """A short text for messages: ``"16 neurons: (0, 0, 0), (0, 0, 1), ... (0, 0, 15)"``."""
    t = [tuple(int(v) for v in row) for row in triples(keys)]
    shown = ", ".join(map(str, t[:limit])) + (f", ... {t[-1]}" if len(t) > limit else "")
    return f"{len(t)} neurons (chip, core, id): {shown}"


def subset_recording(rec: Recording, index: np.ndarray) -> Recording:
    """The recording of neurons ``index`` (int (M,), positions in ``rec``, in the new order).

    Raises:
        ParameterError: the experiment has recurrent connections that the cut would change.
    """
    index = np.asarray(index, np.int64)
    if index.size == rec.n_neurons and np.array_equal(index, np.arange(rec.n_neurons)):
        return rec
    new_of = np.full(rec.n_neurons, -1, np.int64)
    new_of[index] = np.arange(index.size)
    keep = new_of[rec.spike_neuron] >= 0
    experiment = _subset_experiment(rec.require_experiment(), index, new_of)
    traced = new_of[rec.trace_neurons] >= 0 if rec.trace_neurons.size else np.zeros(0, bool)
    columns = torch.as_tensor(np.nonzero(traced)[0], dtype=torch.long)
    metadata = dict(rec.metadata)
    metadata["experiment"] = experiment.summary()
    metadata["subset_of"] = {"n_neurons": rec.n_neurons, "hash": rec.experiment.content_hash()}
    return dataclasses.replace(
        rec, n_neurons=int(index.size), spike_batch=rec.spike_batch[keep],
        spike_neuron=new_of[rec.spike_neuron[keep]], spike_step=rec.spike_step[keep],
        spike_time=rec.spike_time[keep],
        traces={k: v.index_select(2, columns.to(v.device)) for k, v in rec.traces.items()},
        trace_neurons=new_of[rec.trace_neurons[traced]] if rec.trace_neurons.size else rec.trace_neurons,
        metadata=metadata, raster=None, experiment=experiment,
        unstable=None if rec.unstable is None else rec.unstable[:, index])


def _subset_experiment(exp: Experiment, index: np.ndarray, new_of: np.ndarray) -> Experiment:
    net = exp.network
    rec_conn = net.recurrent
    if rec_conn.pre.size:
        inside = (new_of[rec_conn.pre] >= 0) & (new_of[rec_conn.post] >= 0)
        cut = (new_of[rec_conn.post] >= 0) & ~inside
        if cut.any():
            raise ParameterError(f"experiment {exp.name!r} has {int(cut.sum())} recurrent connections from neurons "
                                 f"outside the selection to neurons in it; the selected neurons would not get "
                                 f"the same input. Select all the connected neurons (neurons=None).")
        recurrent = Connections(new_of[rec_conn.pre[inside]], new_of[rec_conn.post[inside]],
                                rec_conn.syn_type[inside], rec_conn.weight[inside])
    else:
        recurrent = rec_conn
    inp = net.inputs
    mine = new_of[inp.post] >= 0
    inputs = Connections(inp.pre[mine], new_of[inp.post[mine]], inp.syn_type[mine], inp.weight[mine])
    network = dataclasses.replace(
        net, core=net.core[index], neuron_id=net.neuron_id[index], inputs=inputs, recurrent=recurrent,
        core_biases={c: dict(v) for c, v in net.core_biases.items() if c in set(net.core[index].tolist())},
        neuron_values={k: np.asarray(v)[index] for k, v in net.neuron_values.items()})
    conditions = {k: (v[:, index] if v.ndim == 2 else v) for k, v in exp.conditions.items()}

    def cut_stimulus(s: Stimulus) -> Stimulus:
        return s if s.dc is None else Stimulus(s.n_sources, s.steps, s.sources, s.dc[index])

    return Experiment(network, cut_stimulus(exp.stimulus), exp.dt, exp.n_steps, exp.name, conditions=conditions,
                      condition_stimuli=tuple(cut_stimulus(s) for s in exp.condition_stimuli),
                      protocol=exp.protocol)
