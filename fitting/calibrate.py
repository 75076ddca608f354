"""``calibrate(target, space, options) -> CalibrationResult``: the one call behind every fitter.

Fitters (``CalibrationOptions.fitter``):

- ``"hybrid"`` (default): the lab order (``protocols.ORDER``): core values by Optuna stage by
  stage (leak & gain from ``fi``, refractory period from ``refractory``, adaptation, synapses
  from ``kernels``, weights from ``rate_transfer``), each stage scoring only the protocols up
  to its own, started from the closed-form first estimates (``fitting.estimates``) where the
  target gives them; then every neuron's mismatch factors by the per-neuron search
  (``optuna_fit.neuron_search``); then a joint refinement: all core values in a window of
  x/1.5 around the best on every protocol with the factors held, and the factors once more.
- ``"optuna"``: one Optuna stage over all core values (and scales) on every protocol, then the
  per-neuron search.
- ``"gradient"``: ``fitting.gradient.fit_gradient`` (helper "grad"), where present.

After the per-neuron stage the factors are re-centred (geometric mean 1 over the neurons with
data, the core value times that mean): core x factor is all the data see, and this is the
convention of the twin's and a chip's mismatch (log-normal around 1).

**Budget.** ``budget_s`` (wall seconds) is shared out: core stages 35 %, per-neuron 35 %, joint
refinement 25 %, the rest for re-scoring; a stage starts no batch it cannot finish in time
(the last batch's time). A budget that cannot hold one evaluation of the defaults raises
:class:`~dynacal.errors.CalibrationFailed` with the time one takes. ``n_trials`` /
``generations`` make the stages deterministic (tests, resume).

**Winner.** The ``top_k`` best distinct candidates of the last core stage, each with the
fitted factors, are re-scored on every protocol and, for targets with repeats, against every
repeat (median over repeats, ``noise.robust_loss``); the lowest wins, so a lucky trial never
becomes the calibration.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from dynacal.errors import CalibrationFailed, ParameterError

from ._stages import Run, hybrid_stages, optuna_stages
from .objective import Objective
from .space import SearchSpace

__all__ = ["CalibrationOptions", "calibrate", "FITTERS"]

log = logging.getLogger(__name__)
FITTERS = ("hybrid", "optuna", "gradient")


@dataclasses.dataclass(frozen=True)
class CalibrationOptions:
    """How to calibrate (module docstring).

    Attributes:
        fitter: ``"hybrid"``, ``"optuna"`` or ``"gradient"``.
        sampler: Optuna sampler, ``"tpe"``, ``"cmaes"`` or ``"gp"``.
        storage: Optuna storage URL; None: ``sqlite:///<out>/study.db`` (in memory without ``out``).
        study: study name prefix (default ``"dynacal"``; stages add ``.<stage>``).
        budget_s: wall seconds for the whole calibration.
        batch: candidates per batched run (trials per ask, candidates per neuron).
        n_trials: COMPLETE trials per core stage (None: by the budget).
        generations: per-neuron search generations per stage (None: by the budget).
        seed: seeds every sampler and draw.
        heldout: protocols kept out of the fit (scored for the result's quality).
        resume: continue the studies and checkpoints in ``out`` / ``storage``.
        weights: objective term weights (``objective.DEFAULT_WEIGHTS`` for the rest).
        progress: tqdm bar on stderr (where stderr is a terminal).
        top_k: best candidates re-scored before the winner is named.
        reduce: robust reduction over neurons of the core stages (``"median"``, ``"trimmed"``).
    """

    fitter: str = "hybrid"
    sampler: str = "tpe"
    storage: str | None = None
    study: str | None = None
    budget_s: float = 600.0
    batch: int = 16
    n_trials: int | None = None
    generations: int | None = None
    seed: int = 0
    heldout: tuple[str, ...] = ("heldout",)
    resume: bool = False
    weights: Mapping[str, float] | None = None
    progress: bool = True
    top_k: int = 5
    reduce: str = "median"

    def __post_init__(self):
        from .optuna_fit import SAMPLERS  # noqa: PLC0415

        if self.fitter not in FITTERS:
            raise ParameterError(f"fitter = {self.fitter!r}: give one of {FITTERS}.")
        if self.sampler not in SAMPLERS:
            raise ParameterError(f"sampler = {self.sampler!r}: give one of {SAMPLERS}.")
        if not (isinstance(self.budget_s, (int, float)) and self.budget_s > 0):
            raise ParameterError(f"budget_s = {self.budget_s!r} s must be a number of seconds > 0, e.g. 600.")
        for name in ("batch", "top_k"):
            if int(getattr(self, name)) < 1:
                raise ParameterError(f"{name} = {getattr(self, name)} must be an integer >= 1.")
        for name in ("n_trials", "generations"):
            v = getattr(self, name)
            if v is not None and int(v) < 1:
                raise ParameterError(f"{name} = {v} must be an integer >= 1 or None (by the budget).")
        object.__setattr__(self, "heldout", tuple(self.heldout))

    def to_dict(self) -> dict:
        return {f.name: (dict(v) if isinstance(v := getattr(self, f.name), Mapping) else v)
                for f in dataclasses.fields(self)}


def _target(target: Any, heldout: tuple[str, ...]):
    from .target import Target  # noqa: PLC0415

    if isinstance(target, (str, Path)):
        return Target.load(target, heldout=heldout)
    return target


def _storage(options: CalibrationOptions, out: Path | None) -> str | None:
    if options.storage is not None:
        return options.storage
    return f"sqlite:///{(out / 'study.db').resolve()}" if out is not None else None


def _check_fresh(options: CalibrationOptions, out: Path | None, storage: str | None) -> None:
    """Refuse to mix a new calibration into an old study (resume=False)."""
    if options.resume or storage is None:
        return
    import optuna  # noqa: PLC0415

    try:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage=storage)]
    except Exception:  # noqa: BLE001 - a storage that cannot list: nothing to mix into
        return
    prefix = options.study or "dynacal"
    clash = [n for n in names if n == prefix or n.startswith(prefix + ".")]
    if clash:
        raise ParameterError(f"the storage {storage} already holds studies {clash}; pass resume=True (--resume) to "
                             f"continue them, or another out folder / study name.")
    if out is not None and any(out.glob("neurons.*.npz")):
        raise ParameterError(f"{out} holds the checkpoints of another calibration; pass resume=True or another out.")


def calibrate(target: Any, space: SearchSpace | None = None, options: CalibrationOptions | None = None, *,
              out: str | Path | None = None):
    """Calibrate the simulator to a target (module docstring).

    Args:
        target: a :class:`~dynacal.fitting.target.Target`, a folder of recordings, or a mapping
            name -> Recording.
        space: the SearchSpace; None: ``SearchSpace.default(target)``.
        options: :class:`CalibrationOptions`; None: the defaults.
        out: folder for the study (SQLite), checkpoints and ``calibration.json``; None: nothing written.

    Returns:
        :class:`~dynacal.fitting.result.CalibrationResult` (saved in ``out`` when given).

    Raises:
        RecordingError: an empty or unrelated target.
        ParameterError: bad options, a study that exists without ``resume``.
        CalibrationFailed: a budget too small for one evaluation.
    """
    options = options or CalibrationOptions()
    started, wall0 = time.time(), time.monotonic()
    target = _target(target, options.heldout)
    recordings = _fit_recordings(target, options.heldout)
    space = space or SearchSpace.default(recordings)
    out = Path(out) if out is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    storage = _storage(options, out)
    _check_fresh(options, out, storage)
    deadline = wall0 + options.budget_s
    objective = Objective(recordings, space, weights=options.weights)
    _check_budget(objective, space, options, deadline)
    run = Run(target, recordings, space, objective, options, storage, out, deadline)
    if options.fitter == "gradient":
        winner = _gradient(run)
    else:
        (hybrid_stages if options.fitter == "hybrid" else optuna_stages)(run)
        winner = run.rescore()
    run.close()
    from ._build import build_result  # noqa: PLC0415

    result = build_result(run, winner, started=started, wall_s=time.monotonic() - wall0)
    if out is not None:
        result.save(out)
    return result


def _fit_recordings(target: Any, heldout: tuple[str, ...]) -> dict:
    from ._target_view import recordings_of  # noqa: PLC0415

    recs = recordings_of(target)
    return {k: v for k, v in recs.items() if k not in heldout}


def _check_budget(objective: Objective, space: SearchSpace, options: CalibrationOptions, deadline: float) -> None:
    """One evaluation of the defaults, timed: a budget that cannot hold it is refused."""
    t0 = time.monotonic()
    with torch.no_grad():
        objective.evaluate(space.defaults()["core"])
    one = time.monotonic() - t0
    if time.monotonic() > deadline:
        raise CalibrationFailed(f"budget_s = {options.budget_s:g} s is too small: one evaluation of the defaults "
                                f"takes {one:.2f} s on this machine; give budget_s of at least {10 * one:.0f} s "
                                f"(a useful fit needs hundreds of evaluations).")


def _gradient(run: Run) -> dict:
    try:
        from .gradient import fit_gradient  # noqa: PLC0415
    except ImportError as exc:
        raise ParameterError("fitter = 'gradient' needs dynacal.fitting.gradient (fit_gradient), which this "
                             "install does not have yet; use fitter='hybrid' or 'optuna'.") from exc
    start = dict(run.space.defaults()["core"])
    fit = fit_gradient(run.objective, run.space, start, steps=run.options.n_trials or 100, lr=0.05)
    core = {k: float(np.asarray(torch.as_tensor(v).detach()).reshape(-1)[0]) for k, v in fit.core.items()}
    factors = {k: np.asarray(torch.as_tensor(v).detach()).reshape(-1) for k, v in (fit.factors or {}).items()}
    scales = {k: float(np.asarray(torch.as_tensor(v).detach()).reshape(-1)[0]) for k, v in (fit.scales or {}).items()}
    run.history.append({"stage": "gradient", "steps": len(fit.history)})
    return run.score_winner(core, factors, scales)
