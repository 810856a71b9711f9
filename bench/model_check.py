"""The big run of the model-based money test (tests/test_model.py): 5,000 examples by default.

    .venv/bin/python bench/model_check.py [--examples 5000] [--steps 30] [--seed N]
                                          [--pg postgresql://127.0.0.1:5432/test] [--enable all|name,...]
                                          [--no-shrink]

Runs the same state machine as the test suite against a fresh SQLite file (or, with ``--pg``, a
fresh PostgreSQL database created next to the given one and dropped afterwards), then prints the
number of examples run, the time and the seed. On a failure it prints the seed and hypothesis
prints the shrunk sequence of steps; rerun with ``--seed`` to replay it. ``--enable`` turns on
switches for known defects (see ``SWITCHES`` in tests/test_model.py), like
``PAYWATCH_MODEL_ENABLE``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.test_model import enabled_switches, run_model

from paywatch.store.db import upgrade


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--pg", default=None, help="a PostgreSQL URL; a fresh database is created beside it")
    parser.add_argument("--enable", default=None, help="switches for known defects: all, or names separated by commas")
    parser.add_argument("--no-shrink", action="store_true", help="report the first failure without shrinking it")
    args = parser.parse_args()
    switches = enabled_switches(args.enable)
    if args.pg:
        import os

        os.environ["PAYWATCH_TEST_DATABASE_URL"] = args.pg
        import tests.conftest as conftest

        conftest.PG_URL = args.pg
        databases = conftest.fresh_postgres_database()
        url = next(databases)
        backend = "postgresql"
    else:
        directory = tempfile.TemporaryDirectory(prefix="paywatch-model-")
        url = f"sqlite:///{directory.name}/paywatch.db"
        upgrade(url)
        backend = "sqlite"
    print(
        f"model check on {backend}: {args.examples} examples of up to {args.steps} steps; switches: "
        f"{', '.join(sorted(switches)) or 'none'}",
        flush=True,
    )
    try:
        result = run_model(
            url,
            examples=args.examples,
            steps=args.steps,
            seed_value=args.seed,
            switches=switches,
            shrink=not args.no_shrink,
            progress_every=250,
        )
    finally:
        if args.pg:
            databases.close()  # drops the database
    print(
        f"model check passed: {result.examples} examples in {result.seconds:.1f} s "
        f"({result.seconds / max(1, result.examples) * 1000:.0f} ms each) on {backend}, seed {result.seed}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
