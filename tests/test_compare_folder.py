"""``dynacal compare`` writes a run folder (issue 13 item 2): a manifest, refusal of a folder
that holds another run unless --resume / --overwrite, a writable check before any work,
each backend's files kept as soon as it finished, and a resume that runs only the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynacal.backends.torch_sim import TorchBackend
from dynacal.cli import main

ROOT = Path(__file__).resolve().parents[1]
# two torch engines: fused is the reference, eager the second backend; 20 ms keeps it quick
ARGS = ["compare", "--backends", "torch:fused,torch:eager", "--duration", "20 ms"]


def _manifest(out: Path) -> dict:
    return json.loads((out / "manifest.json").read_text())


def _interrupt_eager(monkeypatch):
    """Ctrl-C in the eager engine's first run: the fused backend has finished by then."""
    run = TorchBackend.run

    def interrupted(self, *args, **kwargs):
        if self.engine == "eager":
            raise KeyboardInterrupt
        return run(self, *args, **kwargs)

    monkeypatch.setattr(TorchBackend, "run", interrupted)


def _no_run(monkeypatch):
    monkeypatch.setattr(TorchBackend, "run", lambda *a, **k: pytest.fail("a backend ran"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    assert main(ARGS + ["--out", str(out)]) == 0
    return json.loads((out / "metrics.json").read_text())


def test_interrupted_then_resumed_runs_only_what_was_left(uninterrupted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        _interrupt_eager(m)
        assert main(ARGS + ["--out", str(out)]) == 130
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err == f"dynacal compare: interrupted; kept in {out}/: torch_fused.h5 torch_fused.npz; finish it with --resume"
    assert sorted(os.listdir(out)) == ["manifest.json", "torch_fused.h5", "torch_fused.npz"]  # no temporary file
    assert _manifest(out)["status"] == "interrupted"
    kept = (out / "torch_fused.h5").read_bytes()

    assert main(ARGS + ["--out", str(out), "--resume"]) in (0, 1)
    printed = capsys.readouterr().out
    assert "running torch:fused ... reused from the interrupted run" in printed
    assert "running torch:eager ... first run" in printed
    assert (out / "torch_fused.h5").read_bytes() == kept  # not run, not rewritten
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["agreement"] == uninterrupted["agreement"]
    assert metrics["backends"]["torch:fused"]["reused"] and not metrics["backends"]["torch:eager"]["reused"]
    for label in ("torch:fused", "torch:eager"):
        assert metrics["backends"][label]["spike_steps"] == uninterrupted["backends"][label]["spike_steps"]
        got, want = (dict(m["backends"][label]["metadata"]) for m in (metrics, uninterrupted))
        assert got.pop("wall_time_s") > 0 and want.pop("wall_time_s") > 0  # the backend's own timing
        assert got == want
    manifest = _manifest(out)
    assert manifest["status"] == "complete"
    assert sorted(os.listdir(out)) == sorted([*manifest["files"], "manifest.json"])


def test_a_folder_that_holds_another_run_is_refused_before_any_work(uninterrupted, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    assert main(["compare", "--backends", "torch", "--duration", "20 ms", "--out", str(out)]) == 0
    before = {p: (out / p).read_bytes() for p in os.listdir(out)}
    capsys.readouterr()
    _no_run(monkeypatch)
    assert main(["compare", "--backends", "torch", "--duration", "20 ms", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} holds run" in err and "--resume" in err and "--overwrite" in err
    # another seed is another experiment: --resume refuses it and names what differs
    assert main(["compare", "--backends", "torch", "--duration", "20 ms", "--seed", "3", "--out", str(out),
                 "--resume"]) == 2
    assert "experiment:" in capsys.readouterr().err
    assert {p: (out / p).read_bytes() for p in os.listdir(out)} == before  # nothing of the old run touched


def test_overwrite_replaces_the_old_run_and_keeps_the_users_files(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["compare", "--backends", "torch", "--duration", "20 ms", "--out", str(out)]) == 0
    old = _manifest(out)["run_id"]
    (out / "notes.txt").write_text("mine")
    assert main(["compare", "--backends", "torch:eager", "--duration", "20 ms", "--out", str(out),
                 "--overwrite"]) == 0
    manifest = _manifest(out)
    assert manifest["run_id"] != old and "torch.h5" not in manifest["files"]
    assert not (out / "torch.h5").exists() and (out / "torch_eager.h5").exists()
    assert (out / "notes.txt").read_text() == "mine"


def test_an_unwritable_folder_is_refused_before_any_backend_runs(monkeypatch, capsys):
    # /proc/self is a folder where creating a file fails, even as root
    _no_run(monkeypatch)
    assert main(["compare", "--backends", "torch", "--out", "/proc/self"]) == 2
    assert "cannot be written" in capsys.readouterr().err


@pytest.mark.slow
def test_sigterm_exits_143_and_keeps_the_finished_backend(tmp_path):
    out = tmp_path / "out"
    # eager on 3 s of input runs for seconds: the signal arrives while it runs
    proc = subprocess.Popen([sys.executable, "-m", "dynacal", "compare", "--backends", "torch:fused,torch:eager",
                             "--duration", "3 s", "--out", str(out)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.monotonic() + 240
    while "torch_fused.npz" not in (_manifest(out)["files"] if (out / "manifest.json").exists() else {}):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 143, stderr
    assert stderr.strip().splitlines()[-1] == (f"dynacal compare: terminated (SIGTERM); kept in {out}/: "
                                               f"torch_fused.h5 torch_fused.npz; finish it with --resume")
    assert sorted(os.listdir(out)) == ["manifest.json", "torch_fused.h5", "torch_fused.npz"]
