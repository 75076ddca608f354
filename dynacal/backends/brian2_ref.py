r"""The Brian2 reference backend: ``dpi-model.md`` written in Brian2's equation language.

This is the ground truth the torch simulator is tested against. The equations below are
ours (not copied from the public DynapSE simulator); boolean masks are written as
``int(...)`` so that they work with current Brian2, sympy and numpy.

Layout of one run: B parameter sets become B independent copies of the network in one
``NeuronGroup`` of B * N neurons (neuron ``n`` of set ``b`` is index ``b * N + n``). Every
parameter of ``params.PARAMETERS`` is a per-neuron variable of that group, so per-core
biases, per-neuron mismatch and batches are all just arrays. The synapse currents
``Inmda``, ``Iampa``, ``Igaba_a``, ``Igaba_b`` are per-neuron state variables. The
experiment's input sources are one ``SpikeGeneratorGroup``; every (source | neuron, synapse
type) pathway is one ``Synapses`` object with an integer ``weight`` per connection, its
connections replicated into each copy, and ``on_pre: I_X_post += I_X_w0_post * weight *
alpha_X_post``. Forward Euler (``method='euler'``), ``refractory='soma_refP'`` per neuron.

Brian2's default schedule is the contract's step order, and the network sets it explicitly:
``start`` (the ``StateMonitor`` records the state before the step), ``groups`` (Euler),
``thresholds`` (neurons and the spike generator), ``synapses`` (jumps of this step's
spikes), ``resets``.

Targets:

- ``"runtime"``: Brian2's numpy code generation. Cython was measured and not chosen: on
  the seed experiment (1 neuron, 1000 steps) a cold cache compiled for 83 s + 27 s and a
  warm run took 2.1 s, against 1.2-2.5 s for numpy with nothing to compile; Brian2 spends
  a run's time generating code, not stepping.
- ``"cpp_standalone"``: one compiled project per network *structure* (B * N, connections,
  stimulus spikes, recorded names and neurons, dt, n_steps, dtype), kept in memory by the
  backend instance and on disk under ``build_dir`` (default ``$XDG_CACHE_HOME/dynacal/
  brian2``, i.e. ``~/.cache/dynacal/brian2``). Parameter values, including a DC input, are
  passed to the compiled binary as ``run_args`` on every run, so changing only parameters
  never recompiles. A new stimulus (input spike times) is a new structure: it is built
  once (SpikeGeneratorGroup spike times cannot be run_args). In a new process the same
  structure regenerates its code and recompiles only ``main.cpp`` (seconds). Compiled
  without Brian2's default ``-ffast-math`` and without FMA contraction, so that it computes
  in IEEE arithmetic like the runtime target.

Division by zero: ``Isoma_ahp`` starts at 0, so the AHP denominator divides by zero and
the derivative must come out as exactly 0 (``dpi-model.md``). Brian2's sympy renders
``x / Iahp_s`` as ``x * Iahp_s ** -1``; numpy (its warning silenced), C++ ``pow`` and
Cython's ``cpow`` all give ``inf`` there, and the derivative is 0 as the contract says.

Operation order: Brian2 substitutes the subexpressions and lets sympy reorder sums and
products (e.g. ``Isum - off_mem * I0`` is expanded and its ``I0`` terms cancel), so its
derivatives differ from :func:`dpi.dpi_step`'s by rounding. Most traces agree within
1e-14; a membrane that shoots up from the floor amplifies such differences (up to 3e-10
relative in the 256-neuron test, where a 1-ulp change of ``Iampa_w0`` moves torch itself by
2e-10). See tests/backends/test_brian2_agreement.py.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import logging
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from ..errors import BackendUnavailable, ParameterError, unknown_name
from ..experiment import Experiment
from ..params import INITIAL_STATE, PARAMETERS, SYNAPSE_TYPES, Params
from ..recording import Recording
from . import sizing
from ._brian2_excepthook import guard_excepthook
from .base import check_params, check_request, resolve_params, run_conditions

__all__ = ["Brian2Backend", "TARGETS", "equations"]

log = logging.getLogger(__name__)
TARGETS = ("runtime", "cpp_standalone")
_UNITS = {"A": "amp", "F": "farad", "V": "volt", "s": "second", "": "1"}
_DTYPES = {"float64": np.float64, "float32": np.float32}
# IEEE semantics in compiled code: Brian2's default flags include -ffast-math.
_GCC_FLAGS = ["-w", "-O3", "-std=c++11", "-ffp-contract=off"]
#: Compiled cpp_standalone projects of this process: (build dir, structure hash) -> (Brian2
#: device, _Model), oldest first; shared by backend instances so that one structure is built
#: once per process (a second build would get suffixed object names and recompile).
_PROJECTS: dict[tuple[str, str], tuple] = {}
_MAX_PROJECTS = 16
_SYN = {"nmda": ("Inmda", "Cnmda"), "ampa": ("Iampa", "Campa"),
        "gaba_a": ("Igaba_a", "Cgaba_a"), "gaba_b": ("Igaba_b", "Cgaba_b")}


def _brian2():
    """Import brian2 lazily; a missing package names the extra that installs it."""
    before = sys.excepthook
    try:
        import brian2
    except ImportError as exc:
        raise BackendUnavailable(f"the 'brian2' backend needs the brian2 simulator, which cannot be "
                                 f"imported here ({exc}). Install it with: pip install 'dynacal[brian2]'; "
                                 f"or use backend 'torch'.") from exc
    guard_excepthook(before)
    return brian2


def equations() -> str:
    """The model of ``dpi-model.md`` as a Brian2 equation string (parameters in SI units)."""
    lines = [f"{name} : {_UNITS[spec.unit]}" for name, spec in PARAMETERS.items()]
    lines += [
        "kappa = (kn + kp) / 2 : 1",
        # Soma: on_mem = [Isoma_mem > I0], off_mem = 1 - on_mem.
        "on_mem = int(Isoma_mem > I0) : 1",
        "off_mem = 1 - on_mem : 1",
        "Imem_c = clip(Isoma_mem, I0, 1*amp) : amp",
        "Inmda_dp = Inmda / (1 + Inmda_thr / Imem_c) : amp",
        "Iin_c = clip(Inmda_dp + Iampa - Igaba_b + Isoma_const, I0, 1*amp) : amp",
        "Itau_s = on_mem * Isoma_dpi_tau + off_mem * I0 : amp",
        "Ig_s = on_mem * alpha_soma * Itau_s + off_mem * I0 : amp",
        "Iahp_s = on_mem * Isoma_ahp + off_mem * I0 : amp",
        "Iga_s = on_mem * Igaba_a + off_mem * I0 : amp",
        "Ipfb = Isoma_pfb_gain / (1 + exp(-(Isoma_mem - Isoma_pfb_th) / Isoma_pfb_norm)) : amp",
        "Ipfb_s = on_mem * Ipfb + off_mem * I0 : amp",
        "Isum = Itau_s + Iahp_s + Iga_s - Ipfb_s - off_mem * I0 : amp",
        "tau_soma = Csoma_mem * Ut / (kappa * Itau_s) : second",
        "dIsoma_mem/dt = (alpha_soma * (Iin_c - Isum) - (Isum - off_mem * I0) * Imem_c / Itau_s)"
        " / (tau_soma * (1 + Ig_s / Imem_c)) : amp (unless refractory)",
        # Adaptation: on_ahp = [Isoma_ahp > I0]. Iahp_s is the soma's (masked by on_mem).
        "on_ahp = int(Isoma_ahp > I0) : 1",
        "off_ahp = 1 - on_ahp : 1",
        "Iahp_tau_s = on_ahp * Isoma_ahp_tau + off_ahp * I0 : amp",
        "Iahp_g_s = on_ahp * alpha_ahp * Iahp_tau_s + off_ahp * I0 : amp",
        "tau_ahp = Csoma_ahp * Ut / (kappa * Iahp_tau_s) : second",
        "dIsoma_ahp/dt = (-Iahp_g_s - Isoma_ahp + 2 * off_ahp * I0)"
        " / (tau_ahp * (1 + Iahp_g_s / Iahp_s)) : amp",
    ]
    for x, (cur, cap) in _SYN.items():  # the same DPI form for every synapse type
        lines += [
            f"on_{x} = int({cur} > I0) : 1",
            f"Itau_{x}_s = on_{x} * {cur}_tau + (1 - on_{x}) * I0 : amp",
            f"Ig_{x}_s = on_{x} * alpha_{x} * {cur}_tau + (1 - on_{x}) * I0 : amp",
            f"tau_{x} = {cap} * Ut / (kappa * Itau_{x}_s) : second",
            f"d{cur}/dt = (-{cur} - Ig_{x}_s + 2 * (1 - on_{x}) * I0)"
            f" / (tau_{x} * (Ig_{x}_s / {cur} + 1)) : amp",
        ]
    return "\n".join(lines)


_THRESHOLD = "Isoma_mem > Isoma_th"
# Run health as the torch engines compute it, after each step (when="end"), outside the
# dynamics: unstable once a current is not > 0 (Isoma_ahp: >= 0); "1 - int(x > 0)" flags NaN.
_UNSTABLE = ("unstable_flag = clip(unstable_flag + (1 - int(Isoma_ahp >= 0*amp)) + "
             + " + ".join(f"(1 - int({x} > 0*amp))" for x in ("Isoma_mem", "Inmda", "Iampa", "Igaba_a", "Igaba_b"))
             + ", 0, 1)")
_RESET = "Isoma_ahp += Isoma_ahp_w * alpha_ahp\nIsoma_mem = Isoma_reset"


def _on_pre(x: str) -> str:
    cur = _SYN[x][0]
    return f"{cur}_post += {cur}_w0_post * weight * alpha_{x}_post"


class _Model:
    """The Brian2 objects of one experiment structure, on the device active when built.

    ``batch`` copies of the network; ``idx`` (R,) neurons traced every ``every`` steps.
    """

    def __init__(self, b2, experiment: Experiment, batch: int, names: tuple[str, ...],
                 idx: np.ndarray, every: int, prefix: str = ""):
        net, stim = experiment.network, experiment.stimulus
        n, dt = net.n_neurons, experiment.dt * b2.second
        self.batch, self.n, self.names, self.idx, self.dt = batch, n, names, idx, experiment.dt
        self.n_rec = -(-experiment.n_steps // every)  # ceil: steps 0, every, 2 every, ...
        self.duration = experiment.n_steps * dt
        # Explicit names, unique per structure (``prefix``): Brian2 suffixes a name taken by a
        # live object ("_1"), which would change the generated code and force a recompile.
        clock = b2.Clock(dt, name=f"{prefix}clock")
        g = b2.NeuronGroup(batch * n, equations() + "\nunstable_flag : 1", threshold=_THRESHOLD, reset=_RESET,
                           refractory="soma_refP", method="euler", clock=clock, name=f"{prefix}neurons")
        g.run_regularly(_UNSTABLE, when="end", name=f"{prefix}health")
        for name, value in INITIAL_STATE.items():
            setattr(g, name + "_", value)
        self.group, objects = g, [g]
        offset = np.arange(batch, dtype=np.int64)[:, None] * n  # first neuron of each copy
        if net.inputs.pre.size and stim.steps.size:
            gen = b2.SpikeGeneratorGroup(net.n_inputs, stim.sources, stim.steps * dt, clock=clock,
                                         name=f"{prefix}inputs")
            objects.append(gen)
            objects += _pathways(b2, gen, g, net.inputs, 0 * offset, offset, f"{prefix}in", clock)
        if net.recurrent.pre.size:
            objects += _pathways(b2, g, g, net.recurrent, offset, offset, f"{prefix}rec", clock)
        self.spikes = b2.SpikeMonitor(g, variables=[], name=f"{prefix}spikes")
        objects.append(self.spikes)
        self.traces = None
        if names and idx.size:
            trace_clock = b2.Clock(dt * every, name=f"{prefix}trace_clock")
            self.traces = b2.StateMonitor(g, list(names), record=(offset + idx).ravel(), when="start",
                                          clock=trace_clock, name=f"{prefix}traces")
            objects.append(self.traces)
        self.network = b2.Network(*objects)
        # The contract's step order (dpi-model.md), whatever the user's Brian2 preferences say.
        self.network.schedule = ["start", "groups", "thresholds", "synapses", "resets", "end"]

    def results(self, dtype) -> tuple:
        """Spike events (batch, neuron, step), traces name -> tensor (T_rec, B, R) and the
        unstable mask, bool (B, N)."""
        i = np.asarray(self.spikes.i[:], dtype=np.int64)
        steps = np.rint(np.asarray(self.spikes.t_[:]) / self.dt).astype(np.int64)
        traces = {}
        r = self.idx.size
        for name in self.names:
            if self.traces is None:
                arr = np.zeros((self.n_rec, self.batch, r))
            else:
                arr = np.asarray(getattr(self.traces, name + "_"), dtype=np.float64).T.reshape(-1, self.batch, r)
            if arr.shape[0] != self.n_rec:
                raise RuntimeError(f"Brian2 recorded {arr.shape[0]} samples of {name}; expected {self.n_rec}.")
            traces[name] = torch.as_tensor(arr, dtype=dtype)
        unstable = np.asarray(self.group.unstable_flag_[:]).reshape(self.batch, self.n) > 0
        return i // self.n, i % self.n, steps, traces, unstable


def _pathways(b2, source, target, conns, pre_offset, post_offset, label, clock) -> list:
    """One ``Synapses`` per synapse type present in ``conns``, replicated into each copy."""
    out = []
    for k, x in enumerate(SYNAPSE_TYPES):
        sel = conns.syn_type == k
        if not sel.any():
            continue
        s = b2.Synapses(source, target, model="weight : 1", on_pre=_on_pre(x), clock=clock,
                       name=f"{label}_{x}")
        s.connect(i=(pre_offset + conns.pre[sel]).ravel(), j=(post_offset + conns.post[sel]).ravel())
        s.weight_ = np.tile(conns.weight[sel].astype(np.float64), pre_offset.shape[0])
        out.append(s)
    return out


@contextlib.contextmanager
def _brian2_context(b2, device, float_dtype, **build_options):
    """Make ``device`` Brian2's active device, with our preferences, for the block only."""
    saved = {key: b2.prefs[key] for key in ("codegen.target", "core.default_float_dtype",
                                            "codegen.cpp.extra_compile_args_gcc")}
    b2.prefs["codegen.target"] = "numpy"
    b2.prefs["core.default_float_dtype"] = float_dtype
    b2.prefs["codegen.cpp.extra_compile_args_gcc"] = list(_GCC_FLAGS)
    from brian2.devices.device import reset_device
    b2.set_device(device, **build_options)
    try:
        yield
    finally:
        reset_device()
        for key, value in saved.items():
            b2.prefs[key] = value


def _compiler() -> str | None:
    return shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "dynacal" / "brian2"


class Brian2Backend:
    """Reference simulator of the Dynap-SE1 model in Brian2.

    Args:
        target: ``"runtime"`` (Brian2's numpy code generation, nothing to compile) or
            ``"cpp_standalone"`` (a compiled binary per network structure; parameter changes
            rerun it without recompiling).
        dtype: floating type of the state and parameters, ``float64`` (the reference) or
            ``float32``; torch/numpy dtypes or their names. Traces are returned as float64.
        build_dir: where cpp_standalone projects are built and cached; default
            ``$XDG_CACHE_HOME/dynacal/brian2`` (``~/.cache/dynacal/brian2``).

    Attributes:
        builds: number of cpp_standalone projects this instance generated and compiled.

    Raises:
        BackendUnavailable: brian2 is not installed (``pip install 'dynacal[brian2]'``).
    """

    name = "brian2"
    batched = True
    differentiable = False

    def __init__(self, target: str = "runtime", dtype=torch.float64, build_dir: str | os.PathLike | None = None):
        self._b2 = _brian2()
        if target not in TARGETS:
            raise unknown_name("Brian2 target", target, TARGETS)
        key = str(dtype).replace("torch.", "").replace("<class 'numpy.", "").rstrip("'>")
        if key not in _DTYPES:
            raise ParameterError(f"dtype {dtype!r} is not supported by the brian2 backend; use 'float64' "
                                 f"(the reference) or 'float32'.")
        if target == "cpp_standalone" and not _compiler():
            raise BackendUnavailable("target 'cpp_standalone' compiles C++ but no compiler was found (g++, or "
                                     "$CXX); install one (e.g. apt-get install g++) or use target='runtime'.")
        self.target, self.dtype = target, key
        self.build_dir = (Path(build_dir) if build_dir is not None else _cache_dir()).expanduser().absolute()
        self.builds = 0

    def __repr__(self) -> str:
        return f"Brian2Backend(target={self.target!r}, dtype={self.dtype!r}, build_dir={str(self.build_dir)!r})"

    def run(self, experiment: Experiment, params: Params | None = None, *, record: Sequence[str] = (),
            record_neurons=None, record_every: int = 1) -> Recording:
        """Simulate ``experiment`` for every parameter set in ``params`` (as ``TorchBackend.run``).

        Args:
            experiment: network, stimulus, dt (s) and duration.
            params: (B, N)-broadcastable parameters in SI units; None = the network's own.
            record: state names to trace (``STATE_NAMES``) or ``"all"``.
            record_neurons: indices of neurons to trace (default all).
            record_every: keep every k-th step of the traces.

        Returns:
            A :class:`Recording` of B * L sets (``base`` module docstring) with ``experiment``
            and ``unstable``; traces are float64 tensors (T_rec, B * L, R) in A, the state
            at the start of each recorded step.

        Raises:
            ParameterError: among others, traces that will not fit in memory (before the run).
        """
        check_params(params)  # before the size check, which reads them
        L = len(experiment.condition_stimuli)
        part = experiment.condition(0) if L else experiment  # each condition run has B sets
        shape = resolve_params(part, params, dtype=torch.float64).shape
        names, every, b, n, idx = check_request(part, shape, record, record_neurons, record_every)
        sizing.check_traces_fit(self.name, names, part.n_steps, every, b * max(L, 1), len(idx), 8, copies=2,
                                why="Brian2's monitor holds them while they are copied out")
        return run_conditions(self._run_one, experiment, params, record=record, record_neurons=record_neurons,
                              record_every=record_every)

    def _run_one(self, experiment: Experiment, params: Params | None, *, record, record_neurons,
                 record_every) -> Recording:
        p = resolve_params(experiment, params, dtype=torch.float64)
        names, every, b, n, idx = check_request(experiment, p.shape, record, record_neurons, record_every)
        flat = p.expand(b, n)
        values = {name: getattr(flat, name).reshape(-1).cpu().numpy().astype(_DTYPES[self.dtype])
                  for name in PARAMETERS}
        start = time.perf_counter()
        # The AHP's x / 0 = inf is part of the model; float32 overflows in Brian2's own check.
        with np.errstate(divide="ignore", over="ignore" if self.dtype == "float32" else "warn"):
            if self.target == "runtime":
                (sb, sn, ss, traces, unstable), extra = self._run_runtime(experiment, b, names, idx, every, values), {}
            else:
                (sb, sn, ss, traces, unstable), extra = self._run_standalone(experiment, b, names, idx, every, values)
        wall = time.perf_counter() - start
        meta = {"target": self.target, "codegen": "numpy" if self.target == "runtime" else "cpp",
                "dtype": self.dtype, "wall_time_s": wall, **extra, "experiment": experiment.summary(),
                "versions": {"brian2": self._b2.__version__, "numpy": np.__version__}}
        return Recording.from_steps(self.name, experiment.dt, experiment.n_steps, b, n, sb, sn, ss,
                                    traces=traces, trace_neurons=idx, trace_every=every, metadata=meta,
                                    experiment=experiment, unstable=unstable)

    def _run_runtime(self, experiment, b, names, idx, every, values):
        b2 = self._b2
        with _brian2_context(b2, "runtime", _DTYPES[self.dtype]):
            model = _Model(b2, experiment, b, names, idx, every)
            for name, value in values.items():
                setattr(model.group, name + "_", value)
            model.network.run(model.duration, namespace={})
            return model.results(torch.float64)

    def _run_standalone(self, experiment, b, names, idx, every, values):
        key = (str(self.build_dir), self._structure_key(experiment, b, names, idx, every))
        built = key not in _PROJECTS
        if built:
            while len(_PROJECTS) >= _MAX_PROJECTS:
                _PROJECTS.pop(next(iter(_PROJECTS)))
            _PROJECTS[key] = self._build(experiment, b, names, idx, every, key[1])
        device, model = _PROJECTS[key]
        # Parameter files and results live in a directory of this run only (safe when
        # several processes share the project); the binary reads each array from its file.
        run_id = f"run_{os.getpid()}_{time.monotonic_ns()}"
        run_dir = Path(device.project_dir) / run_id
        run_dir.mkdir()
        try:
            run_args = []
            for name, value in values.items():
                value.tofile(run_dir / f"{name}.dat")
                run_args.append(f"{model.group.name}.{name}={run_dir / (name + '.dat')}")
            device.run(results_directory=run_id, with_output=False, run_args=run_args)
            return model.results(torch.float64), {"project_dir": device.project_dir, "built": built}
        finally:
            shutil.rmtree(run_dir, ignore_errors=True)

    def _build(self, experiment, b, names, idx, every, key):
        from brian2.devices.cpp_standalone.device import CPPStandaloneDevice
        b2 = self._b2
        directory = self.build_dir / key[:16]
        directory.mkdir(parents=True, exist_ok=True)
        device = CPPStandaloneDevice()
        log.info("brian2: building a cpp_standalone project in %s (once per network structure)", directory)
        from brian2.utils.filelock import FileLock
        gc.collect()  # dead Brian2 objects still hold names; see _Model
        with FileLock(str(directory / ".dynacal-build.lock")), \
                _brian2_context(b2, device, _DTYPES[self.dtype], build_on_run=False):
            model = _Model(b2, experiment, b, names, idx, every, prefix=f"s{key[:10]}_")
            model.network.run(model.duration, namespace={})
            device.build(directory=str(directory), compile=True, run=False, with_output=False)
        self.builds += 1
        return device, model

    def _structure_key(self, experiment, b, names, idx, every) -> str:
        """Content hash of everything that is compiled into a cpp_standalone project."""
        h = hashlib.sha256()
        net, stim = experiment.network, experiment.stimulus
        for arr in (*net.inputs, *net.recurrent, stim.steps, stim.sources, idx):
            a = np.ascontiguousarray(arr, dtype=np.int64)
            h.update(str(a.shape).encode() + a.tobytes())
        h.update(repr((b, net.n_neurons, net.n_inputs, names, every, repr(experiment.dt), experiment.n_steps,
                       self.dtype, self._b2.__version__, _GCC_FLAGS, equations(), _UNSTABLE)).encode())
        return h.hexdigest()
