"""Noise floor and robust statistics: MAD, the repeat rule, robust scores, files."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dynacal import get_backend
from dynacal.errors import ParameterError, RecordingError
from dynacal.protocols import FICurve, Refractory
from dynacal.fitting.noise import MAD_SCALE, NoiseFloor, Spread, mad, repeats_needed, robust_loss

FI = FICurve(duration=0.03, settle=0.0)


def test_mad_is_scaled_and_ignores_one_outlier():
    x = np.array([[1.0, 10.0], [2.0, 10.0], [3.0, 10.0], [1000.0, 10.0]])
    np.testing.assert_allclose(mad(x), [MAD_SCALE * 1.0, 0.0])
    rng = np.random.default_rng(0)
    assert mad(rng.normal(0, 2.0, 20000)) == pytest.approx(2.0, rel=0.03)  # the Gaussian sigma


def test_robust_loss_is_the_median_over_repeats():
    losses = np.array([[0.1, 5.0], [0.2, 0.1], [0.3, 0.2], [9.0, 0.3], [0.2, np.nan]])
    np.testing.assert_allclose(robust_loss(losses), [0.2, 0.25])
    t = torch.tensor([[1.0, 4.0], [2.0, 0.0], [30.0, 1.0]], requires_grad=True)
    out = robust_loss(t)
    out.sum().backward()
    assert out.tolist() == [2.0, 1.0] and t.grad.tolist() == [[0, 0], [1, 0], [0, 1]]
    with pytest.raises(ParameterError, match="0 repeats"):
        robust_loss(np.zeros((0, 3)))


def test_repeats_rule():
    assert repeats_needed(0.0, 0.02, 3) == 1
    assert repeats_needed(0.02, 0.02, 5) == 1
    assert repeats_needed(0.03, 0.02, 5) == 3  # (1.5)^2 = 2.25 -> 3
    assert repeats_needed(1.0, 0.02, 4) == 4
    assert repeats_needed(float("nan"), 0.02, 4) == 4  # unknown noise: measure as often as allowed
    with pytest.raises(ParameterError, match="tolerance"):
        repeats_needed(0.1, 0.0, 3)


def test_spread_relative_and_cv():
    s = Spread.of([np.array([0.0, 10.0, 0.0]), np.array([0.0, 12.0, 1.0]), np.array([0.0, 11.0, 0.0])])
    np.testing.assert_allclose(s.median, [0, 11, 0])
    rel = s.relative()
    assert rel[0] == 0 and rel[1] == pytest.approx(MAD_SCALE / 11) and rel[2] == 0  # 2 of 3 silent: MAD 0
    cv = s.cv()
    assert cv[0] == 0 and cv[1] == pytest.approx(1.0 / 11) and cv[2] > 0  # the plain spread sees the one spike


def test_noise_floor_of_a_noiseless_backend_is_zero():
    be = get_backend("torch")
    recs = [FI.run(be, "core0:16") for _ in range(3)]
    floor = NoiseFloor.from_repeats({"fi": recs})
    for s in floor.spreads["fi"].values():
        assert s.n_repeats == 3 and np.all(np.nan_to_num(s.mad) == 0) and np.all(np.nan_to_num(s.std) == 0)
    assert floor.level("fi") == 0.0
    assert floor.summary()["fi"]["features"]["rate"]["max_cv"] == 0.0


def test_noise_floor_level_and_file_round_trip(tmp_path):
    be = get_backend("torch")
    exp = FI.experiment("core0:8")
    recs = [FI.run_experiment(be, exp, exp.network.params({"Isoma_th": value}))  # repeats that differ
            for value in (2.0e-9, 2.4e-9, 2.8e-9)]
    floor = NoiseFloor.from_repeats({"fi": recs})
    assert floor.level("fi") > 0
    assert floor.per_neuron("fi").shape == (8,)
    back = NoiseFloor.load(floor.save(tmp_path / "noise.json"))
    for key, s in floor.spreads["fi"].items():
        for field in ("median", "mad", "mean", "std"):
            np.testing.assert_array_equal(getattr(back.spreads["fi"][key], field), getattr(s, field))
    assert back.level("fi") == floor.level("fi")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(RecordingError, match="not a readable noise floor"):
        NoiseFloor.load(tmp_path / "bad.json")
    with pytest.raises(ParameterError, match="no 'fi' feature 'isi'"):
        floor.relative("fi", "isi")


def test_noise_floor_needs_repeats_of_one_experiment():
    be = get_backend("torch")
    with pytest.raises(RecordingError, match="at least 2 repeats"):
        NoiseFloor.from_repeats({"fi": [FI.run(be, "core0:4")]})
    with pytest.raises(RecordingError, match="2 different experiments"):
        NoiseFloor.from_repeats({"fi": [FI.run(be, "core0:4"), FI.run(be, "core0:5")]})
    assert NoiseFloor.from_target_repeats({"fi": [FI.run(be, "core0:4")]}) is None
    two = NoiseFloor.from_target_repeats({"refractory": [Refractory(duration=0.05).run(be, "core0:4")] * 2})
    assert list(two.spreads) == ["refractory"]
