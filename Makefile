# Supernet: one-command setup, demo, tests and benchmarks.
#   make demo   - full local network on Anvil (embedded store, default model)
#   make test   - forge tests + gas snapshot check + Python unit and integration tests
# Every target runs `setup` first; setup is idempotent (make's timestamps: a second run does nothing).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
BIN := node_modules/.bin
# The platform binary, not the npm wrapper node_modules/.bin/forge: the wrapper exits 0 even when
# forge fails (a failing Solidity test would not fail `make test`; tests/integration/test_toolchain.py).
FOUNDRY_ARCH := $(if $(filter aarch64 arm64,$(shell uname -m)),arm64,amd64)
FORGE_BIN := node_modules/@foundry-rs/forge-linux-$(FOUNDRY_ARCH)/bin/forge
FORGE := cd contracts && ../$(FORGE_BIN)
FORGE_FLAGS := --use ../scripts/solc --offline
SUPERNET_HOME ?= $(HOME)/.cache/supernet
export SUPERNET_HOME
# named after the weights manifest format (supernet.sdk.models): a copy pulled under another is pulled again
MODEL_STAMP := $(SUPERNET_HOME)/models/smollm2-135m/.pulled-manifest2
# Debian's Chromium for the explorer's browser tests (Playwright's own browser download is not reachable).
CHROMIUM := /usr/bin/chromium

.PHONY: fuzz-api setup demo test test-contracts test-python test-unit test-integration lint contracts bindings \
        bench-gas bench-llm bench-kernel bench-verify bench-explorer bench-reliability clean

setup: node_modules/.installed $(VENV)/.installed contracts/out/.built $(MODEL_STAMP) $(CHROMIUM)

node_modules/.installed: package.json package-lock.json
	@echo "==> npm ci (anvil, forge, cast, solc, @openzeppelin/contracts)"
	npm ci --no-audit --no-fund
	@$(BIN)/anvil --version >/dev/null || { echo "anvil binary missing after npm ci" >&2; exit 1; }
	touch $@

$(VENV)/.installed: sdk/pyproject.toml node/pyproject.toml validator/pyproject.toml explorer/pyproject.toml \
                    requirements-dev.txt
	@echo "==> Python virtualenv in $(VENV) (torch pinned to 2.13.0, CPU build)"
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade "pip>=24"
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e sdk -e node -e validator -e explorer -r requirements-dev.txt
	touch $@

contracts/out/.built: $(shell find contracts/src contracts/test contracts/script -name '*.sol' 2>/dev/null) contracts/foundry.toml node_modules/.installed
	@echo "==> forge build"
	$(FORGE) build $(FORGE_FLAGS) $(if $(filter contracts/foundry.toml,$?),--force)  # forge's cache misses compiler-setting changes
	touch $@

# Installed only when missing (make's target is the binary itself, so a second run does nothing).
$(CHROMIUM):
	@echo "==> Debian chromium (browser tests of the explorer)"
	apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

$(MODEL_STAMP): $(VENV)/.installed
	@echo "==> default model (SmolLM2-135M-Instruct) into $(SUPERNET_HOME)/models"
	$(VENV)/bin/supernet model pull smollm2-135m
	touch $@

contracts: contracts/out/.built

bindings: setup
	$(PY) scripts/gen_bindings.py

test: setup test-contracts test-python
	@echo "==> all tests passed"

test-contracts: setup
	@echo "==> forge test"
	$(FORGE) test $(FORGE_FLAGS)
	@echo "==> forge snapshot --check (committed contracts/.gas-snapshot)"
	$(FORGE) snapshot $(FORGE_FLAGS) --check

# Two pytest processes (pytest-xdist), a module's tests in one of them (--dist loadscope: its
# module-scoped fixtures are built once): much of the suite waits on Anvil, subprocesses and
# sockets rather than computing, so two share the 2 cores well (33 -> ~21 min here).
# TEST_WORKERS=0 runs the suite in this process.
TEST_WORKERS ?= 2

test-python: setup
	@echo "==> pytest, $(TEST_WORKERS) processes (the 25 slowest tests are listed at the end)"
	$(PY) -m pytest tests -n $(TEST_WORKERS) --dist loadscope --durations=25

test-unit: setup
	$(PY) -m pytest tests/unit

test-integration: setup
	$(PY) -m pytest tests/integration

lint: setup
	$(VENV)/bin/ruff check sdk node validator explorer tests scripts
	$(VENV)/bin/ruff format --check sdk node validator explorer tests scripts
	$(VENV)/bin/mypy sdk/supernet node/supernet validator/supernet explorer/supernet

demo: setup
	$(VENV)/bin/supernet devnet demo

bench-gas: setup
	$(PY) scripts/bench_gas.py

bench-llm: setup
	$(PY) scripts/bench_llm.py

bench-kernel: setup
	$(PY) scripts/bench_kernel.py

bench-verify: setup
	$(PY) scripts/bench_verify.py

bench-explorer: setup
	$(PY) scripts/bench_explorer.py

# A crash campaign: 24 SIGKILLs over every role of a devnet under load (~20 min); `make test` runs 6
bench-reliability: setup
	$(PY) scripts/bench_reliability.py --kills 24

# schemathesis over the node's and the store's OpenAPI, 100 cases per operation (>= 1,000 in all);
# `make test` runs the same file with SUPERNET_FUZZ_CASES=12
fuzz-api: setup
	SUPERNET_FUZZ_CASES=100 $(PY) -m pytest -s tests/integration/test_api_fuzz.py

clean:
	rm -rf contracts/out contracts/cache .pytest_cache
