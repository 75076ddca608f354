"""The Brian2 reference backend against the torch simulator, on the contract of dpi-model.md.

Agreement criterion (issue 2): identical spike events (set, neuron, step), and every
recorded trace within a relative tolerance, measured elementwise as

    |a - b| / max(|a|, |b|, 1e-15 A)

over every sample, set and neuron (1e-15 A, a thousandth of the dark current I0, only keeps
0 against 0 defined: Isoma_ahp starts at exactly 0). float64 torch (eager) vs Brian2:
1e-9; float32 torch vs Brian2 float64: 1e-5.

Brian2 runs are shared by module-scoped fixtures and several cases ride in one Brian2
model as B parameter sets, while torch runs every set on its own, so the comparison also
checks that Brian2's B copies are independent.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

pytest.importorskip("brian2")

from dynacal.backends.brian2_ref import Brian2Backend, equations  # noqa: E402
from dynacal.backends.registry import get_backend  # noqa: E402
from dynacal.backends.torch_sim import TorchBackend  # noqa: E402
from dynacal.chip import Chip  # noqa: E402
from dynacal.errors import BackendUnavailable, ParameterError  # noqa: E402
from dynacal.experiment import Experiment  # noqa: E402
from dynacal.params import PARAMETERS, Params  # noqa: E402
from dynacal.seed import seed_experiment as notebook_experiment  # noqa: E402
from dynacal.stimulus import Stimulus, poisson  # noqa: E402

pytestmark = pytest.mark.brian2

DT, T = 1e-4, 1000  # 100 us, 100 ms: the seed notebook
FLOOR = 1e-15       # A, see the module docstring
TOL64, TOL32 = 1e-9, 1e-5
pA = 1e-12


def max_rel(a, b) -> float:
    """Largest elementwise relative difference (criterion of the module docstring)."""
    a = np.asarray(a.detach().double() if isinstance(a, torch.Tensor) else a, dtype=np.float64)
    b = np.asarray(b.detach().double() if isinstance(b, torch.Tensor) else b, dtype=np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    if a.size == 0:
        return 0.0
    return float(np.max(np.abs(a - b) / np.maximum(np.maximum(np.abs(a), np.abs(b)), FLOOR)))


def assert_agree(ref, other, tol: float, sets=None) -> dict[str, float]:
    """Same spike events and traces within ``tol``; ``sets`` picks batch entries of ``other``
    (which then has those sets in that order). Returns the max relative difference per trace."""
    sel = np.arange(other.batch) if sets is None else np.asarray(sets)
    keep = np.isin(other.spike_batch, sel)
    remap = {int(s): k for k, s in enumerate(sel)}
    ob = np.array([remap[int(s)] for s in other.spike_batch[keep]], dtype=np.int64)
    got = sorted(zip(ob, other.spike_neuron[keep], other.spike_step[keep]))
    want = sorted(zip(ref.spike_batch, ref.spike_neuron, ref.spike_step))
    assert got == want, f"spike events differ: {ref.backend} {want[:10]}... vs {other.backend} {got[:10]}..."
    assert set(ref.traces) == set(other.traces)
    diffs = {name: max_rel(ref.traces[name], other.traces[name][:, sel]) for name in ref.traces}
    bad = {k: v for k, v in diffs.items() if v > tol}
    assert not bad, f"traces differ by more than {tol:g} relative: {bad}"
    return diffs


def _report(case: str, diffs: dict[str, float]) -> None:
    print(f"\n{case}: " + ", ".join(f"{k} {v:.2e}" for k, v in diffs.items()))


# --- experiments ---------------------------------------------------------------------------

def seed_experiment() -> Experiment:
    """The seed notebook (:mod:`dynacal.seed`): 1 neuron on Core_1, four 80 Hz Poisson inputs
    (NMDA, AMPA, GABA_A, GABA_B) with weights 10/5/1/2, seed 0, 100 ms at 100 us."""
    return notebook_experiment(seed=0, duration=T * DT, dt=DT)


#: The seed experiment's parameter sets: the seed itself; base weights x3 (5-20 spikes);
#: base weights / 10 (sub-threshold).
DRIVE_SETS = ("seed", "strong", "subthreshold")
DRIVE_W0 = (100 * pA, 300 * pA, 10 * pA)


def drive_params(exp: Experiment, w0=DRIVE_W0) -> Params:
    w = torch.tensor(w0, dtype=torch.float64).reshape(-1, 1)
    return exp.network.params().replace(Inmda_w0=w, Iampa_w0=w)


def dc_experiment() -> tuple[Experiment, Params]:
    """Two neurons driven by DC (2 nA, 4 nA); sets: Isoma_ahp_w = 1 pA (default), 3 pA."""
    chip = Chip()
    chip.get_neurons(2, "Core_0")
    net = chip.network()
    exp = Experiment(net, Stimulus(0, dc=np.array([2e-9, 4e-9])), DT, T, "dc")
    return exp, net.params().replace(Isoma_ahp_w=torch.tensor([[1 * pA], [3 * pA]], dtype=torch.float64))


def mismatch_experiment() -> tuple[Experiment, Params]:
    """256 neurons on Core_0, 8 Poisson inputs (AMPA, NMDA, GABA_B), sparse recurrent AMPA,
    GABA_A and GABA_B; two sets of log-normal (sigma 0.15) per-neuron mismatch on five
    parameters. Igaba_a_w0 = 20 pA keeps forward Euler stable (stability.py)."""
    rng = np.random.default_rng(1)
    chip = Chip()
    neurons = chip.get_neurons(256, "Core_0")
    inputs = chip.add_inputs(8)
    for src, kind, p, w in ((inputs, "AMPA", .3, 4), (inputs, "NMDA", .3, 3), (inputs, "GABA_B", .1, 1),
                            (neurons, "AMPA", .03, 1), (neurons, "GABA_A", .005, 1), (neurons, "GABA_B", .02, 1)):
        syn = chip.add_connection(src, neurons, synapse_type=kind)
        chip.connect(syn, True, p=p, seed=int(rng.integers(1 << 30)))
        syn.weight = w
    net = chip.network()
    exp = Experiment(net, poisson(8, 60.0, T, DT, seed=3), DT, T, "mismatch256")
    base = net.params().replace(Igaba_a_w0=20 * pA)
    g = torch.Generator().manual_seed(5)
    mismatch = {name: getattr(base, name) * torch.exp(0.15 * torch.randn(2, 256, generator=g, dtype=torch.float64))
                for name in ("Isoma_dpi_tau", "Iampa_tau", "Iampa_w0", "Inmda_w0", "Isoma_pfb_th")}
    return exp, base.replace(**mismatch)


def two_core_experiment() -> Experiment:
    """3 neurons on Core_0 and 3 on Core_2 with different biases, shared Poisson inputs, and
    recurrent AMPA from Core_0 to Core_2."""
    chip = Chip()
    a, b = chip.get_neurons(3, "Core_0"), chip.get_neurons(3, "Core_2")
    inputs = chip.add_inputs(4)
    for k, (kind, w) in enumerate(zip(("NMDA", "AMPA", "GABA_A", "GABA_B"), (12, 8, 1, 2))):
        for group in (a, b):
            syn = chip.add_connection(inputs[k], group, synapse_type=kind)
            chip.connect(syn, True)
            syn.weight = w
    rec = chip.add_connection(a, b, synapse_type="AMPA")
    chip.connect(rec, "i==j")
    rec.weight = 4
    chip.set_bias({"Isoma_dpi_tau": "4 pA", "Iampa_tau": "10 pA", "Isoma_th": "1500 pA"}, "Core_0")
    chip.set_bias({"Isoma_dpi_tau": "6 pA", "Inmda_tau": "3 pA", "Isoma_ahp_w": "2 pA"}, "Core_2")
    return Experiment(chip.network(), poisson(4, 100.0, T, DT, seed=7), DT, T, "two_cores")


# --- shared runs ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def runtime():
    return Brian2Backend("runtime")


@pytest.fixture(scope="module")
def eager():
    return TorchBackend("eager", dtype=torch.float64)


@pytest.fixture(scope="module")
def drive(runtime, eager):
    """The seed experiment, DRIVE_SETS in one Brian2 run; torch one set at a time."""
    exp = seed_experiment()
    params = drive_params(exp)
    b2 = runtime.run(exp, params, record="all")
    singles = [eager.run(exp, drive_params(exp, (w,)), record="all") for w in DRIVE_W0]
    return exp, params, b2, singles


# --- agreement: torch float64 vs Brian2 runtime --------------------------------------------

def test_seed_input_agrees(drive):
    _, _, b2, singles = drive
    assert len(singles[0].spike_step) >= 1, "the seed input should make the neuron spike"
    _report("seed", assert_agree(singles[0], b2, TOL64, sets=[0]))


def test_strong_drive_agrees(drive):
    _, _, b2, singles = drive
    assert 5 <= len(singles[1].spike_step) <= 20, singles[1].spike_step
    _report("strong drive", assert_agree(singles[1], b2, TOL64, sets=[1]))


def test_subthreshold_agrees(drive):
    _, params, b2, singles = drive
    ref = singles[2]
    assert len(ref.spike_step) == 0
    peak = float(ref.traces["Isoma_mem"].max())
    assert peak > 20 * float(params.I0), "the sub-threshold case should move the membrane off the floor"
    _report("sub-threshold", assert_agree(ref, b2, TOL64, sets=[2]))


def test_dc_with_adaptation_agrees(runtime, eager):
    exp, params = dc_experiment()
    ref = eager.run(exp, params, record="all")
    diffs = assert_agree(ref, runtime.run(exp, params, record="all"), TOL64)
    counts = ref.spike_counts()
    assert (counts[0] >= 5).all() and (counts[1] < counts[0]).all(), counts
    for neuron in range(2):  # adaptation: the raised Isoma_ahp_w lengthens the intervals more
        default, raised = (np.diff(ref.spike_steps(neuron, batch=b)) for b in (0, 1))
        assert raised[-1] / raised[0] > 1.2 * default[-1] / default[0], (default, raised)
    _report("dc + adaptation", diffs)


@pytest.mark.slow
def test_256_neurons_mismatch_recurrent_agree(runtime, eager):
    exp, params = mismatch_experiment()
    ref = eager.run(exp, params, record="all")
    counts = ref.spike_counts()
    rec = exp.network.recurrent
    assert (counts[:, rec.pre] > 0).sum() > 100, "recurrent connections should carry spikes"
    assert counts.std() > 1, "mismatch should spread the rates"
    _report("256 neurons, mismatch, recurrent", assert_agree(ref, runtime.run(exp, params, record="all"), TOL64))


def test_two_cores_with_different_biases_agree(runtime, eager):
    exp = two_core_experiment()
    kw = dict(record="all", record_neurons=[0, 2, 3, 5], record_every=3)
    ref = eager.run(exp, None, **kw)
    got = runtime.run(exp, None, **kw)
    assert got.traces["Isoma_mem"].shape == (-(-T // 3), 1, 4)
    core0, core2 = ref.spike_steps(0).tolist(), ref.spike_steps(3).tolist()  # same inputs, other biases
    assert core0 and core2 and core0 != core2, (core0, core2)
    _report("two cores", assert_agree(ref, got, TOL64))


# --- float32, step order, cpp_standalone ---------------------------------------------------

def test_float32_torch_agrees_with_brian2_float64_on_seed(drive):
    exp, _, b2, _ = drive
    ref32 = TorchBackend("eager", dtype=torch.float32).run(exp, drive_params(exp, DRIVE_W0[:1]), record="all")
    _report("seed, torch float32", assert_agree(ref32, b2, TOL32, sets=[0]))


def test_brian2_float32_agrees_with_float64_on_seed(drive):
    exp, _, b2, _ = drive
    b32 = Brian2Backend(dtype="float32").run(exp, drive_params(exp, DRIVE_W0[:1]), record="all")
    assert b32.metadata["dtype"] == "float32"
    _report("seed, brian2 float32", assert_agree(b32, b2, TOL32, sets=[0]))


def test_step_order_is_the_contracts(drive):
    """Read the Brian2 traces alone against dpi-model.md: jumps after Euler, reset after
    threshold, Isoma_mem frozen for soma_refP."""
    exp, params, b2, _ = drive
    jump = float(params.Iampa_w0[1, 0] * params.alpha_ampa)
    ampa = b2.traces["Iampa"][:, 1, 0].numpy()
    k = int(exp.stimulus.steps[exp.stimulus.sources == 1][0])  # first AMPA input spike
    assert k > 0
    assert abs(ampa[k] - ampa[k - 1]) < 1e-3 * jump      # the state at the start of step k: no jump yet
    assert ampa[k + 1] - ampa[k] == pytest.approx(5 * jump, rel=1e-2)  # weight 5, after step k
    mem, ahp = b2.traces["Isoma_mem"][:, 1, 0].numpy(), b2.traces["Isoma_ahp"][:, 1, 0].numpy()
    reset, refr = float(params.Isoma_reset), round(float(params.soma_refP) / DT)
    s = int(b2.spike_steps(0, batch=1)[0])
    assert mem[s] <= float(params.Isoma_th)  # crossed during step s's Euler update, then reset
    assert ahp[s + 1] - ahp[s] == pytest.approx(float(params.Isoma_ahp_w * params.alpha_ahp), rel=1e-3)
    assert (mem[s + 1:s + refr + 1] == reset).all(), "Isoma_mem must stay at Isoma_reset while refractory"
    assert mem[s + refr + 1] != reset, "Isoma_mem integrates again after soma_refP"


@pytest.mark.slow
@pytest.mark.skipif(not (shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")),
                    reason="cpp_standalone needs a C++ compiler")
def test_cpp_standalone_agrees_and_reruns_without_recompiling(drive, runtime):
    exp, params, b2, _ = drive
    cpp = Brian2Backend("cpp_standalone")
    first = cpp.run(exp, params, record="all")
    assert first.metadata["built"] and cpp.builds == 1
    binary = Path(first.metadata["project_dir"]) / "main"
    stamp = (binary.stat().st_mtime_ns, binary.stat().st_ino)
    _report("cpp_standalone vs runtime", assert_agree(b2, first, TOL64))

    other = params.replace(Isoma_th=1500 * pA, Iampa_tau=torch.tensor([[15 * pA], [25 * pA], [20 * pA]],
                                                                       dtype=torch.float64))
    start = time.perf_counter()
    second = cpp.run(exp, other, record="all")
    rerun_s = time.perf_counter() - start
    assert not second.metadata["built"] and cpp.builds == 1
    assert (binary.stat().st_mtime_ns, binary.stat().st_ino) == stamp, "the binary was rebuilt"
    assert second.spike_step.tolist() != first.spike_step.tolist(), "new parameters must reach the binary"
    _report("cpp_standalone rerun vs runtime", assert_agree(runtime.run(exp, other, record="all"), second, TOL64))
    print(f"\ncpp_standalone: first run (build) {first.metadata['wall_time_s']:.1f} s, "
          f"rerun with new parameters {rerun_s:.3f} s, builds {cpp.builds}")


# --- errors and packaging ------------------------------------------------------------------

def test_missing_brian2_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "brian2", None)  # makes `import brian2` fail
    with pytest.raises(BackendUnavailable, match=r"pip install 'dynacal\[brian2\]'"):
        Brian2Backend()


def test_cpp_standalone_without_a_compiler_says_so(monkeypatch):
    monkeypatch.setattr("dynacal.backends.brian2_ref.shutil.which", lambda name: None)
    with pytest.raises(BackendUnavailable, match="target='runtime'"):
        Brian2Backend("cpp_standalone")


def test_brian2_is_imported_lazily():
    code = ("import sys, dynacal, dynacal.backends.brian2_ref, dynacal.backends.registry; "
            "assert 'brian2' not in sys.modules, 'brian2 imported at import time'")
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})


def test_registry_and_bad_arguments(drive):
    exp, params, _, _ = drive
    assert isinstance(get_backend("brian2"), Brian2Backend)
    with pytest.raises(ParameterError, match="cpp_standalone"):
        Brian2Backend("cython")
    with pytest.raises(ParameterError, match="float64"):
        Brian2Backend(dtype="float16")
    backend = Brian2Backend()
    with pytest.raises(ParameterError, match="record_every"):
        backend.run(exp, params, record_every=0)
    with pytest.raises(ParameterError, match="2 neurons"):
        backend.run(exp, params.replace(Isoma_th=torch.full((1, 2), 2e-9, dtype=torch.float64)))
    names = set(backend._b2.Equations(equations()).names)
    assert set(PARAMETERS) <= names and {"Isoma_mem", "Isoma_ahp", "Inmda", "Iampa", "Igaba_a", "Igaba_b"} <= names
