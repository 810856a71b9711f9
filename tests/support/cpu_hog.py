"""Keep every core busy for a while, then stop by itself (the load of a shared CI box).

    python tests/support/cpu_hog.py --seconds 1800 [--procs N]

One spinning process per core (``--procs`` to change); each stops at the deadline, or as soon as
the hog itself is gone (SIGTERM or SIGKILL of the parent), so nothing outlives a stress run.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import sys
import time


def spin(deadline: float, parent: int) -> None:
    n = 0
    while True:
        n += 1
        if n % 200_000 == 0 and (time.monotonic() > deadline or os.getppid() != parent):
            return


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=1800.0)
    parser.add_argument("--procs", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args(argv)
    deadline = time.monotonic() + args.seconds
    procs = [
        multiprocessing.Process(target=spin, args=(deadline, os.getpid()), daemon=True) for _ in range(args.procs)
    ]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # daemon children are stopped on exit
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
