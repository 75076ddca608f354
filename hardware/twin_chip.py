"""The hidden physics of a twin chip: its own bias DAC, chip constants and per-neuron mismatch.

Everything is drawn from the chip's serial number (``numpy.random.default_rng(serial)``),
so a twin with the same serial is the same chip. What is drawn (defaults):

- the DAC of each chip: the community coarse currents times a log-normal factor per coarse
  range (sigma 0.15), a floor of 0.1..0.5 pA, and a log-normal scale per core and bias
  (sigma 0.08): codes give currents that are *not* the default table;
- the chip constants of the bias map (:class:`~dynacal.hardware.biasmap.BiasConstants`):
  refractory charge and pulse reference, each times a log-normal factor (sigma 0.1);
- per-neuron log-normal mismatch (sigma of the log, :class:`Mismatch`): leak
  (``Isoma_dpi_tau``) 0.15, soma gain (``alpha_soma``) 0.12, the four base weights
  ``I<X>_w0`` 0.20, the four synaptic leaks ``I<X>_tau`` 0.15, the adaptation leak 0.10;
- "hot" neurons: 3 per chip, with an extra DC of about 1.5 nA (log-normal sigma 0.3) added to
  ``Isoma_const``: they fire without input.

The mapping from codes to parameters is the one of :mod:`.codemap` (the board's and a
calibration's): :meth:`TwinChip.layers` is the chip as a :class:`~dynacal.layers.ChipLayers`
(the core values its codes give through its own DAC and constants, and its mismatch
factors), and :meth:`TwinChip.neuron_params` runs it through ``Network.params`` (the order of
``dynacal.params``), then adds the hot neurons' DC. Derived values saturate where the
simulator refuses them (``codemap.SATURATION``: gains 1e-2..1e4, refractory period
<= 0.9 s), as a real chip would.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from dynacal.chip import Connections, Network
from dynacal.layers import ChipLayers
from dynacal.params import Params

from .biasgen import BIAS_NAMES, DEFAULT_COARSE_CURRENTS, BiasDAC
from .biasmap import BiasConstants
from .codemap import core_codes_to_params

__all__ = ["Mismatch", "TwinChip", "MISMATCHED"]

#: Parameter -> field of :class:`Mismatch` that spreads it per neuron.
MISMATCHED = {"Isoma_dpi_tau": "leak", "alpha_soma": "gain", "Isoma_ahp_tau": "ahp_tau",
              **{f"I{x}_w0": "weight" for x in ("nmda", "ampa", "gaba_a", "gaba_b")},
              **{f"I{x}_tau": "syn_tau" for x in ("nmda", "ampa", "gaba_a", "gaba_b")}}


@dataclasses.dataclass(frozen=True)
class Mismatch:
    """Standard deviations of the log of the per-neuron factors (0.15 = about 15 %)."""

    leak: float = 0.15
    gain: float = 0.12
    weight: float = 0.20
    syn_tau: float = 0.15
    ahp_tau: float = 0.10


class TwinChip:
    """The hidden parameters of a twin board of ``n_chips`` chips, drawn from ``serial``.

    Args:
        serial: the board's serial number (the seed of every hidden value).
        mismatch: per-neuron spreads.
        dac_spread, bias_spread, constants_spread: log sigmas of the coarse currents, the
            per-(core, bias) scales and the chip constants.
        n_hot: hot neurons per chip; hot_current: their mean extra DC, A.
    """

    def __init__(self, serial: int, *, n_chips: int = 4, mismatch: Mismatch = Mismatch(), dac_spread: float = 0.15,
                 bias_spread: float = 0.08, constants_spread: float = 0.1, n_hot: int = 3, hot_current: float = 1.5e-9):
        rng = np.random.default_rng(int(serial))
        self.n_chips, self.mismatch = n_chips, mismatch
        coarse = np.asarray(DEFAULT_COARSE_CURRENTS) * rng.lognormal(0.0, dac_spread, (n_chips, 8))
        floors = rng.uniform(1e-13, 5e-13, n_chips)
        scales = rng.lognormal(0.0, bias_spread, (n_chips, 4, len(BIAS_NAMES)))
        self._dacs = {(c, k): BiasDAC(coarse[c], floor=float(floors[c]), name=f"twin {serial} chip {c} core {k}",
                                      scale=dict(zip(BIAS_NAMES, scales[c, k].tolist())))
                      for c in range(n_chips) for k in range(4)}
        base = BiasConstants()
        factors = rng.lognormal(0.0, constants_spread, (n_chips, 2))
        self._constants = [BiasConstants(base.refractory_charge * f[0], base.pulse_reference * f[1]) for f in factors]
        self._factors = {name: rng.lognormal(0.0, getattr(mismatch, field), (n_chips, 4, 256))
                         for name, field in MISMATCHED.items()}
        self._hot = np.zeros((n_chips, 4, 256))
        for c in range(n_chips):
            flat = rng.choice(1024, size=n_hot, replace=False)
            self._hot[c].reshape(-1)[flat] = hot_current * rng.lognormal(0.0, 0.3, n_hot)

    def dac(self, chip: int, core: int) -> BiasDAC:
        """The true DAC of one core (ground truth: a calibration should find it)."""
        return self._dacs[(chip, core)]

    def hot_neurons(self) -> np.ndarray:
        """Global ids (chip * 1024 + core * 256 + neuron) of the hot neurons (ground truth)."""
        return np.flatnonzero(self._hot.reshape(-1) > 0)

    def core_params(self, chip: int, core: int, codes: np.ndarray) -> dict[str, float]:
        """Model parameters a core's bias codes give on this chip, before per-neuron mismatch.

        Args:
            codes: int (25, 2) logical (coarse, fine) in ``BIAS_NAMES`` order.
        """
        return core_codes_to_params(codes, self._dacs[(chip, core)], self._constants[chip], saturate=True,
                                    where=f"twin chip {chip} core {core}")

    def layers(self, codes: np.ndarray, cores=None) -> ChipLayers:
        """This chip under ``codes`` as a calibration would ideally find it (ground truth).

        Args:
            codes: int (n_chips, 4, 25, 2) logical bias codes per chip and core.
            cores: the global cores (chip * 4 + core) to include (default: all).

        Returns:
            :class:`~dynacal.layers.ChipLayers`: the core values the codes give and the
            per-neuron mismatch factors (the hot neurons' extra DC is not a layer).
        """
        cores = range(self.n_chips * 4) if cores is None else sorted({int(c) for c in cores})
        values = {g: self.core_params(*divmod(g, 4), np.asarray(codes[g // 4, g % 4])) for g in cores}
        mismatch = {name: {g: f[g // 4, g % 4] for g in cores} for name, f in self._factors.items()}
        return ChipLayers(values, mismatch, name=f"twin chip, {self.n_chips} chips")

    def neuron_params(self, ids: np.ndarray, codes: np.ndarray, *, dtype=torch.float64) -> Params:
        """The parameters the chip runs for some neurons (what the twin simulates).

        Args:
            ids: int (M,) global ids chip * 1024 + core * 256 + neuron.
            codes: int (n_chips, 4, 25, 2) logical bias codes per chip and core.

        Returns:
            :class:`~dynacal.params.Params` of shape (1, M).
        """
        ids = np.asarray(ids, dtype=np.int64)
        core, nid = np.divmod(ids, 256)  # global core, neuron id
        net = Network(core=core, neuron_id=nid, n_inputs=0, inputs=Connections.empty(),
                      recurrent=Connections.empty(), n_chips=self.n_chips, enforce_limits=False)
        p = net.params(layers=self.layers(codes, np.unique(core)), dtype=dtype)
        if not ids.size:
            return p
        hot = torch.as_tensor(self._hot.reshape(-1)[ids], dtype=dtype).reshape(1, -1)
        # added directly: a hidden value, not user input to validate
        return dataclasses.replace(p, Isoma_const=p.Isoma_const + hot)
