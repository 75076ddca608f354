"""The benchmark suite of the simulator (``dynacal bench`` and ``benchmarks/run.py``).

Every speed figure is a ratio against a reference run *in the same process*, on the same
input: the seed experiment against Brian2's runtime target, the 10,000-neuron network
against Brian2's compiled cpp_standalone binary, the batch against the scale case, the
gradient path against the plain eager loop. Nothing here asserts a time: it measures and
reports. One record per case: name, backend, wall seconds, neuron-steps per second and the
ratio to its reference.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from typing import Callable

import torch

from .backends.torch_sim import TorchBackend
from .bench_cases import batch_experiment, scale_experiment, seed_experiment

__all__ = ["run_benchmarks", "format_table"]

log = logging.getLogger(__name__)


def _time(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time (s) of ``repeat`` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _record(name, backend, wall, neuron_steps, reference=None, ratio=None, **extra) -> dict:
    return {"name": name, "backend": backend, "wall_s": wall,
            "neuron_steps_per_s": neuron_steps / wall if wall > 0 else None,
            "reference": reference, "ratio": ratio, **extra}


def _have_brian2() -> bool:
    return importlib.util.find_spec("brian2") is not None


def bench_seed(repeat: int) -> list[dict]:
    """1 neuron x 1000 steps, four Poisson inputs, all six traces: fused torch vs Brian2 runtime."""
    exp = seed_experiment()
    steps = exp.n_steps
    fused = TorchBackend(engine="fused")
    t_fused = _time(lambda: fused.run(exp, record="all"), repeat)
    eager = TorchBackend(engine="eager")
    t_eager = _time(lambda: eager.run(exp, record="all"), 1)
    rows = []
    t_ref = None
    if _have_brian2():
        from .backends.brian2_ref import Brian2Backend
        b2 = Brian2Backend("runtime")
        t_ref = _time(lambda: b2.run(exp, record="all"), 1)
        rows.append(_record("seed", "brian2 runtime", t_ref, steps, "brian2 runtime", 1.0))
    rows.append(_record("seed", "torch eager", t_eager, steps, "brian2 runtime" if t_ref else None,
                        t_ref / t_eager if t_ref else None))
    rows.append(_record("seed", "torch fused", t_fused, steps, "brian2 runtime" if t_ref else None,
                        t_ref / t_fused if t_ref else None))
    return rows


def bench_scale(n_neurons: int, n_steps: int, repeat: int) -> list[dict]:
    """N independent neurons, spikes only: fused torch vs Brian2 cpp_standalone's binary."""
    exp = scale_experiment(n_neurons, n_steps)
    ns = n_neurons * n_steps
    fused = TorchBackend(engine="fused")
    t_fused = _time(lambda: fused.run(exp), repeat)
    rows = []
    t_ref = None
    if _have_brian2():
        from .backends.brian2_ref import Brian2Backend
        b2 = Brian2Backend("cpp_standalone")
        t0 = time.perf_counter()
        b2.run(exp)  # builds (compiles) and runs once
        t_first = time.perf_counter() - t0
        # Other parameter values: the compiled binary is rerun with run_args, no compile.
        p2 = exp.network.params({"Iampa_w0": "90 pA"})
        t0 = time.perf_counter()
        b2.run(exp, p2)
        t_ref = time.perf_counter() - t0
        rows.append(_record(f"scale {n_neurons}", "brian2 cpp_standalone", t_ref, ns, "brian2 cpp_standalone", 1.0,
                            first_run_with_compile_s=t_first))
    rows.append(_record(f"scale {n_neurons}", "torch fused", t_fused, ns,
                        "brian2 cpp_standalone" if t_ref else None, t_ref / t_fused if t_ref else None))
    return rows


def bench_batch(n_sets: int, n_neurons: int, n_steps: int, scale_row: dict) -> list[dict]:
    """B candidate sets x N neurons in one call; ratio of throughput to the scale case."""
    exp, p = batch_experiment(n_sets, n_neurons, n_steps)
    fused = TorchBackend(engine="fused")
    t = _time(lambda: fused.run(exp, p), 1)
    row = _record(f"batch {n_sets}x{n_neurons}", "torch fused", t, n_sets * n_neurons * n_steps, scale_row["name"])
    row["ratio"] = row["neuron_steps_per_s"] / scale_row["neuron_steps_per_s"]
    return [row]


def bench_gradient(n_neurons: int, n_steps: int) -> list[dict]:
    """Forward + backward (eager, surrogate) vs the plain eager forward loop without grad."""
    exp = scale_experiment(n_neurons, n_steps, seed=3)
    eager = TorchBackend(engine="eager")
    with torch.no_grad():
        t_fwd = _time(lambda: eager.run(exp), 1)

    def forward_backward():
        w0 = torch.full((1, n_neurons), 100e-12, dtype=torch.float64, requires_grad=True)
        tau = torch.full((1, n_neurons), 5e-12, dtype=torch.float64, requires_grad=True)
        rec = eager.run(exp, exp.network.params({"Iampa_w0": w0, "Isoma_dpi_tau": tau}), record=["Isoma_mem"],
                        record_every=10)
        loss = rec.raster.sum() + torch.log(rec.traces["Isoma_mem"]).mean()
        loss.backward()

    t_fb = _time(forward_backward, 1)
    ns = n_neurons * n_steps
    return [_record(f"gradient {n_neurons}x{n_steps}", "torch eager (no grad)", t_fwd, ns, "torch eager (no grad)", 1.0),
            _record(f"gradient {n_neurons}x{n_steps}", "torch eager fwd+bwd", t_fb, ns, "torch eager (no grad)",
                    t_fb / t_fwd, note="ratio = time / reference time (cost of the gradient)")]


#: The per-neuron parameters of the fused-gradient case (issue 11: 8 per neuron).
GRADIENT_PARAMS = ("Iampa_w0", "Inmda_w0", "Igaba_b_w0", "Isoma_dpi_tau", "Isoma_th", "Isoma_ahp_w", "Iampa_tau",
                   "Isoma_ahp_tau")


def bench_gradient_fused(n_neurons: int, n_steps: int, repeat: int = 3) -> list[dict]:
    """Forward + gradient of 8 per-neuron parameters (float64, surrogate fast_sigmoid, loss
    of the raster and of a trace): the fused CPU gradient against eager autograd on the
    same input and loss. ratio = eager time / fused time."""
    exp = scale_experiment(n_neurons, n_steps, seed=3)
    base = exp.network.params()

    def forward_backward(engine):
        leaves = [getattr(base, name).expand(1, n_neurons).clone().requires_grad_(True) for name in GRADIENT_PARAMS]
        rec = TorchBackend(engine=engine).run(exp, base.replace(**dict(zip(GRADIENT_PARAMS, leaves))),
                                              record=["Isoma_mem"], record_every=10)
        (rec.raster.sum() + torch.log(rec.traces["Isoma_mem"]).mean()).backward()
        return rec.metadata["engine"]

    assert forward_backward("fused") == "fused"
    t_fused = _time(lambda: forward_backward("fused"), repeat)
    t_eager = _time(lambda: forward_backward("eager"), 1)
    ns, label = n_neurons * n_steps, f"grad8 {n_neurons}x{n_steps}"
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return [_record(label, "torch eager fwd+bwd (8 params)", t_eager, ns, "torch eager fwd+bwd (8 params)", 1.0),
            _record(label, "torch fused fwd+grad (8 params)", t_fused, ns, "torch eager fwd+bwd (8 params)",
                    t_eager / t_fused, note=f"load average {load:.2f}" if load is not None else "")]


_MEMORY_SCRIPT = """
import resource, sys, json, tracemalloc
sys.path[:0] = {path!r}
from dynacal.bench_cases import scale_experiment
from dynacal.backends.torch_sim import TorchBackend
exp = scale_experiment({n}, {steps})
TorchBackend(engine="fused").run(scale_experiment(16, 10))  # JIT load outside the measurement
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
tracemalloc.start()
rec = TorchBackend(engine="fused").run(exp, record={record!r}, record_every={every})
_, peak_alloc = tracemalloc.get_traced_memory()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{"run_peak_alloc_MiB": peak_alloc / 2**20, "process_peak_rss_MiB": peak / 1024,
                  "rss_before_run_MiB": base / 1024}}))
"""


def bench_memory(n_neurons: int, n_steps: int) -> list[dict]:
    """Memory of the scale case in a fresh process, with and without traces (all six
    traces of every neuron, every 10th step): the peak of the run's own allocations
    (numpy and Python, via tracemalloc) and the process's peak resident size (which
    includes torch, numba and the experiment)."""
    rows = []
    for record, every in (((), 1), ("all", 10)):
        code = _MEMORY_SCRIPT.format(path=sys.path, n=n_neurons, steps=n_steps, record=record, every=every)
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        mem = json.loads(out.stdout.strip().splitlines()[-1])
        label = "spikes only" if not record else f"all traces every {every} steps"
        rows.append({"name": f"memory {n_neurons}x{n_steps}", "backend": f"torch fused, {label}",
                     "wall_s": None, "neuron_steps_per_s": None, "reference": None, "ratio": None, **mem})
    return rows


def bench_jit_warmup() -> list[dict]:
    """Time to the first result of the fused engine in a fresh process: with an empty
    numba cache (the JIT compiles) and with the on-disk cache that the first run left."""
    import tempfile
    code = ("import time, sys; sys.path[:0]=%r\n"
            "from dynacal.bench_cases import seed_experiment\n"
            "from dynacal.backends.torch_sim import TorchBackend\n"
            "e=seed_experiment(); t1=time.perf_counter(); TorchBackend(engine='fused').run(e, record='all');"
            "print(time.perf_counter()-t1)" % sys.path)
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        for label in ("empty cache (JIT compile)", "disk cache"):
            out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
            rows.append({"name": "jit warm-up", "backend": f"torch fused, fresh process, {label}",
                         "wall_s": float(out.stdout.strip().splitlines()[-1]), "neuron_steps_per_s": None,
                         "reference": None, "ratio": None})
    return rows


def run_benchmarks(quick: bool = False, progress: Callable[[str, int, int], None] | None = None) -> list[dict]:
    """Run every case; ``quick`` shrinks the sizes (for CI smoke runs).

    Args:
        quick: small sizes (about a minute in all, most of it Brian2's compile).
        progress: called as ``progress(case, done, total)`` before each case and once at
            the end with ``case = ""`` (the CLI draws a progress bar from it).

    Returns:
        One record per measurement (``format_table`` prints them).
    """
    torch.manual_seed(0)
    n, steps = (2000, 2000) if quick else (10_000, 10_000)
    n_sets, batch_steps = (64, 2000) if quick else (256, 10_000)
    grad_steps = 500 if quick else 5000
    rows: list[dict] = []

    def batch() -> list[dict]:  # its ratio is against the fused scale case measured just before
        fused = [r for r in rows if r["name"] == f"scale {n}" and r["backend"] == "torch fused"][0]
        return bench_batch(n_sets, 256, batch_steps, fused)

    cases = [("jit warm-up", bench_jit_warmup),
             ("seed", lambda: bench_seed(repeat=20 if quick else 100)),
             (f"scale {n}x{steps}", lambda: bench_scale(n, steps, repeat=1 if quick else 3)),
             (f"batch {n_sets}x256x{batch_steps}", batch),
             (f"gradient 256x{grad_steps}", lambda: bench_gradient(256, grad_steps)),
             (f"gradient fused 256x{grad_steps}", lambda: bench_gradient_fused(256, grad_steps)),
             (f"memory {n}x{steps}", lambda: bench_memory(n, steps))]
    for k, (label, case) in enumerate(cases):
        if progress:
            progress(label, k, len(cases))
        log.info("bench: %s", label)
        rows += case()
    if progress:
        progress("", len(cases), len(cases))
    return rows


def _fmt(value, spec) -> str:
    return format(value, spec) if value is not None else "-".rjust(int(spec.split(".")[0]))


def format_table(rows: list[dict]) -> str:
    """The records as a plain-text table."""
    head = f"{'case':<22} {'backend':<54} {'wall (s)':>10} {'neuron-steps/s':>15} {'ratio':>9}  reference / notes"
    lines = [head, "-" * len(head)]
    for r in rows:
        notes = r.get("reference") or ""
        for key in ("first_run_with_compile_s", "run_peak_alloc_MiB", "process_peak_rss_MiB", "note"):
            if key in r:
                notes += f" {key}={r[key]:.4g}" if isinstance(r[key], float) else f" {key}={r[key]}"
        lines.append(f"{r['name']:<22} {r['backend']:<54} {_fmt(r['wall_s'], '10.4g')} "
                     f"{_fmt(r['neuron_steps_per_s'], '15.3g')} {_fmt(r['ratio'], '9.3g')}  {notes.strip()}")
    return "\n".join(lines)


if __name__ == "__main__":  # pragma: no cover
    quick = "--quick" in sys.argv
    result = run_benchmarks(quick)
    print(format_table(result))
    if os.environ.get("DYNACAL_BENCH_JSON"):
        with open(os.environ["DYNACAL_BENCH_JSON"], "w") as fh:
            json.dump(result, fh, indent=1)
