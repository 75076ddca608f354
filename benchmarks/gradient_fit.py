"""Cost of the gradient path against the fused forward, and which gradients are useful.

    python benchmarks/gradient_fit.py [--neurons 256] [--check 8]

Part 1, per protocol (f-I: 12 levels x 5000 steps; kernels: 8500 steps), one core at once:
the fused forward without gradients; the same run with parameters that require grad
(``surrogate="none"``, ``Isoma_mem`` traced every step for the crossing-time rates of
``fitting/spike_time.py``) and the backward of the loss the gradient fitter uses (the
fused CPU forward-mode gradients, one tangent per fitted parameter row); neuron-steps/s =
sets x neurons x steps / time. The first call of each engine compiles (numba, cached on
disk): every row is the best of ``--repeat`` runs after one warm-up.

Part 2, on ``--check`` neurons of the f-I curve: d rate / d ln Isoma_dpi_tau at one level by
the surrogate raster (fast_sigmoid, straight_through), by the crossing times, and by central
finite differences (h = 0.1, without adaptation so that the ISI is a smooth function;
with the table's adaptation, h = 1e-3).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from dynacal import get_backend
from dynacal.features import rate as raster_rate
from dynacal.fitting.spike_time import isi_rate
from dynacal.protocols import FICurve, SynapticKernels


def _best(fn, repeat: int) -> float:
    fn()  # warm-up (compilation)
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def cost_rows(n: int, repeat: int) -> list[tuple]:
    rows = []
    fused = get_backend("torch", engine="fused")
    grad = get_backend("torch", surrogate="none")
    for protocol, names in ((FICurve(), ("Isoma_dpi_tau", "alpha_soma")),
                            (SynapticKernels(), ("Iampa_w0", "Iampa_tau", "Isoma_dpi_tau"))):
        exp = protocol.experiment(f"core0:{n}")
        sets, steps = max(exp.n_conditions, 1), exp.n_steps
        work = sets * n * steps

        def forward():
            with torch.no_grad():
                protocol.run_experiment(fused, exp, exp.network.params())

        state = {}

        def forward_grad():
            leaves = {k: torch.full((1, n), float(getattr(exp.network.params(), k).reshape(-1)[0]),
                                    dtype=torch.float64, requires_grad=True) for k in names}
            params = exp.network.params(leaves)
            rec = grad.run(exp, params, record=("Isoma_mem",) + protocol.traces(), record_every=1)
            r, _ = isi_rate(rec, params.Isoma_th)
            loss = torch.nan_to_num(r).sum() + sum(torch.log(rec.traces[t]).mean() for t in protocol.traces())
            state["loss"], state["leaves"], state["engine"] = loss, leaves, rec.metadata.get("engine")

        def backward():
            forward_grad()
            state["loss"].backward()

        t_fwd = _best(forward, repeat)
        t_fg = _best(forward_grad, repeat)
        t_fb = _best(backward, repeat)
        rows.append((protocol.name, sets, steps, n, len(names), t_fwd, work / t_fwd, t_fg, t_fb - t_fg, t_fb,
                     work / t_fb, t_fb / t_fwd, state["engine"]))
    return rows


def check_rows(n: int) -> list[tuple]:
    fi = FICurve(levels=tuple(np.geomspace(300e-12, 3e-9, 4)), duration=0.3, settle=0.05)
    exp = fi.experiment(f"core0:{n}")
    taus = 5e-12 * np.geomspace(0.6, 2.0, n)
    level, start = 2, int(round(fi.settle / fi.dt))
    rows = []
    for ahp_w, h in ((1e-12, 1e-3), (0.0, 0.1)):
        def run(lx, surrogate, grad):
            x = torch.tensor(lx, requires_grad=grad)
            p = exp.network.params({"Isoma_dpi_tau": torch.exp(x), "Isoma_ahp_w": ahp_w})
            rec = get_backend("torch", surrogate=surrogate).run(exp, p, record=("Isoma_mem",), record_every=1)
            return x, p, rec

        lx = np.log(taus)[None]
        out = {}
        for sur in ("fast_sigmoid", "straight_through"):
            x, p, rec = run(lx, sur, True)
            raster_rate(rec.raster, rec.dt, start)[level].sum().backward()
            out[sur] = x.grad.numpy()[0]
        x, p, rec = run(lx, "none", True)
        isi_rate(rec, p.Isoma_th, start)[0][level].sum().backward()
        out["crossing"] = x.grad.numpy()[0]
        with torch.no_grad():
            hi = fi.features(run(lx + h, "none", False)[2])["rate"][0, :, level]
            lo = fi.features(run(lx - h, "none", False)[2])["rate"][0, :, level]
        out["fd"] = (hi - lo) / (2 * h)
        for i in range(n):
            rows.append((f"{ahp_w * 1e12:g} pA", i, out["fd"][i], out["crossing"][i], out["fast_sigmoid"][i],
                         out["straight_through"][i]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--neurons", type=int, default=256)
    ap.add_argument("--check", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, float64, CPU")
    print("\n| protocol | sets | steps | neurons | params | fused fwd s | fused n-steps/s | grad fwd s | "
          "bwd s | fwd+bwd s | fwd+bwd n-steps/s | x fused | engine |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in cost_rows(args.neurons, args.repeat):
        print(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} | {r[4]} | {r[5]:.3f} | {r[6]:.3g} | {r[7]:.3f} | {r[8]:.3f} | "
              f"{r[9]:.3f} | {r[10]:.3g} | {r[11]:.1f} | {r[12]} |")
    print("\nd rate / d ln Isoma_dpi_tau (Hz), f-I level 2 (about 1 nA):")
    print("| Isoma_ahp_w | neuron | finite diff | crossing time | fast_sigmoid | straight_through |")
    print("|---|---|---|---|---|---|")
    for r in check_rows(args.check):
        print(f"| {r[0]} | {r[1]} | {r[2]:.4g} | {r[3]:.4g} | {r[4]:.3g} | {r[5]:.3g} |")


if __name__ == "__main__":
    main()
