"""Run every benchmark one after another (never two at once on 2 cores) and print their reports.

``make bench`` runs this. Each benchmark measures its baseline in the same run and prints ratios.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

BENCHMARKS = ("bench_engine.py", "bench_fate.py", "bench_measures.py", "bench_core.py", "bench_transfer.py",
              "bench_granularity.py", "bench_defrost.py", "bench_lm.py")


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for name in BENCHMARKS:
        print(f"== {name}", flush=True)
        start = time.perf_counter()
        if subprocess.run([sys.executable, str(here / name)]).returncode != 0:
            failed.append(name)
        print(f"   ({time.perf_counter() - start:.0f} s)\n", flush=True)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
