# CareLedger: `make run` starts the embedded node with demo data; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COMETBFT_VERSION := v0.38.25
COMETBFT := .bin/cometbft
STAMP := $(VENV)/.installed
# Bundles as current Synthea writes them (conditional references), made by Synthea 3.3.0 from
# Maven Central with a fixed seed (tools/synthea/): tests/gateway/ imports them.
SYNTHEA_DATA := .data/synthea-3.3.0

.PHONY: run test lint typecheck bench cometbft synthea clean

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

$(SYNTHEA_DATA):
	@command -v java >/dev/null && command -v mvn >/dev/null || { echo "Java 17+ and Maven are needed to generate the Synthea test bundles"; exit 1; }
	tools/synthea/generate.sh $(SYNTHEA_DATA) 3

synthea: $(SYNTHEA_DATA)

# Lint and types first: a change that breaks them fails like a failing test.
test: $(STAMP) $(COMETBFT) $(SYNTHEA_DATA) lint
	COMETBFT_BIN=$(CURDIR)/$(COMETBFT) CARELEDGER_SYNTHEA_DATA=$(CURDIR)/$(SYNTHEA_DATA) $(BIN)/pytest -q

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
	rm -rf $(VENV) .bin build .data tools/synthea/lib
