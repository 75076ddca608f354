"""The torch simulator backend: which engine runs, and what a run returns.

The engines (:mod:`.eager`, :mod:`.cpu` with :mod:`.cpu_grad`, :mod:`.cuda`) share one
contract (:mod:`.engine`); this module resolves the parameters, checks the size, picks
the engine, hands it the parameter-only terms (:mod:`.layout`, computed once per prepared
parameters) and turns its :class:`~.engine.EngineResult` into a Recording.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import time
import weakref
from typing import Mapping, Sequence

import numpy as np
import torch

from ...errors import BackendUnavailable, ParameterError, unknown_name
from ...experiment import Experiment
from ...layers import ChipLayers
from ...params import STATE_NAMES, Params
from ...recording import Recording
from .. import sizing
from . import stability
from ..base import check_params, check_request, resolve_params, run_conditions
from .dpi import get_surrogate
from .engine import EngineResult, Request, tensor_versions
from .layout import derive

__all__ = ["TorchBackend", "ENGINES"]

log = logging.getLogger(__name__)
ENGINES = ("auto", "eager", "fused")
_announced: set[str] = set()


class TorchBackend:
    """Dynap-SE1 simulator in PyTorch.

    Args:
        engine: ``"auto"`` (fused when available, for gradients too where ``fused_cpu_grad``
            covers the run, else eager),
            ``"eager"`` or ``"fused"``.
        dtype: ``torch.float64`` (Brian2-exact reference) or ``torch.float32``; strings ok.
        device: ``"cpu"`` or ``"cuda"``.
        substeps: Euler sub-steps per step (1 = Brian2-exact; more for stiff settings).
        surrogate: surrogate gradient of the spike (``dpi.SURROGATES``), eager and fused
            (``fused_cpu_grad``) alike; ``"none"`` holds spikes constant (exact gradients
            of smooth observables).
        chunk_steps: steps whose input counts are built at once (bounds memory).
        calibration: a chip to run as: a :class:`~dynacal.layers.ChipLayers`, or a path that
            :meth:`ChipLayers.load <dynacal.layers.ChipLayers.load>` reads (a calibration's
            ``calibration.json`` or its folder). A run given ``params=None`` then runs
            ``network.params(layers=...)``, and one given candidates ``{name: value}`` runs
            ``network.params(candidates, layers=...)``: the one order of ``dynacal.params``.
            A given ``Params`` runs as it is.
    """

    name = "torch"
    batched = True
    differentiable = True

    def __init__(self, engine: str = "auto", dtype=torch.float64, device="cpu", *, substeps: int = 1,
                 surrogate: str = "fast_sigmoid", chunk_steps: int = 1000, calibration=None):
        if engine not in ENGINES:
            raise unknown_name("engine", engine, ENGINES)
        if isinstance(dtype, str):
            if dtype not in ("float32", "float64"):
                raise ParameterError(f"dtype {dtype!r} is not supported; use 'float64' or 'float32'.")
            dtype = getattr(torch, dtype)
        device = torch.device(device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise BackendUnavailable("device 'cuda' was asked for but torch sees no CUDA GPU here "
                                     "(CPU build of torch, or no GPU); use device='cpu'.")
        if int(substeps) < 1:
            raise ParameterError(f"substeps = {substeps} must be an integer >= 1.")
        self.engine, self.dtype, self.device = engine, dtype, device
        self.substeps, self.chunk_steps = int(substeps), int(chunk_steps)
        get_surrogate(surrogate)  # an unknown name is refused here, not at the first gradient run
        self.surrogate = surrogate
        self.layers = _load_layers(calibration)
        self.calibration = None if calibration is None or isinstance(calibration, ChipLayers) else str(calibration)
        self._calibrated: "weakref.WeakKeyDictionary[Experiment, Params]" = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        chip = "" if self.layers is None else f", calibration={self.calibration or self.layers.name!r}"
        return f"TorchBackend(engine={self.engine!r}, dtype={self.dtype}, device={self.device}{chip})"

    def _chip_params(self, experiment: Experiment, params) -> Params | None:
        """``params`` with the calibration's layers under None or a mapping of candidates."""
        if self.layers is None or isinstance(params, Params):
            return params
        if params is None:  # the same experiment runs many times in a loop: build its Params once
            if experiment not in self._calibrated:
                self._calibrated[experiment] = experiment.network.params(layers=self.layers, dtype=self.dtype,
                                                                         device=self.device)
            return self._calibrated[experiment]
        if isinstance(params, Mapping):
            return experiment.network.params(params, layers=self.layers, dtype=self.dtype, device=self.device)
        return params  # check_params says what is wrong with it

    def run(self, experiment: Experiment, params: Params | None = None, *, record: Sequence[str] = (),
            record_neurons=None, record_every: int = 1, input_weights: torch.Tensor | None = None,
            recurrent_weights: torch.Tensor | None = None) -> Recording:
        """Simulate ``experiment`` for every parameter set in ``params``.

        Args:
            experiment: network, stimulus, dt and duration.
            params: (B, N)-broadcastable parameters; None = the network's own (as the
                calibrated chip, with ``calibration``); with ``calibration``, also a
                mapping of candidates ``{name: value}`` over the chip's layers.
            record: state names to trace (``STATE_NAMES``) or ``"all"``.
            record_neurons: indices of neurons to trace (default all).
            record_every: keep every k-th step of the traces.
            input_weights, recurrent_weights: float tensors (E,) or (B, E) replacing the
                network's integer weights, rounded with a straight-through estimator so
                that gradients reach them (eager engine).

        Returns:
            A :class:`Recording` of B * L sets (``base`` module docstring) with
            ``experiment`` and ``unstable`` (B * L, N). When any input requires grad, its
            ``raster`` (T, B * L, N) and traces carry surrogate gradients.
        """
        params = self._chip_params(experiment, params)
        check_params(params)  # before the size check, which reads them
        self._check_size(experiment, params, record, record_neurons, record_every, input_weights,
                         recurrent_weights)
        return run_conditions(self._run_one, experiment, params, record=record, record_neurons=record_neurons,
                              record_every=record_every, input_weights=input_weights,
                              recurrent_weights=recurrent_weights)

    def _check_size(self, experiment, params, record, record_neurons, record_every, input_weights,
                    recurrent_weights) -> None:
        """Refuse, before any work, a run whose traces will not fit in memory (``sizing``)."""
        L = len(experiment.condition_stimuli)
        part = experiment.condition(0) if L else experiment  # each condition run has B sets
        prep = _prepare(part, params, self.dtype, self.device)
        names, every, b, n, idx = check_request(part, prep.shape, record, record_neurons, record_every)
        b = _weight_batch(b, input_weights, recurrent_weights)
        itemsize = torch.empty(0, dtype=self.dtype).element_size()
        bound = 2 * (len(names) * -(-part.n_steps // every) * len(idx) + part.n_steps * n) * b * max(L, 1) * itemsize
        if bound <= sizing.NEGLIGIBLE:  # the common small run: no closer look (it costs a calibration loop)
            return
        grad = _needs_grad(prep.p, input_weights, recurrent_weights)
        # as _choose / _grad_engine decide, without their log lines
        recurrent = part.network.recurrent.pre.size > 0
        eager = (self.engine == "eager" or input_weights is not None or recurrent_weights is not None
                 or not _fused_available(self.device) or (self.device.type == "cuda" and (grad or recurrent))
                 or (grad and recurrent))
        why = ", ".join(w for w, on in (("the eager engine stacks its steps", eager),
                                        (f"{L} condition runs are merged", L > 1)) if on)
        sizing.check_traces_fit(self.name, names, part.n_steps, every, b * max(L, 1), len(idx), itemsize,
                                n_neurons=n, raster=grad,
                                copies=2 if why else 1, why=why, device=str(self.device))

    def _run_one(self, experiment: Experiment, params: Params | None, *, record, record_neurons, record_every,
                 input_weights, recurrent_weights) -> Recording:
        prep = _prepare(experiment, params, self.dtype, self.device)
        p = prep.p
        names, every, b, n, idx = check_request(experiment, prep.shape, record, record_neurons, record_every)
        b = _weight_batch(b, input_weights, recurrent_weights)
        grad = _needs_grad(p, input_weights, recurrent_weights)
        weighted = input_weights is not None or recurrent_weights is not None
        engine = (self._grad_engine(experiment, weighted) if grad and not weighted
                  else self._choose(grad or weighted, experiment))
        prep.check_static(experiment, self.substeps)
        request = Request(names, np.asarray(idx, dtype=np.int64), every, self.substeps, self.chunk_steps,
                          (self.surrogate or "none") if grad else None, b, input_weights, recurrent_weights)
        start = time.perf_counter()
        out = self._run_engine(engine, experiment, prep, request, b, n)
        wall = time.perf_counter() - start
        sb, sn, ss, traces, unstable, peak, raster = out
        message = stability.dynamic_message(p, experiment.dt, self.substeps, unstable, peak)
        if message is not None:
            stability.warn_once(experiment.network, ("dynamic", experiment.dt, self.substeps), message)
        chip = {"calibration": self.calibration or self.layers.name} if self.layers else {}
        meta = {"engine": engine, **chip, "dtype": str(self.dtype).replace("torch.", ""), "device": str(self.device),
                "substeps": self.substeps, "wall_time_s": wall, "experiment": experiment.summary(),
                "versions": {"torch": torch.__version__, "numpy": np.__version__}}
        return Recording.from_steps(self.name, experiment.dt, experiment.n_steps, b, n, sb, sn, ss,
                                    traces=traces, trace_neurons=idx, trace_every=every,
                                    metadata=meta, raster=raster, experiment=experiment,
                                    unstable=np.asarray(unstable, dtype=bool))

    # --- engines ------------------------------------------------------------------------

    def _choose(self, needs_grad: bool, experiment: Experiment) -> str:
        if self.engine == "eager":
            return "eager"
        if needs_grad:
            if self.engine == "fused":
                raise ParameterError("the fused engine has no gradients; use engine='eager' (or 'auto') "
                                     "for a run whose parameters or weights require grad.")
            return "eager"
        available = _fused_available(self.device)
        if self.engine == "fused" and not available:
            raise BackendUnavailable(_fused_missing(self.device))
        choice = "fused" if available else "eager"
        if choice == "fused" and self.device.type == "cuda":
            from . import cuda  # imports no triton
            if not cuda.supports(experiment):
                if "cuda-recurrent" not in _announced:
                    _announced.add("cuda-recurrent")
                    log.info("torch backend: the fused CUDA kernel does not simulate recurrent "
                             "connections; running the eager engine on %s instead.", self.device)
                return "eager"
        if self.engine == "auto" and choice not in _announced:
            _announced.add(choice)
            log.info("torch backend: engine 'auto' chose %r on %s; pin it with engine='eager' or 'fused'.",
                     choice, self.device)
        return choice

    def _grad_engine(self, experiment: Experiment, weighted: bool) -> str:
        """The engine of a run whose parameters require grad: the fused CPU gradient
        (``fused_cpu_grad``) where it applies, else eager (``engine="fused"``: an error)."""
        from . import cpu_grad
        if self.engine == "eager":
            return "eager"
        why = ("weights that require grad" if weighted else "the CUDA device" if self.device.type == "cuda"
               else "numba is not installed" if not _fused_available(self.device)
               else "recurrent connections" if not cpu_grad.supports(experiment) else None)
        if why is None:
            if self.engine == "auto" and "fused-grad" not in _announced:
                _announced.add("fused-grad")
                log.info("torch backend: engine 'auto' chose the fused CPU gradient; pin the eager one with "
                         "engine='eager'.")
            return "fused"
        if self.engine == "fused":
            raise ParameterError(f"the fused engine has no gradients with {why}; use engine='eager' (or 'auto').")
        return "eager"

    def _run_engine(self, engine: str, experiment: Experiment, prep: "_Prepared", request: Request,
                    b: int, n: int) -> EngineResult:
        """Run one engine module's ``simulate`` (the contract of :mod:`.engine`)."""
        if engine == "eager":
            from . import eager as module
            return module.simulate(experiment, prep.p, request, None if request.surrogate else prep.terms(experiment.dt))
        if request.surrogate is not None:
            from . import cpu_grad as module
            return module.simulate(experiment, prep.p, request)
        if self.device.type == "cuda":
            from . import cuda as module
        else:
            from . import cpu as module
        return module.simulate(experiment, prep.expanded(b, n), request, prep.terms(experiment.dt, b, n))


# --- what repeated runs share -----------------------------------------------------------
# A calibration loop runs one experiment thousands of times, often with the same Params
# object; for a 1-neuron run, resolving, checking and expanding the parameters took 3/4
# of the time. These are kept per experiment (parameters None: the network's own) or per
# given Params object, and reused while the experiment is the same object (experiments
# are immutable) and the given tensors are the same objects at the same version (torch
# counts in-place edits).

class _Prepared:
    """Resolved parameters of one (experiment, params, dtype, device) and what derives from them."""

    def __init__(self, p: Params):
        self.p, self.shape = p, p.shape
        self._expanded: dict = {}
        self._terms: dict = {}
        self._static: dict = {}

    def expanded(self, b: int, n: int) -> Params:
        """``p.expand(b, n)``, once."""
        if (b, n) not in self._expanded:
            self._expanded[(b, n)] = self.p.expand(b, n)
        return self._expanded[(b, n)]

    def terms(self, dt: float, b: int | None = None, n: int | None = None) -> dict:
        """``layout.derive`` of the parameters (expanded to (b, n) when given), once per dt."""
        key = (dt, b, n)
        if key not in self._terms:
            self._terms[key] = derive(self.p if b is None else self.expanded(b, n), dt)
        return self._terms[key]

    def check_static(self, experiment: Experiment, substeps: int) -> None:
        """``stability.static_messages``, computed once; each is logged once per network
        (``stability.warn_once``)."""
        key = (experiment.dt, substeps)
        if key not in self._static:
            self._static[key] = stability.static_messages(self.p, experiment.dt, substeps)
        for message in self._static[key]:
            stability.warn_once(experiment.network, ("static", key, message), message)


_prepared: "weakref.WeakKeyDictionary[object, tuple]" = weakref.WeakKeyDictionary()


def _prepare(experiment: Experiment, params: Params | None, dtype, device) -> _Prepared:
    owner = experiment if params is None else params
    versions = None if params is None else tensor_versions(vars(params).values())
    stamp = (weakref.ref(experiment), dtype, device, versions)
    hit = _prepared.get(owner)
    if hit is not None and hit[0] == stamp:
        return hit[1]
    prepared = _Prepared(resolve_params(experiment, params, dtype=dtype, device=device))
    if params is None or versions is not None:
        _prepared[owner] = (stamp, prepared)
    return prepared


def _load_layers(calibration) -> ChipLayers | None:
    """The chip layers of ``calibration``: None, a ChipLayers, or a path (``ChipLayers.load``)."""
    if calibration is None or isinstance(calibration, ChipLayers):
        return calibration
    if not isinstance(calibration, (str, os.PathLike)):
        raise ParameterError(f"calibration must be a ChipLayers or the path of a calibration file, not "
                             f"{type(calibration).__name__}; e.g. calibration='calib/calibration.json'.")
    return ChipLayers.load(calibration)


def _needs_grad(p: Params, *weights: torch.Tensor | None) -> bool:
    """Whether a run must keep gradients: grad mode is on and a parameter or weight requires it."""
    return torch.is_grad_enabled() and (any(getattr(p, f).requires_grad for f in p.__dataclass_fields__)
                                        or any(w is not None and w.requires_grad for w in weights))


@functools.lru_cache(maxsize=None)
def _weight_batch(b: int, *weights: torch.Tensor | None) -> int:
    """The batch size B of a run whose weights may carry their own (B, E) batch."""
    for w in weights:
        if w is None or w.ndim == 1:
            continue
        if w.ndim != 2 or (w.shape[0] != b and 1 not in (b, w.shape[0])):
            raise ParameterError(f"weights of shape {tuple(w.shape)} do not fit B = {b} parameter sets; give "
                                 f"(E,) or (B, E) with E the number of connections.")
        b = max(b, w.shape[0])
    return b


def _fused_available(device: torch.device) -> bool:
    if device.type == "cuda":
        return importlib.util.find_spec("triton") is not None
    return importlib.util.find_spec("numba") is not None


def _fused_missing(device: torch.device) -> str:
    if device.type == "cuda":
        return "the fused CUDA engine needs triton (pip install triton); or use engine='eager'."
    return "the fused CPU engine needs numba (pip install numba); or use engine='eager'."


assert STATE_NAMES[:6] == ("Isoma_mem", "Isoma_ahp", "Inmda", "Iampa", "Igaba_a", "Igaba_b")
