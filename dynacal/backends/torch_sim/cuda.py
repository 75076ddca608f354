"""The fused GPU engine: the whole time loop of the DPI model in one Triton kernel.

One Triton program advances a block of neurons (flat index ``b * N + n`` over B
parameter sets and N neurons) through a chunk of steps with the state in registers; the
physics is :func:`dynacal.backends.torch_sim.dpi.dpi_step`, written once more in Triton form in
``_cuda_kernel.py`` and tested against it. Per chunk of steps the host builds the
weighted input counts ``(Tc, 4, N)`` on the device from the stimulus' event list (uint8
when every neuron's summed weights per synapse type fit, as they do on the chip), the
kernel writes spikes as a uint8 ``(Tc, B * N)`` raster, and ``torch.nonzero`` turns it
into events.

Recurrent connections need every neuron's spikes of a step before the next step starts,
which a kernel with the time loop inside its neuron blocks cannot see: :func:`supports`
says no and the backend falls back to the eager engine. triton is imported only when
:func:`simulate` runs, so ``import dynacal`` and CPU runs never need it. With
``TRITON_INTERPRET=1`` set before the kernel module is first imported, the kernel runs
on CPU tensors through Triton's interpreter (slow; used by the tests).

Precision: float64 uses IEEE division and libdevice exp; float32 on a GPU uses
div.approx.f32 (2 ulp) for the per-step divisions and libdevice expf; the compiler may
contract a * b + c into FMAs. Against the CPU eager engine this gives identical spike
steps and traces within rounding (measured on an H200: 8e-15 relative in float64, 7e-6
in float32 over 1000 steps) for neurons where Euler is stable; where it is unstable,
rounding differences grow, as they do for a 1-ulp parameter change in the eager engine.
"""

from __future__ import annotations

import time

import numpy as np
import torch

from ...errors import BackendUnavailable, ParameterError
from ...experiment import Experiment
from ...params import INITIAL_STATE, STATE_NAMES, Params
from . import layout
from .engine import EngineResult, Request

__all__ = ["supports", "simulate", "InputPlan"]

_CHUNK_BYTES = 1 << 30  # upper bound of the counts and spike buffers of one chunk

def supports(experiment: Experiment) -> bool:
    """Whether the fused GPU kernel can run ``experiment`` (False with recurrent connections)."""
    return experiment.network.recurrent.pre.size == 0


class InputPlan:
    """Input connections of an experiment on a device, to build input counts per chunk.

    Args:
        experiment: its network's input connections and its stimulus' events are used.
        device: where the counts are built.

    Attributes:
        dtype: dtype of the counts: uint8 when the summed weights of every (type, neuron)
            pair are at most 255, else int32.
    """

    def __init__(self, experiment: Experiment, device):
        net, self.stimulus = experiment.network, experiment.stimulus
        self.n, self.device = net.n_neurons, torch.device(device)
        conns = net.inputs
        order = np.argsort(conns.pre, kind="stable")
        deg = np.bincount(conns.pre, minlength=net.n_inputs).astype(np.int64)
        key = conns.syn_type * self.n + conns.post
        fan = np.bincount(key, minlength=4 * self.n) if key.size else np.zeros(1, np.int64)
        most = np.bincount(key, weights=conns.weight, minlength=4 * self.n).max() if key.size else 0
        self.dtype = torch.uint8 if most <= 255 else torch.int32
        self._acc = torch.float32 if most < 2 ** 24 else torch.float64  # exact integer sums
        self._unique = bool(fan.max() <= 1)  # one connection per (type, neuron): no sums needed
        put = lambda a: torch.as_tensor(np.ascontiguousarray(a), device=self.device)  # noqa: E731
        self._deg, self._start = put(deg), put(np.cumsum(deg) - deg)
        self._target, self._weight = put(key[order].astype(np.int64)), put(conns.weight[order])

    def counts(self, t0: int, t1: int) -> torch.Tensor:
        """Weighted input counts of steps ``t0 .. t1 - 1``: tensor (t1 - t0, 4, N) of
        ``self.dtype`` on the device, equal to ``experiment.input_counts(t0, t1)``."""
        n, dev, stim = self.n, self.device, self.stimulus
        out = torch.zeros((t1 - t0) * 4 * n, dtype=self.dtype, device=dev)
        lo, hi = np.searchsorted(stim.steps, [t0, t1])
        if hi == lo or self._target.numel() == 0:
            return out.view(t1 - t0, 4, n)
        steps = torch.as_tensor(stim.steps[lo:hi] - t0, device=dev)
        src = torch.as_tensor(stim.sources[lo:hi], device=dev)
        c = self._deg[src]
        total = int(c.sum())
        if total == 0:
            return out.view(t1 - t0, 4, n)
        ev = torch.repeat_interleave(torch.arange(src.numel(), device=dev), c, output_size=total)
        conn = (self._start[src] - (torch.cumsum(c, 0) - c))[ev] + torch.arange(total, device=dev)
        key = steps[ev] * (4 * n) + self._target[conn]
        w = self._weight[conn]
        if self._unique:  # a source spikes at most once per step: every key is distinct
            out[key] = w.to(self.dtype)
        else:
            uniq, inv = torch.unique(key, return_inverse=True)
            sums = torch.zeros(uniq.numel(), dtype=self._acc, device=dev).index_add_(0, inv, w.to(self._acc))
            out[uniq] = sums.to(self.dtype)
        return out.view(t1 - t0, 4, n)


class _Clock:
    """Adds phase durations (s) to ``timings``; CUDA events time the device's work."""

    def __init__(self, timings: dict | None, device: torch.device):
        self.timings, self.cuda = timings, device.type == "cuda"
        self._events: list = []

    def phase(self, name: str, fn, *args):
        if self.timings is None:
            return fn(*args)
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            out = fn(*args)
            end.record()
            self._events.append((name, start, end))
            return out
        t = time.perf_counter()
        out = fn(*args)
        self.timings[name] = self.timings.get(name, 0.0) + time.perf_counter() - t
        return out

    def close(self):
        if self.timings is not None and self.cuda:
            torch.cuda.synchronize()
            for name, start, end in self._events:
                self.timings[name] = self.timings.get(name, 0.0) + start.elapsed_time(end) / 1e3


def simulate(experiment: Experiment, p: Params, request: Request, terms: dict | None = None, *,
             timings: dict | None = None) -> EngineResult:
    """Run ``experiment`` with the fused kernel, no gradients (the contract of :mod:`.engine`).

    Args:
        experiment: network (no recurrent connections), stimulus, dt (s), n_steps.
        p: parameters as contiguous (B, N) tensors, float32 or float64, on a CUDA device
            (or on the CPU under ``TRITON_INTERPRET=1``); the kernel computes in p's dtype.
        request: names, idx, every, substeps; chunk_steps: steps per kernel launch (also
            capped so that the counts and spike buffers of a chunk stay under 1 GiB each).
        terms: ``layout.derive(p, experiment.dt)``, from the backend (None: derived here).
        timings: if a dict, seconds are added under ``"inputs_s"`` (counts built on the
            device, host-to-device copies included), ``"kernel_s"`` and ``"outputs_s"``
            (spike events and traces to the host); this synchronises the device.

    Returns:
        :class:`EngineResult` without a raster; traces on p's device, unstable and peak
        on the CPU.

    Raises:
        ParameterError: recurrent connections (use the eager engine).
        BackendUnavailable: triton is not installed.
    """
    if not supports(experiment):
        raise ParameterError("the fused GPU kernel does not simulate recurrent connections; use "
                             "engine='eager' (engine='auto' falls back to it by itself).")
    try:
        from . import _cuda_kernel as kernel
    except ImportError as exc:
        raise BackendUnavailable(f"the fused CUDA engine needs triton ({exc}); pip install triton, "
                                 f"or use engine='eager'.") from exc
    dev, dtype = p.device, p.dtype
    b, n = p.shape
    total, dt, T = b * n, experiment.dt, experiment.n_steps
    if total >= 2 ** 31:
        raise ParameterError(f"B * N = {total} neuron instances exceed the kernel's int32 index; "
                             f"split the batch.")
    names, idx, every, substeps = tuple(request.names), request.idx, request.every, request.substeps
    terms = layout.derive(p, dt) if terms is None else terms
    flat = lambda t: t.detach().expand(b, n).reshape(-1)  # noqa: E731
    prm = torch.stack([flat(terms[name]) for name in layout.FLOAT_TERMS])
    refr = flat(terms["refractory_steps"]).to(device=dev, dtype=torch.int32)
    h = torch.tensor([dt / substeps], dtype=dtype, device=dev)
    state = torch.tensor([INITIAL_STATE[s] for s in STATE_NAMES[:6]], dtype=dtype, device=dev)
    state = state[:, None].repeat(1, total).contiguous()
    refr_state = torch.zeros(total, dtype=torch.int32, device=dev)
    unstable = torch.zeros(total, dtype=torch.uint8, device=dev)
    peak = torch.zeros(total, dtype=dtype, device=dev)

    idx = np.asarray(idx, dtype=np.int64)
    uniq, inverse = np.unique(idx, return_inverse=True)
    slot = torch.full((n,), -1, dtype=torch.int32, device=dev)
    slot[torch.as_tensor(uniq, device=dev)] = torch.arange(uniq.size, dtype=torch.int32, device=dev)
    rows = [STATE_NAMES.index(name) for name in names] if uniq.size else []
    t_rec = (T + every - 1) // every
    trace = torch.zeros((len(rows), t_rec, b, uniq.size) if rows else (1,), dtype=dtype, device=dev)
    srow = [rows.index(k) if k in rows else -1 for k in range(6)]

    plan = InputPlan(experiment, dev)
    itemsize = torch.empty(0, dtype=plan.dtype).element_size()
    chunk = max(1, min(int(request.chunk_steps), _CHUNK_BYTES // max(4 * n * itemsize, total)))
    block = 128 if total > 64 else 32
    grid = (_cdiv(total, block),)
    clock = _Clock(timings, dev)
    cuda = dev.type == "cuda"
    events = []
    for t0 in range(0, T, chunk):
        t1 = min(T, t0 + chunk)
        counts = clock.phase("inputs_s", plan.counts, t0, t1)
        spikes = torch.empty((t1 - t0, total), dtype=torch.uint8, device=dev)
        clock.phase("kernel_s", lambda counts=counts, spikes=spikes: kernel.dpi_kernel[grid](
            prm, refr, h, counts, state, refr_state, spikes, unstable, peak, slot, trace,
            total, n, t0, t1, every, t_rec, b * uniq.size, uniq.size,
            SUBSTEPS=int(substeps), S0=srow[0], S1=srow[1], S2=srow[2], S3=srow[3], S4=srow[4],
            S5=srow[5], CUDA=cuda, FAST=cuda and dtype == torch.float32, BLOCK=block, num_warps=block // 32))
        events.append(clock.phase("outputs_s", _events, spikes, t0, n))
        del counts, spikes
    sb, sn, ss = (np.concatenate(parts) for parts in zip(*events))
    inv = torch.as_tensor(inverse.reshape(-1), device=dev)
    traces = {name: trace[j][:, :, inv] if rows else torch.zeros((t_rec, b, 0), dtype=dtype, device=dev)
              for j, name in enumerate(names)}
    out_unstable = clock.phase("outputs_s", lambda: unstable.view(b, n).bool().cpu())
    out_peak = peak.view(b, n).cpu()
    clock.close()
    return EngineResult(sb, sn, ss, traces, out_unstable, out_peak)


def _events(spikes: torch.Tensor, t0: int, n: int):
    """(batch, neuron, step) int64 numpy arrays of the spikes in a (Tc, B * N) raster."""
    nz = torch.nonzero(spikes).cpu()
    flat = nz[:, 1]
    return (flat // n).numpy(), (flat % n).numpy(), (nz[:, 0] + t0).numpy()


def _cdiv(a: int, b: int) -> int:
    """Ceiling of a / b for positive integers."""
    return -(-a // b)
