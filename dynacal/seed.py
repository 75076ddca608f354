"""The seed experiment: the one experiment of the project's seed notebook, in one place.

The seed notebook ran one Dynap-SE1 neuron (Core_1, ``Isoma_th`` = 2000 pA,
``Isoma_pfb_th`` = 1000 pA) driven by four Poisson inputs at 80 Hz, one per synapse type
(weights NMDA 10, AMPA 5, GABA_A 1, GABA_B 2), for 100 ms at dt = 100 us, once in the
Brian2 DynapSE simulator and once in PyTorch. ``dynacal compare``, the benchmarks and the
tests all build it from here: :func:`seed_network` (the neuron and its four inputs),
:func:`seed_experiment` (with seeded Poisson inputs) and :func:`experiment_from_npz` (with
a recorded input raster, format :mod:`dynacal.inputfile`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping

from .chip import Chip
from .errors import ParameterError, unknown_name
from .experiment import Experiment
from .inputfile import read_inputs
from .params import SYNAPSE_TYPES
from .stimulus import Stimulus, poisson

__all__ = ["SEED_WEIGHTS", "seed_network", "seed_experiment", "experiment_from_npz"]

#: Integer weights of the seed notebook, per synapse type (``SYNAPSE_TYPES`` order).
SEED_WEIGHTS: dict[str, int] = {"nmda": 10, "ampa": 5, "gaba_a": 1, "gaba_b": 2}


def _check_weights(weights: Mapping[str, Any] | None) -> dict[str, int]:
    merged = dict(SEED_WEIGHTS)
    for name, value in (weights or {}).items():
        key = str(name).lower()
        if key not in SYNAPSE_TYPES:
            raise unknown_name("synapse type", str(name), SYNAPSE_TYPES)
        v = float(value)
        if not math.isfinite(v) or v < 0 or v != round(v):
            raise ParameterError(f"weight {key} = {value!r} must be a non-negative integer (a count of "
                                 f"CAM entries, dimensionless), e.g. {key}={SEED_WEIGHTS[key]}.")
        merged[key] = int(v)
    return merged


def seed_network(weights: Mapping[str, Any] | None = None, Isoma_const: float | str | None = None):
    """The seed network: 1 neuron on Core_1, four input sources, one per synapse type.

    Args:
        weights: synapse type -> integer weight; missing types take ``SEED_WEIGHTS``.
        Isoma_const: constant injected current in A (or a string such as ``"50 pA"``);
            None keeps the default of the parameter table.

    Returns:
        A :class:`~dynacal.chip.Network` whose inputs 0..3 are nmda, ampa, gaba_a, gaba_b.
    """
    w = _check_weights(weights)
    chip = Chip()
    neuron = chip.get_neurons(1, "Core_1")
    sources = chip.add_inputs(len(SYNAPSE_TYPES))
    for k, syn_type in enumerate(SYNAPSE_TYPES):
        synapses = chip.add_connection(sources[k], neuron, synapse_type=syn_type.upper())
        chip.connect(synapses, True)
        synapses.weight = w[syn_type]
    biases: dict[str, Any] = {"Isoma_th": "2000 pA", "Isoma_pfb_th": "1000 pA"}
    if Isoma_const is not None:
        biases["Isoma_const"] = Isoma_const
    chip.set_bias(biases, "Core_1")
    return chip.network()


def seed_experiment(seed: int = 0, duration: float = 0.1, rate: float = 80.0,
                    weights: Mapping[str, Any] | None = None, dt: float = 1e-4,
                    Isoma_const: float | str | None = None) -> Experiment:
    """The seed notebook's experiment: four seeded Poisson inputs into one neuron.

    Args:
        seed: seed of the Poisson generator (same seed, same input).
        duration: length in s (rounded to whole steps).
        rate: rate of each input in Hz.
        weights: synapse type -> integer weight (default nmda 10, ampa 5, gaba_a 1, gaba_b 2).
        dt: time step in s.
        Isoma_const: constant injected current in A; None keeps the default (1 pA).

    Raises:
        ParameterError: a duration, rate, weight or dt that is not plausible.
    """
    if not (math.isfinite(duration) and duration > 0):
        raise ParameterError(f"duration = {duration!r} s must be a positive number of seconds, e.g. 0.1.")
    n_steps = int(round(duration / dt))
    if n_steps < 1:
        raise ParameterError(f"duration = {duration:g} s is shorter than one step of dt = {dt:g} s.")
    network = seed_network(weights, Isoma_const)
    stimulus = poisson(len(SYNAPSE_TYPES), rate, n_steps, dt, seed=seed)
    return Experiment(network, stimulus, dt, n_steps, name=f"seed (seed={seed}, rate={rate:g} Hz)")


def experiment_from_npz(path: str | os.PathLike, weights: Mapping[str, Any] | None = None) -> Experiment:
    """The seed network driven by a recorded input raster (format: :mod:`dynacal.inputfile`).

    Args:
        path: the ``.npz`` file: ``input_spikes`` uint8 (4, T) with rows nmda, ampa,
            gaba_a, gaba_b; ``dt`` in s; optional ``weights`` (4,) and ``Isoma_const`` in A.
        weights: synapse type -> integer weight, for a file without ``weights``.

    Raises:
        ParameterError: the file is invalid (the message names the key and the fix), or
            it has weights and ``weights`` was given too.
    """
    f = read_inputs(path)
    if f.weights is not None:
        if weights is not None:
            raise ParameterError(f"{path} has weights {f.weights} and weights were given too (--weights); "
                                 f"keep one of them.")
        weights = dict(zip(SYNAPSE_TYPES, f.weights))
    network = seed_network(weights, f.Isoma_const)
    return Experiment(network, Stimulus.from_dense(f.raster), f.dt, f.raster.shape[1],
                      name=f"inputs from {Path(path).name}")
