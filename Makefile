# Herald — make targets. `make` alone lists them.
.DEFAULT_GOAL := help
GO ?= go

.PHONY: help
help: ## List the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z_-]+:.*## / {printf "  %-10s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: test
test: ## Run every test with -race against real Redis and PostgreSQL (throwaway ones unless HERALD_TEST_* name servers)
	@deploy/dev/test.sh

.PHONY: run
run: ## Run the reference worker on local defaults (Redis, PostgreSQL, the development mailbox)
	@deploy/dev/run.sh

.PHONY: build
build: ## Build bin/worker and bin/enqueue
	$(GO) build -o bin/worker ./cmd/worker
	$(GO) build -o bin/enqueue ./cmd/enqueue

.PHONY: bench
bench: ## Run the benchmarks (no -race; PostgreSQL with fsync on) against throwaway services, or HERALD_TEST_* ones
	@HERALD_RACE= HERALD_PG_FSYNC=on deploy/dev/test.sh -run '^$$' -bench . -benchtime 1000x

.PHONY: vet
vet: ## go vet and gofmt check
	$(GO) vet ./...
	@test -z "$$(gofmt -l .)" || { gofmt -l .; exit 1; }

.PHONY: lint
lint: ## golangci-lint with the project's configuration (pinned version, fetched by go run)
	$(GO) run github.com/golangci/golangci-lint/v2/cmd/golangci-lint@v2.15.0 run ./...

.PHONY: fuzz
fuzz: ## Fuzz the untrusted-input parsers for 20s each
	$(GO) test ./events -run '^$$' -fuzz FuzzParseRef -fuzztime 20s
	$(GO) test ./internal/seal -run '^$$' -fuzz FuzzOpen -fuzztime 20s
	$(GO) test ./channels/email -run '^$$' -fuzz FuzzParseURL -fuzztime 20s
	$(GO) test ./channels/email -run '^$$' -fuzz FuzzBuild -fuzztime 20s
	$(GO) test ./tasks -run '^$$' -fuzz FuzzDecodeDispatch -fuzztime 20s
