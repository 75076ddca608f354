"""Run the whole benchmark suite and print the table: ``python benchmarks/run.py [--quick]``.

Same as ``dynacal bench``; set ``DYNACAL_BENCH_JSON=FILE`` to also write the records.
"""

import json
import os
import sys

from dynacal._cli_support import ProgressBar
from dynacal.bench import format_table, run_benchmarks

if __name__ == "__main__":
    with ProgressBar("case") as progress:  # on stderr, one step per case
        rows = run_benchmarks(quick="--quick" in sys.argv, progress=progress)
    print(format_table(rows))
    if os.environ.get("DYNACAL_BENCH_JSON"):
        with open(os.environ["DYNACAL_BENCH_JSON"], "w") as fh:
            json.dump(rows, fh, indent=1)
