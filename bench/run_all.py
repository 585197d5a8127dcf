"""Run every objfs benchmark in turn and print their figures (see bench/README.md).

Each script runs in a fresh interpreter: bench_erasure.py changes process-wide
state (glibc malloc thresholds through `erasure.tune_malloc()`, the objfs
logger), which would otherwise carry into the RSS figures of bench_recovery.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCHMARKS = sorted(p for p in Path(__file__).parent.glob("bench_*.py"))

if __name__ == "__main__":
    failed = []
    for path in BENCHMARKS:
        print(f"== {path.name}", flush=True)
        if subprocess.run([sys.executable, str(path)], check=False).returncode != 0:
            failed.append(path.name)
    if failed:
        sys.exit(f"failed: {', '.join(failed)}")
