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
	@# Each run builds into temporary directories of its own (the shell's pid) and renames them into
	@# place only if no other run did first: concurrent cold runs (CI jobs sharing a cache) used to share
	@# one .tmp directory, and one of them failed as the other renamed it away. An interrupted run
	@# leaves nothing half-built behind.
	@set -e; \
	t1="$(GOVULNCHECK_DIR).tmp.$$$$"; t2="$(VULNDB_DIR).tmp.$$$$"; \
	trap 'rm -rf "$$t1" "$$t2"' EXIT; trap 'exit 130' INT TERM; \
	if [ ! -x "$(GOVULNCHECK)" ]; then \
	  echo "vulncheck: installing govulncheck $(VULN_VERSION) into $(GOVULNCHECK_DIR)"; \
	  GOBIN="$$t1" $(GO) install golang.org/x/vuln/cmd/govulncheck@$(VULN_VERSION); \
	  if [ ! -e "$(GOVULNCHECK_DIR)" ]; then mv "$$t1" "$(GOVULNCHECK_DIR)"; \
	  elif [ ! -x "$(GOVULNCHECK)" ]; then rm -rf "$(GOVULNCHECK_DIR)"; mv "$$t1" "$(GOVULNCHECK_DIR)"; fi; \
	fi; \
	if [ ! -f "$(VULNDB_DIR)/index/db.json" ]; then \
	  src=$$($(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	  test -d "$$src/data/osv" || { echo "vulncheck: no data/osv in golang.org/x/vulndb@$(VULNDB_VERSION) ($$src)"; exit 1; }; \
	  echo "vulncheck: building the vulnerability database into $(VULNDB_DIR)"; \
	  mkdir -p "$$t2"; \
	  $(GO) run golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) -vulns "$$src/data/osv" -out "$$t2"; \
	  if [ ! -e "$(VULNDB_DIR)" ]; then mv "$$t2" "$(VULNDB_DIR)"; \
	  elif [ ! -f "$(VULNDB_DIR)/index/db.json" ]; then rm -rf "$(VULNDB_DIR)"; mv "$$t2" "$(VULNDB_DIR)"; fi; \
	fi
	$(GOVULNCHECK) -db file://$(VULNDB_DIR) ./...

build: ## static binaries into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

standin: ## run the Versori stand-in on 127.0.0.1:8950
	$(GO) run ./cmd/versori-standin

bench: ## baseline asynq vs activator, scaling and enqueue figures (BENCHMARKS.md); flags: make bench ARGS='-latency 20ms'
	$(GO) run ./cmd/bench $(ARGS)
