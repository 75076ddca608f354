"""The board backend: run an Experiment on a Dynap-SE1 dev kit through samna.

``BoardBackend.run(experiment, params)`` measures the B parameter sets one after another:

1. before anything is sent: place the network (:func:`.config.plan_network`), build the FPGA
   events (:func:`.fpga.schedule`) and the bias codes of every set (one value per core,
   :func:`.biasmap.params_to_codes`); every chip limit is checked here;
2. per set: apply the configuration (then only the biases that change), discharge the
   analog state (all leak biases to (7, 255) for ``discharge_s``, then back), preload the
   stimulus, ``reset_timestamp``, flush the event buffer, start the generator, wait for the
   stimulus plus ``tail_s``, stop, and drain the buffer until the stream has passed the end
   of the window (plus ``grace_s`` for late events) or has been quiet for ``quiet_s``;
3. unwrap the timestamps (:mod:`.events`), keep the network's neurons and the window
   ``[0, duration)``, and return a :class:`~dynacal.recording.Recording` (spike times in s).

A failure of the device (any exception of samna while measuring) is retried ``retries``
times on a re-opened device; sets already measured are kept, saved to ``checkpoint_dir``
(one HDF5 recording per set, reused by a later run of the same experiment and codes) and
returned in :class:`BoardRunError` (``on_error="raise"``) or as a partial recording
(``on_error="partial"``). The backend returns spikes only: the board has no trace readout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from dynacal.backends.base import resolve_params
from dynacal.errors import BackendUnavailable, BoardError, DynacalError, ParameterError, RecordingError, unknown_name
from dynacal.experiment import Experiment
from dynacal.params import Params
from dynacal.recording import Recording, check_record

from .biasgen import BiasDAC
from .biasmap import LEAK_BIASES, BiasConstants, BiasSetting
from .config import BoardPlan, plan_network, write_configuration
from .events import lookup_neurons, split_events, unwrap
from .fpga import MAX_MULTIPLIER, FpgaSchedule, schedule
from .samna_detect import TWIN_HINT, import_samna
from .sets import ignored_parameters, set_codes

__all__ = ["BoardBackend", "BoardRunError"]

log = logging.getLogger(__name__)


class BoardRunError(BoardError):
    """The board failed part-way through a run; what was measured is kept.

    Attributes:
        partial: a :class:`Recording` with the completed sets (metadata lists them).
        completed: indices of the completed parameter sets; failed: the set that failed.
    """

    def __init__(self, message: str, partial: Recording, completed: list[int], failed: int):
        super().__init__(message)
        self.partial, self.completed, self.failed = partial, completed, failed


class BoardBackend:
    """A Dynap-SE1 board driven through samna (or the twin behind the fake samna).

    Args:
        device_name: samna's device type name of the kit.
        samna_module: the samna module to use (None: import the real one lazily).
        serial: open only the board with this serial number (None: the first one found).
        dac: the DAC model that turns currents into codes (default: community table).
        constants: chip constants of the bias map.
        discharge: discharge the analog state before each measurement; discharge_s: for how long.
        tail_s: listen this long after the stimulus, s; poll_s, quiet_s, grace_s,
            drain_timeout_s: draining of the event buffer, s (see the module doc).
        settle_s: wait this long before flushing the buffer and starting, s, so that late
            events of the previous measurement are flushed (and counted) rather than
            mistaken for events of this one.
        retries: re-open and re-measure a set this many times after a device failure.
        on_error: ``"raise"`` (BoardRunError with the partial result) or ``"partial"``.
        checkpoint_dir: save each measured set there, and reuse saved ones.
        isi_multiplier, max_isi_multiplier: see :func:`.fpga.schedule`.
        reserve_monitor: keep SRAM destination 0 for monitoring.
        start_latency_s: subtracted from every spike time (the delay between
            ``reset_timestamp`` and the generator's first event, if measured).
        timestamp_period_us: period of the board's us counter (2**32).
        sleep: the clock to wait on (``time.sleep``; the twin passes its virtual clock).
        name: the backend's name in recordings.

    Raises:
        BackendUnavailable: samna is missing or the PyPI stub, or no such board is attached.
    """

    batched = False
    differentiable = False
    records_traces = False  # no analog readout: spikes only

    def __init__(self, device_name: str = "Dynapse1DevKit", samna_module: Any = None, *, serial: int | None = None,
                 dac: BiasDAC | None = None, constants: BiasConstants = BiasConstants(), discharge: bool = True,
                 discharge_s: float = 5e-3, tail_s: float = 0.05, poll_s: float = 0.02, quiet_s: float = 0.2,
                 grace_s: float = 0.1, settle_s: float = 0.0, drain_timeout_s: float = 2.0, retries: int = 1, on_error: str = "raise",
                 checkpoint_dir: str | Path | None = None, isi_multiplier: int | None = None,
                 max_isi_multiplier: int = MAX_MULTIPLIER, reserve_monitor: bool = True, start_latency_s: float = 0.0,
                 timestamp_period_us: int = 2 ** 32, sleep: Callable[[float], None] | None = None, name: str = "board"):
        if on_error not in ("raise", "partial"):
            raise unknown_name("on_error", on_error, ("raise", "partial"))
        if int(retries) < 0:
            raise ParameterError(f"retries = {retries} must be an integer >= 0.")
        self._samna = samna_module if samna_module is not None else import_samna()
        self.name, self.device_name, self.serial = name, device_name, serial
        self.dac, self.constants = dac or BiasDAC(), constants
        self.discharge, self.discharge_s, self.tail_s = bool(discharge), float(discharge_s), float(tail_s)
        self.poll_s, self.quiet_s, self.grace_s, self.settle_s = float(poll_s), float(quiet_s), float(grace_s), float(settle_s)
        self.drain_timeout_s, self.retries, self.on_error = float(drain_timeout_s), int(retries), on_error
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.isi_multiplier, self.max_isi_multiplier = isi_multiplier, int(max_isi_multiplier)
        self.reserve_monitor, self.start_latency_s = bool(reserve_monitor), float(start_latency_s)
        self.timestamp_period_us = int(timestamp_period_us)
        self._sleep = sleep or time.sleep
        self._model = self._sink = self._applied = self._previous = None
        self._find_device(unavailable=True)

    def __repr__(self) -> str:
        return f"BoardBackend({self.device_name!r}, name={self.name!r}, serial={self.serial})"

    # --- the device -------------------------------------------------------------------

    def _find_device(self, *, unavailable: bool):
        try:
            infos = list(self._samna.device.get_unopened_devices())
        except Exception as exc:
            raise (BackendUnavailable if unavailable else BoardError)(
                f"samna could not list devices: {type(exc).__name__}: {exc}.") from exc
        match = [i for i in infos if i.device_type_name == self.device_name
                 and (self.serial is None or i.serial_number == self.serial)]
        if not match:
            seen = ", ".join(f"{i.device_type_name} (serial {i.serial_number})" for i in infos) or "none"
            want = self.device_name + (f" with serial {self.serial}" if self.serial is not None else "")
            if unavailable:
                raise BackendUnavailable(f"samna is installed but no {want} is attached (unopened devices: {seen}); "
                                         f"connect the board, or close the program that holds it. {TWIN_HINT}")
            raise BoardError(f"the {want} is no longer connected (unopened devices: {seen}); check the USB cable "
                             f"and power, then run again (measured sets are kept).")
        return match[0]

    def _connect(self):
        if self._model is None:
            info = self._find_device(unavailable=False)
            try:
                self._model = self._samna.device.open_device(info)
                self._sink = self._samna.BasicSinkNode_dynapse1_dynapse1_event()
                self._model.get_source_node().add_destination(self._sink.get_input_channel())
            except Exception as exc:
                self._drop()
                raise BoardError(f"samna could not open the {self.device_name}: {type(exc).__name__}: {exc}.") from exc
            self.serial = info.serial_number if self.serial is None else self.serial
            self._applied = None
        return self._model

    def _drop(self) -> None:
        """Forget the device handle (after a failure); the next measurement re-opens it."""
        model, self._model, self._sink, self._applied = self._model, None, None, None
        if model is not None:
            try:
                self._samna.device.close_device(model)
            except Exception as exc:  # a vanished device cannot be closed cleanly
                log.debug("closing a failed device: %s", exc)

    def close(self) -> None:
        """Disconnect the event sink and close the device (safe to call twice)."""
        if self._model is not None and self._sink is not None:
            try:
                self._model.get_source_node().remove_destination(self._sink.get_input_channel())
            except Exception as exc:
                log.debug("removing the event sink: %s", exc)
        self._drop()

    def __enter__(self) -> "BoardBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # --- run --------------------------------------------------------------------------

    def run(self, experiment: Experiment, params: Params | None = None, *, record: Sequence[str] = (),
            record_neurons=None, record_every: int = 1) -> Recording:
        """Measure ``experiment`` for each of the B parameter sets in ``params``, one after another.

        Args:
            experiment: network, stimulus, dt and duration (dt only sets the Recording's steps).
            params: (B, N) parameters; the bias-settable ones (``MODEL_PARAMETERS``) must be
                equal within each core; None = the network's own.
            record: must be empty: the board returns spikes only.

        Returns:
            A :class:`Recording` with measured spike times in s.

        Raises:
            ParameterError, NetworkError: a limit of the chip (before anything is sent).
            BoardRunError: the device failed after ``retries`` (with the partial result).
        """
        names = check_record(record)  # "all" and "Isoma_mem" are names, not sequences of letters
        if names:
            raise ParameterError(f"the board measures spikes only; it cannot record traces {list(names)} (no analog "
                                 f"readout). Record traces with a simulator backend, or pass record=().")
        plan = plan_network(experiment.network, reserve_monitor=self.reserve_monitor)
        sched = schedule(plan, experiment.stimulus, experiment.dt, isi_multiplier=self.isi_multiplier,
                         max_multiplier=self.max_isi_multiplier, n_steps=experiment.n_steps)
        p = resolve_params(experiment, params)
        b, pn = p.shape
        if pn not in (1, plan.n_neurons):
            raise ParameterError(f"parameters are given for {pn} neurons but the network has {plan.n_neurons}; give "
                                 f"(B, {plan.n_neurons}) or (B, 1) values.")
        settings = [set_codes(p, i, plan, self.dac, self.constants, dc=experiment.stimulus.dc is not None)
                    for i in range(b)]
        ignored = ignored_parameters(p)
        if ignored:
            log.warning("the board ignores parameters the silicon fixes: %s", ", ".join(ignored))
        results: dict[int, tuple] = {}
        for i in range(b):
            try:
                results[i] = self._set(experiment, plan, sched, settings[i], i)
            except BoardError as exc:
                rec = self._recording(experiment, plan, sched, settings, results, ignored, failed=i)
                message = (f"the board failed on parameter set {i} of {b} after {self.retries + 1} attempt(s): {exc} "
                           f"Sets {sorted(results)} were measured" +
                           (f" and saved in {self.checkpoint_dir}" if self.checkpoint_dir else "") + ".")
                if self.on_error == "partial":
                    log.error("%s Returning the partial recording.", message)
                    return rec
                raise BoardRunError(message, rec, sorted(results), i) from exc
        return self._recording(experiment, plan, sched, settings, results, ignored)

    def _set(self, experiment, plan, sched, setting, i) -> tuple:
        """One parameter set: from the checkpoint, or measured with retries."""
        path = self._checkpoint_path(experiment, setting, i)
        if path is not None and path.exists():
            try:
                rec = Recording.load(path)
                log.info("parameter set %d: reusing %s", i, path)
                return rec.spike_neuron, rec.spike_time, dict(rec.metadata.get("board_set", {}), reused=str(path))
            except RecordingError as exc:
                log.warning("checkpoint %s is unreadable (%s); measuring again", path, exc)
        last = None
        for attempt in range(self.retries + 1):
            try:
                neurons, times, stats = self._measure(experiment, plan, sched, setting)
                stats["attempts"] = attempt + 1
                if path is not None:
                    single = Recording.from_times(self.name, experiment.dt, experiment.n_steps, 1, plan.n_neurons,
                                                  np.zeros(times.size, np.int64), neurons, times,
                                                  metadata={"board_set": stats, "set": i})
                    single.save(path)
                return neurons, times, stats
            except BoardError as exc:
                last = exc
                log.warning("parameter set %d, attempt %d of %d: %s", i, attempt + 1, self.retries + 1, exc)
                self._drop()
        raise last

    def _checkpoint_path(self, experiment, setting, i) -> Path | None:
        if self.checkpoint_dir is None:
            return None
        codes = json.dumps({f"{c},{k}": v for (c, k), v in sorted(setting.codes.items())}, sort_keys=True)
        key = hashlib.sha256((experiment.content_hash() + codes + self.name).encode()).hexdigest()[:16]
        return self.checkpoint_dir / f"set{i:04d}_{key}.h5"

    def _measure(self, experiment: Experiment, plan: BoardPlan, sched: FpgaSchedule, setting: BiasSetting):
        """One measurement on the device; any samna failure becomes a :class:`BoardError`."""
        model = self._connect()
        dyn = self._samna.dynapse1
        step = "applying the configuration"
        try:
            if self._applied is None or self._applied[0] is not plan:
                model.apply_configuration(write_configuration(plan, dyn, setting.codes))
            else:
                for key, codes in setting.codes.items():
                    for bias, code in codes.items():
                        if self._applied[1][key][bias] != code:
                            model.update_single_parameter(dyn.Dynapse1Parameter(bias, *code), *key)
            self._applied = (plan, setting.codes)
            if self.discharge:
                step = "discharging the analog state"
                for chip, core in plan.cores:
                    for bias in LEAK_BIASES:
                        model.update_single_parameter(dyn.Dynapse1Parameter(bias, 7, 255), chip, core)
                self._sleep(self.discharge_s)
                for chip, core in plan.cores:
                    for bias in LEAK_BIASES:
                        model.update_single_parameter(dyn.Dynapse1Parameter(bias, *setting.codes[(chip, core)][bias]),
                                                      chip, core)
            step = "loading the stimulus"
            gen = model.get_fpga_spike_gen()
            gen.set_variable_isi_mode(True)
            gen.set_repeat_mode(False)
            gen.set_isi_multiplier(sched.isi_multiplier)
            gen.preload_stimulus([dyn.FpgaSpikeEvent(*row) for row in zip(
                sched.core_mask.tolist(), sched.neuron_id.tolist(), sched.target_chip.tolist(), sched.isi.tolist())])
            step = "starting"
            self._sleep(self.settle_s)  # stragglers of the previous measurement arrive, and are flushed
            stale = self._sink.get_events()
            model.get_dynapse1_api().reset_timestamp()
            gen.start()
            step = "running the stimulus"
            self._sleep(experiment.duration + self.tail_s)
            gen.stop()
            step = "collecting the output events"
            events = self._drain(experiment.duration + self.tail_s)
        except DynacalError:
            raise
        except Exception as exc:
            raise BoardError(f"samna failed while {step}: {type(exc).__name__}: {exc}.") from exc
        return self._convert(events, stale, experiment, plan)

    def _drain(self, window_s: float) -> list:
        """Poll the sink until the stream passed the window (+ grace), went quiet, or timed out."""
        events, waited, quiet, passed_at = [], 0.0, 0.0, None
        end_us = int(window_s * 1e6)
        while True:
            new = self._sink.get_events()
            if new:
                events.extend(new)
                quiet = 0.0
                if passed_at is None:
                    batch = split_events(events, self._samna.dynapse1.Spike, self._samna.dynapse1.TimestampWrapEvent)
                    t = unwrap(batch, self.timestamp_period_us)
                    if t.size and t.max() >= end_us:
                        passed_at = waited
            else:
                quiet += self.poll_s
            if (passed_at is not None and waited - passed_at >= self.grace_s) or quiet >= self.quiet_s \
                    or waited >= self.drain_timeout_s:
                return events
            self._sleep(self.poll_s)
            waited += self.poll_s

    def _convert(self, events: list, stale: list, experiment: Experiment, plan: BoardPlan):
        dyn = self._samna.dynapse1
        batch = split_events(events, dyn.Spike, dyn.TimestampWrapEvent)
        t_us = unwrap(batch, self.timestamp_period_us)
        t = t_us * 1e-6 - self.start_latency_s
        idx = lookup_neurons(batch, plan.global_ids())
        keep = (idx >= 0) & (t >= 0) & (t < experiment.duration)
        n_stale = 0
        if self._previous is not None and stale:  # events of the previous measurement, in its time base
            old = split_events(stale, dyn.Spike, dyn.TimestampWrapEvent)
            prev_ids, prev_ref, prev_end = self._previous
            t_old = unwrap(old, self.timestamp_period_us, prev_ref)
            n_stale = int(((lookup_neurons(old, prev_ids) >= 0) & (t_old * 1e-6 - self.start_latency_s < prev_end)).sum())
            if n_stale:
                log.warning("%d spikes inside the previous measurement's window arrived after its drain and were "
                            "discarded, so that measurement lost them; raise grace_s (late events) or quiet_s.",
                            n_stale)
        self._previous = (plan.global_ids(), int(t_us.max()) if t_us.size else 0, experiment.duration)
        stats = {"n_events": len(events), "n_spikes": int(keep.sum()), "n_wraps": int((batch.kind == 2).sum()),
                 "n_other_neurons": int((idx < 0).sum()), "n_outside_window": int(((idx >= 0) & ~keep).sum()),
                 "n_lost_by_previous": n_stale}
        return idx[keep], t[keep], stats

    def _recording(self, experiment, plan, sched, settings, results, ignored, failed: int | None = None) -> Recording:
        b = len(settings)
        parts = [(np.full(results[i][0].size, i), results[i][0], results[i][1]) for i in sorted(results)]
        if parts:
            sb, sn, st = (np.concatenate(x) for x in zip(*parts))
        else:
            sb, sn, st = np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        meta = {"experiment": experiment.summary(), "device": self.device_name, "serial": self.serial,
                "samna_version": getattr(self._samna, "__version__", "unknown"),
                "board": {"plan": plan.summary(), "fpga": sched.summary(), "completed_sets": sorted(results),
                          "missing_sets": [i for i in range(b) if i not in results],
                          "failed_set": failed, "ignored_parameters": ignored,
                          "codes": [{f"{c},{k}": v for (c, k), v in sorted(s.codes.items())} for s in settings],
                          "max_param_rel_error": [s.report.max_rel_error for s in settings],
                          "sets": {str(i): results[i][2] for i in sorted(results)}}}
        return Recording.from_times(self.name, experiment.dt, experiment.n_steps, b, plan.n_neurons, sb, sn, st,
                                    metadata=meta)
