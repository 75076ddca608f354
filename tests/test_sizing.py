"""Size before work (issue 13 item 6): traces that will not fit are refused before the run,
with the size and the fix; long eager runs show progress only when asked to."""

from __future__ import annotations

import logging

import pytest

from dynacal import _progress, get_backend
from dynacal.backends import sizing
from dynacal.errors import ParameterError
from dynacal.experiment import Experiment
from dynacal.protocols import layout
from dynacal.stimulus import Stimulus

GIB = 2 ** 30


@pytest.fixture
def sixteen_gib(monkeypatch):
    """16 GiB available, whatever this machine has."""
    monkeypatch.setattr(sizing, "available_bytes", lambda device="cpu": 16 * GIB)


def _long_chip_run() -> Experiment:
    return Experiment(layout("chip0"), Stimulus(0), 1e-4, 1_000_000)  # 1024 neurons, 100 s


def _no_run(monkeypatch, backend):
    monkeypatch.setattr(type(backend), "_run_one", lambda *a, **k: pytest.fail("the run started"))


@pytest.mark.parametrize("spec, peak", [("torch", None), ("torch:eager", "about 91.6 GiB")])
def test_every_trace_of_a_chip_for_100_s_is_refused_before_the_run(spec, peak, sixteen_gib, monkeypatch):
    backend = get_backend(spec)
    _no_run(monkeypatch, backend)
    with pytest.raises(ParameterError) as info:
        backend.run(_long_chip_run(), record="all")
    text = str(info.value)
    assert "the traces need 45.8 GiB (6 traces x 1000000 steps x 1 set x 1024 neurons x 8 bytes)" in text
    assert "more than the 16.0 GiB of memory available on cpu" in text
    assert "record_every=" in text and "record_neurons=" in text and "fewer parameter sets" in text
    assert (peak in text) if peak else ("copies at the peak" not in text)
    # the advice is right: record_every as suggested fits in half of the 16 GiB (fused: 45.8 / 6 GiB)
    every = int(text.split("record_every=")[1].split()[0])
    assert every == (6 if peak is None else 12)
    need = sizing.check_traces_fit("torch", ["a"] * 6, 1_000_000, every, 1, 1024, 8, copies=1 if peak is None else 2)
    assert need <= 8 * GIB


def test_fewer_traces_or_neurons_fit(sixteen_gib, monkeypatch):
    backend = get_backend("torch")
    calls = []

    class Ran:
        experiment = None

    monkeypatch.setattr(type(backend), "_run_one", lambda self, exp, p, **k: calls.append(k) or Ran())
    backend.run(_long_chip_run(), record="all", record_neurons=range(16))  # 0.7 GiB
    backend.run(_long_chip_run(), record=["Isoma_mem"], record_every=10)  # 0.8 GiB
    backend.run(_long_chip_run())  # spikes only
    assert len(calls) == 3


def test_sets_and_condition_runs_count(sixteen_gib):
    # 100 sets of 64 neurons for 10 s: 6 x 1e5 x 100 x 64 x 8 bytes = 28.6 GiB
    with pytest.raises(ParameterError, match=r"28\.6 GiB \(6 traces x 100000 steps x 100 sets x 64 neurons"):
        sizing.check_traces_fit("torch", ["x"] * 6, 100_000, 1, 100, 64, 8)
    # half the sets fit once, not twice (condition runs merged into one recording)
    assert sizing.check_traces_fit("torch", ["x"] * 6, 100_000, 1, 50, 64, 8) == 6 * 100_000 * 50 * 64 * 8
    with pytest.raises(ParameterError, match=r"2 copies at the peak \(merged\): about 28\.6 GiB"):
        sizing.check_traces_fit("torch", ["x"] * 6, 100_000, 1, 50, 64, 8, copies=2, why="merged")


def test_a_gradient_run_counts_its_raster(sixteen_gib):
    with pytest.raises(ParameterError, match=r"spike raster 15\.3 GiB \(1000000 x 2 x 1024\)"):
        sizing.check_traces_fit("torch", ["x"] * 6, 1_000_000, 1000, 2, 1024, 8, n_neurons=1024, raster=True,
                                copies=2, why="eager")


def test_brian2_refuses_before_building(sixteen_gib, monkeypatch):
    pytest.importorskip("brian2")
    backend = get_backend("brian2")
    _no_run(monkeypatch, backend)
    with pytest.raises(ParameterError, match=r"brian2: the traces need 45\.8 GiB .* about 91\.6 GiB"):
        backend.run(_long_chip_run(), record="all")


def test_available_memory_is_read():
    free = sizing.available_bytes()
    assert free is None or 0 < free < 2 ** 50
    assert sizing.format_bytes(49_152_000_000) == "45.8 GiB" and sizing.format_bytes(512) == "512 bytes"


def test_long_eager_runs_show_progress_only_when_enabled(monkeypatch, capsys, caplog):
    monkeypatch.setattr(_progress, "LONG_S", 0.0)  # every run is "long"
    experiment = Experiment(layout("core0:2"), Stimulus(0), 1e-4, 3000)
    backend = get_backend("torch:eager", chunk_steps=1000)
    with caplog.at_level(logging.INFO, logger="dynacal._progress"):
        backend.run(experiment)
    assert capsys.readouterr().err == ""  # the library prints nothing by default
    assert "torch eager: 3000 steps will take about" in caplog.text
    monkeypatch.setattr(_progress, "_enabled", True)
    backend.run(experiment)
    err = capsys.readouterr().err
    assert "torch eager" in err and "3.00k/3.00k" in err
    monkeypatch.setattr(_progress, "LONG_S", 1e9)  # short runs show nothing even when enabled
    backend.run(experiment)
    assert capsys.readouterr().err == ""


def test_a_gradient_run_through_the_backend_counts_its_raster(sixteen_gib, monkeypatch):
    import torch

    from dynacal.params import Params

    backend = get_backend("torch:eager")
    _no_run(monkeypatch, backend)
    w0 = torch.full((2, 1024), 100e-12, dtype=torch.float64, requires_grad=True)
    with pytest.raises(ParameterError, match=r"spike raster 15\.3 GiB \(1000000 x 2 x 1024\); 2 copies at the "
                                             r"peak \(the eager engine stacks its steps\)"):
        backend.run(_long_chip_run(), Params.from_values({"Iampa_w0": w0}))
