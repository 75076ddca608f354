"""The Protocol base class: an Experiment that carries its conditions and its description.

A protocol builds a *design* (its neurons' input connections, one stimulus or one per
condition, the run length) and :meth:`Protocol.experiment` turns it into the Experiment
that every backend runs, with

- ``conditions``: the parameter values the stimulus cannot hold (an f-I curve's DC levels,
  ``Isoma_const``), one per condition; the backend runs B candidates x L conditions;
- ``condition_stimuli`` when the conditions are separate runs from the fresh state (the way
  a board measures one DC level or one input rate after another, ``separate_runs=True``);
- ``protocol``: :meth:`Protocol.describe`, so that the features of a recording are read with
  the settings it was made with (:meth:`Protocol.from_recording`), wherever it was made.

**Inputs.** The stimulus a protocol generates comes through its own wiring (``"shared"``:
one source per synapse type reaching every neuron). ``wiring="one_to_one"`` gives every
neuron its own source per synapse type (source ``k * N + n`` reaches neuron n through the
k-th synapse type the design uses), delivering the same events; a
:class:`~dynacal.chip.Connections` is any wiring. ``stimulus=`` replaces the generated
inputs (a Stimulus, or one per condition), with as many sources as the wiring has.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar, Mapping, NamedTuple, Sequence

import numpy as np

from ..chip import Connections, Network
from ..errors import ParameterError, RecordingError
from ..experiment import Experiment
from ..params import Params
from ..recording import Recording
from ..stimulus import Stimulus
from ._common import layout, split_conditions

__all__ = ["Protocol", "Design", "rewire", "description_of"]

log = logging.getLogger(__name__)


class Design(NamedTuple):
    """What a protocol runs, in its own (shared) wiring.

    Attributes:
        network: the neurons with the protocol's input connections.
        stimuli: one Stimulus, or one per condition (separate runs).
        n_steps: length of each run in steps.
    """

    network: Network
    stimuli: tuple[Stimulus, ...]
    n_steps: int


def rewire(design: Design, wiring: Any, stimulus: Stimulus | Sequence[Stimulus] | None) -> Design:
    """The design with its inputs delivered through ``wiring`` (module docstring).

    Raises:
        ParameterError: an unknown wiring, a design that cannot go one to one (two sources
            on one synapse type of a neuron), or a stimulus with the wrong number of sources.
    """
    net, stimuli = design.network, design.stimuli
    if wiring in (None, "shared"):
        conns, n_inputs = net.inputs, net.n_inputs
    elif wiring == "one_to_one":
        conns, n_inputs, stimuli = _one_to_one(net, stimuli)
    elif isinstance(wiring, Connections):
        conns = Connections(*(np.asarray(a, dtype=np.int64) for a in wiring))
        if stimulus is None:
            raise ParameterError("wiring given as Connections needs stimulus=: the inputs its sources deliver.")
        n_inputs = None
    else:
        raise ParameterError(f"wiring = {wiring!r}: give 'shared' (the protocol's own sources), 'one_to_one' "
                             f"(one source per neuron and synapse type) or a dynacal.chip.Connections.")
    if stimulus is not None:
        given = (stimulus,) if isinstance(stimulus, Stimulus) else tuple(stimulus)
        if not given or not all(isinstance(s, Stimulus) for s in given):
            raise ParameterError("stimulus must be a dynacal.Stimulus or a sequence of them (one per condition).")
        if n_inputs is not None and any(s.n_sources != n_inputs for s in given):
            raise ParameterError(f"the stimulus has {[s.n_sources for s in given]} sources; this wiring has "
                                 f"{n_inputs} (one per source of the protocol's inputs). Give that many, or "
                                 f"pass wiring= with the connections your sources use.")
        if len(given) not in (1, len(stimuli)) and len(stimuli) > 1:
            raise ParameterError(f"{len(given)} stimuli given; this protocol runs {len(stimuli)} separate "
                                 f"conditions: give one stimulus, or one per condition.")
        stimuli = given
        n_inputs = given[0].n_sources
    if conns.pre.size and int(conns.pre.max()) >= n_inputs:
        raise ParameterError(f"wiring has source {int(conns.pre.max())} but the stimulus has {n_inputs} sources.")
    network = dataclasses.replace(net, n_inputs=int(n_inputs), inputs=conns)
    return Design(network, tuple(stimuli), design.n_steps)


def _one_to_one(net: Network, stimuli: tuple[Stimulus, ...]):
    """Each (neuron, synapse type) of the design's connections gets its own source."""
    c, n = net.inputs, net.n_neurons
    types = np.unique(c.syn_type)
    slot = np.searchsorted(types, c.syn_type)
    new = slot * n + c.post
    if np.unique(new).size != new.size:
        raise ParameterError("wiring='one_to_one' needs at most one source per synapse type of each neuron; "
                             "this protocol's design has more. Pass wiring= as Connections instead.")
    out = []
    for stim in stimuli:
        order = np.argsort(c.pre, kind="stable")
        pre = c.pre[order]
        lo, hi = np.searchsorted(pre, stim.sources, "left"), np.searchsorted(pre, stim.sources, "right")
        count = hi - lo
        ev = np.repeat(np.arange(stim.steps.size), count)
        within = np.arange(ev.size) - np.repeat(np.cumsum(count) - count, count)
        conn = order[np.repeat(lo, count) + within]
        out.append(Stimulus(types.size * n, stim.steps[ev], new[conn], stim.dc))
    return Connections(new, c.post, c.syn_type, c.weight), types.size * n, tuple(out)


def description_of(rec: Recording) -> Mapping | None:
    """The protocol description of a recording: its experiment's, else (v1 files) its metadata's."""
    experiment = getattr(rec, "experiment", None)
    desc = getattr(experiment, "protocol", None) if experiment is not None else None
    return desc if desc else rec.metadata.get("protocol") or None


def _tuples(value):
    """JSON lists back to the tuples the settings are made of."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclasses.dataclass(frozen=True)
class Protocol:
    """Base of the protocols: settings are dataclass fields; subclasses implement
    ``design`` and ``extract`` and may list ``conditions``.

    Attributes:
        dt: time step in s.
    """

    name: ClassVar[str] = ""
    sensitive_to: ClassVar[tuple[str, ...]] = ()
    record: ClassVar[tuple[str, ...]] = ()  # traces the features need (if the backend has them)
    dt: float = 1e-4

    # --- what subclasses implement --------------------------------------------------------

    def design(self, neurons: Network) -> Design:  # pragma: no cover - abstract
        """The protocol's inputs and length for the neurons of ``neurons`` (no connections)."""
        raise NotImplementedError

    def extract(self, rec: Recording) -> dict[str, np.ndarray]:  # pragma: no cover - abstract
        """The features of a recording made with these settings (``features`` checks that)."""
        raise NotImplementedError

    def conditions(self) -> dict[str, tuple[float, ...]]:
        """Parameter name -> one value per condition (SI); empty when there is one condition."""
        return {}

    def axis_labels(self) -> dict[str, list[str]]:
        """Feature name -> labels of the last axis of its (B, N, K) array (tables, plots)."""
        return {}

    def traces(self) -> tuple[str, ...]:
        """State traces the features use (where the backend records them)."""
        return self.record

    def trace_every(self) -> int:
        return 1

    # --- experiments and runs -------------------------------------------------------------

    @property
    def n_conditions(self) -> int:
        c = self.conditions()
        return len(next(iter(c.values()))) if c else 1

    @property
    def separate(self) -> bool:
        """Whether the conditions run as separate runs (``separate_runs``, where offered)."""
        return bool(getattr(self, "separate_runs", False)) and self.n_conditions > 1

    def experiment(self, neurons: Any = "core0", *, stimulus: Stimulus | Sequence[Stimulus] | None = None,
                   wiring: Any = "shared") -> Experiment:
        """The Experiment of this protocol: its conditions and its description inside.

        Args:
            neurons: which neurons (``_common.layout``: ``"core0"``, ``"core0:16"``, a Network).
            stimulus: inputs in place of the generated ones: a Stimulus, or one per
                condition (then each condition is a separate run).
            wiring: ``"shared"``, ``"one_to_one"`` or Connections (module docstring).
        """
        d = rewire(self.design(layout(neurons)), wiring, stimulus)
        L = self.n_conditions
        stimuli = d.stimuli
        per_condition = stimulus is not None and not isinstance(stimulus, Stimulus)  # a sequence: separate runs
        if len(stimuli) == 1 and L > 1 and (self.separate or per_condition):
            stimuli = stimuli * L
        if len(stimuli) > 1 and self.conditions() and len(stimuli) != L:
            raise ParameterError(f"{len(stimuli)} stimuli for the {L} conditions of {self.name}; give one per "
                                 f"condition ({self.conditions()}).")
        return Experiment(d.network, stimuli[0], self.dt, d.n_steps, self.name,
                          conditions={k: np.asarray(v, dtype=np.float64) for k, v in self.conditions().items()},
                          condition_stimuli=tuple(stimuli) if len(stimuli) > 1 else (),
                          protocol=self.describe())

    def run(self, backend, neurons: Any = "core0", params: Params | None = None, *,
            record_every: int | None = None, stimulus: Stimulus | Sequence[Stimulus] | None = None,
            wiring: Any = "shared") -> Recording:
        """Build the experiment and run it on ``backend`` (traces where it records them).

        The backend runs B candidates x L conditions (``params`` of batch B gives B * L
        sets, set ``b * L + l``); the recording's experiment carries the settings.

        Args:
            backend: an object with ``run`` (see ``dynacal.backends.get_backend``).
            neurons, stimulus, wiring: as :meth:`experiment`.
            params: (B, N)-broadcastable candidate parameters; None = the network's own.
            record_every: trace sampling in steps (default the protocol's own).
        """
        return self.run_experiment(backend, self.experiment(neurons, stimulus=stimulus, wiring=wiring), params,
                                   record_every=record_every)

    def run_experiment(self, backend, experiment: Experiment, params: Params | None = None, *,
                       record_every: int | None = None) -> Recording:
        """Run a built experiment (``experiment(...)``, or one loaded from a file) on ``backend``."""
        traces = getattr(backend, "records_traces", None)
        names = self.traces()
        if not names or traces is False:
            rec = backend.run(experiment, params)
        else:
            kwargs = {"record": names, "record_every": record_every or self.trace_every()}
            try:
                rec = backend.run(experiment, params, **kwargs)
            except ParameterError:
                if traces:  # it says it records traces: the error is about something else
                    raise
                # a backend that does not say (records_traces absent) and refuses traces, such
                # as the board: run it for spikes only (any other error comes back again)
                log.info("%s refused traces %s; running %s for spikes only", backend.name, names, self.name)
                rec = backend.run(experiment, params)
        rec.metadata["protocol"] = experiment.protocol or self.describe()
        return rec

    # --- descriptions and settings --------------------------------------------------------

    def describe(self) -> dict:
        """JSON-able name, settings and conditions (the experiment's ``protocol``)."""
        settings = {k: _lists(v) for k, v in dataclasses.asdict(self).items()}
        return {"name": self.name, "settings": settings,
                "conditions": {k: list(v) for k, v in self.conditions().items()}}

    @classmethod
    def from_settings(cls, settings: Mapping) -> "Protocol":
        """This protocol with ``settings`` as :meth:`describe` wrote them (JSON lists allowed).

        Raises:
            RecordingError: a setting this version does not know.
        """
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(settings) - fields)
        if unknown:
            raise RecordingError(f"protocol {cls.name!r} has no settings {unknown} (known: {sorted(fields)}); "
                                 f"the recording was made by another dynacal version.")
        return cls(**{k: _tuples(v) for k, v in settings.items()})

    @classmethod
    def from_recording(cls, rec: Recording) -> "Protocol":
        """The protocol a recording was made with, with its recorded settings.

        Raises:
            RecordingError: the recording does not say, or (on a subclass) was made by another protocol.
        """
        from . import PROTOCOLS  # noqa: PLC0415  (the registry imports this module)

        desc = description_of(rec)
        if not desc:
            raise RecordingError("the recording names no protocol (experiment.protocol, metadata['protocol']); "
                                 "give the protocol and its settings yourself, or use Recorded().")
        name = desc.get("name")
        if cls.name and name != cls.name:
            raise RecordingError(f"this recording was made by protocol {name!r}, not {cls.name!r}; "
                                 f"extract its features with the {name!r} protocol.")
        if name not in PROTOCOLS:
            raise RecordingError(f"the recording was made by protocol {name!r}, which this dynacal does not "
                                 f"have (it has {sorted(PROTOCOLS)}).")
        return PROTOCOLS[name].from_settings(desc.get("settings", {}))

    def with_recorded_settings(self, rec: Recording) -> "Protocol":
        """This protocol with the settings ``rec`` was made with (itself when it names none)."""
        if not description_of(rec):
            return self
        recorded = type(self).from_recording(rec)
        if recorded != self:
            log.info("%s: reading the recording with its recorded settings", self.name)
        return recorded

    # --- features -------------------------------------------------------------------------

    def features(self, rec: Recording) -> dict[str, np.ndarray]:
        """Per-neuron features of ``rec`` (arrays (B, N) or (B, N, K) for B candidates),
        read with the settings the recording was made with."""
        protocol = self.with_recorded_settings(rec)
        protocol.check(rec)
        return protocol.extract(rec)

    def check(self, rec: Recording) -> None:
        """Refuse a recording that this protocol, with these settings, did not make."""
        L = self.n_conditions
        experiment = getattr(rec, "experiment", None)
        if experiment is not None and experiment.n_conditions != L:
            raise RecordingError(f"the recording's experiment has {experiment.n_conditions} conditions; this "
                                 f"{self.name} protocol has {L}. Was it made by this protocol?")
        if rec.batch % L:
            split_conditions(np.zeros((rec.batch, 1)), L)  # raises with the message
        steps = self.design(layout(1)).n_steps
        if (rec.n_steps, rec.dt) != (steps, self.dt):
            raise RecordingError(f"the recording has {rec.n_steps} steps of {rec.dt:g} s; this {self.name} protocol "
                                 f"runs {steps} steps of {self.dt:g} s. Use the settings it was recorded with "
                                 f"(recording.metadata['protocol']['settings']).")


def _lists(value):
    return [_lists(v) for v in value] if isinstance(value, (tuple, list)) else value
