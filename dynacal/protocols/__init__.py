"""Characterisation protocols: build an Experiment, extract per-neuron features.

Each protocol is a small frozen dataclass of its settings with

- ``experiment(neurons="core0") -> Experiment``: every neuron of a core (256) or chip (1024)
  in one run (``neurons`` as in :func:`layout`);
- ``conditions()``: parameter values the experiment cannot hold (the DC of an f-I curve is a
  core bias), one per condition; ``run`` turns B parameter sets into B * L;
- ``run(backend, neurons, params) -> Recording``: both of the above, on any backend;
- ``features(recording) -> dict[str, np.ndarray]``: arrays (B, N) or (B, N, K) per
  parameter set and neuron;
- ``sensitive_to``: the parameters the features depend on most, and a ``Requires:`` line.

``ORDER`` is the order labs calibrate in, which a fitter follows.

>>> from dynacal import get_backend
>>> rec = FICurve(duration=0.05, settle=0.0).run(get_backend("torch"), "core0:2")
>>> FICurve(duration=0.05, settle=0.0).features(rec)["rate"].shape
(1, 2, 12)
"""

from __future__ import annotations

from ..errors import unknown_name
from ._common import Protocol, SpikeIndex, expand_conditions, layout, split_conditions
from .adaptation import Adaptation
from .fi import FICurve
from .heldout import HeldOut
from .kernels import SynapticKernels
from .rate_transfer import RateTransfer
from .refractory import Refractory

__all__ = ["Protocol", "FICurve", "RateTransfer", "SynapticKernels", "Adaptation", "Refractory", "HeldOut",
           "PROTOCOLS", "ORDER", "get_protocol", "layout", "expand_conditions", "split_conditions",
           "SpikeIndex"]

#: name -> protocol class.
PROTOCOLS: dict[str, type[Protocol]] = {cls.name: cls for cls in (
    FICurve, Refractory, Adaptation, SynapticKernels, RateTransfer, HeldOut)}

#: The lab order. Leak and gain first (the f-I curve): every output rate depends on them.
#: Then the refractory period (it caps every rate) and adaptation (the soma's slow
#: feedback). Then the synapses' time constants (kernels: a synapse current does not depend
#: on the soma, but its effect on spikes does), then the weights (rate transfer: what is
#: left once soma and kernels are fixed). The held-out protocol validates, last.
ORDER: tuple[str, ...] = ("fi", "refractory", "adaptation", "kernels", "rate_transfer", "heldout")


def get_protocol(name: str, **settings) -> Protocol:
    """A protocol by name (``PROTOCOLS``) with optional settings.

    Raises:
        ParameterError: an unknown name (the message lists the valid ones).
    """
    if name not in PROTOCOLS:
        raise unknown_name("protocol", name, ORDER)
    return PROTOCOLS[name](**settings)
