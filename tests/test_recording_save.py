"""Big saves (issue 13 item 6): traces written in slabs with a progress bar, still atomic,
the same file as one written in a single call, and a warning before a save bigger than
the free disk space."""

from __future__ import annotations

import logging
from collections import namedtuple

import h5py
import numpy as np
import pytest
import torch

from dynacal import Recording, _progress, _recording_io


def _rec(t=400, b=2, r=3, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    traces = {name: (torch.rand(t, b, r, generator=g, dtype=torch.float64) * 1e-9).to(dtype)
              for name in ("Isoma_mem", "Iampa")}
    return Recording.from_steps("torch", 1e-4, t, b, 5, [1, 0, 1], [4, 2, 0], [7, 3, 3], traces=traces,
                                trace_neurons=np.array([0, 2, 4]))


@pytest.fixture
def small_slabs(monkeypatch):
    monkeypatch.setattr(_recording_io, "SLAB_BYTES", 7 * 2 * 3 * 8)  # 7 steps a slab: 58 slabs per trace


def test_a_save_in_slabs_is_the_file_of_one_call(small_slabs, tmp_path):
    rec = _rec()
    rec.save(tmp_path / "slabs.h5")
    back = Recording.load(tmp_path / "slabs.h5")
    for name, value in rec.traces.items():
        assert back.traces[name].dtype == torch.float64  # float64 on disk, exact for float32
        assert torch.equal(back.traces[name], value.double())
    with h5py.File(tmp_path / "slabs.h5") as f:  # the layout of the former single-call write
        for name, value in rec.traces.items():
            one = h5py.File(tmp_path / f"one_{name}.h5", "w")
            with one:
                ref = one.create_dataset(name, data=value.double().numpy(), compression="gzip")
                assert (f["traces"][name].chunks, f["traces"][name].compression) == (ref.chunks, ref.compression)


def test_a_long_save_shows_progress_in_bytes(small_slabs, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(_progress, "LONG_S", -1.0)  # every save counts as long
    with _progress.shown():
        _rec().save(tmp_path / "r.h5")
    err = capsys.readouterr().err
    assert "saving r.h5" in err and "B" in err  # tqdm's bar, in (k)B
    # without bars (the library's default) nothing is printed
    _rec().save(tmp_path / "quiet.h5")
    assert capsys.readouterr().err == ""


def test_an_interrupt_between_slabs_leaves_the_old_file_and_no_temporary(small_slabs, tmp_path, monkeypatch):
    path = _rec(t=20).save(tmp_path / "r.h5")
    before = path.read_bytes()
    calls = []
    update = _progress.Progress.update

    def interrupt_at_the_third_slab(self, n):
        calls.append(n)
        if len(calls) == 3:
            raise KeyboardInterrupt
        update(self, n)

    monkeypatch.setattr(_progress.Progress, "update", interrupt_at_the_third_slab)
    with pytest.raises(KeyboardInterrupt):
        _rec().save(path)
    assert len(calls) == 3  # it was part-way through the traces
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.h5"]


def test_a_save_bigger_than_the_free_space_is_warned_about_first(tmp_path, monkeypatch, caplog):
    rec = _rec()
    size = 8 * (2 * 400 * 2 * 3 + 4 * 3)  # two float64 traces and four arrays of 3 spikes
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(_recording_io.shutil, "disk_usage", lambda p: usage(10 * size, 9 * size, size - 1))
    with caplog.at_level(logging.WARNING, logger="dynacal._recording_io"):
        rec.save(tmp_path / "big.h5")
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "saving big.h5" in message and "before compression" in message and "record_every" in message
    caplog.clear()
    monkeypatch.setattr(_recording_io.shutil, "disk_usage", lambda p: usage(10 * size, 9 * size, size))
    with caplog.at_level(logging.WARNING, logger="dynacal._recording_io"):
        rec.save(tmp_path / "fits.h5")
    assert not caplog.records  # exactly the size: no warning
