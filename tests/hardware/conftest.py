"""Builders and fixtures for the board path: small networks, and the backends to run them on.

``board_backend`` runs a test on the twin board always, and on a real Dynap-SE1 too when the
real samna and a board are attached (otherwise that parameter is skipped, saying why).
"""

from __future__ import annotations

import pytest

from dynacal import Chip, Experiment, get_backend, poisson
from dynacal.errors import BackendUnavailable
from dynacal.hardware.samna_detect import samna_status


def small_network(n_chips: int = 2, *, recurrent: bool = True):
    """15 neurons on three cores of two chips, 4 inputs with AMPA and NMDA, and recurrent AMPA,
    cross-chip AMPA and GABA_B connections (weights 1..3)."""
    chip = Chip(n_chips=n_chips)
    a = chip.get_neurons(8, "Core_1")
    b = chip.get_neurons(4, "Core_2")
    c = chip.get_neurons(3, "Core_5" if n_chips > 1 else "Core_3")
    inp = chip.add_inputs(4)
    for kind, w in (("AMPA", 3), ("NMDA", 2)):
        s = chip.add_connection(inp, a, kind)
        chip.connect(s, True)
        s.weight = w
    if recurrent:
        for pre, post, kind, w in ((a, b, "AMPA", 2), (a, c, "AMPA", 3), (b, a[:4], "GABA_B", 1)):
            s = chip.add_connection(pre, post, kind)
            chip.connect(s, True)
            s.weight = w
    chip.set_bias({"Iampa_w0": "300 pA", "Inmda_w0": "200 pA"}, "Core_1")
    chip.set_bias({"Iampa_w0": "400 pA"}, "Core_2")
    chip.set_bias({"Iampa_w0": "400 pA"}, "Core_5" if n_chips > 1 else "Core_3")
    return chip.network()


def small_experiment(n_steps: int = 3000, rate: float = 100.0, seed: int = 0, **kwargs) -> Experiment:
    """:func:`small_network` driven by 4 Poisson inputs, dt = 100 us."""
    return Experiment(small_network(**kwargs), poisson(4, rate, n_steps, 1e-4, seed=seed), 1e-4, n_steps)


def _real_board():
    status = samna_status()
    if status.state != "real":
        return None, f"no real samna here (samna is {status.state})"
    try:
        backend = get_backend("board")
    except BackendUnavailable as exc:
        return None, str(exc)
    return backend, ""


@pytest.fixture(params=["twin", "board"])
def board_backend(request):
    """The twin board, then a real board where samna and one are attached."""
    if request.param == "twin":
        backend = get_backend("twin")
    else:
        backend, why = _real_board()
        if backend is None:
            pytest.skip(f"real board not available: {why}")
    yield backend
    backend.close()
