"""The held-out protocol: its network, its determinism, its features."""

from __future__ import annotations

import numpy as np

from dynacal import get_backend
from dynacal.protocols import HeldOut


def test_every_neuron_gets_one_source_per_type_with_the_seed_weights():
    exp = HeldOut().experiment("core0:32")
    conns = exp.network.inputs
    for n in range(32):
        sel = conns.post == n
        assert sorted(conns.syn_type[sel].tolist()) == [0, 1, 2, 3]
        assert dict(zip(conns.syn_type[sel].tolist(), conns.weight[sel].tolist())) == {0: 10, 1: 5, 2: 1, 3: 2}
        # source k * n_sources + j feeds type k
        assert np.all(conns.pre[sel] // 16 == conns.syn_type[sel])
    # neighbours draw different sources
    assert len({tuple(conns.pre[conns.post == n]) for n in range(32)}) > 16


def test_seeded():
    assert HeldOut().experiment("core0:8").content_hash() == HeldOut().experiment("core0:8").content_hash()
    assert HeldOut(seed=1).experiment("core0:8").content_hash() != HeldOut().experiment("core0:8").content_hash()


def test_features():
    protocol = HeldOut(duration=0.3)
    rec = protocol.run(get_backend("torch"), "core0:4")
    f = protocol.features(rec)
    # spikes / duration, counted here from each neuron's train (not with rec.rates(), which
    # computes the feature); the 4 neurons get different sources, so their rates differ
    counts = np.array([rec.spike_steps(n).size for n in range(4)])
    np.testing.assert_allclose(f["rate"][0], counts / protocol.duration, rtol=1e-12)
    assert np.unique(counts).size > 1, counts
    steps = rec.spike_steps(2)
    np.testing.assert_allclose(f["isi_mean"][0, 2], np.diff(steps).mean() * rec.dt, rtol=1e-12)
    np.testing.assert_allclose(f["isi_cv"][0, 2], np.diff(steps).std() / np.diff(steps).mean(), rtol=1e-9)
    assert f["rate"].min() > 10
