# Two commands do all set-up on a fresh machine (see README.md):
#   make demo   -> installs everything, then runs the devnet demo on SQLite
#   make test   -> installs everything, then runs lint, types and the whole test suite
#   make test-fast -> the inner loop: the suite without the tests marked slow
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
ANVIL := node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil
# bench/scale.py creates (and drops) a fresh database next to this PostgreSQL one
BENCH_DATABASE ?= postgresql://127.0.0.1:5432/test

# pytest-xdist workers; each has its own databases, ports and anvil nodes (tests/support/ports.py)
# 8 on the 2-core machine: many tests wait on their own child processes and nodes, so 4 workers
# left the cores half idle (PostgreSQL on, back to back: 4 workers 6 min 32 s, 8 workers 5 min 15 s)
TEST_WORKERS ?= 8
PYTEST_ARGS ?=
# one test at a time to each worker (after a first two), in the order tests/conftest.py sets: the
# longest first, so that none of them is left queued behind another on a busy worker
XDIST := -n $(TEST_WORKERS) --maxschedchunk 1
# The test runs keep compiled bytecode (pytest's assertion-rewritten modules included) in .pycache/,
# even where PYTHONDONTWRITEBYTECODE is set: without it every xdist worker and every child process
# compiles the test modules and plugins again (about half of collection's CPU time).
PYCACHE := PYTHONDONTWRITEBYTECODE= PYTHONPYCACHEPREFIX=$(CURDIR)/.pycache

.PHONY: setup system-packages demo test test-fast lint bench clean

$(BIN)/paywatch: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(BIN)/paywatch

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch node_modules/.installed

# Debian packages the tests drive: a regtest litecoind (UTXO tests) and chromium (pay-page browser
# tests). Installed when missing and apt-get can run (root or sudo); otherwise those tests skip.
system-packages:
	@missing=""; \
	command -v litecoind >/dev/null 2>&1 || [ -x /usr/lib/litecoin/litecoind ] || missing="$$missing litecoind"; \
	[ -x /usr/bin/chromium ] || missing="$$missing chromium"; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null 2>&1; then sudo="sudo"; else sudo="none"; fi; \
	  if [ "$$sudo" = none ] || ! command -v apt-get >/dev/null 2>&1; then \
	    echo "note: install$$missing (Debian packages) to run the UTXO and browser tests; they skip without them"; \
	  else \
	    echo "installing$$missing (apt-get)"; \
	    $$sudo apt-get update -qq && $$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	  fi; \
	fi

setup: $(BIN)/paywatch node_modules/.installed system-packages

demo: setup
	$(BIN)/paywatch demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

test: lint
	$(PYCACHE) $(BIN)/pytest -q $(XDIST) $(PYTEST_ARGS)

# The inner loop: SQLite only (PAYWATCH_TEST_DATABASE_URL unset; `make test` and CI run both
# databases) and without the tests marked slow (tests/conftest.py: SLOW_BY_PROFILE and the
# modules' own marks). Measured on a quiet 2-core machine, 8 workers: 1,021 tests, 47 s in all.
test-fast: lint
	$(PYCACHE) env -u PAYWATCH_TEST_DATABASE_URL $(BIN)/pytest -q $(XDIST) -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/matching.py
	$(BIN)/python bench/evm_scan.py
	$(BIN)/python bench/tron_scan.py
	$(BIN)/python bench/utxo_scan.py
	$(BIN)/python bench/callbacks.py
	$(BIN)/python bench/scale.py --database $(BENCH_DATABASE)
	$(BIN)/python bench/build_compare.py --database $(BENCH_DATABASE)
	$(BIN)/python bench/scale_api.py --database $(BENCH_DATABASE)
	$(BIN)/python bench/scale_callbacks.py --database $(BENCH_DATABASE)

clean:
	rm -rf $(VENV) node_modules .pycache
