"""Per-neuron losses: an L-condition target against B x L model sets gives (B, N), NaN-free,
with the neurons without data masked and listed."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from dynacal import Params, Recording, get_backend
from dynacal.errors import ParameterError, RecordingError
from dynacal.losses import (MISSING, PerNeuron, coincidence_loss, combine, feature_loss, isi_loss, kernel_loss,
                            rate_loss, trace_loss, van_rossum_loss, victor_purpura_loss)
from dynacal.metrics import firing_rate_error, gamma_coincidence, pair_sets, victor_purpura_distance
from dynacal.protocols import FICurve, SynapticKernels

DT, T = 1e-4, 2000
FI = FICurve(levels=(0.3e-9, 1e-9, 3e-9), duration=0.2, settle=0.02)
L = FI.n_conditions
#: the target chip: neuron 0 silent at every level, neuron 1 one spike at the lowest one
TRUTH = {"Isoma_dpi_tau": [2e-12, 2.5e-12, 5e-12, 40e-12], "alpha_soma": [0.2, 4.0, 4.0, 4.0]}
N = 4


def _candidates(factor=(1.0, 1.0, 1.5)) -> dict[str, torch.Tensor]:
    """B = 3 candidates: all alike at a 3 pA leak, the truth, the truth with a 1.5 x leak."""
    truth = {k: torch.tensor(v, dtype=torch.float64) for k, v in TRUTH.items()}
    return {"Isoma_dpi_tau": torch.stack([torch.full((N,), 3e-12, dtype=torch.float64),
                                          truth["Isoma_dpi_tau"], factor[2] * truth["Isoma_dpi_tau"]]),
            "alpha_soma": torch.stack([torch.full((N,), 4.0, dtype=torch.float64), truth["alpha_soma"],
                                       truth["alpha_soma"]])}


@pytest.fixture(scope="module")
def fi():
    backend = get_backend("torch")
    target = FI.run(backend, f"core0:{N}", Params.from_values({k: torch.tensor([v]) for k, v in TRUTH.items()}))
    model = FI.run(backend, f"core0:{N}", Params.from_values(_candidates()))
    return model, target


def _check(loss: PerNeuron, b=3, n=N):
    assert loss.values.shape == (b, n) and loss.values.dtype == torch.float64
    assert torch.isfinite(loss.values).all() and (loss.values >= 0).all()
    assert loss.mask.shape == (n,) and loss.penalised.shape == (b, n)
    assert torch.all(loss.values[:, ~torch.as_tensor(loss.mask)] == 0)
    masked = np.concatenate([v for v in loss.reasons.values()] or [np.zeros(0, int)])
    assert sorted(set(masked.tolist())) == np.flatnonzero(~loss.mask).tolist()


def test_the_fi_run_is_what_the_tests_assume(fi):
    model, target = fi
    counts = target.spike_counts()  # (L, N)
    assert target.batch == L and model.batch == 3 * L
    assert counts[:, 0].tolist() == [0, 0, 0] and counts[0, 1] == 1 and counts[1:, 1].min() >= 3
    assert pair_sets(model, target).target_set.tolist() == [0, 1, 2] * 3


@pytest.mark.parametrize("loss_fn", [
    rate_loss, lambda m, t: isi_loss(m, t), lambda m, t: isi_loss(m, t, statistic="cv"),
    lambda m, t: van_rossum_loss(m, t, 10e-3), lambda m, t: victor_purpura_loss(m, t, 200.0), coincidence_loss],
    ids=["rate", "isi_mean", "isi_cv", "van_rossum", "victor_purpura", "coincidence"])
def test_every_spike_loss_gives_b_by_n_and_zero_for_the_true_candidate(fi, loss_fn):
    model, target = fi
    loss = loss_fn(model, target)
    _check(loss)
    # candidate 1 is the truth, condition by condition (ISI means come from cumulative sums
    # over all trains, equal to rounding)
    assert torch.all(loss.values[1] < 1e-20)
    wrong = loss.values[[0, 2]][:, torch.as_tensor(loss.mask)]
    assert torch.all(wrong[:, 1:] > 0)  # neurons 2 and 3 fire; the others' candidates do too
    assert len(set(np.round(loss.values[2].numpy(), 12))) >= 3  # the neurons differ


def test_rate_loss_is_the_log_ratio_condition_by_condition(fi):
    model, target = fi
    r_m = model.rates().reshape(3, L, N)
    r_t = target.rates()
    expected = (np.log((r_m + 1.0) / (r_t + 1.0)) ** 2).mean(1)
    np.testing.assert_allclose(rate_loss(model, target).values.numpy(), expected, rtol=1e-12)
    assert rate_loss(model, target).mask.all()  # a silent target is data for the rate
    # the per-set metrics pair the same way (B * L, N)
    np.testing.assert_allclose(firing_rate_error(model, target), (r_m - r_t).reshape(3 * L, N))


def test_silent_and_one_spike_neurons_in_the_isi_loss(fi):
    model, target = fi
    loss = isi_loss(model, target)
    assert loss.mask.tolist() == [False, True, True, True]
    assert loss.reasons == {"target has fewer than 2 spikes in every condition": [0]}
    # neuron 1: the lowest level (one spike) has no ISI; the mean runs over the other two
    isi = lambda r, sets: np.array([np.diff(r.spike_steps(1, s)).mean() * DT for s in sets])  # noqa: E731
    e = np.log(isi(model, [b * L + l for b in range(3) for l in (1, 2)]).reshape(3, 2) / isi(target, [1, 2]))
    np.testing.assert_allclose(loss.values[:, 1].numpy(), (e ** 2).mean(1), rtol=1e-12)
    cv = isi_loss(model, target, statistic="cv")
    assert cv.mask.tolist() == [False, True, True, True]


def test_coincidence_masks_a_silent_target(fi):
    model, target = fi
    loss = coincidence_loss(model, target)
    assert loss.mask.tolist() == [False, True, True, True]
    assert list(loss.reasons) == ["target silent in every condition"]


def _synthetic(trains, n_steps=T, **kw) -> Recording:
    """trains[s][n]: spike steps of neuron n in set s."""
    b, n, s = [], [], []
    for si, per_set in enumerate(trains):
        for ni, steps in enumerate(per_set):
            b, n, s = b + [si] * len(steps), n + [ni] * len(steps), s + list(steps)
    return Recording.from_steps("test", DT, n_steps, len(trains), len(trains[0]), b, n, s, **kw)


def test_candidates_without_a_value_are_penalised_not_masked():
    regular = lambda k: list(range(100, 2000, k))  # noqa: E731
    target = _synthetic([[regular(100), regular(50)], [regular(200), regular(40)]])  # L = 2
    # candidate 0 = the target; candidate 1 fires once (neuron 0) and not at all (neuron 1) in condition 1
    model = _synthetic([[regular(100), regular(50)], [regular(200), regular(40)],
                        [regular(100), regular(50)], [[700], []]])
    mean = isi_loss(model, target)
    assert mean.penalised.tolist() == [[False, False], [True, True]]
    # the run's 0.2 s stands for the missing ISI: e = ln(0.2 s / target ISI) in condition 1 only
    expected = np.log(T * DT / (np.array([200, 40]) * DT)) ** 2 / 2
    np.testing.assert_allclose(mean.values[1].numpy(), expected, rtol=1e-12)
    cv = isi_loss(model, target, statistic="cv", missing=9.0)
    np.testing.assert_allclose(cv.values[1].numpy(), [4.5, 4.5], rtol=1e-12)  # (0 + 9) / 2
    assert torch.all(mean.values[0] == 0) and torch.all(cv.values[0] == 0)


def test_the_pairing_order_is_candidate_major():
    target = _synthetic([[[100, 900]], [[300]], [[500, 700, 1100]]])  # L = 3, one neuron
    swapped = _synthetic([[[100, 900]], [[300]], [[500, 700, 1100]], [[300]], [[100, 900]], [[500, 700, 1100]]])
    vp = victor_purpura_loss(swapped, target, 1e3)
    assert vp.values[0, 0] == 0 and vp.values[1, 0] > 0
    # per set (B * L, N): model set s meets target set s % L
    per_set = victor_purpura_distance(swapped, target, 1e3)[:, 0]
    for s in range(6):
        one = _synthetic([[swapped.spike_steps(0, s).tolist()]])
        ref = _synthetic([[target.spike_steps(0, s % 3).tolist()]])
        assert per_set[s] == victor_purpura_distance(one, ref, 1e3)[0, 0]
        g = gamma_coincidence(swapped, target)[s, 0]
        assert g == pytest.approx(gamma_coincidence(one, ref)[0, 0], rel=1e-12)


def test_recordings_that_do_not_pair_are_refused(fi):
    model, target = fi
    with pytest.raises(RecordingError, match="B \\* L"):
        rate_loss(_synthetic([[[1]] * N] * 4, n_steps=model.n_steps), target)  # 4 sets, not 3 * B
    # the same levels in another order: the target's experiment says so
    levels = {"Isoma_const": [3e-9, 1e-9, 0.3e-9]}
    other = dataclasses.replace(target, experiment=dataclasses.replace(target.experiment, conditions=levels))
    with pytest.raises(RecordingError, match="conditions"):
        rate_loss(model, other)
    # a file without experiment (v1): the protocol's metadata says so
    v1 = dataclasses.replace(target, experiment=None, metadata={"protocol": {"conditions": levels}})
    with pytest.raises(RecordingError, match="conditions"):
        rate_loss(dataclasses.replace(model, experiment=None, metadata={"protocol": {
            "conditions": {k: list(v) for k, v in model.experiment.conditions.items()}}}), v1)
    with pytest.raises(ParameterError, match="window"):
        rate_loss(model, target, window=(0.0, 1.0))


def test_conditions_held_by_the_experiment():
    # the data model's way: the experiment holds the conditions, the backend runs B x L sets
    from .conftest import single_neuron_experiment

    base = single_neuron_experiment(n_steps=1500)
    levels = {"Isoma_const": [0.5e-9, 1e-9, 2e-9]}
    exp = dataclasses.replace(base, conditions=levels)
    backend = get_backend("torch")
    target = backend.run(exp, Params.from_values(Iampa_w0=100e-12))
    model = backend.run(exp, Params.from_values(Iampa_w0=torch.tensor([[100e-12], [150e-12]])))
    assert (target.n_conditions, model.n_candidates, model.batch) == (3, 2, 6)
    loss = rate_loss(model, target)
    _check(loss, 2, 1)
    assert loss.values[0, 0] == 0 and loss.values[1, 0] > 0 and loss.unstable.shape == (2, 1)
    reordered = backend.run(dataclasses.replace(base, conditions={"Isoma_const": levels["Isoma_const"][::-1]}))
    with pytest.raises(RecordingError, match="conditions"):
        rate_loss(reordered, target)
    with pytest.raises(RecordingError, match="conditions"):  # one condition against three
        rate_loss(model, backend.run(base))


def test_unstable_candidates_are_reported(fi):
    model, target = fi
    unstable = np.zeros((3 * L, N), dtype=bool)
    unstable[2 * L + 1, 3] = True  # candidate 2, condition 1, neuron 3
    flagged = dataclasses.replace(model)
    flagged.unstable = unstable
    assert rate_loss(flagged, target).unstable.tolist() == [[False] * 4, [False] * 4, [False, False, False, True]]
    assert rate_loss(model, target).unstable is None or not rate_loss(model, target).unstable.any()


def test_rate_and_van_rossum_losses_are_differentiable(fi):
    _, target = fi
    values = {k: v.clone().requires_grad_(True) for k, v in _candidates().items()}
    model = FI.run(get_backend("torch", engine="eager"), f"core0:{N}", Params.from_values(values))
    assert model.raster is not None
    loss = rate_loss(model, target).values.sum() + van_rossum_loss(model, target, 10e-3).values.sum()
    loss.backward()
    grad = values["Isoma_dpi_tau"].grad
    assert torch.isfinite(grad).all() and torch.count_nonzero(grad[[0, 2], 1:]) >= 4
    # no gradient at the truth: every error is 0 there (the squares are smooth at 0)
    assert torch.all(grad[1] == 0)


def test_feature_loss_on_protocol_features(fi):
    model, target = fi
    fm, ft = FI.features(model), FI.features(target)
    slope = feature_loss(fm["slope"], ft["slope"])  # Hz/A, NaN where fewer than 2 levels fire
    _check(slope)
    assert slope.mask.tolist() == [False, True, True, True] and torch.all(slope.values[1] == 0)
    np.testing.assert_allclose(slope.values[2, 1:].numpy(), np.log(fm["slope"][2, 1:] / ft["slope"][0, 1:]) ** 2)
    rate = feature_loss(fm["rate"], ft["rate"], scale=10.0)  # (B, N, L) Hz, per 10 Hz
    expected = (((fm["rate"] - ft["rate"]) / 10.0) ** 2).mean(-1)
    np.testing.assert_allclose(rate.values.numpy(), expected, rtol=1e-12)
    nan_model = fm["slope"].copy()
    nan_model[2, 3] = np.nan
    penalised = feature_loss(nan_model, ft["slope"])
    assert penalised.values[2, 3] == MISSING and penalised.penalised[2].tolist() == [False, False, False, True]
    with pytest.raises(ParameterError, match="one chip"):
        feature_loss(fm["slope"], fm["slope"])


def test_combine_weighs_what_has_data(fi):
    model, target = fi
    rate, isi = rate_loss(model, target), isi_loss(model, target)
    both = combine({"rate": rate, "isi": isi}, {"rate": 1.0, "isi": 3.0})
    _check(both)
    assert both.mask.all()  # the rate has data for the silent neuron
    torch.testing.assert_close(both.values[:, 0], rate.values[:, 0])
    torch.testing.assert_close(both.values[:, 1:], (rate.values[:, 1:] + 3 * isi.values[:, 1:]) / 4)
    assert both.reasons == {}
    isi_only = combine({"isi": isi, "cv": isi_loss(model, target, statistic="cv")}, {"isi": 1.0, "cv": 1.0})
    assert isi_only.mask.tolist() == [False, True, True, True]
    assert isi_only.reasons["isi: target has fewer than 2 spikes in every condition"].tolist() == [0]
    with pytest.raises(ParameterError, match="weight"):
        combine({"rate": rate}, {})


# --- traces ----------------------------------------------------------------------------

KERNELS = SynapticKernels(synapses=("ampa",), weights=(8,), isolation=0.06, fit_span=0.03)


def _kernels(values, engine="auto"):
    return KERNELS.run(get_backend("torch", engine=engine), "core0:3", Params.from_values(values))


@pytest.fixture(scope="module")
def kernels():
    tau = torch.tensor([[15e-12, 20e-12, 26e-12]], dtype=torch.float64)
    target = _kernels({"Iampa_tau": tau})
    model = _kernels({"Iampa_tau": torch.cat([tau, 1.2 * tau])})
    return tau, model, target


def test_kernel_loss_of_the_time_constant(kernels):
    _, model, target = kernels
    starts = KERNELS.event_lists()[0] + 1
    loss = kernel_loss(model, target, "Iampa", starts)
    _check(loss, 2, 3)
    assert loss.mask.all() and torch.all(loss.values[0] == 0)
    ref_m, ref_t = KERNELS.features(model)["tau_ampa"], KERNELS.features(target)["tau_ampa"]
    np.testing.assert_allclose(loss.values[1].numpy(), np.log(ref_m[1] / ref_t[0]) ** 2, rtol=1e-9)
    # tau ~ 1 / I_tau: the model's time constants (the fit undone of forward Euler's bias,
    # protocols/kernels.py) differ by exactly 1.2; the fitted ones by about that
    euler = lambda tau_fit: DT / (1 - np.exp(-DT / tau_fit))  # noqa: E731
    np.testing.assert_allclose(euler(ref_t[0]) / euler(ref_m[1]), 1.2, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(loss.values[1].numpy()), np.log(1.2), rtol=0.03)
    amp = kernel_loss(model, target, "Iampa", starts, what="amplitude")
    assert torch.all(amp.values < 1e-6)  # the leak does not change the jump


def test_a_target_that_traced_some_neurons_or_none(kernels):
    _, model, target = kernels
    starts = KERNELS.event_lists()[0] + 1
    some = dataclasses.replace(target, traces={"Iampa": target.traces["Iampa"][:, :, [0, 2]]},
                               trace_neurons=np.array([0, 2]))
    for loss in (trace_loss(model, some, "Iampa"), kernel_loss(model, some, "Iampa", starts)):
        _check(loss, 2, 3)
        assert loss.mask.tolist() == [True, False, True] and loss.reasons == {"target did not trace Iampa": [1]}
        assert loss.values[1, 0] > 0 and loss.values[1, 2] > 0
    none = dataclasses.replace(target, traces={}, trace_neurons=np.zeros(0, np.int64))
    for loss in (trace_loss(model, none, "Iampa"), kernel_loss(model, none, "Iampa", starts)):
        _check(loss, 2, 3)
        assert not loss.mask.any() and list(loss.reasons) == ["target has no Iampa trace"]
    with pytest.raises(RecordingError, match="record="):
        trace_loss(dataclasses.replace(model, traces={}), target, "Iampa")


def test_trace_loss_gradient_through_the_simulator_matches_finite_differences(kernels):
    tau, _, target = kernels
    w0 = torch.tensor([[90e-12, 100e-12, 115e-12], [100e-12, 80e-12, 120e-12]], dtype=torch.float64)
    values = {"Iampa_tau": tau.expand(2, -1), "Iampa_w0": w0.clone().requires_grad_(True)}
    model = _kernels(values, engine="eager")
    loss = trace_loss(model, target, "Iampa")
    (grad,) = torch.autograd.grad(loss.values.sum(), values["Iampa_w0"])
    # each (candidate, neuron) depends on its own w0 only: one pair of runs moves them all
    h = 1e-5 * w0
    up, down = (trace_loss(_kernels({"Iampa_tau": tau.expand(2, -1), "Iampa_w0": w0 + s * h}), target, "Iampa")
                for s in (1, -1))
    fd = (up.values - down.values) / (2 * h)
    # at the target's own w0 both are 0 up to rounding (eager and fused engines agree to it)
    np.testing.assert_allclose(grad.numpy(), fd.numpy(), rtol=1e-5, atol=1e-8 * float(fd.abs().max()))
    # downhill is towards the target's 100 pA (the default): up from below, down from above
    assert grad[0, 0] < 0 and grad[0, 2] > 0 and grad[1, 1] < 0 and grad[1, 2] > 0 and grad[1, 0] == 0
