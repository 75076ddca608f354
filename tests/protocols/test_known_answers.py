"""Every protocol feature on hand-made spike trains of neurons that differ, with known answers.

The trains are written out here (no simulator), so each expected value is worked out by
hand from the protocol's definition in its module docstring, never by calling the code
under test. Each neuron gets a different answer (so swapping two neurons' spikes fails),
and the edge cases where a feature must be NaN (a silent neuron, one spike, no steady
window) sit beside them. Candidate set 1 holds the neurons of set 0 in reverse order, so
the (set, neuron) bookkeeping is checked too.
"""

from __future__ import annotations

import numpy as np
import pytest

from dynacal import Recording
from dynacal.protocols import Adaptation, FICurve, HeldOut, RateTransfer, Refractory

DT = 1e-4


def _recording(trains: dict[tuple[int, int], np.ndarray], n_steps: int, batch: int, n: int) -> Recording:
    """A Recording from {(set, neuron): spike steps}."""
    b, nn, s = [], [], []
    for (set_, neuron), steps in trains.items():
        steps = np.asarray(steps, dtype=np.int64)
        b += [set_] * steps.size
        nn += [neuron] * steps.size
        s += steps.tolist()
    return Recording.from_steps("hand", DT, n_steps, batch, n, b, nn, s)


def _reversed(per_set: list[dict[int, np.ndarray]], n: int, n_sets: int) -> dict[tuple[int, int], np.ndarray]:
    """Candidate 0 as given; candidate 1 the same neurons in reverse order (set b * L + l)."""
    out = {}
    for l, trains in enumerate(per_set):
        for neuron, steps in trains.items():
            out[(l, neuron)] = steps
            out[(n_sets + l, n - 1 - neuron)] = steps
    return out


def _check_reversed(f: dict, keys) -> None:
    for key in keys:
        np.testing.assert_allclose(f[key][1], f[key][0][::-1], rtol=1e-9, err_msg=key)


# ---- f-I curve ----------------------------------------------------------------------------

def test_fi_rate_rheobase_slope_per_neuron_and_nan_edges():
    lv = (1e-10, 2e-10, 4e-10, 8e-10)
    protocol = FICurve(levels=lv, duration=0.1, settle=0.01)  # 1000 steps, window from step 100
    T, start, L, N = 1000, 100, 4, 4
    per_set = [{} for _ in range(L)]
    # neuron 0: silent, one spike (1 / 0.09 s = 11.1 Hz by count), 200 Hz, 400 Hz
    per_set[1][0] = [500]
    per_set[2][0] = np.arange(start, T, 50)
    per_set[3][0] = np.arange(start, T, 25)
    # neuron 1: silent, silent, 100 Hz, 500 Hz
    per_set[2][1] = np.arange(start + 3, T, 100)
    per_set[3][1] = np.arange(start, T, 20)
    # neuron 2: silent at every level. neuron 3: 1 Hz-ish spike before the window, then fires at every level
    per_set[0][3] = np.concatenate([[10], np.arange(start, T, 100)])
    per_set[1][3] = np.arange(start, T, 80)
    per_set[2][3] = np.arange(start, T, 40)
    per_set[3][3] = np.arange(start, T, 40)
    f = protocol.features(_recording(_reversed(per_set, N, L), T, 2 * L, N))
    rate = np.array([[0.0, 1 / 0.09, 200.0, 400.0],
                     [0.0, 0.0, 100.0, 500.0],
                     [0.0, 0.0, 0.0, 0.0],
                     [100.0, 125.0, 250.0, 250.0]])
    np.testing.assert_allclose(f["rate"][0], rate, rtol=1e-9)
    # rheobase: 5 Hz interpolated in log current between the last level below and the first at or above
    r0 = np.exp(np.log(1e-10) + (5 / (1 / 0.09)) * np.log(2))
    r1 = np.exp(np.log(2e-10) + (5 / 100) * np.log(2))
    np.testing.assert_allclose(f["rheobase"][0, :2], [r0, r1], rtol=1e-9)
    assert np.isnan(f["rheobase"][0, 2])  # never reaches 5 Hz
    assert np.isnan(f["rheobase"][0, 3])  # the first level already does
    # slope over the first 3 firing levels (2 where only 2 exist); NaN for the silent neuron
    x = np.asarray(lv)
    np.testing.assert_allclose(f["slope"][0, 0], np.polyfit(x[1:], rate[0, 1:], 1)[0], rtol=1e-9)
    np.testing.assert_allclose(f["slope"][0, 1], (500.0 - 100.0) / (8e-10 - 4e-10), rtol=1e-9)
    assert np.isnan(f["slope"][0, 2])
    np.testing.assert_allclose(f["slope"][0, 3], np.polyfit(x[:3], rate[3, :3], 1)[0], rtol=1e-9)
    _check_reversed(f, ("rate", "rheobase", "slope"))


# ---- refractory ---------------------------------------------------------------------------

def test_refractory_estimate_per_neuron_and_nan_edges():
    protocol = Refractory(duration=0.1, settle=0.01)  # levels 3 uA, 10 uA; 1000 steps, from step 100
    T, start, N = 1000, 100, 4
    i1, i2 = protocol.levels
    per_set = [{}, {}]
    # ISIs (steps) at the two levels: n0 60 and 50, n1 40 and 40, n2 one spike at level 0, n3 silent
    per_set[0][0], per_set[1][0] = np.arange(start, T, 60), np.arange(start + 7, T, 50)
    per_set[0][1], per_set[1][1] = np.arange(start, T, 40), np.arange(start + 1, T, 40)
    per_set[0][2], per_set[1][2] = [300], np.arange(start, T, 30)
    f = protocol.features(_recording(_reversed(per_set, N, 2), T, 4, N))
    np.testing.assert_allclose(f["isi"][0, 0], [60 * DT, 50 * DT], rtol=1e-9)
    np.testing.assert_allclose(f["isi"][0, 1], [40 * DT, 40 * DT], rtol=1e-9)
    assert np.isnan(f["isi"][0, 2, 0]) and f["isi"][0, 2, 1] == pytest.approx(30 * DT, rel=1e-9)
    assert np.isnan(f["isi"][0, 3]).all()
    # refP = (I2 ISI2 - I1 ISI1) / (I2 - I1): (1e-5 * 5 ms - 3e-6 * 6 ms) / 7e-6 = 4.571 ms
    np.testing.assert_allclose(f["refractory"][0, :2], [(i2 * 50 - i1 * 60) * DT / (i2 - i1), 40 * DT], rtol=1e-9)
    assert np.isnan(f["refractory"][0, 2]) and np.isnan(f["refractory"][0, 3])  # one spike; silent
    np.testing.assert_allclose(f["max_rate"][0], [1 / (50 * DT), 1 / (40 * DT), 1 / (30 * DT), 0.0], rtol=1e-9)
    _check_reversed(f, ("isi", "refractory", "max_rate"))


def test_refractory_estimate_is_clipped_to_the_shortest_isi():
    # ISI 50 steps at the weak level, 60 at the strong one (not a real neuron): the formula gives
    # 6.43 ms, more than the 5 ms ISI, so the estimate is the shortest ISI
    protocol = Refractory(duration=0.1, settle=0.01)
    rec = _recording({(0, 0): np.arange(100, 1000, 50), (1, 0): np.arange(100, 1000, 60)}, 1000, 2, 1)
    assert protocol.features(rec)["refractory"][0, 0] == pytest.approx(50 * DT, rel=1e-12)


# ---- adaptation ---------------------------------------------------------------------------

def _train(isis, first=0, stop=None) -> np.ndarray:
    steps = first + np.concatenate([[0], np.cumsum(isis)])
    return steps if stop is None else steps[steps < stop]


def test_adaptation_features_per_neuron_and_nan_edges():
    protocol = Adaptation(duration=0.2, steady=0.05)  # 2000 steps, steady window from step 1500
    T, N = 2000, 5
    per_set = [{
        0: _train([10, 20, 30] + [40] * 60, first=5, stop=T),  # adapts: 1000 Hz -> 250 Hz
        1: _train([25] * 100, first=3, stop=T),                # no adaptation
        2: [700],                                              # one spike
        3: [0, 10, 30],                                        # stops before the steady window
        # 4: silent
    }]
    f = protocol.features(_recording(_reversed(per_set, N, 1), T, 2, N))
    np.testing.assert_allclose(f["first_isi"][0, :2], [10 * DT, 25 * DT], rtol=1e-12)
    np.testing.assert_allclose(f["steady_isi"][0, :2], [40 * DT, 25 * DT], rtol=1e-12)
    np.testing.assert_allclose(f["ratio"][0, :2], [4.0, 1.0], rtol=1e-12)
    # 1/e point between 1000 Hz and 250 Hz: 250 + 750 / e; the rate at the end of each ISI is
    # 1000 Hz (t = 10 steps after the first spike), then 500 Hz (t = 30 steps): interpolate
    target = 250 + 750 / np.e
    assert f["tau"][0, 0] == pytest.approx((10 + 20 * (1000 - target) / 500) * DT, rel=1e-12)
    assert np.isnan(f["tau"][0, 1])  # ratio 1: nothing to time
    for key in ("first_isi", "steady_isi", "ratio", "tau"):
        assert np.isnan(f[key][0, 2]) and np.isnan(f[key][0, 4]), key  # one spike; silent
    assert f["first_isi"][0, 3] == pytest.approx(10 * DT, rel=1e-12)
    assert np.isnan(f["steady_isi"][0, 3]) and np.isnan(f["ratio"][0, 3]) and np.isnan(f["tau"][0, 3])
    _check_reversed(f, ("first_isi", "steady_isi", "ratio", "tau"))


# ---- held-out -----------------------------------------------------------------------------

def test_heldout_rate_and_isi_statistics_per_neuron_and_nan_edges():
    protocol = HeldOut(duration=0.1)
    T, N = 1000, 4
    per_set = [{0: [10, 30, 60, 100], 1: [200, 250], 2: [999]}]  # 3: silent
    f = protocol.features(_recording(_reversed(per_set, N, 1), T, 2, N))
    np.testing.assert_allclose(f["rate"][0], [40.0, 20.0, 10.0, 0.0], rtol=1e-12)
    isi = np.array([20, 30, 40]) * DT
    assert f["isi_mean"][0, 0] == pytest.approx(30 * DT, rel=1e-12)
    assert f["isi_cv"][0, 0] == pytest.approx(np.sqrt(200 / 3) / 30, rel=1e-9) == pytest.approx(isi.std() / isi.mean())
    assert f["isi_mean"][0, 1] == pytest.approx(50 * DT, rel=1e-12) and np.isnan(f["isi_cv"][0, 1])  # 2 spikes
    assert np.isnan(f["isi_mean"][0, 2:]).all() and np.isnan(f["isi_cv"][0, 2:]).all()  # 1 spike; silent
    _check_reversed(f, ("rate", "isi_mean", "isi_cv"))


# ---- input-rate transfer ------------------------------------------------------------------

def test_rate_transfer_rates_and_gains_per_neuron():
    protocol = RateTransfer(rates=(10.0, 30.0), rates_by_type=(), segment=0.05, gap=0.01, baseline=0.05, settle=0.01)
    T = protocol.experiment("core0:1").n_steps
    seg, settle = 500, 100
    window = (seg - settle) * DT  # 40 ms
    N = 3
    # spikes per window: neuron 0 excited by every type (2 then 6), neuron 1 inhibited (6 then 2),
    # neuron 2 silent (gain 0); baseline 4, 2, 0 spikes in [settle, baseline)
    count = {0: (2, 6), 1: (6, 2), 2: (0, 0)}
    base = {0: 4, 1: 2, 2: 0}
    trains: dict[tuple[int, int], list[int]] = {}
    for n in range(N):
        steps = [settle + 50 * k for k in range(base[n])]
        steps += [settle - 5]  # before the window: not counted
        for starts in protocol.segments():
            for s, c in zip(starts, count[n]):
                steps += [int(s) + settle + 30 * k for k in range(c)] + [int(s) + 2]  # + 1 in the settle time
        trains[(0, n)] = sorted(steps)
        trains[(1, N - 1 - n)] = sorted(steps)
    f = protocol.features(_recording(trains, T, 2, N))
    np.testing.assert_allclose(f["baseline"][0], np.array([4, 2, 0]) / ((500 - settle) * DT), rtol=1e-12)
    for syn in protocol.synapses:
        expected = np.array([count[n] for n in range(N)]) / window
        np.testing.assert_allclose(f[f"rate_{syn}"][0], expected, rtol=1e-12, err_msg=syn)
        # two input rates: the least-squares slope is the difference quotient, Hz per Hz
        np.testing.assert_allclose(f[f"gain_{syn}"][0], [4 / window / 20, -4 / window / 20, 0.0], rtol=1e-12)
    _check_reversed(f, ["baseline"] + [f"{k}_{s}" for k in ("rate", "gain") for s in protocol.synapses])
