"""Run every objfs benchmark in turn and print their figures (see bench/README.md)."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

BENCHMARKS = sorted(p for p in Path(__file__).parent.glob("bench_*.py"))

if __name__ == "__main__":
    for path in BENCHMARKS:
        print(f"== {path.name}", flush=True)
        sys.argv = [str(path)]
        runpy.run_path(str(path), run_name="__main__")
