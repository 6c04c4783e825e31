# Thin targets; the README says what each is for.
GO ?= go
VERSORI_SPEC ?= $(abspath $(wildcard ../shared/versori/embedded-api-v1.yaml))
export VERSORI_SPEC

.PHONY: demo test soak lint build standin bench

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

build: ## static binaries into bin/
	CGO_ENABLED=0 $(GO) build -trimpath -o bin/ ./cmd/...

standin: ## run the Versori stand-in on 127.0.0.1:8950
	$(GO) run ./cmd/versori-standin

bench: ## baseline asynq vs activator, scaling and enqueue figures (BENCHMARKS.md); flags: make bench ARGS='-latency 20ms'
	$(GO) run ./cmd/bench $(ARGS)
