# Thin targets; the README says what each is for.
GO ?= go
# Every go command here runs the Go release that go.mod's go line names. The go line is the one source
# of truth (Dockerfile and .ci/run are checked against it by deploy/toolchain_test.go); exporting it
# matters because a machine with GOTOOLCHAIN=local would otherwise refuse to build (go.mod requires a
# newer Go than it has) instead of fetching that release from the module proxy.
# `make GOTOOLCHAIN=go1.26.8 ...` overrides it on the command line.
export GOTOOLCHAIN := go$(shell sed -n 's/^go //p' go.mod)
VERSORI_SPEC ?= $(abspath $(wildcard ../shared/versori/embedded-api-v1.yaml))
export VERSORI_SPEC

.PHONY: demo test vulncheck soak lint build standin bench

demo: ## run the whole pipeline on an in-process Redis and the Versori stand-in
	$(GO) run ./cmd/demo

test: ## vet and run every test against the Redis on 127.0.0.1:6379 (TEST_REDIS_ADDR), and deploy/check's strict decoding of the Kubernetes manifests (a module of its own)
	$(GO) vet ./...
	$(GO) test -race -count=1 -timeout 15m ./...
	cd deploy/check && $(GO) vet ./... && $(GO) test -count=1 ./...

soak: ## the long fault-injection soak (20,000 pairs, two workers, one killed) and the long randomized chaos test (6,000 pairs); prints their figures and the chaos seed
	$(GO) test -count=1 -timeout 45m -run '^(TestSoak|TestChaos)$$' -v ./worker -soak=long -chaos=long

lint: ## gofmt and staticcheck
	@test -z "$$(gofmt -l .)" || (gofmt -l . && exit 1)
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

# The vulnerability gate's pins: govulncheck, and the Go vulnerability database as of one golang.org/x/vulndb
# commit (its data/osv). docs/testing.md says how to bump them.
VULN_VERSION := v1.9.0
VULNDB_VERSION := v0.0.0-20261105234957-e22db6528018
# govulncheck and the database are built once per version and reused: outside the work tree, so that
# CI's fresh clones share them, and run from there, so that a warm run needs no module proxy.
VULN_CACHE ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/activator
GOVULNCHECK_DIR := $(VULN_CACHE)/govulncheck/$(VULN_VERSION)
GOVULNCHECK := $(GOVULNCHECK_DIR)/govulncheck
VULNDB_DIR := $(VULN_CACHE)/vulndb/$(VULNDB_VERSION)

# make test, CI's command, runs the gate first.
test: vulncheck

vulncheck: ## govulncheck on ./... against the pinned vulnerability database, built without vuln.go.dev; fails on any reachable vulnerability
	@set -e; \
	if [ ! -x "$(GOVULNCHECK)" ]; then \
	  echo "vulncheck: installing govulncheck $(VULN_VERSION) into $(GOVULNCHECK_DIR)"; \
	  rm -rf "$(GOVULNCHECK_DIR).tmp"; \
	  GOBIN="$(GOVULNCHECK_DIR).tmp" $(GO) install golang.org/x/vuln/cmd/govulncheck@$(VULN_VERSION); \
	  rm -rf "$(GOVULNCHECK_DIR)"; mv "$(GOVULNCHECK_DIR).tmp" "$(GOVULNCHECK_DIR)"; \
	fi; \
	if [ ! -f "$(VULNDB_DIR)/index/db.json" ]; then \
	  src=$$($(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	  test -d "$$src/data/osv" || { echo "vulncheck: no data/osv in golang.org/x/vulndb@$(VULNDB_VERSION) ($$src)"; exit 1; }; \
	  echo "vulncheck: building the vulnerability database into $(VULNDB_DIR)"; \
	  rm -rf "$(VULNDB_DIR).tmp"; mkdir -p "$(VULNDB_DIR).tmp"; \
	  $(GO) run golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) -vulns "$$src/data/osv" -out "$(VULNDB_DIR).tmp"; \
	  rm -rf "$(VULNDB_DIR)"; mv "$(VULNDB_DIR).tmp" "$(VULNDB_DIR)"; \
	fi
	$(GOVULNCHECK) -db file://$(VULNDB_DIR) ./...

build: ## static binaries into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

standin: ## run the Versori stand-in on 127.0.0.1:8950
	$(GO) run ./cmd/versori-standin

bench: ## baseline asynq vs activator, scaling and enqueue figures (BENCHMARKS.md); flags: make bench ARGS='-latency 20ms'
	$(GO) run ./cmd/bench $(ARGS)
