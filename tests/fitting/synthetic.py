"""Synthetic targets for the fitting tests: small chips with known parameters, made by the torch backend."""

from __future__ import annotations

import functools

import numpy as np

from dynacal import get_backend
from dynacal.protocols import FICurve, Refractory

N = 12
NEURONS = f"core0:{N}"
#: the hidden chip: core values and per-neuron factors
TRUTH = {"Isoma_dpi_tau": 8e-12, "alpha_soma": 5.0, "soma_refP": 4e-3}
FI = FICurve(duration=0.3, settle=0.05, levels=tuple(float(x) for x in np.geomspace(1e-10, 1e-8, 10)))
REFRACTORY = Refractory()


@functools.lru_cache(maxsize=None)
def factors(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"Isoma_dpi_tau": rng.lognormal(0, 0.15, N), "alpha_soma": rng.lognormal(0, 0.12, N)}


def values(core=TRUTH, fac=None) -> dict[str, np.ndarray]:
    fac = factors() if fac is None else fac
    return {k: v * fac.get(k, 1.0) for k, v in core.items()}


@functools.lru_cache(maxsize=None)
def target(dc_scale: float = 1.0, silent: int | None = None, board: bool = False) -> dict:
    """{"fi": Recording, "refractory": Recording} of the hidden chip (spikes only).

    Args:
        dc_scale: the f-I DC the chip got is dc_scale x nominal (as a board's DAC).
        silent: a neuron made silent (a huge leak), or None.
        board: mark the recordings as a board's (metadata["board"]["codes"]).
    """
    be = get_backend("torch")
    v = values()
    if silent is not None:
        v["Isoma_dpi_tau"] = v["Isoma_dpi_tau"].copy()
        v["Isoma_dpi_tau"][silent] = 5e-8
    net = FI.experiment(NEURONS).network
    out = {}
    for proto in (FI, REFRACTORY):
        exp = proto.experiment(NEURONS)
        L = exp.n_conditions
        cand = {k: np.array(np.broadcast_to(np.asarray(x), (N,))) for k, x in v.items()}
        if proto is FI and dc_scale != 1.0:
            # the chip's DC per condition: scaled nominal levels, as L candidate sets
            import dataclasses
            run_exp = dataclasses.replace(exp, conditions={})
            cand = {k: np.tile(x, (L, 1)) for k, x in cand.items()}
            cand["Isoma_const"] = (dc_scale * np.asarray(FI.levels)).reshape(L, 1)
            rec = be.run(run_exp, net.params(cand))
            rec.experiment = exp
            rec.metadata["protocol"] = exp.protocol
        else:
            rec = proto.run_experiment(be, exp, net.params(cand))
        rec.unstable = None  # a chip does not say
        if board:
            rec.metadata["board"] = {"codes": [{"0,0": {}} for _ in range(rec.batch)]}
        out[proto.name] = rec
    return out
