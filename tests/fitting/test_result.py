"""CalibrationResult: construction, per-neuron table, params in the one order, files, cache."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from dynacal import Chip
from dynacal.backends import get_backend
from dynacal.errors import ParameterError, RecordingError
from dynacal.fitting.cache import cache_key, cached_for_serial, find_cached, latest_for_serial, provenance, store
from dynacal.fitting.result import CalibrationResult
from dynacal.layers import ChipLayers
from dynacal.params import PARAMETERS
from dynacal.protocols import get_protocol

RNG = np.random.default_rng(3)
CORE = {"Isoma_dpi_tau": 4.1e-12, "alpha_soma": 2.7, "Iampa_w0": 3.3e-11, "soma_refP": 4e-3}
FACTORS = {"Isoma_dpi_tau": RNG.lognormal(0, 0.15, 256), "Iampa_w0": RNG.lognormal(0, 0.2, 256)}


def make(**kw) -> CalibrationResult:
    args = dict(core_values={0: CORE}, mismatch={k: {0: v} for k, v in FACTORS.items()},
                quality={"fi": {"per_neuron": RNG.uniform(0, 1, 256)}}, failed={"bound": [3, 7]},
                combinations=[{"name": "alpha_ampa*Iampa_w0", "exponents": {"alpha_ampa": 1, "Iampa_w0": 1},
                               "values": RNG.uniform(1, 2, 256)}],
                provenance=provenance(serial=7, target_hashes={"fi.h5": "ab" * 32}, options={"fitter": "hybrid"}),
                options={"fitter": "hybrid"})
    args.update(kw)
    return CalibrationResult(**args)


def test_per_neuron_is_core_times_factor_for_every_parameter():
    r = make()
    assert set(r.per_neuron) == set(PARAMETERS)
    assert r.neurons.shape == (256, 3) and (r.neurons[:, 2] == np.arange(256)).all()
    np.testing.assert_allclose(r.per_neuron["Isoma_dpi_tau"], CORE["Isoma_dpi_tau"] * FACTORS["Isoma_dpi_tau"])
    np.testing.assert_allclose(r.per_neuron["alpha_soma"], 2.7)  # a core value without mismatch
    np.testing.assert_allclose(r.per_neuron["Isoma_th"], PARAMETERS["Isoma_th"].default)  # not fitted: the table
    table = r.per_neuron_table()
    i = r.neuron_index(0, 0, 10)
    assert table["id"][i] == 10 and table["Iampa_w0"][i] == pytest.approx(3.3e-11 * FACTORS["Iampa_w0"][10])
    csv = r.per_neuron_table("csv").splitlines()
    assert len(csv) == 257 and "Isoma_dpi_tau [A]" in csv[0]
    assert not r.ok[3] and not r.ok[7] and r.ok.sum() == 254
    assert r.quality["fi"]["median"] == pytest.approx(np.median(np.delete(r.quality["fi"]["per_neuron"], [3, 7])))


def test_params_equals_the_objectives_construction():
    """FITTING.md: the objective simulates value[b, n] = core[b] x factor[b, n] as candidates of the
    experiment's own network; result.params(network) must give the same Params."""
    net = get_protocol("fi").experiment("core0").network
    r = make()
    core, fac = r.neurons[:, 0] * 4 + r.neurons[:, 1], r.neurons[:, 2]
    assert (net.core == core).all() and (net.neuron_id == fac).all()
    cands = {name: torch.as_tensor(CORE[name] * FACTORS.get(name, np.ones(256))[net.neuron_id]).reshape(1, -1)
             for name in CORE}
    want, got = net.params(cands), r.params(net)
    for name in PARAMETERS:
        a, b = torch.broadcast_tensors(getattr(want, name), getattr(got, name))
        torch.testing.assert_close(a, b, rtol=1e-12, atol=0, msg=name)


def test_params_of_a_subset_network_follows_the_physical_neuron():
    chip = Chip()
    chip.get_neurons(201, "Core_0")
    chip.get_neurons(2, "Core_1")  # a core the calibration does not cover keeps the table
    p = make().params(chip.network())
    assert float(p.Isoma_dpi_tau[0, 200]) == pytest.approx(CORE["Isoma_dpi_tau"] * FACTORS["Isoma_dpi_tau"][200])
    assert float(p.Isoma_dpi_tau[0, 201]) == PARAMETERS["Isoma_dpi_tau"].default
    chip.set_bias({"Isoma_dpi_tau": "6 pA"}, "Core_0")  # the network's own core bias wins, mismatch kept
    p = make().params(chip.network())
    assert float(p.Isoma_dpi_tau[0, 200]) == pytest.approx(6e-12 * FACTORS["Isoma_dpi_tau"][200])


def test_save_load_round_trip(tmp_path):
    r = make()
    path = r.save(tmp_path)
    assert path.name == "calibration.json" and (tmp_path / "calibration.npz").exists()
    data = json.loads(path.read_text())
    assert ChipLayers.from_dict(data["layers"]).core_values == r.layers().core_values  # no fitting needed
    assert data["cores"]["0"]["codes"]["IF_TAU1_N"] == r.codes[0]["IF_TAU1_N"]
    for src in (tmp_path, path):
        back = CalibrationResult.load(src)
        assert back.core_values == r.core_values and back.failed == r.failed and back.serial == 7
        for name in PARAMETERS:
            np.testing.assert_array_equal(back.per_neuron[name], r.per_neuron[name])
        np.testing.assert_array_equal(back.mismatch["Iampa_w0"][0], r.mismatch["Iampa_w0"][0])
        np.testing.assert_array_equal(back.combinations[0]["values"], r.combinations[0]["values"])
        assert back.codes == r.codes and back.code_error == r.code_error and back.provenance == r.provenance


def test_codes_through_the_bias_map_with_rounding_error():
    r = make()
    from dynacal.hardware.codemap import codes_to_params
    got = codes_to_params({0: r.codes[0]})[(0, 0)]
    for name, value in CORE.items():
        assert got[name] == pytest.approx(value * (1 + r.code_error[0][name]), rel=1e-9)
        assert abs(r.code_error[0][name]) < 0.02


@pytest.mark.parametrize("edit, field", [
    (lambda d: d.update(format="something-else"), "format"),
    (lambda d: d.update(version=99), "version"),
    (lambda d: d.update(scales=[1, 2]), "scales"),
    (lambda d: d["layers"].update(format="x"), "layers"),
    (lambda d: d["arrays"].update(sha256="0" * 64), "arrays.sha256"),
    (lambda d: d["quality"]["fi"].update(per_neuron="npz:nothing"), "quality['fi'].per_neuron"),
])
def test_foreign_newer_or_corrupt_files_name_the_field(tmp_path, edit, field):
    path = make().save(tmp_path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(RecordingError, match=f"field {field!r}".replace("[", r"\[").replace("]", r"\]")):
        CalibrationResult.load(tmp_path)


def test_truncated_json_and_missing_npz(tmp_path):
    path = make().save(tmp_path)
    text = path.read_text()
    path.write_text(text[: len(text) // 2])
    with pytest.raises(RecordingError, match="not JSON"):
        CalibrationResult.load(path)
    path.write_text(text)
    (tmp_path / "calibration.npz").unlink()
    with pytest.raises(RecordingError, match="missing beside it"):
        CalibrationResult.load(path)
    with pytest.raises(RecordingError, match="does not exist"):
        CalibrationResult.load(tmp_path / "nothing")


def test_bad_values_are_refused_when_loading(tmp_path):
    path = make().save(tmp_path)
    data = json.loads(path.read_text())
    data["layers"]["core_values"]["0"]["Isoma_dpi_tau"] = -1.0
    path.write_text(json.dumps(data))
    with pytest.raises(RecordingError, match="'layers'.*Isoma_dpi_tau"):
        CalibrationResult.load(path)


def test_construction_errors():
    with pytest.raises(ParameterError, match="Isoma_dpi_tua|closest"):
        CalibrationResult({0: {"Isoma_dpi_tua": 1e-12}})
    with pytest.raises(ParameterError, match="failed\\['bound'\\]"):
        make(failed={"bound": [300]})
    with pytest.raises(ParameterError, match="one per calibrated neuron"):
        make(quality={"fi": {"per_neuron": np.ones(5)}})


def test_cache_store_find_and_latest(tmp_path, monkeypatch):
    monkeypatch.setenv("DYNACAL_CACHE", str(tmp_path / "cache"))
    hashes, options = {"fi.h5": "ab" * 32}, {"fitter": "hybrid"}
    assert find_cached(7, hashes, options) is None and latest_for_serial(7) is None
    old = make()
    folder = store(old)
    assert folder.parent == tmp_path / "cache" / "7" and folder.name == cache_key(hashes, options)
    hit = find_cached(7, hashes, options)
    assert hit is not None and hit.core_values == old.core_values
    assert find_cached(7, hashes, {"fitter": "optuna"}) is None  # other options: a miss
    assert find_cached(7, hashes, options, version="0.0.1") is None  # other software: a miss
    assert find_cached(8, hashes, options) is None
    newer = make(core_values={0: dict(CORE, alpha_soma=3.1)}, options={"fitter": "optuna"},
                 provenance=dict(old.provenance, finished="2999-01-01T00:00:00+00:00"))
    store(newer)
    assert len(cached_for_serial(7)) == 2
    assert latest_for_serial(7).core_values[0]["alpha_soma"] == 3.1
    store(newer)  # replacing an entry keeps one folder, no leftovers
    assert sorted(p.name for p in (tmp_path / "cache" / "7").iterdir()) == sorted(
        [folder.name, cache_key(hashes, {"fitter": "optuna"})])
    (folder / "calibration.npz").write_bytes(b"garbage")
    assert find_cached(7, hashes, options) is None  # damaged: a miss, not a crash


def test_cache_key_from_a_fitters_provenance(tmp_path, monkeypatch):
    """calibrate() names the target's hashes "hashes": the entry is still found by them."""
    monkeypatch.setenv("DYNACAL_CACHE", str(tmp_path))
    hashes, options = {"fi.h5": "cd" * 32}, {"fitter": "optuna", "budget_s": 60.0}
    r = make(options=options, provenance={"serial": "7", "hashes": hashes, "versions": {"dynacal": "0.1.0"}})
    store(r)
    assert find_cached("7", hashes, options, version="0.1.0") is not None
    with pytest.raises(ParameterError, match="serial"):
        store(make(provenance={"serial": "../x"}))


def test_the_core_reads_the_layers_without_fitting(tmp_path):
    """ChipLayers.load (helper i11) reads calibration.json's top-level layers."""
    if not hasattr(ChipLayers, "load"):
        pytest.skip("ChipLayers.load arrives with issue 11's layers work")
    r = make()
    r.save(tmp_path)
    layers = ChipLayers.load(tmp_path)
    assert layers.core_values == r.layers().core_values
    np.testing.assert_array_equal(layers.mismatch["Iampa_w0"][0], r.mismatch["Iampa_w0"][0])


def test_params_equal_what_the_objective_simulates():
    """With the fitter's Objective (helper "fit"): its candidate values for a winner are the
    calibrated neurons' result.params."""
    objective = pytest.importorskip("dynacal.fitting.objective")
    space = pytest.importorskip("dynacal.fitting.space")
    from dynacal.protocols import FICurve
    fi = FICurve(levels=(5e-10, 2e-9), duration=0.1, settle=0.02)
    ids = np.arange(0, 256, 32)
    net = fi.experiment(f"core0:{ids.size}").network
    rec = fi.run(get_backend("torch"), net)
    P = space.Parameter
    sp = space.SearchSpace(core={"Isoma_dpi_tau": P("Isoma_dpi_tau", 1e-12, 5e-11),
                                 "alpha_soma": P("alpha_soma", 0.5, 20.0)},
                           mismatch={"Isoma_dpi_tau": P("Isoma_dpi_tau", 0.3, 3.0, level="neuron", sigma=0.2),
                                     "Iampa_w0": P("Iampa_w0", 0.3, 3.0, level="neuron", sigma=0.2)})
    obj = objective.Objective({"fi": rec}, sp)
    core = {"Isoma_dpi_tau": 4.1e-12, "alpha_soma": 2.7}
    fac = {k: RNG.lognormal(0, 0.2, net.n_neurons) for k in ("Isoma_dpi_tau", "Iampa_w0")}
    simulated = obj.values(core, fac)
    full = {k: np.ones(256) for k in fac}
    for k, f in fac.items():
        full[k][net.neuron_id] = f
    r = CalibrationResult({0: core}, {k: {0: v} for k, v in full.items()},
                          neurons=np.stack([net.core // 4, net.core % 4, net.neuron_id], 1))
    p = r.params(net)
    for name, v in simulated.items():
        torch.testing.assert_close(getattr(p, name).expand_as(v), v, rtol=1e-12, atol=0, msg=name)
        np.testing.assert_allclose(r.per_neuron[name], v[0].numpy(), rtol=1e-12)


def test_non_finite_numbers_are_strict_json(tmp_path):
    q = RNG.uniform(0, 1, 256)
    q[:250] = np.nan  # masked neurons
    r = make(quality={"fi": {"per_neuron": q}},
             identifiability={"condition": float("inf"), "s": np.array([1.0, np.nan])})
    path = r.save(tmp_path)
    data = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"non-JSON constant {c}"))
    assert data["identifiability"] == {"condition": None, "s": [1.0, None]}
    back = CalibrationResult.load(path)
    assert np.isnan(back.quality["fi"]["per_neuron"][:250]).all()
    assert back.quality["fi"]["median"] == pytest.approx(np.median(q[250:]))
