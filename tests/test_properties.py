"""Property-based checks of the public constructors and loaders (issue 13 item 7).

Generated values, hostile but of the kinds a user passes (numbers of every type and sign,
NaN and inf, numpy scalars, strings with and without units, empty and nested containers,
None), go into ``Params``, the Chip API, ``Stimulus`` and its generators, the input npz
and recording files with mutated bytes. Each call must either give a valid object, whose
every value is inside its domain, or raise one of dynacal's own errors with a message:
never another exception, never a value outside its domain accepted in silence.

Bounded for CI (``max_examples`` per test, no deadline): the whole file runs in well
under two minutes on two cores.
"""

import io
import math
import zipfile

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dynacal.chip import FAN_IN, NEURONS_PER_CORE, Chip
from dynacal.errors import DynacalError, RecordingError
from dynacal.experiment import Experiment
from dynacal.inputfile import read_inputs
from dynacal.params import _WRONG_UNIT, PARAMETERS, Params
from dynacal.recording import Recording
from dynacal.stimulus import Stimulus, poisson, regular

SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])


def outcome(call):
    """``(True, value)`` or ``(False, error)`` for a DynacalError with a message; any other
    exception fails the test (hypothesis then shrinks it to the smallest input)."""
    try:
        return True, call()
    except DynacalError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        return False, exc


# --- values of the kinds users pass -------------------------------------------------------

floats = st.floats(allow_nan=True, allow_infinity=True, width=64)
small_ints = st.integers(-10, 300)
numpy_numbers = st.one_of(small_ints.map(np.int64), small_ints.map(np.int32), floats.map(np.float64),
                          st.floats(-1e3, 1e3).map(np.float32))
prefixes = st.sampled_from(["", "f", "p", "n", "u", "m", "k", "M", "G", "µ"])
units = st.sampled_from(["A", "F", "V", "s", "Hz", "", "Ohm", "a"])
quantities = st.builds(lambda x, p, u, sep: f"{x:g}{sep}{p}{u}", st.floats(-1e4, 1e4), prefixes, units,
                       st.sampled_from(["", " "]))
scalars = st.one_of(small_ints, floats, numpy_numbers, quantities, st.text(max_size=6), st.none(), st.booleans())
values = st.one_of(scalars, st.lists(scalars, max_size=4), st.lists(st.lists(floats, max_size=3), max_size=3),
                   st.dictionaries(st.text(max_size=3), small_ints, max_size=2), st.just([]))


def whole(x) -> bool:
    """What every count, index and core must be: a whole number (not a bool)."""
    if isinstance(x, (bool, np.bool_)):
        return False
    try:
        return isinstance(x, (int, np.integer)) or (isinstance(x, (float, np.floating)) and math.isfinite(x)
                                                    and float(x).is_integer())
    except TypeError:
        return False


# --- Params -------------------------------------------------------------------------------

names = st.one_of(st.sampled_from(sorted(PARAMETERS)), st.text(max_size=8))


@settings(max_examples=400, **SETTINGS)
@given(st.dictionaries(names, values, max_size=3))
def test_params_from_values(given_values):
    ok, p = outcome(lambda: Params.from_values(given_values))
    if not ok:
        return
    b, n = p.shape
    for name in given_values:
        spec = PARAMETERS[name]  # an unknown name was accepted otherwise
        t = getattr(p, name)
        assert t.ndim == 2 and torch.isfinite(t).all(), (name, t)
        assert (t > 0).all() if spec.positive else (t >= 0).all(), (name, t)
        if spec.unit in _WRONG_UNIT:
            assert float(t.max()) < _WRONG_UNIT[spec.unit][0], (name, t)
        assert t.shape[0] in (1, b) and t.shape[1] in (1, n)


@settings(max_examples=100, **SETTINGS)
@given(st.one_of(values, st.dictionaries(names, values, max_size=2)))
def test_params_from_anything_that_is_not_a_mapping(anything):
    ok, p = outcome(lambda: Params.from_values(anything))
    if ok:
        assert anything is None or isinstance(anything, dict)


# --- the Chip API -------------------------------------------------------------------------

# counts stay small (huge ones are refused by bounds that tests/test_checks.py tests): a
# generated 1e9 inputs would only measure the machine's memory
numpy_counts = st.one_of(small_ints.map(np.int64), small_ints.map(np.int32), st.floats(-5, 300).map(np.float64))
counts = st.one_of(small_ints, numpy_counts, st.floats(-5, 300), st.text(max_size=3), st.none(), st.booleans())
cores = st.one_of(st.integers(-2, 9), st.sampled_from(["Core_0", "Core_3", "Core_9", "core_1", "Core_", "x"]),
                  st.tuples(st.integers(-1, 2), st.integers(-1, 5)), st.floats(-1, 9), numpy_numbers)
weights = st.one_of(st.integers(-3, 80), st.floats(allow_nan=True), st.text(max_size=3), numpy_numbers,
                    st.lists(st.integers(-1, 70), max_size=6), st.none())
probabilities = st.one_of(st.none(), st.floats(-1, 2), st.floats(allow_nan=True), st.text(max_size=2), st.booleans())
index_lists = st.one_of(st.none(), st.lists(st.one_of(st.integers(-2, 8), st.floats(-2, 8)), max_size=5))


@settings(max_examples=300, **SETTINGS)
@given(n_chips=st.one_of(st.integers(-1, 3), st.floats(-1, 3), numpy_numbers, st.text(max_size=2), st.just(10 ** 9)),
       groups=st.lists(st.tuples(counts, cores), min_size=1, max_size=3), n_inputs=counts,
       condition=st.sampled_from([True, "i==j", "one_to_one", False, "all"]), p=probabilities,
       i=index_lists, j=index_lists, weight=weights)
def test_chip_api(n_chips, groups, n_inputs, condition, p, i, j, weight):
    ok, chip = outcome(lambda: Chip(n_chips=n_chips))
    if not ok:
        return
    assert whole(n_chips) and n_chips >= 1
    made = []
    for n, core in groups:
        ok, group = outcome(lambda: chip.get_neurons(n, core))
        if ok:
            assert whole(n) and 0 <= n <= NEURONS_PER_CORE and len(group) == n
            assert 0 <= group.core < chip.n_cores
            made.append(group)
    ok, inputs = outcome(lambda: chip.add_inputs(n_inputs))
    if ok:
        assert whole(n_inputs) and n_inputs >= 0 and len(inputs) == n_inputs
    if made and ok:
        syn = chip.add_connection(inputs, made[0], "AMPA")
        before = len(syn)
        connected, _ = outcome(lambda: chip.connect(syn, condition, i=i, j=j, p=p))
        if connected and p is not None:
            assert 0 <= p <= 1
        if connected:
            assert (syn.i >= 0).all() and (syn.i < len(inputs)).all() and (syn.j < len(made[0])).all()
        set_ok, _ = outcome(lambda: setattr(syn, "weight", weight))
        if set_ok:
            assert len(syn) > before or len(syn) > 0  # never set on a pathway without connections
            w = np.broadcast_to(np.asarray(weight, dtype=np.float64), syn.weight.shape)
            assert np.array_equal(syn.weight, w) and (syn.weight >= 0).all()
    ok, net = outcome(chip.network)
    if ok:
        assert ((net.neuron_id >= 0) & (net.neuron_id < NEURONS_PER_CORE)).all()
        assert ((net.core >= 0) & (net.core < chip.n_cores)).all()
        for conns in (net.inputs, net.recurrent):
            assert (conns.weight >= 0).all()
        fan_in = np.bincount(net.inputs.post, weights=net.inputs.weight, minlength=net.n_neurons)
        assert not net.n_neurons or fan_in.max() <= FAN_IN


# --- Stimulus and its generators ------------------------------------------------------------

rates = st.one_of(floats, st.floats(0, 2e4), st.lists(st.floats(-10, 2e4), max_size=4), st.text(max_size=3), numpy_numbers)
steps_counts = st.one_of(st.integers(-5, 400), st.floats(-5, 400), numpy_counts, st.text(max_size=2))
dts = st.one_of(st.sampled_from([1e-4, 1e-5, 1e-3]), floats, st.text(max_size=3), numpy_numbers)
seeds = st.one_of(st.none(), st.integers(-3, 2 ** 40), st.lists(st.integers(-1, 5), max_size=2), st.text(max_size=2))


def _valid_stimulus(s: Stimulus, n_steps=None):
    assert s.steps.dtype == np.int64 and s.sources.dtype == np.int64 and s.steps.shape == s.sources.shape
    assert whole(s.n_sources) and s.n_sources >= 0
    if s.steps.size:
        assert s.steps.min() >= 0 and s.sources.min() >= 0 and s.sources.max() < s.n_sources
        assert np.all(np.diff(s.steps) >= 0)
        assert n_steps is None or s.steps.max() < n_steps
        pairs = s.steps * max(1, s.n_sources) + s.sources
        assert np.unique(pairs).size == pairs.size


@settings(max_examples=300, **SETTINGS)
@given(n_sources=counts, rate=rates, n_steps=steps_counts, dt=dts, seed=seeds,
       start=st.one_of(st.integers(-3, 500), st.floats(-3, 500)), stop=st.one_of(st.none(), st.integers(-3, 500)))
def test_poisson(n_sources, rate, n_steps, dt, seed, start, stop):
    ok, s = outcome(lambda: poisson(n_sources, rate, n_steps, dt, seed=seed, start_step=start, stop_step=stop))
    if ok:
        r = np.asarray(rate, dtype=np.float64)
        assert np.all(np.isfinite(r)) and np.all(r >= 0) and np.all(r * float(dt) <= 1)
        assert float(dt) > 0 and whole(n_steps) and n_steps >= 0
        _valid_stimulus(s, n_steps)
        if s.steps.size:
            assert s.steps.min() >= start and (stop is None or s.steps.max() < stop)


@settings(max_examples=200, **SETTINGS)
@given(n_sources=counts, rate=rates, n_steps=steps_counts, dt=dts, first=steps_counts)
def test_regular(n_sources, rate, n_steps, dt, first):
    ok, s = outcome(lambda: regular(n_sources, rate, n_steps, dt, first_step=first))
    if ok:
        assert math.isfinite(float(rate)) and 0 < float(rate) * float(dt) <= 1
        _valid_stimulus(s, n_steps)


events = st.one_of(st.lists(st.integers(-2, 50), max_size=6), st.lists(st.floats(-2, 50), max_size=6),
                   st.lists(st.text(max_size=2), max_size=2), st.just([]), floats)


@settings(max_examples=300, **SETTINGS)
@given(n_sources=counts, steps=events, sources=events,
       dc=st.one_of(st.none(), st.lists(floats, max_size=3), floats, st.text(max_size=2)),
       n_steps=st.integers(-2, 60))
def test_stimulus_and_experiment(n_sources, steps, sources, dc, n_steps):
    ok, s = outcome(lambda: Stimulus(n_sources, steps, sources, dc))
    if not ok:
        return
    _valid_stimulus(s)
    assert np.array_equal(np.sort(np.asarray(steps, dtype=np.float64).ravel()), s.steps)  # nothing truncated
    if s.dc is not None:
        assert np.all(np.isfinite(s.dc)) and np.all(s.dc >= 0) and s.dc.max() < 1e-3
    chip = Chip()
    chip.get_neurons(1 if s.dc is None else s.dc.size)
    chip.add_inputs(s.n_sources)
    ok, exp = outcome(lambda: Experiment(chip.network(), s, 1e-4, n_steps))
    if ok:
        assert exp.n_steps >= 1 and (not s.steps.size or s.steps.max() < exp.n_steps)  # every event delivered


# --- the input npz ---------------------------------------------------------------------------

npz_arrays = st.one_of(
    st.integers(0, 1).flatmap(lambda _: st.lists(st.lists(st.integers(-1, 2), min_size=1, max_size=5),
                                                 min_size=1, max_size=5)).map(lambda rows: np.array(
                                                     [r + [0] * (5 - len(r)) for r in rows], dtype=np.int64)),
    st.lists(st.integers(0, 1), min_size=4, max_size=12).map(lambda x: np.array(x[:4 * (len(x) // 4)],
                                                                                  dtype=np.uint8).reshape(4, -1)),
    floats.map(np.float64), st.lists(floats, max_size=4).map(np.array), st.text(max_size=3).map(np.array),
    st.lists(st.booleans(), min_size=8, max_size=8).map(lambda x: np.array(x).reshape(4, 2)))
npz_keys = st.one_of(st.sampled_from(["input_spikes", "dt", "weights", "Isoma_const"]), st.text("abc_", max_size=5))


@settings(max_examples=250, **SETTINGS)
@given(content=st.dictionaries(npz_keys, npz_arrays, max_size=4))
def test_input_npz(tmp_path_factory, content):
    path = tmp_path_factory.mktemp("npz") / "inputs.npz"
    np.savez(path, **{k: v for k, v in content.items() if k})
    ok, f = outcome(lambda: read_inputs(path))
    if ok:
        assert f.raster.dtype == np.uint8 and f.raster.shape[0] == 4 and f.raster.shape[1] >= 1
        assert set(np.unique(f.raster)) <= {0, 1}
        assert 1e-7 <= f.dt <= 1e-2
        assert f.weights is None or (len(f.weights) == 4 and all(isinstance(w, int) and w >= 0 for w in f.weights))
        assert f.Isoma_const is None or 0 <= f.Isoma_const < 1e-3


def _valid_npz() -> bytes:
    buf = io.BytesIO()
    np.savez(buf, input_spikes=np.eye(4, 20, dtype=np.uint8), dt=np.float64(1e-4), weights=np.array([10, 5, 1, 2]),
             Isoma_const=np.float64(5e-11))
    return buf.getvalue()


mutations = st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(1, 255)), min_size=1, max_size=4)


@settings(max_examples=150, **SETTINGS)
@given(flips=mutations)
def test_input_npz_with_mutated_bytes(tmp_path_factory, flips):
    data = bytearray(_valid_npz())
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    path = tmp_path_factory.mktemp("npzbits") / "inputs.npz"
    path.write_bytes(bytes(data))
    try:
        zipfile.ZipFile(path).testzip()
    except Exception:
        pass  # a broken archive must still be a ParameterError below
    ok, f = outcome(lambda: read_inputs(path))
    if ok:
        assert f.raster.shape[0] == 4 and set(np.unique(f.raster)) <= {0, 1} and 1e-7 <= f.dt <= 1e-2


# --- recording files with mutated bytes ---------------------------------------------------------

@pytest.fixture(scope="module")
def recording_bytes(tmp_path_factory):
    chip = Chip()
    syn = chip.add_connection(chip.add_inputs(2), chip.get_neurons(3), "AMPA")
    chip.connect(syn, True)
    syn.weight = 2
    exp = Experiment(chip.network(), poisson(2, 300, 100, 1e-4, seed=1), 1e-4, 100, "tiny",
                     conditions={"Isoma_const": [1e-12, 2e-12]})
    rec = Recording.from_steps("torch", 1e-4, 100, 2, 3, [0, 1, 1], [0, 2, 1], [5, 7, 90],
                               traces={"Isoma_mem": torch.rand(50, 2, 2, dtype=torch.float64) * 1e-12},
                               trace_neurons=np.array([0, 2]), trace_every=2, metadata={"experiment": exp.summary()},
                               experiment=exp, unstable=np.zeros((2, 3), bool))
    return rec.save(tmp_path_factory.mktemp("rec") / "rec.h5").read_bytes()


def _valid_recording(rec: Recording):
    assert math.isfinite(rec.dt) and 0 < rec.dt < 0.1 and rec.n_steps >= 1 and rec.batch >= 1
    k = rec.spike_step.size
    assert all(a.size == k for a in (rec.spike_batch, rec.spike_neuron, rec.spike_time))
    if k:
        assert 0 <= rec.spike_step.min() and rec.spike_step.max() < rec.n_steps
        assert 0 <= rec.spike_neuron.min() and rec.spike_neuron.max() < rec.n_neurons
        assert 0 <= rec.spike_batch.min() and rec.spike_batch.max() < rec.batch
        assert np.all(np.isfinite(rec.spike_time))
    for t in rec.traces.values():
        assert tuple(t.shape) == (-(-rec.n_steps // rec.trace_every), rec.batch, rec.trace_neurons.size)
        assert torch.isfinite(t).all()
    if rec.experiment is not None:
        assert (rec.experiment.n_steps, rec.experiment.network.n_neurons) == (rec.n_steps, rec.n_neurons)


@settings(max_examples=300, **SETTINGS)
@given(flips=mutations, cut=st.one_of(st.none(), st.floats(0, 1)))
def test_recording_files_with_mutated_bytes(tmp_path_factory, recording_bytes, flips, cut):
    data = bytearray(recording_bytes)
    for where, xor in flips:
        data[int(where * len(data))] ^= xor
    if cut is not None:  # truncated, as an interrupted copy leaves it
        data = data[: int(cut * len(data))]
    path = tmp_path_factory.mktemp("bits") / "rec.h5"
    path.write_bytes(bytes(data))
    ok, rec = outcome(lambda: Recording.load(path))
    if ok:
        _valid_recording(rec)
    else:
        assert isinstance(rec, RecordingError)
    ok, exp = outcome(lambda: Experiment.load(path))
    if ok:
        assert exp.network.n_neurons == 3 and exp.n_steps >= 1
    else:
        assert isinstance(exp, RecordingError)
