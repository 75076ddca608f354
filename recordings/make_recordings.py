"""Make the shipped recordings: every protocol on one core, with a hidden mismatch.

    python recordings/make_recordings.py [--backend brian2|torch] [--out recordings]

Until the twin board exists, the "chip" is the Brian2 reference backend (numpy runtime)
with a hidden per-neuron mismatch: log-normal, sigma 0.15 (about 15 %), seed 20240611,
on the leak (``Isoma_dpi_tau``), the soma gain (``alpha_soma``), the four base weights
(``I*_w0``) and the four synapse leak currents (``I*_tau``, which set the synapse time
constants); every other parameter keeps its default. It writes

- ``<protocol>.h5``: the Recording of each protocol in ``dynacal.protocols.ORDER`` with its
  default settings, on the 256 neurons of Core_0 (``neurons="core0"``);
- ``ground_truth.json``: the hidden per-neuron values, the seed and sigma, and per file the
  experiment hash, backend and wall time.

Each recording is also run on the torch simulator with the same parameters, and the
script fails unless the spike events are identical (the two backends agree, issue 2).
Library code logs; this script prints, as a command line tool.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from dynacal import Params, get_backend
from dynacal.params import PARAMETERS
from dynacal.protocols import ORDER, get_protocol

SEED = 20240611
SIGMA = 0.15
NEURONS = "core0"
N = 256
#: The parameters that carry the hidden mismatch.
MISMATCHED = ("Isoma_dpi_tau", "alpha_soma", "Inmda_w0", "Iampa_w0", "Igaba_a_w0", "Igaba_b_w0",
              "Inmda_tau", "Iampa_tau", "Igaba_a_tau", "Igaba_b_tau")


def hidden_values(seed: int = SEED, sigma: float = SIGMA, n: int = N) -> dict[str, np.ndarray]:
    """Per-neuron values: default * exp(sigma * z), z ~ N(0, 1), one row of z per parameter."""
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((len(MISMATCHED), n))
    return {name: PARAMETERS[name].default * np.exp(sigma * z[k]) for k, name in enumerate(MISMATCHED)}


def _same_spikes(a, b) -> bool:
    key = lambda r: np.lexsort((r.spike_step, r.spike_neuron, r.spike_batch))  # noqa: E731
    ia, ib = key(a), key(b)
    return all(np.array_equal(getattr(a, f)[ia], getattr(b, f)[ib])
               for f in ("spike_batch", "spike_neuron", "spike_step"))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", default="brian2", help="brian2 (default) or torch")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent))
    parser.add_argument("--protocols", default=",".join(ORDER))
    args = parser.parse_args(argv)
    out = Path(args.out)
    values = hidden_values()
    params = Params.from_values({k: torch.as_tensor(v) for k, v in values.items()})
    backend, check = get_backend(args.backend), get_backend("torch")
    truth_path = out / "ground_truth.json"
    truth = json.loads(truth_path.read_text()) if truth_path.exists() else {}
    truth.update({"description": "hidden per-neuron parameters of the shipped recordings (SI units: A, "
                                 "dimensionless for alpha_soma); all other parameters are the defaults of "
                                 "dynacal.params.PARAMETERS",
                  "neurons": NEURONS, "seed": SEED, "sigma": SIGMA,
                  "distribution": "value = default * exp(sigma * z), z ~ N(0, 1) from "
                                  "numpy.random.default_rng(seed).standard_normal((10, 256)), rows in the order "
                                  "of 'values'",
                  "values": {k: v.tolist() for k, v in values.items()}})
    files = truth.setdefault("files", {})
    for name in args.protocols.split(","):
        protocol = get_protocol(name)
        start = time.perf_counter()
        rec = protocol.run(backend, NEURONS, params)
        wall = time.perf_counter() - start
        ref = protocol.run(check, NEURONS, params)
        agree = _same_spikes(rec, ref)
        path = rec.save(out / f"{name}.h5")
        files[name] = {"file": path.name, "backend": rec.backend, "wall_time_s": round(wall, 2),
                       "experiment_hash": rec.metadata["experiment"]["hash"], "n_spikes": int(rec.spike_step.size),
                       "traces": sorted(rec.traces), "torch_identical_spikes": agree,
                       "bytes": path.stat().st_size}
        print(f"{name}: {args.backend} {wall:.1f} s, {rec.spike_step.size} spikes, {path.stat().st_size / 1e6:.2f} MB, "
              f"torch identical spikes: {agree}", flush=True)
        if not agree:
            print(f"error: torch and {args.backend} disagree on {name}", file=sys.stderr)
            return 1
    truth_path.write_text(json.dumps(truth, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
