"""Characterisation protocols: build an Experiment, extract per-neuron features.

Each protocol is a small frozen dataclass of its settings with

- ``experiment(neurons="core0", *, stimulus=None, wiring="shared") -> Experiment``: every
  neuron of a core (256) or chip (1024) at once (``neurons`` as in :func:`layout`), with the
  protocol's ``conditions()`` (parameter values the stimulus cannot hold: the DC of an f-I
  curve is a core bias), one per condition, and its own description (``protocol``); its
  generated inputs, or the caller's ``stimulus`` through any wiring (:mod:`.base`);
- ``run(backend, neurons, params) -> Recording``: the experiment on any backend, which
  runs B candidate parameter sets x L conditions (set ``b * L + l``);
- ``features(recording) -> dict[str, np.ndarray]``: arrays (B, N) or (B, N, K) per
  candidate and neuron, read with the settings the recording was made with
  (:meth:`Protocol.from_recording`, ``get_protocol(recording)``);
- ``sensitive_to``: the parameters the features depend on most, and a ``Requires:`` line.

``ORDER`` is the order labs calibrate in, which a fitter follows. :class:`Recorded` reads
generic features of any experiment (imported data); it is registered but not in the order.

>>> from dynacal import get_backend
>>> rec = FICurve(duration=0.05, settle=0.0).run(get_backend("torch"), "core0:2")
>>> FICurve(duration=0.05, settle=0.0).features(rec)["rate"].shape
(1, 2, 12)
"""

from __future__ import annotations

import dataclasses
from typing import Mapping

from ..errors import ParameterError, unknown_name
from ..recording import Recording
from ._common import SpikeIndex, expand_conditions, input_steps, layout, split_conditions
from .adaptation import Adaptation
from .base import Protocol
from .fi import FICurve
from .heldout import HeldOut
from .kernels import SynapticKernels
from .rate_transfer import RateTransfer
from .recorded import Recorded
from .refractory import Refractory

__all__ = ["Protocol", "FICurve", "RateTransfer", "SynapticKernels", "Adaptation", "Refractory", "HeldOut",
           "Recorded", "PROTOCOLS", "ORDER", "get_protocol", "layout", "expand_conditions", "split_conditions",
           "SpikeIndex", "input_steps"]

#: name -> protocol class.
PROTOCOLS: dict[str, type[Protocol]] = {cls.name: cls for cls in (
    FICurve, Refractory, Adaptation, SynapticKernels, RateTransfer, HeldOut, Recorded)}

#: The lab order. Leak and gain first (the f-I curve): every output rate depends on them.
#: Then the refractory period (it caps every rate) and adaptation (the soma's slow
#: feedback). Then the synapses' time constants (kernels: a synapse current does not depend
#: on the soma, but its effect on spikes does), then the weights (rate transfer: what is
#: left once soma and kernels are fixed). The held-out protocol validates, last.
ORDER: tuple[str, ...] = ("fi", "refractory", "adaptation", "kernels", "rate_transfer", "heldout")


def get_protocol(name: str | Mapping | Recording, **settings) -> Protocol:
    """A protocol by name (``PROTOCOLS``) with optional settings; or the protocol a
    description (``Protocol.describe()``) or a Recording names, with its recorded settings
    (``settings`` then override them).

    Raises:
        ParameterError: an unknown name (the message lists the valid ones).
        RecordingError: a recording that names no protocol.
    """
    if isinstance(name, Recording):
        protocol = Protocol.from_recording(name)
        return dataclasses.replace(protocol, **settings) if settings else protocol
    if isinstance(name, Mapping):
        if name.get("name") not in PROTOCOLS:
            raise unknown_name("protocol", str(name.get("name")), ORDER)
        protocol = PROTOCOLS[name["name"]].from_settings(name.get("settings", {}))
        return dataclasses.replace(protocol, **settings) if settings else protocol
    if not isinstance(name, str):
        raise ParameterError(f"get_protocol takes a name, a description or a Recording, not {type(name).__name__}.")
    if name not in PROTOCOLS:
        raise unknown_name("protocol", name, list(ORDER) + ["recorded"])
    return PROTOCOLS[name](**settings)
