"""What the fake samna and the board backend take as facts about samna and the Dynap-SE1,
each with where it comes from. One place: the strict fake (:func:`make_samna` with
``strict=True``, the default) follows exactly these, and so does the backend; change a fact
here and both follow.

Sources (public):

- [samna-docs]: SynSense's samna documentation for Dynap-SE1 (device discovery,
  ``Dynapse1Configuration``, the FPGA spike generator, event types, ``samna.graph``);
- [ctxctl]: the INI/SynSense ctxctl_contrib utilities ``dynapse1utils.py`` and
  ``netgen_details.py`` and their class reference;
- [rockpool]: rockpool's samna alias classes and router for Dynap-SE;
- [sinabs]: sinabs' samna device handling (``samna.graph.EventFilterGraph``);
- [libcaer]: libcaer's event headers (``spike.h``, ``special.h``: 31 significant timestamp
  bits);
- [paper]: Moradi et al., IEEE TBioCAS 2018 (the Dynap-SE architecture).

Where the sources disagree or say nothing, the fact says so (``certain=False``), and the
first-board check (``dynacal board check``) measures it.
"""

from __future__ import annotations

from typing import NamedTuple

__all__ = ["Fact", "FACTS", "ISI_LIMIT", "FRESH_CAM", "SINK_WIRING", "TIMESTAMP_PERIODS_US", "SERIAL_TYPE",
           "FPGA_EVENT_FIELDS", "ROUTING_RULE"]


class Fact(NamedTuple):
    """One fact: a short name, its value, what it means, its sources, and whether they agree."""

    name: str
    value: object
    meaning: str
    sources: tuple
    certain: bool = True


#: The FPGA generator's ISI: public helpers assert ``isi < 65535`` (16-bit register, the top
#: value reserved), so 65534 is the largest ISI sent.
ISI_LIMIT = 65535
#: Fresh chip state of a CAM entry: listens to (core 0, neuron 0) with the NMDA type.
FRESH_CAM = (0, 0, "NMDA")
#: How current samna connects the event source to a sink: a started graph.
SINK_WIRING = "graph"
#: Candidate periods of the board's us timestamp counter.
TIMESTAMP_PERIODS_US = (2 ** 31, 2 ** 32)
#: Type of ``DeviceInfo.serial_number``.
SERIAL_TYPE = str
#: ``FpgaSpikeEvent`` is built with no arguments, then these attributes are set.
FPGA_EVENT_FIELDS = ("core_mask", "target_chip", "neuron_id", "isi")
#: SRAM routing bits from the source chip (xs, ys) to the target chip (xt, yt).
ROUTING_RULE = "sx = xt < xs, sy = yt >= ys, dx = |xt - xs|, dy = |yt - ys|"

FACTS = (
    Fact("device_name", "Dynapse1DevKit", "samna's device type name of the kit", ("samna-docs", "ctxctl")),
    Fact("serial_type", "str", "DeviceInfo.serial_number is a string in current samna", ("samna-docs", "sinabs")),
    Fact("sink_wiring", SINK_WIRING, "events reach a BasicSinkNode through samna.graph.EventFilterGraph: "
         "graph.sequential([model.get_source_node(), sink]); graph.start(); ... graph.stop(). Older samna "
         "connected source.add_destination(sink.get_input_channel())", ("samna-docs", "sinabs", "rockpool")),
    Fact("fpga_event_constructor", "no arguments", "FpgaSpikeEvent() then set core_mask, target_chip, neuron_id, "
         "isi; every public script does this", ("ctxctl", "samna-docs")),
    Fact("isi_limit", ISI_LIMIT, "isi must be < 65535 units (the vendor helper asserts it); fillers use 65534",
         ("ctxctl",)),
    Fact("isi_tick_s", 1 / 90e6, "an ISI unit is isi_multiplier FPGA ticks of 11.1 ns", ("ctxctl", "rockpool")),
    Fact("fpga_events", 2 ** 15 - 1, "events the generator holds (approx.)", ("ctxctl",), certain=False),
    Fact("fresh_cam", FRESH_CAM, "on a fresh chip every unused CAM entry listens to (core 0, neuron 0) as NMDA, "
         "so a neuron at (core 0, id 0) with SRAM targets drives every unconnected neuron there; netgen warns",
         ("ctxctl",)),
    Fact("routing_rule", ROUTING_RULE, "chip (x, y) = (chip % 2, chip // 2); a route that leaves the 2 x 2 grid "
         "is lost", ("ctxctl",)),
    Fact("syn_type_values", {"GABA_B": 0, "GABA_A": 1, "NMDA": 2, "AMPA": 3}, "Dynapse1SynType values",
         ("samna-docs",), certain=False),
    Fact("timestamp_unit_s", 1e-6, "Spike.timestamp counts microseconds since reset_timestamp()",
         ("samna-docs", "libcaer")),
    Fact("timestamp_periods_us", TIMESTAMP_PERIODS_US, "the counter wraps at 2**31 us (libcaer keeps 31 "
         "significant bits) or 2**32 us (the class reference is unsure); a TimestampWrapEvent marks each wrap",
         ("libcaer", "samna-docs"), certain=False),
    Fact("first_isi", "unknown", "whether the first FPGA event waits its ISI after start(); measured by "
         "dynacal board check", ("samna-docs",), certain=False),
    Fact("start_latency", "unknown", "USB delay between reset_timestamp() and start(); measured by dynacal board "
         "check (start_latency_s)", ("samna-docs",), certain=False),
)
