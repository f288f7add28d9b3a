# CareLedger: `make run` starts the embedded node with demo data; `make test` runs every test.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
COMETBFT_VERSION := v0.38.25
COMETBFT := .bin/cometbft
# Latency between the consortium test hosts: Toxiproxy's server (the package is cmd/server,
# its binary `server`, renamed here so .bin says what it is).
TOXIPROXY_VERSION := v2.5.0
TOXIPROXY := .bin/toxiproxy-server
# Partitions between the consortium test hosts are nftables drop rules (Debian's nftables).
NFT := /usr/sbin/nft
STAMP := $(VENV)/.installed
# Bundles as current Synthea writes them (conditional references), made by Synthea 3.3.0 from
# Maven Central with a fixed seed (tools/synthea/): tests/gateway/ imports them.
SYNTHEA_DATA := .data/synthea-3.3.0
# The portal (TypeScript, portal/) is built into the package; the built files are not committed.
PORTAL_BUILT := src/careledger/web/static/index.html
PORTAL_SOURCES := $(shell find portal/src portal/public portal/index.html portal/vite.config.ts portal/tsconfig.json -type f 2>/dev/null)
PORTAL_MODULES := portal/node_modules/.package-lock.json
# The browser of the end-to-end tests: Debian's chromium (Playwright cannot download its own here).
CHROMIUM := /usr/bin/chromium

.PHONY: run test lint typecheck bench cometbft toxiproxy synthea portal image image-tools wheel clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -U pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

run: $(STAMP) $(PORTAL_BUILT)
	$(BIN)/careledger up --demo

$(PORTAL_MODULES): portal/package.json portal/package-lock.json
	@command -v npm >/dev/null || { echo "Node.js 20+ with npm is needed to build the portal (https://nodejs.org)"; exit 1; }
	cd portal && npm ci --no-audit --no-fund
	touch $(PORTAL_MODULES)

$(PORTAL_BUILT): $(PORTAL_MODULES) $(PORTAL_SOURCES)
	cd portal && npm run build

portal: $(PORTAL_BUILT)

$(CHROMIUM):
	@command -v apt-get >/dev/null || { echo "The browser tests need Chromium at $(CHROMIUM) (Debian's chromium package)"; exit 1; }
	apt-get install -y -q chromium || { apt-get update -q && apt-get install -y -q chromium; }

# The CometBFT binary is pinned: @latest resolves to a retracted v1 line.
$(COMETBFT):
	@command -v go >/dev/null || { echo "Go is needed to build CometBFT for the network tests: install Go 1.22+ (https://go.dev/doc/install)"; exit 1; }
	GOBIN=$(CURDIR)/.bin go install github.com/cometbft/cometbft/cmd/cometbft@$(COMETBFT_VERSION)

cometbft: $(COMETBFT)

$(TOXIPROXY):
	@command -v go >/dev/null || { echo "Go is needed to build toxiproxy-server for the consortium latency tests: install Go 1.22+"; exit 1; }
	GOBIN=$(CURDIR)/.bin/toxiproxy.tmp go install github.com/Shopify/toxiproxy/v2/cmd/server@$(TOXIPROXY_VERSION)
	mv .bin/toxiproxy.tmp/server $(TOXIPROXY) && rmdir .bin/toxiproxy.tmp

toxiproxy: $(TOXIPROXY)

$(NFT):
	@command -v apt-get >/dev/null || { echo "The partition tests need nftables' nft at $(NFT) (Debian's nftables package)"; exit 1; }
	apt-get install -y -q nftables || { apt-get update -q && apt-get install -y -q nftables; }

# The node image as an OCI layout, built without a container engine (docs/operations.md, section 7):
# Debian's root from Debian's mirrors (mmdebstrap, as root), wheels from PyPI, CometBFT from
# .bin. umoci and runc (Debian's) unpack and run it in tests/test_image.py.
IMAGE := build/image
IMAGE_TOOLS := /usr/bin/mmdebstrap /usr/bin/umoci /usr/sbin/runc

$(IMAGE_TOOLS):
	@command -v apt-get >/dev/null || { echo "The image is built with Debian's mmdebstrap, umoci and runc (apt-get install mmdebstrap umoci runc)"; exit 1; }
	apt-get install -y -q mmdebstrap umoci runc || { apt-get update -q && apt-get install -y -q mmdebstrap umoci runc; }

image-tools: $(IMAGE_TOOLS)

image: $(STAMP) $(COMETBFT) $(PORTAL_BUILT) $(IMAGE_TOOLS)
	$(BIN)/python deploy/build_image.py --out $(IMAGE) --cometbft $(COMETBFT)

# The wheel deploy/Dockerfile installs (`docker build -f deploy/Dockerfile .` after this).
wheel: $(STAMP) $(PORTAL_BUILT)
	$(BIN)/python deploy/build_image.py --wheel-to dist

$(SYNTHEA_DATA):
	@command -v java >/dev/null && command -v mvn >/dev/null || { echo "Java 17+ and Maven are needed to generate the Synthea test bundles"; exit 1; }
	tools/synthea/generate.sh $(SYNTHEA_DATA) 3

synthea: $(SYNTHEA_DATA)

# The tests in parallel (pytest-xdist): most slow tests wait on node processes, so more
# workers than the two cores of the CI machine pay. One file to one worker (`loadfile`: the
# module fixtures are set up once), in the order tests/conftest.py gives (slow files first).
TEST_WORKERS ?= 4
PYTEST_PARALLEL := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder

# Lint and types first: a change that breaks them fails like a failing test.
test: $(STAMP) $(COMETBFT) $(TOXIPROXY) $(NFT) $(SYNTHEA_DATA) $(PORTAL_BUILT) $(CHROMIUM) $(IMAGE_TOOLS) lint
	cd portal && npm test
	CHROMIUM_BIN=$(CHROMIUM) COMETBFT_BIN=$(CURDIR)/$(COMETBFT) TOXIPROXY_BIN=$(CURDIR)/$(TOXIPROXY) CARELEDGER_SYNTHEA_DATA=$(CURDIR)/$(SYNTHEA_DATA) $(BIN)/pytest -q $(PYTEST_PARALLEL)

lint: $(STAMP) $(PORTAL_MODULES)
	cd portal && npm run typecheck
	$(BIN)/ruff check src tests bench deploy
	$(BIN)/ruff format --check src tests bench deploy
	$(BIN)/mypy
	$(BIN)/mypy --strict deploy

# Every benchmark as one run (bench/run_all.py): one CARELEDGER_BENCH_RUN id, one table at the
# end. `make bench BENCH_ARGS=--quick` for smoke sizes; `--only scale --skip ...` to choose.
BENCH_ARGS ?=
bench: $(STAMP) $(COMETBFT)
	COMETBFT_BIN=$(CURDIR)/$(COMETBFT) $(BIN)/python -m bench.run_all $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .bin build dist .data tools/synthea/lib portal/node_modules src/careledger/web/static
