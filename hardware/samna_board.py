"""The board backend: run an Experiment on a Dynap-SE1 dev kit through samna.

``BoardBackend.run(experiment, params)`` measures the B parameter sets one after another:

1. before anything is sent: place the network (:func:`.config.plan_network`), build the FPGA
   events (:func:`.fpga.schedule`) and the bias codes of every set (one value per core,
   :func:`.biasmap.params_to_codes`); every chip limit is checked here;
2. on connecting (:mod:`.samna_device`): open the device, wire the event sink, and reset
   the timestamp counter once; everything received from then on is one *epoch*
   (:mod:`.attribution`);
3. per set: apply the configuration (then only the biases that change, sent in the DAC's
   coarse convention, :func:`.config.wire_codes`), discharge the analog state (all leak
   biases to (7, 255) for ``discharge_s``, then back), preload the stimulus, note the board
   time of the start, start the generator, wait for the stimulus plus ``tail_s``, stop, and
   drain the buffer until the stream has passed the end of the window (plus ``grace_s``) or
   has been quiet for ``quiet_s``;
4. after the last set: wait ``late_wait_s`` for late events, then give every spike to the
   set whose time span holds its (unwrapped) timestamp, never by when it arrived, and count
   what was late, dropped (where the device reports it), outside every window or discarded
   (``metadata["board"]["sets"][i]`` and ``["losses"]``). A run whose losses exceed
   ``max_loss_fraction`` warns or fails (``on_loss``).

A failure of the device (any exception of samna while measuring) is retried ``retries``
times on a re-opened device (waited for with a bounded backoff); sets already measured are
kept, saved to ``checkpoint_dir`` (:mod:`.board_results`) (one HDF5 recording per set, reused by a later run of the
same experiment and codes) and returned in :class:`BoardRunError` (``on_error="raise"``) or
as a partial recording (``on_error="partial"``). The board has no trace readout.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from dynacal.backends.base import resolve_params, run_conditions
from dynacal.errors import BoardError, DynacalError, ParameterError, unknown_name
from dynacal.experiment import Experiment
from dynacal.params import Params
from dynacal.recording import Recording, check_record

from .attribution import Epoch, RunState as _Run, Window, attribute
from .biasgen import BiasDAC
from .biasmap import BiasConstants
from .board_results import (BoardRunError, board_recording, check_losses, checkpoint_path, load_checkpoint,
                            save_checkpoint)
from .config import plan_network, wire_codes
from .events import split_events, unwrap
from .fpga import MAX_MULTIPLIER, schedule
from .samna_detect import import_samna
from .samna_device import DeviceLink, apply_setting, discharge, fpga_events
from .sets import ignored_parameters, set_codes

__all__ = ["BoardBackend", "BoardRunError"]

log = logging.getLogger(__name__)


class BoardBackend:
    """A Dynap-SE1 board driven through samna (or the twin behind the fake samna).

    Args:
        device_name: samna's device type name of the kit.
        samna_module: the samna module to use (None: import the real one lazily).
        serial: open only the board with this serial number (None: the first one found).
        dac: the DAC model that turns currents into codes (default: community table); a
            bit-reversed DAC gets its coarse codes reversed on the wire.
        constants: chip constants of the bias map.
        discharge: discharge the analog state before each measurement; discharge_s: for how long.
        tail_s: listen this long after the stimulus, s; poll_s, quiet_s, grace_s,
            drain_timeout_s: draining of the event buffer, s (see the module doc).
        settle_s: wait this long before each start, s.
        late_wait_s: after the last set, wait this long for late events, s.
        retries: re-open and re-measure a set this many times after a device failure.
        reconnect_timeout_s: wait up to this long for a device that is gone, s.
        on_error: ``"raise"`` (BoardRunError with the partial result) or ``"partial"``.
        max_loss_fraction: losses (dropped where reported, outside every window) over all
            events above which ``on_loss`` applies; on_loss: ``"warn"`` or ``"raise"``.
        checkpoint_dir: save each measured set there, and reuse saved ones.
        isi_multiplier, max_isi_multiplier: see :func:`.fpga.schedule`.
        reserve_monitor: keep SRAM destination 0 for monitoring.
        zero_address: a network neuron at (core 0, id 0) with recurrent targets: ``"refuse"``,
            ``"warn"`` or ``"allow"`` (see :func:`.config.plan_network`).
        start_latency_s: subtracted from every spike time (the delay between the host's
            start and the generator's first event, as ``dynacal board check`` measures it).
        timestamp_period_us: period of the board's us counter (None: detected, 2**32 when
            the stream does not tell; see :func:`.events.detect_period`).
        sleep, clock: the clock to wait on and to read, s (``time.sleep`` and
            ``time.monotonic``; the twin passes its virtual clock).
        loss_counter: a callable giving the device's count of dropped events so far, if it
            reports one (the twin does; samna does not).
        name: the backend's name in recordings.

    Raises:
        BackendUnavailable: samna is missing or the PyPI stub, or no such board is attached.
    """

    batched = False
    differentiable = False
    records_traces = False  # no analog readout: spikes only

    def __init__(self, device_name: str = "Dynapse1DevKit", samna_module: Any = None, *, serial: int | str | None = None,
                 dac: BiasDAC | None = None, constants: BiasConstants = BiasConstants(), discharge: bool = True,
                 discharge_s: float = 5e-3, tail_s: float = 0.05, poll_s: float = 0.02, quiet_s: float = 0.2,
                 grace_s: float = 0.1, settle_s: float = 0.0, late_wait_s: float = 1.0, drain_timeout_s: float = 2.0,
                 retries: int = 1, reconnect_timeout_s: float = 5.0, on_error: str = "raise",
                 max_loss_fraction: float = 0.02, on_loss: str = "warn", checkpoint_dir: str | Path | None = None,
                 isi_multiplier: int | None = None, max_isi_multiplier: int = MAX_MULTIPLIER,
                 reserve_monitor: bool = True, zero_address: str = "refuse", start_latency_s: float = 0.0,
                 timestamp_period_us: int | None = None, sleep: Callable[[float], None] | None = None,
                 clock: Callable[[], float] | None = None, loss_counter: Callable[[], int] | None = None,
                 name: str = "board"):
        if on_error not in ("raise", "partial"):
            raise unknown_name("on_error", on_error, ("raise", "partial"))
        if on_loss not in ("warn", "raise"):
            raise unknown_name("on_loss", on_loss, ("warn", "raise"))
        if int(retries) < 0:
            raise ParameterError(f"retries = {retries} must be an integer >= 0.")
        if not 0 <= float(max_loss_fraction) <= 1:
            raise ParameterError(f"max_loss_fraction = {max_loss_fraction} must be a fraction 0..1, e.g. 0.02.")
        self._samna = samna_module if samna_module is not None else import_samna()
        self._sleep = sleep or time.sleep
        self._clock = clock or time.monotonic
        self._link = DeviceLink(self._samna, device_name, serial, self._sleep, reconnect_timeout_s)
        self.name, self.device_name = name, device_name
        self.dac, self.constants = dac or BiasDAC(), constants
        self.discharge, self.discharge_s, self.tail_s = bool(discharge), float(discharge_s), float(tail_s)
        self.poll_s, self.quiet_s, self.grace_s, self.settle_s = float(poll_s), float(quiet_s), float(grace_s), float(settle_s)
        self.late_wait_s, self.drain_timeout_s = float(late_wait_s), float(drain_timeout_s)
        self.retries, self.on_error, self.on_loss = int(retries), on_error, on_loss
        self.max_loss_fraction = float(max_loss_fraction)
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.isi_multiplier, self.max_isi_multiplier = isi_multiplier, int(max_isi_multiplier)
        self.reserve_monitor, self.zero_address = bool(reserve_monitor), zero_address
        self.start_latency_s = float(start_latency_s)
        self.timestamp_period_us = None if timestamp_period_us is None else int(timestamp_period_us)
        self._loss_counter = loss_counter
        self._applied = self._epoch = None
        self._link.find(unavailable=True)

    @property
    def serial(self):
        return self._link.serial

    def __repr__(self) -> str:
        return f"BoardBackend({self.device_name!r}, name={self.name!r}, serial={self.serial})"

    # --- the device -------------------------------------------------------------------

    def _connect(self):
        """The open model; a fresh connection resets the timestamp counter: a new epoch."""
        if self._link.open():
            self._applied = None
            try:
                self._link.model.get_dynapse1_api().reset_timestamp()
            except Exception as exc:
                self._drop()
                raise BoardError(f"samna failed while resetting the timestamp: {type(exc).__name__}: {exc}.") from exc
            self._epoch = Epoch(self._clock())
            self._epoch.n_discarded = len(self._link.sink.get_events())  # their time base is gone
        return self._link.model

    def _drop(self) -> None:
        self._link.drop()
        self._applied = None

    def close(self) -> None:
        """Unwire the event sink and close the device (safe to call twice)."""
        self._link.close()
        self._applied = self._epoch = None

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
            record: must name no trace: the board returns spikes only.

        Returns:
            A :class:`Recording` with measured spike times in s.

        Raises:
            ParameterError, NetworkError: a limit of the chip (before anything is sent).
            BoardRunError: the device failed after ``retries`` (with the partial result), or
                the losses exceeded ``max_loss_fraction`` with ``on_loss="raise"``.
        """
        if experiment.condition_stimuli:  # L separate runs from the fresh state (dynacal.backends.base)
            return run_conditions(self.run, experiment, params, record=record)
        names = check_record(record)  # "all" and "Isoma_mem" are names, not sequences of letters
        if names:
            raise ParameterError(f"the board measures spikes only; it cannot record traces {list(names)} (no analog "
                                 f"readout). Record traces with a simulator backend, or pass record=().")
        plan = plan_network(experiment.network, reserve_monitor=self.reserve_monitor, zero_address=self.zero_address)
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
        run = _Run(experiment, plan, sched, settings, ignored)
        for i in range(b):
            try:
                self._set(run, i)
            except BoardError as exc:
                rec = self._recording(run, failed=i)
                message = (f"the board failed on parameter set {i} of {b} after {self.retries + 1} attempt(s): {exc} "
                           f"Sets {sorted(run.results)} were measured" +
                           (f" and saved in {self.checkpoint_dir}" if self.checkpoint_dir else "") + ".")
                if self.on_error == "partial":
                    log.error("%s Returning the partial recording.", message)
                    return rec
                raise BoardRunError(message, rec, sorted(run.results), i) from exc
        if run.pending:
            self._sleep(self.late_wait_s)  # late events of the last sets
            self._collect()
            self._finish_epoch(run)
        rec = self._recording(run)
        check_losses(rec, run, self.max_loss_fraction, self.on_loss)
        return rec

    def _set(self, run: _Run, i: int) -> None:
        """One parameter set: from the checkpoint, or measured with retries."""
        path = checkpoint_path(self.checkpoint_dir, run.experiment, run.settings[i], i, self.name)
        run.paths[i] = path
        reused = load_checkpoint(path, i)
        if reused is not None:
            run.results[i] = reused
            return
        last = None
        for attempt in range(self.retries + 1):
            try:
                self._measure(run, i)
                run.attempts[i] = attempt + 1
                run.pending.append(i)
                return
            except BoardError as exc:
                last = exc
                log.warning("parameter set %d, attempt %d of %d: %s", i, attempt + 1, self.retries + 1, exc)
                self._finish_epoch(run)  # the sets measured before the failure are final
                self._drop()
        raise last

    def _measure(self, run: _Run, i: int) -> None:
        """One measurement on the device; any samna failure becomes a :class:`BoardError`."""
        experiment, plan, setting = run.experiment, run.plan, run.settings[i]
        step = "connecting"
        try:
            model = self._connect()
            dyn = self._samna.dynapse1
            wire = wire_codes(setting.codes, self.dac.bit_reversed)
            step = "applying the configuration"
            self._applied = apply_setting(model, dyn, plan, wire, self._applied)
            if self.discharge:
                step = "discharging the analog state"
                discharge(model, dyn, plan, wire, self._sleep, self.discharge_s)
            step = "loading the stimulus"
            gen = model.get_fpga_spike_gen()
            gen.set_variable_isi_mode(True)
            gen.set_repeat_mode(False)
            gen.set_isi_multiplier(run.sched.isi_multiplier)
            gen.preload_stimulus(fpga_events(dyn, run.sched))
            step = "starting"
            self._sleep(self.settle_s)
            self._collect()  # late events of earlier sets: kept, and placed by their timestamps
            window = Window(i, (self._clock() - self._epoch.reset_clock) * 1e6, experiment.duration * 1e6)
            if self._epoch.windows:  # a span ends where the next measurement starts
                prev = self._epoch.windows[-1]
                prev.span_us = min(prev.span_us, window.start_us - prev.start_us)
            before = self._loss_counter() if self._loss_counter else None
            gen.start()
            step = "running the stimulus"
            self._sleep(experiment.duration + self.tail_s)
            gen.stop()
            step = "collecting the output events"
            self._drain(window)
        except DynacalError:
            raise
        except Exception as exc:
            raise BoardError(f"samna failed while {step}: {type(exc).__name__}: {exc}.") from exc
        window.drained_at = len(self._epoch.events)
        window.span_us = (self._clock() - self._epoch.reset_clock) * 1e6 - window.start_us + self.late_wait_s * 1e6
        self._epoch.windows.append(window)
        run.dropped[i] = None if before is None else int(self._loss_counter() - before)

    def _collect(self) -> int:
        """Take what has arrived into the epoch; returns how many events came, and follows the
        stream's latest unwrapped time (``Epoch.live``)."""
        new = self._link.sink.get_events()
        if new:
            ep, dyn, counts = self._epoch, self._samna.dynapse1, {}
            elapsed = (self._clock() - ep.reset_clock) * 1e6
            unwrap(split_events(new, dyn.Spike, dyn.TimestampWrapEvent), self.timestamp_period_us or 2 ** 32,
                   state=ep.live, elapsed_us=elapsed, counts=counts)
            ep.live = counts["state"]
            ep.add(new, elapsed)
        return len(new)

    def _drain(self, window: Window) -> None:
        """Poll the sink until the stream passed the window (+ tail, grace), went quiet, or timed out."""
        waited, quiet, passed_at = 0.0, 0.0, None
        end_us = window.start_us + window.duration_us + self.tail_s * 1e6
        while True:
            if self._collect():
                quiet = 0.0
                if passed_at is None and self._epoch.live.ref_us >= end_us:
                    passed_at = waited
            else:
                quiet += self.poll_s
            if (passed_at is not None and waited - passed_at >= self.grace_s) or quiet >= self.quiet_s \
                    or waited >= self.drain_timeout_s:
                return
            self._sleep(self.poll_s)
            waited += self.poll_s

    def _finish_epoch(self, run: _Run) -> None:
        """Place the epoch's events in the sets measured in it; those sets are then final."""
        ep = self._epoch
        if ep is None or not ep.windows:
            return
        dyn = self._samna.dynapse1
        per_set, summary = attribute(ep, dyn.Spike, dyn.TimestampWrapEvent, run.plan.global_ids(),
                                     period_us=self.timestamp_period_us, start_latency_s=self.start_latency_s)
        for i, (neurons, times, stats) in per_set.items():
            stats.update(attempts=run.attempts.get(i, 1), n_dropped=run.dropped.get(i))
            run.results[i] = (neurons, times, stats)
            if run.paths.get(i) is not None:
                save_checkpoint(run.paths[i], self.name, run, i)
        run.epochs.append(summary)
        run.pending = [i for i in run.pending if i not in per_set]
        # what follows in this epoch belongs to later runs: keep the unwrap state, drop the rest
        ep.state, ep.events, ep.arrived_us, ep.windows, ep.n_discarded = ep.live, [], [], [], 0

    def _recording(self, run: _Run, failed: int | None = None) -> Recording:
        return board_recording(run, self.name, failed, device={
            "device": self.device_name, "serial": self.serial, "samna_version": self._link.version,
            "sink_wiring": self._link.wiring, "waited_for_device_s": self._link.waited_s})
