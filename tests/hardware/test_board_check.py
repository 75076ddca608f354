"""``dynacal board check``: end to end on the twin, and on a real board where one is attached."""

from __future__ import annotations

import json

import pytest

from dynacal.cli import main
from dynacal.hardware import config
from dynacal.hardware.board_check import board_check, check_routing
from dynacal.hardware.config import chip_xy
from dynacal.hardware.samna_detect import samna_status
from dynacal.hardware.twin import twin_backend

pytestmark = pytest.mark.hardware


def test_board_check_runs_on_the_twin_and_writes_its_report(tmp_path, capsys):
    out = tmp_path / "report.json"
    code = main(["board", "check", "--backend", "twin", "--serial", "77", "--out", str(out)])
    text = capsys.readouterr().out
    assert code == 0, text
    for name in ("device", "first_isi_and_latency", "routing", "readback"):
        assert f"[ok] {name}" in text
    report = json.loads(out.read_text())
    assert report["format"] == "dynacal-board-check" and report["serial"] == "77"
    checks = {c["name"]: c for c in report["checks"]}
    assert checks["device"]["measured"]["serial_type"] == "str"
    lat = checks["first_isi_and_latency"]["measured"]
    assert lat["first_isi_waited"] and all(0 < x < 2e-3 for x in lat["latency_s"])  # a few steps of the neuron
    assert abs(lat["gap_s"] - 0.1) < 1e-3
    assert all(v > 0 for v in checks["routing"]["measured"]["target_spikes"].values())
    assert checks["readback"]["measured"]["differences"] == []


def test_board_check_notices_a_wrong_routing_sign(monkeypatch):
    def flipped(source, target):
        (xs, ys), (xt, yt) = chip_xy(source), chip_xy(target)
        return int(xt > xs), int(yt >= ys), abs(xt - xs), abs(yt - ys)

    monkeypatch.setattr(config, "routing_bits", flipped)
    result = check_routing(twin_backend())
    assert not result.ok and result.measured["target_spikes"]["0->1"] == 0 and "lost" in result.summary


@pytest.mark.skipif(samna_status().state == "real", reason="samna is installed here")
def test_board_check_without_a_board_says_so(capsys):
    code = main(["board", "check", "--out", "unused.json"])
    assert code == 2 and "samna" in capsys.readouterr().err


def test_board_check_on_a_real_board(board_backend, tmp_path):
    if board_backend.name == "twin":
        pytest.skip("the twin runs in the test above; this one is for a real board")
    results = board_check(board_backend)
    assert all(r.ok for r in results), [r.summary for r in results if not r.ok]
