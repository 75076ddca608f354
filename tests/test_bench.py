"""``dynacal.bench.run_benchmarks``: the cases run in order and report progress (the cases
themselves are measured by ``dynacal bench``; here they are replaced by stand-ins)."""

from __future__ import annotations

import dynacal.bench as bench


def test_progress_names_every_case_before_it_runs(monkeypatch):
    ran, seen = [], []

    def case(name, **extra):
        def run(*args, **kwargs):
            ran.append(name)
            return [{"name": name, "backend": "torch fused", "neuron_steps_per_s": 1.0, **extra}]
        return run

    monkeypatch.setattr(bench, "bench_jit_warmup", case("jit"))
    monkeypatch.setattr(bench, "bench_seed", case("seed"))
    monkeypatch.setattr(bench, "bench_scale", case("scale 2000"))
    monkeypatch.setattr(bench, "bench_batch", lambda n_sets, n, steps, scale_row: case(f"batch vs {scale_row['name']}")())
    monkeypatch.setattr(bench, "bench_gradient", case("gradient"))
    monkeypatch.setattr(bench, "bench_gradient_fused", case("gradient fused"))
    monkeypatch.setattr(bench, "bench_memory", case("memory"))

    def progress(name, done, total):
        seen.append((name, done, total, len(ran)))

    rows = bench.run_benchmarks(quick=True, progress=progress)
    assert ran == ["jit", "seed", "scale 2000", "batch vs scale 2000", "gradient", "gradient fused", "memory"]
    assert [r["name"] for r in rows] == ran
    # each case is announced before it runs (done == cases finished so far), then "" at the end
    assert [s[1] for s in seen] == list(range(8)) and all(s[2] == 7 for s in seen)
    assert all(s[1] == s[3] for s in seen)
    assert seen[0][0] == "jit warm-up" and seen[2][0] == "scale 2000x2000" and seen[-1][0] == ""
