"""Identifiability (fitting/identify.py, fitting/sensitivity.py, fitting/_nullspace.py).

The model's exact degeneracies (dpi-model.md, calibration.md "Facts of the model"): above I0
a DPI synapse's alpha_X and I_X_w0 act only through their product, its C_X and I_X_tau only
through their ratio. The analyses run the torch simulator on 4 neurons with short settings.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from fractions import Fraction

import numpy as np
import pytest

from dynacal import get_backend
from dynacal.errors import ParameterError
from dynacal.fitting import SearchSpace, Target, _nullspace
from dynacal.fitting.identify import identifiability, identifiable_space
from dynacal.protocols import FICurve, RateTransfer, SynapticKernels, layout

FI = FICurve(levels=tuple(np.geomspace(200e-12, 5e-9, 6)), duration=0.2, settle=0.05)
KERNELS = SynapticKernels(synapses=("ampa", "gaba_b"), weights=(8, 2), repeats=1)
#: short settings of the protocols the check of an unconstrained parameter runs
CHECK = {"kernels": KERNELS, "rate_transfer": RateTransfer(rates=(20.0, 50.0), rates_by_type=(), segment=0.15,
                                                           gap=0.05, baseline=0.1)}
SOMA = ["Isoma_dpi_tau", "alpha_soma"]
SYNAPSE = ["alpha_ampa", "Iampa_w0", "Iampa_tau", "Campa"]


def _mismatched(n=4):
    """Neurons that differ: leak and AMPA weight per neuron (as the silicon's mismatch)."""
    net = layout(f"core0:{n}")
    values = {"Isoma_dpi_tau": np.geomspace(3e-12, 8e-12, n), "Iampa_w0": np.geomspace(50e-12, 200e-12, n)}
    return dataclasses.replace(net, neuron_values=values)


@pytest.fixture(scope="module")
def both():
    neurons = _mismatched()
    experiments = {"fi": FI.experiment(neurons), "kernels": KERNELS.experiment(neurons)}
    return identifiability(experiments, SOMA + SYNAPSE + ["Igaba_b_w0"], check=CHECK)


@pytest.fixture(scope="module")
def fi_only():
    return identifiability({"fi": FI.experiment("core0:4")}, SOMA + ["Iampa_w0", "Iampa_tau"], check=CHECK)


def _combination(ident, name):
    found = {c.name: c for c in ident.combinations}
    assert name in found, f"{name} not among {list(found)}"
    return found[name]


def test_kernels_find_alpha_times_w0_and_the_tau_ratio(both):
    product = _combination(both, "alpha_ampa*Iampa_w0")
    assert product.exponents == {"alpha_ampa": 1.0, "Iampa_w0": 1.0} and product.exact
    assert product.neurons == 1.0
    assert (product.keep, product.fixed) == ("Iampa_w0", ("alpha_ampa",))  # the bias the chip sets is fitted
    ratio = _combination(both, "Iampa_tau/Campa")
    assert ratio.exponents == {"Iampa_tau": 1.0, "Campa": -1.0}
    assert sorted(both.fixed) == ["Campa", "alpha_ampa"]
    assert not both.unconstrained
    # 7 parameters, two exact degeneracies: rank 5 in every neuron, two singular values ~0
    assert both.rank.tolist() == [5] * 4
    assert np.all(both.singular_values[:, -2:] < 1e-6 * both.singular_values[:, :1])
    i, j = both.parameters.index("alpha_ampa"), both.parameters.index("Iampa_w0")
    assert both.correlation.values[i, j] < -0.99  # only the product is known
    # ... and it is known well (the jump read from the trace), its members only as the prior allows
    assert np.all(product.uncertainty < 0.05)
    assert np.all(both.uncertainty[:, [i, j]] > 0.7)


def test_fi_alone_leaves_the_synapse_unconstrained_and_warns(fi_only, caplog):
    assert set(fi_only.unconstrained) == {"Iampa_w0", "Iampa_tau"}
    for name in ("Iampa_w0", "Iampa_tau"):
        # checked with the numbers: both protocols move with them
        assert set(fi_only.unconstrained[name]) == {"kernels", "rate_transfer"}
    with caplog.at_level(logging.WARNING, logger="dynacal.fitting.identify"):
        lines = fi_only.warn()
    assert len(lines) == 2 and len(caplog.records) == 2
    assert all("kernels" in line and "fi" in line for line in lines)
    assert any(line.startswith("Iampa_w0 ") for line in lines)
    text = fi_only.summary()
    assert "unconstrained Iampa_w0: add kernels or rate_transfer" in text


def test_leak_and_gain_are_identifiable_from_fi(fi_only):
    leak, gain = (fi_only.parameters.index(p) for p in SOMA)
    assert fi_only.sensitive[:, [leak, gain]].all()
    assert not fi_only.combinations
    assert fi_only.rank.tolist() == [2] * 4
    # with 2 % feature noise both are known to better than 20 % (prior: a factor e)
    assert np.all(fi_only.uncertainty[:, [leak, gain]] < 0.2)
    assert np.all(fi_only.uncertainty[:, 2:] > 0.99)  # the synapse: as the prior


def test_per_neuron_results_follow_the_mismatch(both):
    product = _combination(both, "alpha_ampa*Iampa_w0")
    w0 = np.geomspace(50e-12, 200e-12, 4)
    np.testing.assert_allclose(product.values, 4.0 * w0, rtol=1e-12)
    np.testing.assert_allclose(product.value_of({"alpha_ampa": 2.0, "Iampa_w0": w0}), 2.0 * w0)
    with pytest.raises(ParameterError, match="alpha_ampa"):
        product.value_of({"Iampa_w0": w0})
    # leak differs per neuron: so does the f-I curve's sensitivity to it
    leak = both.parameters.index("Isoma_dpi_tau")
    rates = [k for k, f in enumerate(both.features) if f.startswith("fi.rate[")]
    s = both.sensitivity[:, rates, leak]
    assert np.ptp(s, axis=0).max() > 0.05
    np.testing.assert_allclose(both.point["Isoma_dpi_tau"], np.geomspace(3e-12, 8e-12, 4))


def test_a_quick_plan_on_a_spread_subset_of_neurons():
    neurons = _mismatched(8)
    experiments = {"fi": FI.experiment(neurons), "kernels": KERNELS.experiment(neurons)}
    w0 = np.geomspace(50e-12, 200e-12, 8)
    ident = identifiability(experiments, ["alpha_ampa", "Iampa_w0", "Isoma_dpi_tau"], at={"Iampa_w0": w0 * 2},
                            neurons=3, check=False)
    assert ident.settings["neurons"] == [0, 4, 7] and ident.sensitivity.shape[0] == 3
    np.testing.assert_allclose(_combination(ident, "alpha_ampa*Iampa_w0").values, 4.0 * 2 * w0[[0, 4, 7]])
    np.testing.assert_allclose(ident.point["Isoma_dpi_tau"], np.geomspace(3e-12, 8e-12, 8)[[0, 4, 7]])


def test_spike_only_target_still_finds_the_product():
    """A target without traces (as the board records): the kernels' latency and evoked spikes only."""
    rec = KERNELS.run(_SpikesOnly(), "core0:4")
    assert not rec.traces
    target = Target(recordings={"kernels": rec}, source="spikes-only")
    ident = identifiability(target, ["alpha_ampa", "Iampa_w0", "Isoma_dpi_tau"], check=False)
    assert ident.settings["traces"] == {"kernels": False}
    assert ident.features and not any("amplitude" in f or "tau_" in f for f in ident.features)
    assert _combination(ident, "alpha_ampa*Iampa_w0").neurons == 1.0
    # a latency moves by whole steps: the synapse was measured at the coarse step
    assert ident.settings["steps"]["kernels"]["Iampa_w0"] == pytest.approx(0.4)


class _SpikesOnly:
    """The torch simulator as a board sees it: spikes only."""

    name, records_traces = "spikes-only", False

    def __init__(self):
        self._torch = get_backend("torch")

    def run(self, experiment, params=None, **kwargs):
        return self._torch.run(experiment, params)


def test_a_fit_of_the_default_space_runs_on_identifiable_combinations():
    """SearchSpace.default of a target with traces, through identifiable_space."""
    be = get_backend("torch")
    target = Target(recordings={"fi": FI.run(be, "core0:4"), "kernels": KERNELS.run(be, "core0:4")},
                    source="torch")
    space = SearchSpace.default(target)
    ident = identifiability(target, space, check=False)
    assert "Campa" in ident.parameters and "Campa" not in ident.requested  # a partner, analysed
    names = {c.name for c in ident.combinations}
    assert {"alpha_ampa*Iampa_w0", "Iampa_tau/Campa"} <= names
    assert set(ident.unconstrained) <= set(ident.requested)
    reduced = identifiable_space(space, ident)
    assert set(reduced.core) == set(space.core) - set(ident.fixed)
    assert "Iampa_w0" in reduced.core and "Iampa_tau" in reduced.core
    if "alpha_ampa" in space.core:  # a bias sets it on the chip: the space has it, the fit holds it
        assert "alpha_ampa" not in reduced.core
    for comb in ident.combinations:  # at most one member of each combination is left to fit
        assert sum(m in reduced.core for m in comb.exponents) <= 1
        assert sum(m in reduced.mismatch for m in comb.exponents) <= 1


def test_core_values_and_factors_are_reduced_each_on_their_own(both):
    from dynacal.fitting.space import core_parameter, factor_parameter  # noqa: PLC0415

    space = SearchSpace(core={n: core_parameter(n, both.point[n][0]) for n in ("alpha_ampa", "Iampa_w0")},
                        mismatch={"alpha_ampa": factor_parameter("alpha_ampa")})
    reduced = identifiable_space(space, both)
    assert list(reduced.core) == ["Iampa_w0"]  # the product is fitted through the weight bias
    assert list(reduced.mismatch) == ["alpha_ampa"]  # the only per-neuron member: it carries the product


def test_a_space_the_protocols_do_not_constrain_is_refused(fi_only):
    from dynacal.fitting.space import core_parameter  # noqa: PLC0415

    space = SearchSpace(core={"Iampa_w0": core_parameter("Iampa_w0", 1e-10)})
    with pytest.raises(ParameterError, match="nothing is left to fit.*kernels"):
        identifiable_space(space, fi_only)


def test_unstable_neurons_keep_their_trace_features_only():
    """Strong GABA_A shunting makes forward Euler unstable in neurons 2 and 3 (dpi-model.md):
    their spike features are dropped, the synapse traces (independent of the soma) kept."""
    kernels = SynapticKernels(synapses=("ampa", "gaba_a"), weights=(8, 4), repeats=1)
    net = dataclasses.replace(layout("core0:4"), neuron_values={"Igaba_a_w0": np.array([1e-10, 1e-10, 2e-9, 2e-9])})
    ident = identifiability({"kernels": kernels.experiment(net)}, ["alpha_gaba_a", "Igaba_a_w0", "Iampa_w0"],
                            check=False)
    spikes = [k for k, f in enumerate(ident.features) if "latency" in f or "evoked" in f]
    traces = [k for k, f in enumerate(ident.features) if "amplitude" in f or "tau_" in f]
    assert spikes and traces
    assert ident.valid[:2, spikes].all() and not ident.valid[2:, spikes].any()
    assert ident.valid[:, traces].all()
    assert _combination(ident, "alpha_gaba_a*Igaba_a_w0").neurons == 1.0


def test_to_dict_is_json_and_the_matrix_has_its_labels(both):
    d = json.loads(json.dumps(both.to_dict()))
    assert d["parameters"] == both.parameters
    assert {c["name"] for c in d["combinations"]} >= {"alpha_ampa*Iampa_w0", "Iampa_tau/Campa"}
    assert len(d["combinations"][0]["values"]) == 4
    m = both.matrix
    assert m.values.shape == (len(both.features), len(both.parameters)) == (len(m.rows), len(m.columns))
    row = both.features.index("kernels.amplitude_ampa")
    col = both.parameters.index("Iampa_w0")
    # the jump is w0 * alpha * weight (the dark current before it adds ~1e-4 of it)
    assert m.values[row, col] == pytest.approx(1.0, abs=1e-3)
    assert both.arrays()["identifiability_sensitivity"].shape == both.sensitivity.shape


def test_bad_inputs_are_named():
    exp = {"fi": FI.experiment("core0:2")}
    with pytest.raises(ParameterError, match="Iampa_w0"):
        identifiability(exp, ["Iampa_wO"])
    with pytest.raises(ParameterError, match="Isoma_ahp_w.*> 0"):
        identifiability(exp, ["Isoma_ahp_w"], at={"Isoma_ahp_w": 0.0})
    with pytest.raises(ParameterError, match="same neurons"):
        identifiability({"fi": FI.experiment("core0:2"), "kernels": KERNELS.experiment("core0:3")}, SOMA)
    with pytest.raises(ParameterError, match="protocol"):
        identifiability(exp, SOMA, protocols=["fii"])


def test_nullspace_finds_powers_and_ratios_of_a_known_matrix():
    """A synthetic S whose features see x^2*y, z/w and v alone (exact exponents known)."""
    rng = np.random.default_rng(0)
    g = rng.normal(size=(6, 3))  # features' responses to the three combinations
    # columns x, y, z, w, v: d/dln x of ln(x^2 y) = 2, of y 1; z/w: +1, -1
    S = np.stack([2 * g[:, 0], g[:, 0], g[:, 1], -g[:, 1], g[:, 2]], axis=1)[None]
    names = ["x", "y", "z", "w", "v"]
    found = dict(_nullspace.combinations(S, np.ones((1, 5), bool), names, rtol=1e-6))
    assert found == {(("x", Fraction(2)), ("y", Fraction(1))): 1, (("z", Fraction(1)), ("w", Fraction(-1))): 1}
    assert _nullspace.name_of({"x": Fraction(2), "y": Fraction(1)}) == "x^2*y"
    assert _nullspace.name_of({"z": Fraction(1, 2), "w": Fraction(-1)}) == "z^(1/2)/w"


def test_one_informative_feature_does_not_merge_the_degeneracies():
    """With a single feature every column is parallel to every other; only the exact pairs
    (powers 1 and -1) are combinations, not the accidental link between them."""
    S = np.array([[[0.734, 0.734, 1.0, -1.0]]])
    found = dict(_nullspace.combinations(S, np.ones((1, 4), bool), ["x", "y", "z", "w"], rtol=1e-3))
    assert set(found) == {(("x", Fraction(1)), ("y", Fraction(1))), (("z", Fraction(1)), ("w", Fraction(-1)))}
