"""``dynacal board check``: the first-board smoke test a lab runs once on a new setup.

It pins what the public sources leave open (``fake_samna.facts``, ``certain=False``) and what
the board backend assumes, and writes a short report to attach to an issue:

1. **device**: samna's version, how the event sink was wired, the kit's serial number and
   the Python types of the fields samna returns (``serial_number``, ``Spike`` fields);
2. **first ISI and latency**: one input event with a large first ISI (50 ms) and a second
   100 ms later, into a strongly weighted neuron; whether the first event waited its ISI
   after ``start()``, the latency from each event to the neuron's first spike after it, and
   whether the 100 ms gap came out as 100 ms (the ISI multiplier);
3. **routing signs**: a neuron on chip 0 relays to chip 1 (x differs) and to chip 2 (y
   differs); both must arrive (a wrong routing sign loses them);
4. **configuration read-back**: the configuration the device holds
   (``model.get_configuration()``) against what was written: CAM entries, SRAM routes and
   bias codes of the used neurons and cores.

Every check is a plain function over a board backend, so it runs the same on the twin.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np

from dynacal import Chip, Experiment, Stimulus

from .config import plan_network, write_configuration
from .fake_samna.device import snapshot

__all__ = ["CheckResult", "board_check", "format_report"]

DT = 1e-4
FIRST_S, GAP_S = 0.05, 0.1


@dataclasses.dataclass
class CheckResult:
    """One check: its name, whether it passed, what was measured (JSON-able) and a one-line summary."""

    name: str
    ok: bool
    measured: dict
    summary: str


def _driven(n_chips: int = 1, targets: tuple = ()) -> tuple:
    """One strongly driven neuron on chip 0 core 1 (id 1: id 0 is left unused), relaying to one
    neuron on chip t core 2 for each t in ``targets``; one input."""
    chip = Chip(n_chips=n_chips)
    src = chip.get_neurons(2, "Core_1")[1:]
    inp = chip.add_inputs(1)
    s = chip.add_connection(inp, src, "AMPA")
    chip.connect(s, True)
    s.weight = 32
    chip.set_bias({"Iampa_w0": "2 nA"}, "Core_1")
    for t in targets:
        dst = chip.get_neurons(1, f"Core_{4 * t + 2}")
        r = chip.add_connection(src, dst, "AMPA")
        chip.connect(r, True)
        r.weight = 32
        chip.set_bias({"Iampa_w0": "2 nA"}, f"Core_{4 * t + 2}")
    return chip.network()


def check_device(backend) -> CheckResult:
    link = backend._link
    info = link.find(unavailable=False) if link.model is None else None
    serial = info.serial_number if info is not None else link.serial
    measured = {"samna_version": link.version, "sink_wiring": link.wiring, "device": backend.device_name,
                "serial": str(serial), "serial_type": type(serial).__name__}
    ok = link.wiring == "graph" and isinstance(serial, str)
    return CheckResult("device", ok, measured, f"samna {link.version}, sink {link.wiring}, serial {serial!r} "
                       f"({type(serial).__name__})" + ("" if ok else ": an older samna API (the backend copes)"))


def check_latency(backend) -> CheckResult:
    net = _driven()
    n_steps = int(round((FIRST_S + GAP_S + 0.05) / DT))
    steps = np.array([round(FIRST_S / DT), round((FIRST_S + GAP_S) / DT)])
    exp = Experiment(net, Stimulus(1, steps, np.zeros(2, np.int64)), DT, n_steps, name="board check: latency")
    rec = backend.run(exp)
    t = np.sort(rec.spike_time[rec.spike_neuron == 1])
    firsts = [float(t[t >= e - 0.02][0]) if np.any(t >= e - 0.02) else None for e in (FIRST_S, FIRST_S + GAP_S)]
    waited = firsts[0] is not None and firsts[0] > FIRST_S / 2
    latency = [None if f is None else f - e for f, e in zip(firsts, (FIRST_S, FIRST_S + GAP_S))]
    gap = None if None in firsts else firsts[1] - firsts[0]
    ok = waited and gap is not None and abs(gap - GAP_S) < 1e-3
    spikes = rec.metadata["board"]["sets"]["0"]
    measured = {"first_isi_waited": bool(waited), "latency_s": latency, "gap_s": gap, "expected_gap_s": GAP_S,
                "n_spikes": int(t.size), "isi_multiplier": rec.metadata["board"]["fpga"]["isi_multiplier"],
                "n_late": spikes.get("n_late")}
    lat = ", ".join("none" if x is None else f"{x * 1e3:.3f} ms" for x in latency)
    summary = (f"first event {'waited' if waited else 'did NOT wait'} its {FIRST_S * 1e3:g} ms ISI; event -> spike "
               f"latency {lat}; gap {'none' if gap is None else f'{gap * 1e3:.3f} ms'} (want {GAP_S * 1e3:g} ms)")
    return CheckResult("first_isi_and_latency", ok, measured, summary)


def check_routing(backend, targets=(1, 2)) -> CheckResult:
    net = _driven(4, targets)
    n_steps = int(round(0.2 / DT))
    exp = Experiment(net, Stimulus(1, np.arange(20, n_steps - 500, 100), np.zeros(len(range(20, n_steps - 500, 100)),
                                                                                   np.int64)), DT, n_steps)
    counts = backend.run(exp).spike_counts()[0]
    arrived = {f"0->{t}": int(counts[2 + k]) for k, t in enumerate(targets)}
    ok = counts[1] > 0 and all(v > 0 for v in arrived.values())
    return CheckResult("routing", bool(ok), {"source_spikes": int(counts[1]), "target_spikes": arrived},
                       f"source {int(counts[1])} spikes; relayed " +
                       ", ".join(f"chip {k}: {v}" for k, v in arrived.items()) + ("" if ok else ": a route is lost"))


def check_readback(backend) -> CheckResult:
    """Compare the device's configuration with what the last run wrote."""
    net = _driven(4, (1, 2))
    plan = plan_network(net)
    model = backend._link.model
    if model is None or not hasattr(model, "get_configuration"):
        return CheckResult("readback", False, {}, "the device cannot be read back (no get_configuration)")
    dyn = backend._samna.dynapse1
    written = snapshot(write_configuration(plan, dyn, backend._applied[1] if backend._applied else {}))
    read = snapshot(model.get_configuration())
    diffs = []
    for gid, cam, dest in zip(written.ids.tolist(), written.cams, written.dests):
        where = np.flatnonzero(read.ids == gid)
        if where.size == 0:
            diffs.append(f"neuron {gid}: not configured on the device")
            continue
        if not np.array_equal(read.cams[where[0]], cam):
            diffs.append(f"neuron {gid}: CAM entries differ")
        if not np.array_equal(read.dests[where[0]], dest):
            diffs.append(f"neuron {gid}: SRAM routes differ")
    for (c, k) in plan.cores:
        if not np.array_equal(read.codes[c, k], written.codes[c, k]):
            diffs.append(f"chip {c} core {k}: bias codes differ")
    return CheckResult("readback", not diffs, {"n_neurons": int(written.ids.size), "differences": diffs[:20]},
                       "the configuration read back equals what was written" if not diffs else
                       f"{len(diffs)} differences, first: {diffs[0]}")


def board_check(backend) -> list[CheckResult]:
    """Run every check on ``backend`` (a board or twin :class:`~.samna_board.BoardBackend`)."""
    results = [check_device(backend), check_latency(backend), check_routing(backend)]
    results.append(check_readback(backend))  # reads what the routing run wrote
    return results


def format_report(results: list[CheckResult], header: dict[str, Any]) -> tuple[str, str]:
    """The report as text (to print) and as JSON (to attach to an issue)."""
    lines = [f"dynacal board check: {header.get('backend')} ({header.get('device')}, serial {header.get('serial')})"]
    for r in results:
        lines.append(f"  [{'ok' if r.ok else 'FAIL'}] {r.name}: {r.summary}")
    lines.append(f"  {sum(r.ok for r in results)} of {len(results)} checks passed")
    data = {"format": "dynacal-board-check", "version": 1, **header,
            "checks": [dataclasses.asdict(r) for r in results]}
    return "\n".join(lines), json.dumps(data, indent=2, default=str) + "\n"


