#!/usr/bin/env bash
# The whole suite (`make test`) while a CPU hog keeps every core busy; prints the wall time.
#
#   tests/stress.sh               # one run
#   STRESS_RUNS=5 tests/stress.sh # five in a row; stops at the first failure
#
# The hog (tests/support/cpu_hog.py) stops by itself after STRESS_HOG_SECONDS (default 1800) and
# when this script ends. Set PAYWATCH_TEST_DATABASE_URL to run the suite on PostgreSQL too (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${STRESS_RUNS:-1}
hog_seconds=${STRESS_HOG_SECONDS:-1800}
make setup >/dev/null

for run in $(seq 1 "$runs"); do
  .venv/bin/python tests/support/cpu_hog.py --seconds "$hog_seconds" &
  hog=$!
  trap 'kill "$hog" 2>/dev/null || true' EXIT
  started=$(date +%s)
  status=0
  make test || status=$?
  elapsed=$(( $(date +%s) - started ))
  kill "$hog" 2>/dev/null || true
  wait "$hog" 2>/dev/null || true
  trap - EXIT
  echo "stress run $run/$runs: make test exited $status in ${elapsed} s, a CPU hog on $(nproc) cores"
  if [ "$status" -ne 0 ]; then
    exit "$status"
  fi
done
