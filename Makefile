# CareLedger: `make run` starts the embedded node with demo data; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COMETBFT_VERSION := v0.38.25
COMETBFT := .bin/cometbft
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench cometbft clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/careledger up --demo

# The CometBFT binary is pinned: @latest resolves to a retracted v1 line.
$(COMETBFT):
	@command -v go >/dev/null || { echo "Go is needed to build CometBFT for the network tests: install Go 1.22+ (https://go.dev/doc/install)"; exit 1; }
	GOBIN=$(CURDIR)/.bin go install github.com/cometbft/cometbft/cmd/cometbft@$(COMETBFT_VERSION)

cometbft: $(COMETBFT)

# Lint and types first: a change that breaks them fails like a failing test.
test: $(STAMP) $(COMETBFT) lint
	COMETBFT_BIN=$(CURDIR)/$(COMETBFT) $(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

bench: $(STAMP) $(COMETBFT)
	$(BIN)/python -m bench.chain_throughput
	$(BIN)/python -m bench.chain_memory
	$(BIN)/python -m bench.records_throughput
	COMETBFT_BIN=$(CURDIR)/$(COMETBFT) $(BIN)/python -m bench.network_throughput

clean:
	rm -rf $(VENV) .bin build
