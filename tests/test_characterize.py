"""``dynacal characterize``: recordings, the features table, figures, errors."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from dynacal import Recording, get_backend
from dynacal.characterize import characterize, parse_protocols
from dynacal.cli import main
from dynacal.errors import ParameterError
from dynacal.protocols import ORDER, FICurve, SynapticKernels

RECORDINGS = Path(__file__).resolve().parents[1] / "recordings"


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_library_writes_recordings_table_and_figures(tmp_path):
    fi = FICurve(levels=(3e-10, 1e-9, 5e-9), duration=0.1, settle=0.02)
    kernels = SynapticKernels(repeats=1)
    calls = []
    result = characterize(get_backend("torch"), [kernels, fi], tmp_path, "core1:3",
                          progress=lambda name, done, total: calls.append((name, done, total)))
    assert calls == [("fi", 0, 2), ("kernels", 1, 2), ("", 2, 2)]  # lab order: fi first
    names = {p.name for p in result["files"]}
    assert {"fi.h5", "kernels.h5", "features.csv", "fi.png", "kernels.png", "raster.png"} <= names
    rows = _rows(tmp_path / "features.csv")
    assert [(r["set"], r["core"], r["neuron_id"]) for r in rows] == [("0", "1", "0"), ("0", "1", "1"), ("0", "1", "2")]
    rates = result["features"]["fi"]["rate"][0]
    for n, row in enumerate(rows):
        assert [float(row[f"fi.rate[{lab}]"]) for lab in ("300pA", "1000pA", "5000pA")] == pytest.approx(rates[n])
        assert float(row["kernels.tau_ampa"]) == pytest.approx(result["features"]["kernels"]["tau_ampa"][0, n])
        assert row["kernels.latency_gaba_a"] == ""  # NaN: silenced
    again = fi.features(Recording.load(tmp_path / "fi.h5"))
    np.testing.assert_array_equal(again["rate"], result["features"]["fi"]["rate"])


def test_cli_on_the_shipped_recordings(tmp_path, capsys):
    assert main(["characterize", "--backend", f"replay:{RECORDINGS}", "--protocol", "refractory,heldout",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "refractory, heldout on 256 neurons" in out and "total" in out
    rows = _rows(tmp_path / "features.csv")
    assert len(rows) == 256 and {float(r["refractory.refractory"]) for r in rows} == {0.005}
    assert (tmp_path / "raster.png").stat().st_size > 1000


def test_cli_errors(tmp_path, capsys):
    assert main(["characterize", "--protocol", "fi,kernal", "--out", str(tmp_path)]) == 2
    assert "Did you mean 'kernels'" in capsys.readouterr().err
    assert main(["characterize", "--neurons", "core0:300", "--protocol", "fi", "--out", str(tmp_path)]) == 2
    assert main(["characterize", "--backend", f"replay:{tmp_path}", "--protocol", "fi", "--out", str(tmp_path)]) == 2
    assert "no readable recording" in capsys.readouterr().err


def test_parse_protocols():
    assert parse_protocols("all") == list(ORDER)
    assert parse_protocols("kernels, fi") == ["fi", "kernels"]
    with pytest.raises(ParameterError):
        parse_protocols("fi,nope")


def test_replay_of_recordings_made_with_other_settings(tmp_path, capsys):
    # recorded with non-default settings on other neurons; characterised again from the files
    fi = FICurve(levels=(3e-10, 1e-9, 5e-9), duration=0.1, settle=0.02, separate_runs=True)
    kernels = SynapticKernels(synapses=("ampa", "gaba_b"), weights=(8, 2), every=1, events=((499,), (1499,)),
                              n_steps=2200)
    first = characterize(get_backend("torch"), [fi, kernels], tmp_path / "a", "core1:3", figures=False)
    assert main(["characterize", "--backend", f"replay:{tmp_path / 'a'}", "--protocol", "fi,kernels",
                 "--out", str(tmp_path / "b"), "--no-figures"]) == 0
    assert _rows(tmp_path / "b" / "features.csv") == _rows(tmp_path / "a" / "features.csv")
    again = characterize(get_backend(f"replay:{tmp_path / 'a'}"), ["fi", "kernels"], tmp_path / "c", figures=False)
    for name, feats in first["features"].items():
        for key, value in feats.items():
            np.testing.assert_array_equal(again["features"][name][key], value, err_msg=f"{name}.{key}")
