"""The measurements of :func:`.codes.measure_codes`: f-I runs on the board and the calibrated
simulator, inverted code by code (method in :mod:`.codes`)."""

from __future__ import annotations

import logging

import numpy as np
import torch

from dynacal.errors import CalibrationFailed
from dynacal.params import PARAMETERS
from dynacal.protocols import FICurve

from .codes import _GRID, _MIN_NEURONS, EVOKED, PROBES, CodeTable, _invert, _kinds, _to_current, _to_param

log = logging.getLogger(__name__)


class _Probe:
    """Runs the probes of one core (``ctx``: a ``codes._Core``) on the board and the simulator."""

    def __init__(self, board, sim, ctx, n_codes: int, span: float, duration: float, settle: float):
        from dynacal.hardware.biasgen import BiasDAC  # noqa: PLC0415
        from dynacal.hardware.biasmap import MODEL_PARAMETERS, BiasConstants, params_to_codes  # noqa: PLC0415
        self.board, self.sim, self.ctx = board, sim, ctx
        self.dac = getattr(board, "dac", None) or BiasDAC()
        self.constants = getattr(board, "constants", None) or BiasConstants()
        self.n_codes, self.span, self.duration, self.settle = n_codes, span, duration, settle
        self.model_params = MODEL_PARAMETERS
        ref = {p: ctx.reference.get(p, PARAMETERS[p].default) for p in MODEL_PARAMETERS}
        self.ref_values = ref
        self.ref_codes = params_to_codes({ctx.core: ref}, self.dac, self.constants).codes[divmod(ctx.core, 4)]
        self.factors = ctx.layers.neuron_factors(ctx.network)
        self.mid = self.high = None
        self.board_runs = 0

    # --- runs ----------------------------------------------------------------------------

    def _fi(self, levels, level: int | None = None):
        """An f-I probe: (protocol, features -> rates (B, N, L), or (B, N) at one level)."""
        fi = FICurve(levels=tuple(float(x) for x in levels), duration=self.duration, settle=self.settle)
        return fi, (lambda f: f["rate"]) if level is None else (lambda f: f["rate"][:, :, level])

    def _evoked(self, dc: float, syn: str):
        """An evoked-rate probe: one Poisson rate into one synapse type over a DC, (B, N) Hz."""
        from dynacal.protocols import RateTransfer  # noqa: PLC0415
        rt = RateTransfer(synapses=(syn,), weights=(EVOKED["weight"],), rates=EVOKED["rates"], rates_by_type=(),
                          segment=EVOKED["segment"], settle=self.settle, gap=0.05, baseline=self.settle * 2, dc=dc)
        return rt, lambda f: f[f"rate_{syn}"][:, :, -1]

    def _probe(self, bias: str, board: bool):
        """The probe of ``bias`` for the board (nominal DCs) or the simulator (the DCs measured)."""
        dc = (lambda lv: lv) if board else (lambda lv: self.ctx.dc[lv])
        kind, where = PROBES[bias]
        if kind == "evoked":
            return self._evoked(dc(self.mid), where)
        return self._fi([dc(self.mid), dc(self.high)], {"mid": 0, "high": 1}[where])

    def _per_neuron(self, name: str, values: np.ndarray) -> torch.Tensor:
        """(B, N) candidates of a parameter with each neuron's mismatch (candidates get none)."""
        f = self.factors.get(name, np.ones(self.ctx.network.n_neurons))
        return torch.as_tensor(np.asarray(values, dtype=np.float64)[:, None] * f[None, :])

    def _cal(self, name: str) -> float:
        return float(self.ctx.layers.core_values[self.ctx.core].get(name, PARAMETERS[name].default))

    def sim_rates(self, probe, sweep: tuple[str, np.ndarray] | None = None, *, chosen: bool = True) -> np.ndarray:
        """Simulated f-I rates (B, N, L): the calibration, the chosen biases at their values on
        the chip, and ``sweep`` = (parameter, (B,) values) on a grid. A gain whose code is
        kept while its base bias moves keeps its current: gain = calibrated gain x
        calibrated base / base (the chip's biases are independent currents)."""
        now: dict[str, np.ndarray] = {}
        if chosen:
            now.update({p: np.array([v]) for p, v in self.ctx.predicted.items()})
        if sweep is not None:
            now[sweep[0]] = np.asarray(sweep[1], dtype=np.float64)
        for bias, (kind, gain, base) in _kinds().items():
            base_param = _kinds()[base][1] if kind == "gain" else None
            if base_param in now and gain not in now:
                now[gain] = self._cal(gain) * self._cal(base_param) / now[base_param]
        cands = {p: self._per_neuron(p, v) for p, v in now.items()}
        p = self.ctx.network.params(cands, layers=self.ctx.layers)
        protocol, extract = probe
        return extract(protocol.features(protocol.run(self.sim, self.ctx.network, p)))

    def board_codes(self) -> dict:
        """The board's codes now: the reference codes with the chosen ones."""
        return {**self.ref_codes, **self.ctx.chosen_codes}

    def board_rates(self, probe, sweep: tuple[str, list] | None = None) -> np.ndarray:
        """Board f-I rates (B, N, L) at the board's codes with ``sweep`` = (bias, B codes):
        each set is given as the nominal values that set exactly its codes."""
        from .codes import board_values  # noqa: PLC0415
        sets = [self.board_codes()] if sweep is None else [{**self.board_codes(), sweep[0]: tuple(c)} for c in sweep[1]]
        values = [board_values(codes, self.dac, self.constants) for codes in sets]
        core = self.ctx.core
        cands = {p: {core: torch.as_tensor([v[p] for v in values], dtype=torch.float64)}
                 for p in values[0] if p != "Isoma_const"}  # the DC is the f-I condition
        p = self.ctx.network.params(cands)
        protocol, extract = probe
        rec = protocol.run(self.board, self.ctx.network, p)
        self.board_runs += p.shape[0] * max(protocol.n_conditions, 1)
        return extract(protocol.features(rec))

    # --- levels and the DC ---------------------------------------------------------------

    def _dc_code(self, current: float) -> float:
        r = self.dac.code(np.array([current]), "IF_DC_P")
        return float(r.current[0])

    def levels(self) -> None:
        """The mid (~60 Hz: a lower code of a gain still fires) and high (~60 % of the refractory
        limit) probe DCs, on DC codes."""
        grid = np.geomspace(50e-12, 20e-9, 27)
        med = np.nanmedian(self.sim_rates(self._fi(grid), chosen=False)[0], axis=0)
        firing = np.flatnonzero(med >= 10.0)
        if not firing.size:
            raise CalibrationFailed(f"the calibrated core {self.ctx.core} does not fire at any DC up to 20 nA in the "
                                    f"simulator; its codes cannot be read through the f-I rate.")
        mid = grid[firing[np.argmin(np.abs(med[firing] - 60.0))]]
        refp = self.ctx.want.get("soma_refP", PARAMETERS["soma_refP"].default)
        high = grid[np.argmin(np.abs(med - 0.6 / refp))]
        high = max(high, mid * self.span ** 3)  # the two sweeps must not interleave
        self.mid, self.high = self._dc_code(mid), self._dc_code(high)

    def _sweep_codes(self, bias: str, current: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(coarse, fine, nominal current) of up to ``n_codes`` codes around the nominal code of
        ``current``, in its coarse range (a chip's DAC differs per coarse range)."""
        r = self.dac.code(np.array([current]), bias)
        c0, f0 = int(r.coarse[0]), int(r.fine[0])
        fine = np.unique(np.clip(np.round(f0 * self.span ** np.linspace(-1, 1, self.n_codes)), 1, 255)).astype(np.int64)
        coarse = np.full(fine.size, c0, dtype=np.int64)
        return coarse, fine, np.asarray(self.dac.current(coarse, fine, [bias] * fine.size), dtype=np.float64)

    def _values(self, inverted: np.ndarray, bias: str, codes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Median over neurons per code, its spread (MAD) and the number of neurons used."""
        n = inverted.shape[1]
        count = np.isfinite(inverted).sum(axis=1)
        for k, c in enumerate(count):
            if c < max(5, _MIN_NEURONS * n):
                raise CalibrationFailed(
                    f"{bias} at code {codes[k]}: only {int(c)} of {n} neurons gave a rate the calibrated simulator "
                    f"reaches; the code is too far from the calibration. Lower span (now {self.span}) or check the "
                    f"calibration against the board (dynacal verify).")
        med = np.nanmedian(inverted, axis=1)
        mad = np.nanmedian(np.abs(inverted - med[:, None]), axis=1)
        return med, mad, count

    def dc_row(self) -> dict:
        """Sweep IF_DC_P around both probe levels: the DC each code gives on this chip."""
        parts = [self._sweep_codes("IF_DC_P", lv) for lv in (self.mid, self.high)]
        coarse, fine, nominal = (np.concatenate(x) for x in zip(*parts))
        order = np.argsort(nominal)
        coarse, fine, nominal = coarse[order], fine[order], nominal[order]
        board = self.board_rates(self._fi(nominal))[0].T  # (K, N)
        grid = np.geomspace(nominal[0] / 4, nominal[-1] * 4, 61)
        sim = self.sim_rates(self._fi(grid), chosen=False)[0].T  # (J, N)
        inverted, _ = _invert(sim, grid, board)
        codes = list(zip(coarse.tolist(), fine.tolist()))
        med, mad, count = self._values(inverted, "IF_DC_P", codes)
        for lv in (self.mid, self.high):  # the probe levels are codes of the sweep: measured directly
            self.ctx.dc[lv] = float(med[int(np.argmin(np.abs(nominal - lv)))])
        return {"core": self.ctx.core, "bias": "IF_DC_P", "parameter": "Isoma_const", "probe": "fi rate",
                "levels": {"mid": self.mid, "high": self.high},
                "measured_levels": {"mid": self.ctx.dc[self.mid], "high": self.ctx.dc[self.high]},
                "sweep": _sweep_rows(codes, nominal, med, mad, count)}

    # --- one bias --------------------------------------------------------------------------

    def _base_current(self, bias: str) -> float | None:
        kind, _, base = _kinds()[bias]
        base = base if kind == "gain" else "PULSE_PWLK_P" if kind == "weight" else None
        if base is None:
            return None
        code = self.board_codes()[base]
        return float(self.dac.current(code[0], code[1], base))

    def bias_row(self, bias: str) -> dict:
        """Sweep one bias, fit its value per code on this chip, choose its code."""
        param = _kinds()[bias][1]
        req = float(self.ctx.want[param])
        base = self._base_current(bias)
        coarse, fine, cur = self._sweep_codes(bias, float(_to_current(bias, req, base, self.constants)))
        nominal = _to_param(bias, cur, base, self.constants)
        codes = list(zip(coarse.tolist(), fine.tolist()))
        board = self.board_rates(self._probe(bias, True), (bias, codes))  # (K, N)
        grid = req * _GRID
        sim = self.sim_rates(self._probe(bias, False), (param, grid))  # (J, N)
        inverted, _ = _invert(sim, grid, board)
        med, mad, count = self._values(inverted, bias, codes)
        eq = _to_current(bias, med, base, self.constants)  # the chip's value as a nominal current
        fits, anchor = self._fits(bias, int(coarse[0]), cur, eq, base)
        code, pred = self._choose(bias, fits, req, base, anchor)
        nom_code = (int(coarse[0]), int(self.dac.code(np.array([_to_current(bias, req, base, self.constants)]),
                                                       bias).fine[0]))
        nom_pred = self._predict(bias, nom_code, fits, base)
        self.ctx.chosen[param] = float(_to_param(bias, self.dac.current(*code, bias), base, self.constants))
        self.ctx.chosen_codes[bias] = code
        self.ctx.predicted[param] = pred
        probe = f"{PROBES[bias][0]} rate ({PROBES[bias][1]})"
        return {"core": self.ctx.core, "bias": bias, "parameter": param, "probe": probe,
                "requested": req, "code": list(code), "predicted": pred, "error": pred / req - 1,
                "nominal_code": list(nom_code), "nominal_predicted": nom_pred,
                "nominal_error": nom_pred / req - 1 if np.isfinite(nom_pred) else float("nan"),
                "fit": {str(c): {"offset_A": f[0], "slope": f[1]} for c, f in fits.items()},
                "anchor": list(anchor) if anchor else None,
                "sweep": _sweep_rows(codes, nominal, med, mad, count)}

    def _fits(self, bias: str, coarse: int, cur: np.ndarray, eq: np.ndarray, base):
        """Affine fits per coarse range, {coarse: (offset A, slope)}, and the anchor code.

        The reference code is a point known without measuring: there the chip gives the
        calibrated value (when the bias's base is at its reference code too). It joins the
        sweep's fit in the same coarse range, or gives its own range a pure scale."""
        ref = tuple(self.ref_codes[bias])
        kind, param, base_bias = _kinds()[bias]
        partner = base_bias if kind == "gain" else "PULSE_PWLK_P" if kind == "weight" else None
        anchored = param in self.ctx.layers.core_values[self.ctx.core] and \
            (partner is None or tuple(self.board_codes()[partner]) == tuple(self.ref_codes[partner]))
        if not anchored:
            return {coarse: _affine(cur, eq)}, None
        ref_cur = float(self.dac.current(ref[0], ref[1], bias))
        ref_eq = float(_to_current(bias, self._cal(param), base, self.constants))
        if ref[0] == coarse:
            # the anchor is exact (no measurement noise): the fit goes through it
            return {coarse: _affine(np.append(cur, ref_cur), np.append(eq, ref_eq),
                                    np.append(np.ones(cur.size), 10.0 * cur.size))}, ref
        return {coarse: _affine(cur, eq), ref[0]: (0.0, ref_eq / ref_cur)}, ref

    def _predict(self, bias: str, code, fits: dict, base) -> float:
        """The value ``code`` gives on this chip (the fit of its coarse range; NaN without one)."""
        if code[0] not in fits:
            return float("nan")
        offset, slope = fits[code[0]]
        current = offset + slope * float(self.dac.current(code[0], code[1], bias))
        return float(_to_param(bias, max(current, 1e-18), base, self.constants))

    def _choose(self, bias: str, fits: dict, req: float, base, anchor):
        """The code whose value on this chip is nearest to ``req``: in the swept coarse range
        (the first fit), or in the anchor's range near the anchor (within ``span``)."""
        want = float(_to_current(bias, req, base, self.constants))
        best = None
        for i, (coarse, (offset, slope)) in enumerate(fits.items()):
            fine = np.arange(1, 256)
            nominal = np.asarray(self.dac.current(np.full(255, coarse), fine, [bias] * 255))
            current = offset + slope * nominal
            miss = np.abs(np.log(np.maximum(current, 1e-18) / want))
            if i > 0:  # the anchor's range: only near the anchor, where its scale holds
                near = np.abs(np.log(nominal / float(self.dac.current(anchor[0], anchor[1], bias))))
                miss = np.where(near <= np.log(self.span), miss, np.inf)
            k = int(np.argmin(miss))
            if np.isfinite(miss[k]) and (best is None or miss[k] < best[0]):
                best = (float(miss[k]), (int(coarse), int(fine[k])))
        code = best[1]
        if code[1] in (1, 255):
            log.warning("%s: the code nearest to the request is at the end of coarse range %d (fine %d); the "
                        "request may be out of this range on this chip", bias, code[0], code[1])
        return code, self._predict(bias, code, fits, base)

    # --- the table -----------------------------------------------------------------------------

    def table(self, rows: list, measured: list) -> CodeTable:
        """The codes of every bias: measured ones chosen, the others from the reference codes."""
        from .codes import board_values  # noqa: PLC0415
        ctx = self.ctx
        codes, unmeasured = self.board_codes(), {}
        for bias, (kind, param, base) in _kinds().items():
            if param is None or bias in measured or param == "Isoma_const":
                continue
            ratio = self._ratio(kind, param, base)
            if abs(ratio - 1) > 1e-12:
                ref = self.ref_codes[bias]
                r = self.dac.code(np.array([float(self.dac.current(ref[0], ref[1], bias)) * ratio]), bias)
                codes[bias] = (int(r.coarse[0]), int(r.fine[0]))
                unmeasured[bias] = (f"no probe: the reference code's current x {ratio:.4g}, the change requested "
                                    f"(assumes the chip's DAC proportional near it)")
            elif param in ctx.layers.core_values[ctx.core]:
                unmeasured[bias] = "no probe: kept at the reference code, where the calibration holds"
        for bias, code in ctx.chosen_codes.items():
            codes[bias] = code
        values = board_values(codes, self.dac, self.constants)
        settings = {"n_codes": self.n_codes, "span": self.span, "duration_s": self.duration, "settle_s": self.settle,
                    "board": getattr(self.board, "name", type(self.board).__name__), "board_runs": self.board_runs,
                    "reference_codes": {b: list(c) for b, c in self.ref_codes.items()}}
        return CodeTable({ctx.core: {b: list(c) for b, c in codes.items()}}, {ctx.core: values}, rows,
                         {ctx.core: unmeasured}, settings)

    def _ratio(self, kind: str, param: str, base: str | None) -> float:
        """How much the current of an unmeasured bias must change from its reference code for
        the requested value (1: keep the reference code)."""
        want = self.ctx.want.get(param, self._cal(param))
        if kind == "period":
            return self._cal(param) / want
        if kind == "gain":
            base_param = _kinds()[base][1]
            base_now = self.ctx.predicted.get(base_param, self.ctx.want.get(base_param, self._cal(base_param)))
            return want * base_now / (self._cal(param) * self._cal(base_param))
        return want / self._cal(param)


def _affine(nominal: np.ndarray, measured: np.ndarray, weights: np.ndarray | None = None) -> tuple[float, float]:
    """(offset A, slope) of measured = offset + slope * nominal (a DAC's floor and scale within a
    coarse range); a pure scale from one code or when the fit would give a negative slope."""
    if nominal.size >= 2 and np.ptp(nominal) > 0:
        slope, offset = np.polyfit(nominal, measured, 1, w=weights)
        if slope > 0:
            return float(offset), float(slope)
    return 0.0, float(np.mean(measured / nominal))


def _sweep_rows(codes, nominal, med, mad, count) -> list[dict]:
    return [{"code": list(c), "nominal": float(n), "measured": float(m), "spread": float(s), "neurons": int(k)}
            for c, n, m, s, k in zip(codes, nominal, med, mad, count)]
