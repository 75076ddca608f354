"""Trace names reach the board and twin backends as names (issue 8 item 8), and
``dynacal compare`` runs a spikes-only backend beside a simulator."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dynacal import get_backend
from dynacal.cli import main
from dynacal.errors import ParameterError

from .conftest import small_experiment

pytestmark = pytest.mark.hardware


@pytest.mark.parametrize("record, names", [("all", "'Isoma_mem', 'Isoma_ahp'"), ("Isoma_mem", "['Isoma_mem']"),
                                           (["Inmda", "Iampa"], "['Inmda', 'Iampa']")])
def test_the_board_refuses_traces_by_their_names(record, names):
    backend = get_backend("twin")
    with pytest.raises(ParameterError, match="spikes only") as info:
        backend.run(small_experiment(n_steps=200), record=record)
    assert names in str(info.value) and "'a', 'l'" not in str(info.value) and "'I', 's'" not in str(info.value)


def test_an_unknown_trace_name_is_named():
    with pytest.raises(ParameterError, match="Isoma_men"):
        get_backend("twin").run(small_experiment(n_steps=200), record="Isoma_men")


def test_no_traces_in_any_spelling_runs():
    backend = get_backend("twin")
    for record in ((), [], ""):
        rec = backend.run(small_experiment(n_steps=300), record=record)
        assert rec.traces == {} and rec.spike_time.size > 0


def test_compare_torch_with_the_twin_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "cmp"
    code = main(["compare", "--backends", "torch,twin", "--out", str(out)])
    text = capsys.readouterr().out
    assert code in (0, 1)  # 1: they disagree (the twin is another chip), never a crash (2)
    assert "twin records no traces" in text and "verdict:" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["backends"]) == {"torch", "twin"}
    twin = np.load(out / "twin.npz")
    assert list(twin.files) == ["spike_steps"]
    assert twin["spike_steps"].tolist() == metrics["backends"]["twin"]["spike_steps"]
    assert (out / "membrane.png").exists()  # the torch traces are still drawn
