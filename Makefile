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
TEST_WORKERS ?= 4
PYTEST_ARGS ?=

.PHONY: setup demo test test-fast lint bench clean

$(BIN)/paywatch: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(BIN)/paywatch

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch node_modules/.installed

setup: $(BIN)/paywatch node_modules/.installed

demo: setup
	$(BIN)/paywatch demo

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy src

test: lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

test-fast: lint
	$(BIN)/pytest -q -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

bench: setup
	$(BIN)/python bench/matching.py
	$(BIN)/python bench/evm_scan.py
	$(BIN)/python bench/tron_scan.py
	$(BIN)/python bench/utxo_scan.py
	$(BIN)/python bench/callbacks.py
	$(BIN)/python bench/scale.py --database $(BENCH_DATABASE)

clean:
	rm -rf $(VENV) node_modules
