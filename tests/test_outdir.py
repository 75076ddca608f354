"""Output folders (issue 13 item 2): one run per folder, a manifest, --resume / --overwrite,
no partial result over the user's files, interruptions that end cleanly."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynacal import get_backend
from dynacal._outdir import MANIFEST, RunFolder, file_hash
from dynacal.characterize import characterize
from dynacal.cli import main
from dynacal.errors import ParameterError
from dynacal.protocols import FICurve, Refractory

ROOT = Path(__file__).resolve().parents[1]


def _small():
    return [FICurve(levels=(3e-10, 1e-9, 5e-9), duration=0.1, settle=0.02),
            Refractory(levels=(3e-6, 1e-5), duration=0.05, settle=0.01)]


def _manifest(folder: Path) -> dict:
    return json.loads((folder / MANIFEST).read_text())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def _no_run(monkeypatch):
    """Fail the test if a protocol runs."""
    from dynacal.protocols.base import Protocol

    monkeypatch.setattr(Protocol, "run_experiment", lambda *a, **k: pytest.fail("a protocol ran"))


def test_manifest_lists_every_file_with_its_hash(tmp_path):
    result = characterize(get_backend("torch"), _small(), tmp_path, "core0:2", figures=False)
    data = _manifest(tmp_path)
    assert data["status"] == "complete" and data["command"] == "dynacal characterize" and len(data["run_id"]) == 16
    assert sorted(data["files"]) == sorted(p.name for p in result["files"]) == ["features.csv", "fi.h5",
                                                                               "refractory.h5"]
    for name, entry in data["files"].items():
        assert entry["sha256"] == file_hash(tmp_path / name) and entry["bytes"] == (tmp_path / name).stat().st_size
    assert [p["name"] for p in data["options"]["protocols"]] == ["fi", "refractory"]
    assert data["options"]["protocols"][0]["settings"]["duration"] == 0.1


def test_an_empty_protocol_list_is_refused_before_anything_is_written(tmp_path, capsys):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "features.csv").write_text("set,core,neuron_id,fi.rate\n" + "0,0,1,12.5\n" * 4000)
    before = _snapshot(folder)
    assert main(["characterize", "--protocol", " , ", "--out", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--protocol ' , ' names no protocol" in err
    assert _snapshot(folder) == before
    with pytest.raises(ParameterError, match="no protocol to run"):
        characterize(get_backend("torch"), [], folder)
    assert _snapshot(folder) == before


def test_a_folder_that_holds_another_run_is_refused(tmp_path, capsys, monkeypatch):
    characterize(get_backend("torch"), _small(), tmp_path, "core0:2", figures=False)
    before = _snapshot(tmp_path)
    _no_run(monkeypatch)
    assert main(["characterize", "--protocol", "fi", "--neurons", "core0:4", "--no-figures",
                 "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err  # one message: no progress bar before the refusal
    run_id = _manifest(tmp_path)["run_id"]
    assert f"holds run {run_id} of dynacal characterize (complete): features.csv, fi.h5, refractory.h5" in err
    assert "--resume" in err and "--overwrite" in err
    assert _snapshot(tmp_path) == before


def test_a_folder_of_other_files_is_refused_and_resume_cannot_adopt_it(tmp_path, capsys, monkeypatch):
    (tmp_path / "notes.txt").write_text("mine")
    _no_run(monkeypatch)
    for extra in ([], ["--resume"]):
        assert main(["characterize", "--protocol", "fi", "--out", str(tmp_path)] + extra) == 2
        assert "holds files of no dynacal run: notes.txt" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_resume_needs_the_same_options(tmp_path, capsys, monkeypatch):
    characterize(get_backend("torch"), _small(), tmp_path, "core0:2", figures=False)
    before = _snapshot(tmp_path)
    with pytest.raises(ParameterError, match=r"other options \(neurons: 'core0:2' then, 'core0:3' now\)"):
        characterize(get_backend("torch"), _small(), tmp_path, "core0:3", figures=False, mode="resume")
    with pytest.raises(ParameterError, match=r"protocols: \['fi', 'refractory'\] then, \['fi'\] now"):
        characterize(get_backend("torch"), _small()[:1], tmp_path, "core0:2", figures=False, mode="resume")
    assert _snapshot(tmp_path) == before


def test_resume_reuses_intact_parts_and_remakes_changed_ones(tmp_path, monkeypatch):
    characterize(get_backend("torch"), _small(), tmp_path, "core0:2", figures=False)
    table, run_id = (tmp_path / "features.csv").read_bytes(), _manifest(tmp_path)["run_id"]
    again = characterize(get_backend("torch"), _small(), tmp_path, "core0:2", figures=False, mode="resume")
    assert again["reused"] == ["fi", "refractory"] and (tmp_path / "features.csv").read_bytes() == table
    data = bytearray((tmp_path / "fi.h5").read_bytes())  # damage one recording: its hash no longer matches
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "fi.h5").write_bytes(bytes(data))
    third = characterize(get_backend("torch"), _small(), tmp_path, "core0:2", figures=False, mode="resume")
    assert third["reused"] == ["refractory"]
    assert (tmp_path / "features.csv").read_bytes() == table
    assert _manifest(tmp_path)["files"]["fi.h5"]["sha256"] == file_hash(tmp_path / "fi.h5")
    assert _manifest(tmp_path)["run_id"] == run_id  # the same run, finished


def test_overwrite_removes_the_old_runs_files(tmp_path):
    characterize(get_backend("torch"), _small(), tmp_path, "core0:2", figures=False)
    old = _manifest(tmp_path)["run_id"]
    (tmp_path / "notes.txt").write_text("mine")
    characterize(get_backend("torch"), _small()[:1], tmp_path, "core0:2", figures=False, mode="overwrite")
    data = _manifest(tmp_path)
    assert data["run_id"] != old and sorted(data["files"]) == ["features.csv", "fi.h5"]
    assert sorted(os.listdir(tmp_path)) == ["features.csv", "fi.h5", MANIFEST, "notes.txt"]  # the user's file stays


@pytest.mark.parametrize("where", ["under_a_file", "unwritable"])
def test_an_unwritable_folder_is_refused_before_any_work(where, tmp_path, monkeypatch):
    # as root, permission bits stop nothing: /proc/self is a folder where creating a file fails
    (tmp_path / "file").write_text("mine")
    out = tmp_path / "file" / "sub" if where == "under_a_file" else Path("/proc/self")
    _no_run(monkeypatch)
    with pytest.raises(ParameterError, match="is a file, not a folder" if where == "under_a_file"
                       else "cannot be written"):
        characterize(get_backend("torch"), _small(), out, "core0:2", figures=False)
    assert (tmp_path / "file").read_text() == "mine"


def test_temporaries_of_a_killed_run_are_removed_when_the_folder_is_opened(tmp_path):
    RunFolder(tmp_path, "dynacal characterize", {"a": 1})
    stale = tmp_path / ".fi.h5.0123456789ab.tmp"
    stale.write_bytes(b"x" * 1000)
    folder = RunFolder(tmp_path, "dynacal characterize", {"a": 1}, mode="resume")
    assert not stale.exists() and folder.status == "running"


def test_an_interrupted_run_marks_its_manifest_and_lists_what_it_kept(tmp_path):
    with pytest.raises(KeyboardInterrupt) as info:
        with RunFolder(tmp_path, "dynacal characterize", {"a": 1}) as folder:
            (tmp_path / "fi.h5").write_bytes(b"done")
            folder.add(tmp_path / "fi.h5", part="fi")
            raise KeyboardInterrupt
    assert info.value.kept == (tmp_path, ["fi.h5"])
    assert _manifest(tmp_path)["status"] == "interrupted"


# --- the acceptance test: SIGINT / SIGTERM, then --resume --------------------------------

ARGS = ["characterize", "--backend", "torch:eager", "--protocol", "fi,refractory", "--neurons", "core0:2",
        "--no-figures"]


def _dynacal(args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "dynacal", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    proc = _dynacal(ARGS + ["--out", str(out)])
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    return (out / "features.csv").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_interrupt_then_resume_gives_the_uninterrupted_table(signum, code, word, uninterrupted, tmp_path):
    out = tmp_path / "out"
    proc = _dynacal(ARGS + ["--out", str(out)])
    deadline = time.monotonic() + 240
    while "fi.h5" not in (_manifest(out)["files"] if (out / MANIFEST).exists() else {}):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signum)  # while refractory runs
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    last = stderr.strip().splitlines()[-1]
    assert last == f"dynacal characterize: {word}; kept in {out}/: fi.h5; finish it with --resume"
    assert "Traceback" not in stderr
    assert sorted(os.listdir(out)) == ["fi.h5", MANIFEST]  # no temporary file, no partial table
    assert _manifest(out)["status"] == "interrupted"
    resumed = _dynacal(ARGS + ["--out", str(out), "--resume"])
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert "fi" in stdout and "(reused from the interrupted run)" in stdout.splitlines()[1]
    assert (out / "features.csv").read_bytes() == uninterrupted
    assert _manifest(out)["status"] == "complete"
    assert not [p for p in os.listdir(out) if p.endswith(".tmp")]


def test_an_interrupt_that_a_callback_swallows_still_stops_the_write(tmp_path):
    # h5py prints and drops exceptions raised in its callbacks; the rename must not happen
    from dynacal.files import atomic_write
    from dynacal._outdir import terminate_on_sigterm

    def write(fh):
        fh.write(b"partial")
        try:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
        except KeyboardInterrupt:
            pass  # swallowed, as inside h5py

    with terminate_on_sigterm():
        with pytest.raises(KeyboardInterrupt):
            atomic_write(tmp_path / "table.csv", write)
    assert os.listdir(tmp_path) == []
    atomic_write(tmp_path / "table.csv", lambda fh: fh.write(b"whole"))  # handled: writes work again
    assert (tmp_path / "table.csv").read_bytes() == b"whole"
