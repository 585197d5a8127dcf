"""The background-heal victim of test_heal_kill9.py: open a node, let it heal, report.

Run as `python heal_child.py CONFIG DATA_DIR`. It opens the store the way a
serving node does (`open_store` with its background jobs, so the scrubber starts
a heal pass over the owed devices that are up), prints `open owed [..]`, then
polls and prints `healed` once no device is owed any more and the pass that
healed them has returned (so the cleared owed mask is on disk), and closes the
store. It exits 1 if that takes longer than `HEAL_TIMEOUT_S`.
"""

from __future__ import annotations

import sys

import trio

from objfs.config import load_config
from objfs.store import open_store

HEAL_TIMEOUT_S = 60.0
OPEN_LINE = "open owed"
HEALED_LINE = "healed"


async def run(config_path: str, data_dir: str) -> int:
    config = load_config(config_path, data_dir=data_dir).store
    async with open_store(config) as store:
        owed_at_open = bool(store.health.owed)
        print(f"{OPEN_LINE} {list(store.health.statistics().owed_devices)}", flush=True)
        with trio.move_on_after(HEAL_TIMEOUT_S):
            # Wait for the pass itself to return too (`passes` counts it then): it
            # persists the cleared mask, and leaving meanwhile would cancel that
            # write (see the close test in test_heal_kill9.py). No event: poll.
            while store.health.owed or (owed_at_open and store.scrubber.passes == 0):  # noqa: ASYNC110
                await trio.sleep(0.01)
            print(HEALED_LINE, flush=True)
            return 0
    print(f"still owed after {HEAL_TIMEOUT_S} s", flush=True)
    return 1


if __name__ == "__main__":
    sys.exit(trio.run(run, sys.argv[1], sys.argv[2]))
