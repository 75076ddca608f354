"""A twin Dynap-SE1 board: a simulated chip behind the fake samna, for CI and for users
without a board. ``get_backend("twin")`` is :func:`twin_backend`: the board backend over
:mod:`.fake_samna` with a :class:`TwinBoard` attached.

The twin behaves like a physical board, as seen through samna:

- hidden per-chip DAC, chip constants, per-neuron mismatch and hot neurons drawn from the
  serial number (:mod:`.twin_chip`); the network it runs is read back from the applied
  configuration: CAM entries (``Dynapse1Synapse``), SRAM routes (``Dynapse1Destination``)
  followed by their sx/sy/dx/dy bits, not their target chip id (a route that leaves the 2 x 2
  grid loses its events: ``TwinRun.lost_routes``), FPGA events matched to CAM addresses
  exactly as the silicon matches them (aliasing and all); unconfigured neurons keep the
  fresh state (64 CAM entries listening to (core 0, neuron 0) as NMDA), so a sender at
  (core 0, id 0) drives every unconfigured neuron of its target cores, as on the chip; simulated by the torch backend's fused engine at ``sim_dt`` (100 us); the biases
  outside the model (IF_TAU2_N, IF_BUF_P, IF_CASC_N, R2R_P) have no effect;
- noise (:class:`TwinNoise`): each output spike leaves ``latency_s`` (2 us) plus |N(0,
  ``jitter_s`` = 1 us)| after its simulated step, is stamped by a us counter of
  ``timestamp_bits`` (32) bits that wraps (a ``TimestampWrapEvent`` at each wrap), is dropped
  with probability ``drop_rate`` (1e-3) and reaches the host buffer ``usb_latency_s`` (1 ms)
  later. Noise is drawn from (seed, serial, run index): the same calls give the same events;
- state that persists: unless every core it simulates was discharged (all six leak biases
  at >= 100 nA) since the previous run, a run starts with the last ``memory_s`` (0.5 s) of
  input replayed (under the current biases: an approximation, exact when they did not
  change); state older than ``memory_s`` is taken as decayed. Idle time between runs counts;
- a reconfiguration ends a run: each run is simulated past its stimulus (``tail_s``), but when
  the host sets a bias, applies a configuration or starts the next stimulus at time T, the
  spikes the old configuration would have fired after T never happen (the chip changed): they
  are taken out of the host buffer unseen (``TwinRun.n_cut``), so they never fall into the next
  set's window;
- faults on request (:class:`TwinFaults`): the device disappears at a time into a given run
  (every later call raises ``RuntimeError``, events not yet in the host buffer are lost,
  and it comes back powered up after ``reconnect_after_s``), and a fraction of events
  arrives late by ``late_delay_s``.

Every run's ground truth is kept in :attr:`TwinBoard.history` (:class:`TwinRun`: what was
simulated, each spike's step and whether it was dropped or late); fault and noise settings
are validated (:class:`~dynacal.errors.ParameterError`); the three live in
:mod:`.twin_settings`. Time is virtual: the backend sleeps through :meth:`TwinBoard.sleep`,
so a 1 s stimulus does not take 1 s. Each run is simulated from the generator's start to its last event (the
backend ends the program with filler events at the end of the measurement) plus ``tail_s``
(0.5 s); nothing is emitted after that.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from dynacal.backends.torch_sim import TorchBackend
from dynacal.chip import Connections, Network
from dynacal.experiment import Experiment
from dynacal.params import SYNAPSE_TYPES, Params
from dynacal.stimulus import Stimulus

from .biasgen import BIAS_NAMES
from .biasmap import LEAK_BIASES
from .config import SAMNA_SYN_TYPES, route_target
from .fake_samna import dynapse1 as dyn
from .fake_samna import make_samna
from .fake_samna.device import ConfigState
from .fpga import FPGA_CLOCK_HZ
from .twin_chip import Mismatch, TwinChip
from .twin_settings import TwinFaults, TwinNoise, TwinRun

__all__ = ["TwinBoard", "TwinNoise", "TwinFaults", "TwinRun", "twin_backend", "DEFAULT_SERIAL"]

log = logging.getLogger(__name__)
DEFAULT_SERIAL = 20231
_DISCHARGE_A = 100e-9
_BIAS = {name: i for i, name in enumerate(BIAS_NAMES)}
# samna enum value -> index in SYNAPSE_TYPES
_SYN = {int(getattr(dyn.Dynapse1SynType, SAMNA_SYN_TYPES[t])): i for i, t in enumerate(SYNAPSE_TYPES)}


class TwinBoard:
    """A simulated Dynap-SE1 dev kit (see the module doc).

    Args:
        serial: serial number, the seed of the hidden chip (:class:`~.twin_chip.TwinChip`).
        seed: seed of the measurement noise.
        sim_dt: simulation step, s. noise, faults: see :class:`TwinNoise`, :class:`TwinFaults`.
        memory_s: how long the chip remembers input without a discharge, s.
        tail_s: simulated time after the last input event, s.
        timestamp_bits: width of the us counter (32 on the board).
        mismatch, **chip_options: passed to :class:`~.twin_chip.TwinChip`.
    """

    device_type_name = "Dynapse1DevKit"

    def __init__(self, serial: int = DEFAULT_SERIAL, seed: int = 0, *, sim_dt: float = 1e-4,
                 noise: TwinNoise = TwinNoise(), faults: TwinFaults = TwinFaults(), memory_s: float = 0.5,
                 tail_s: float = 0.5, timestamp_bits: int = 32, mismatch: Mismatch = Mismatch(), **chip_options):
        self.serial_number, self.seed = int(serial), int(seed)
        self.chip = TwinChip(self.serial_number, mismatch=mismatch, **chip_options)
        self.sim_dt, self.noise, self.faults = float(sim_dt), noise, faults
        self.memory_s, self.tail_s, self.timestamp_bits = float(memory_s), float(tail_s), int(timestamp_bits)
        self.now_s, self.opened, self.generation = 0.0, False, 0
        self.runs = 0
        self.last_run: TwinRun | None = None
        self.history: list[TwinRun] = []  # every run's ground truth, in order
        self._pending: list = []  # (arrival s, event) in flight outside a run
        # spikes of the last run not yet fired (spike time s, event, index in last_run): a
        # reconfiguration or a new run at time T means the chip's state changed at T, so the
        # spikes the old run would have fired after T never happen (:meth:`_cut`)
        self._future: list[tuple[float, object, int]] = []
        self.retract = lambda events: None  # set by the fake device: removes events from its buffers
        self._lost_routes = 0
        self._sim = TorchBackend(engine="fused")
        self._gone_at = self._back_at = math.inf
        self._power_up()

    def _power_up(self) -> None:
        self.state = ConfigState.power_up()
        self._reset_at = self.now_s
        self._history = np.zeros((0, 4))  # rows: absolute time s, chip, core mask, address
        self._discharged = np.ones((self.chip.n_chips, 4), dtype=bool)  # a powered-up chip holds no charge

    # --- what the fake samna calls --------------------------------------------------------

    @property
    def present(self) -> bool:
        self._update()
        return not (self._gone_at <= self.now_s < self._back_at)

    def _update(self) -> None:
        if self.now_s >= self._back_at:  # re-enumerated after a disconnect: powered up again
            self._gone_at = self._back_at = math.inf
            self.opened = False
            self.generation += 1  # handles opened before the loss are stale
            self._power_up()

    def check(self, generation: int) -> None:
        """Raise ``RuntimeError`` when the device is gone or the handle is stale."""
        if not self.present:
            self.opened = False
            raise RuntimeError(f"{self.device_type_name} (serial {self.serial_number}) is not connected: "
                               f"the USB device was lost")
        if generation != self.generation:
            raise RuntimeError(f"{self.device_type_name} (serial {self.serial_number}): stale device handle "
                               f"(the device re-enumerated); open it again")

    def sleep(self, seconds: float) -> None:
        """Advance the virtual clock (what the backend calls instead of ``time.sleep``)."""
        self.now_s += max(0.0, float(seconds))
        self._update()

    def configure(self, state: ConfigState) -> None:
        self._cut()
        self.state = state

    def _cut(self) -> None:
        """The chip changes now: the last run's spikes after now are not fired (they were
        simulated under the old configuration) and leave the host buffer unseen."""
        if not self._future:
            return
        run, gone = self.last_run, []
        for t_spike, event, k in self._future:
            if t_spike > self.now_s:
                gone.append(event)
                if run is not None and run.kept is not None:
                    run.kept[k] = False
                    run.n_cut += 1
        self._future = []
        self.retract(gone)

    def set_bias(self, chip: int, core: int, name: str, coarse: int, fine: int) -> None:
        self._cut()
        self.state.codes[chip, core, _BIAS[name]] = (coarse, fine)
        if name in LEAK_BIASES:
            idx = [_BIAS[b] for b in LEAK_BIASES]
            codes = self.state.codes[chip, core, idx]
            dac = self.chip.dac(chip, core)
            if np.all(dac.current(codes[:, 0], codes[:, 1], LEAK_BIASES) >= _DISCHARGE_A):
                self._discharged[chip, core] = True

    def reset_timestamp(self) -> None:
        self._reset_at = self.now_s
        if self.faults.wrap_at_reset:  # the old counter wrapped just before: its wrap event is in flight
            self._pending.append((self.now_s + self.noise.usb_latency_s, dyn.TimestampWrapEvent(0)))

    def stop_generator(self) -> None:
        pass

    def play(self, fpga: tuple, multiplier: int) -> list:
        """Run the preloaded stimulus from now; returns (arrival time s, event) pairs."""
        self._cut()
        core_mask, address, target_chip, isi = fpga
        run, t0 = self.runs, self.now_s
        self.runs += 1
        if run in self.faults.disconnect_runs:
            self._gone_at = t0 + self.faults.disconnect_at_s
            after = self.faults.reconnect_after_s
            self._back_at = math.inf if after is None else self._gone_at + after
        times = t0 + np.cumsum(isi) * multiplier / FPGA_CLOCK_HZ
        real = core_mask != 0
        new = np.column_stack([times[real], target_chip[real], core_mask[real], address[real]]).astype(np.float64)
        hot = self.chip.hot_neurons()
        # neurons of cores with no configured neuron are held silent by their biases: not simulated;
        # a sender at (core 0, id 0) reaches the fresh CAMs of every neuron of its target cores
        ids = np.union1d(np.union1d(self.state.ids, hot[np.isin(hot // 256, self.state.ids // 256)]),
                         self._fresh_listeners())
        cores = np.unique(ids // 256)
        prefix_steps = 0
        if not np.all(self._discharged.reshape(-1)[cores]):
            prefix_steps = int(round(self.memory_s / self.sim_dt))
        start = t0 - prefix_steps * self.sim_dt
        old = self._history[(self._history[:, 0] >= start) & (self._history[:, 0] < t0)] if prefix_steps else \
            np.zeros((0, 4))
        events = np.concatenate([old, new])
        end = (times[-1] if times.size else t0) + self.tail_s  # fillers included: the program's end
        n_steps = int(math.ceil((end - start) / self.sim_dt))
        exp = self._experiment(ids, events, start, n_steps)
        params = self.chip.neuron_params(ids, self.state.codes)
        rec = self._sim.run(exp, params)
        keep = rec.spike_step >= prefix_steps
        steps, who = rec.spike_step[keep] - prefix_steps, ids[rec.spike_neuron[keep]]
        timed, keep, late = self._emit(run, t0, steps, who, end)
        self._history = np.concatenate([self._history[self._history[:, 0] >= t0 - self.memory_s], new])
        self._discharged[:] = False
        self.last_run = TwinRun(exp, params, ids, prefix_steps, steps, who, int((~keep).sum()),
                                int((late & keep).sum()), keep, late & keep, self._lost_routes)
        self.history.append(self.last_run)
        return timed

    def _routes(self):
        """(source global id, reached chip, core mask) of every SRAM route in use, routed by its
        sx/sy/dx/dy bits as the silicon does (``config.route_target``); counts lost routes."""
        out, lost = [], 0
        for u, dests in zip(self.state.ids.tolist(), self.state.dests):
            for d in dests[dests[:, 0] == 1]:
                target = route_target(u // 1024, *(int(x) for x in d[4:8]), board_chips=self.chip.n_chips)
                if target is None:
                    lost += 1
                    continue
                out.append((u, target, int(d[2]), int(d[3])))
        self._lost_routes = lost
        return out

    def _fresh_listeners(self) -> np.ndarray:
        """Global ids of the neurons whose fresh CAMs hear a configured sender at (core 0, id 0)."""
        ids = [np.arange(256) + chip * 1024 + k * 256 for u, chip, vcore, mask in self._routes()
               if u % 1024 == 0 and vcore == 0 for k in range(4) if mask >> k & 1]
        return np.unique(np.concatenate(ids)) if ids else np.zeros(0, np.int64)

    # --- internals ------------------------------------------------------------------------

    def _experiment(self, ids: np.ndarray, events: np.ndarray, start: float, n_steps: int) -> Experiment:
        """The network the configuration wires up, driven by the FPGA events (rows: time,
        chip, core mask, address)."""
        st = self.state
        m = ids.size
        chip, rest = np.divmod(ids, 1024)
        core, nid = np.divmod(rest, 256)
        cams = np.zeros((m, 64, 3), dtype=np.int64)  # power-up: every CAM listens to (0, 0) as NMDA
        cams[:, :, 2] = int(dyn.Dynapse1SynType.NMDA)
        known = np.isin(ids, st.ids)
        cams[known] = st.cams[np.searchsorted(st.ids, ids[known])] if st.ids.size else cams[known]
        cams[:, :, 2] = np.vectorize(_SYN.get)(cams[:, :, 2]) if m else 0
        addr = cams[:, :, 0] * 256 + cams[:, :, 1]

        def matches(target_chip: int, mask: int, address: int):
            sel = np.flatnonzero((chip == target_chip) & ((mask >> core) & 1).astype(bool))
            hit = addr[sel] == address
            out = []
            for t in range(4):
                w = (hit & (cams[sel, :, 2] == t)).sum(axis=1)
                nz = w > 0
                out.append((sel[nz], np.full(int(nz.sum()), t), w[nz]))
            return out

        pre, post, typ, wgt = [], [], [], []
        steps = np.floor((events[:, 0] - start) / self.sim_dt + 1e-6).astype(np.int64)
        keys, source = np.unique(events[:, 1:].astype(np.int64), axis=0, return_inverse=True)
        source = source.reshape(-1)
        # a source spikes at most once per step: repeated events in a step get copies of it
        order = np.lexsort((source, steps))
        dup = np.zeros(steps.size, dtype=np.int64)
        same = (np.diff(steps[order]) == 0) & (np.diff(source[order]) == 0)
        run_id = np.cumsum(np.concatenate([[0], ~same]))
        first = np.searchsorted(run_id, run_id)
        dup[order] = np.arange(order.size) - first
        n_copies = int(dup.max()) + 1 if dup.size else 1
        for j, (kc, km, ka) in enumerate(keys.tolist()):
            for sel, t, w in matches(kc, km, ka):
                for r in range(n_copies):
                    pre.append(np.full(sel.size, j + r * len(keys)))
                    post.append(sel), typ.append(t), wgt.append(w)
        inputs = Connections.concat([Connections(*(np.asarray(a, np.int64) for a in x))
                                     for x in zip(pre, post, typ, wgt)])
        rec_parts = []
        for u, tchip, vcore, mask in self._routes():  # by the routing bits, not target_chip_id
            where = np.flatnonzero(ids == u)
            for sel, t, w in matches(tchip, mask, vcore * 256 + (u % 256)):
                rec_parts.append(Connections(np.full(sel.size, where[0]), sel, t, w))
        network = Network(core=chip * 4 + core, neuron_id=nid, n_inputs=len(keys) * n_copies, inputs=inputs,
                          recurrent=Connections.concat(rec_parts), n_chips=self.chip.n_chips, enforce_limits=False)
        stim = Stimulus(len(keys) * n_copies, steps, source + dup * len(keys))
        return Experiment(network, stim, self.sim_dt, n_steps, name=f"twin run {self.runs - 1}")

    def _emit(self, run: int, t0: float, steps: np.ndarray, who: np.ndarray, end: float):
        nz = self.noise
        rng = np.random.default_rng([self.seed, self.serial_number, run])
        latency = nz.latency_s + np.abs(rng.normal(0.0, nz.jitter_s, steps.size))
        keep = rng.random(steps.size) >= nz.drop_rate
        late = rng.random(steps.size) < self.faults.late_fraction
        t_spike = t0 + steps * self.sim_dt + latency
        arrival = t_spike + nz.usb_latency_s + np.where(late, self.faults.late_delay_s, 0.0)
        period = 2 ** self.timestamp_bits
        count = np.floor((t_spike - self._reset_at) * 1e6 + 1e-6).astype(np.int64)
        timed = []
        for k in np.flatnonzero(keep):
            g = int(who[k])
            ev = dyn.Spike(g // 1024, (g % 1024) // 256, g % 256, int(count[k] % period))
            timed.append((float(arrival[k]), ev))
            self._future.append((float(t_spike[k]), ev, int(k)))
        first_wrap = int(math.floor((t0 - self._reset_at) * 1e6)) // period + 1
        last_wrap = int(math.floor((end - self._reset_at) * 1e6)) // period
        for w in range(first_wrap, last_wrap + 1):
            timed.append((self._reset_at + w * period * 1e-6 + nz.usb_latency_s, dyn.TimestampWrapEvent(0)))
        timed, self._pending = self._pending + timed, []
        timed = [te for te in timed if te[0] < self._gone_at]  # the device vanished: the rest never arrives
        timed.sort(key=lambda te: te[0])
        return timed, keep, late

    def dropped_count(self) -> int:
        """Events dropped so far, over the board's life (what a device could report)."""
        return int(sum(r.n_dropped for r in self.history))

    def hidden_params(self, ids, codes) -> Params:
        """The parameters this chip runs for neurons ``ids`` (global ids, (M,)) under bias
        ``codes``: (chip, core) -> {bias: (logical coarse, fine)} (unlisted biases keep the
        codes of the current configuration). Ground truth, for tests."""
        full = self.state.codes.copy()
        for (c, k), biases in codes.items():
            for name, (coarse, fine) in biases.items():
                full[c, k, _BIAS[name]] = (coarse, fine)
        return self.chip.neuron_params(np.asarray(ids, dtype=np.int64), full)


def twin_backend(serial: int | str = DEFAULT_SERIAL, *, seed: int = 0, noise: TwinNoise = TwinNoise(),
                 faults: TwinFaults = TwinFaults(), board_options: dict | None = None, strict: bool = True,
                 **backend_options):
    """The board backend on a twin board: ``get_backend("twin")`` / ``get_backend("twin:1234")``.

    Args:
        serial: the twin chip's serial number (a string from the registry is converted).
        seed: seed of the measurement noise.
        noise, faults: see :class:`TwinNoise`, :class:`TwinFaults`.
        board_options: more :class:`TwinBoard` options (``sim_dt``, ``memory_s``, ...).
        strict: behind the strict fake samna (current samna's API only; see
            :mod:`.fake_samna`); False: an older samna's API.
        **backend_options: :class:`~.samna_board.BoardBackend` options (``retries``,
            ``discharge``, ``dac``, ...).

    Returns:
        A :class:`~.samna_board.BoardBackend` named ``"twin"``; its ``twin`` attribute is the
        :class:`TwinBoard` (ground truth for tests).
    """
    from .samna_board import BoardBackend
    board = TwinBoard(int(serial), seed, noise=noise, faults=faults, **(board_options or {}))
    options = {"timestamp_period_us": 2 ** board.timestamp_bits, **backend_options}
    backend = BoardBackend(samna_module=make_samna([board], strict=strict), sleep=board.sleep,
                           clock=lambda: board.now_s, loss_counter=board.dropped_count, name="twin", **options)
    backend.twin = board
    return backend
