# Vigie — the front door. `make` alone lists the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

GO      ?= go
BIN     := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X main.version=$(VERSION)
# Go test flags; override e.g. `make test TESTFLAGS=-v`.
TESTFLAGS ?=
PKGS    := ./...

.PHONY: help
help: ## list the targets
	@awk 'BEGIN{FS=":.*## "} /^[a-zA-Z_-]+:.*## /{printf "  \033[1m%-12s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: need-go
need-go:
	@command -v $(GO) >/dev/null || { echo "Go is required (https://go.dev/dl, version from go.mod); install it and retry." >&2; exit 1; }

.PHONY: need-media-tools
need-media-tools:
	@if ! command -v ffmpeg >/dev/null || ! command -v ffprobe >/dev/null || ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing ffmpeg and chromium (the end-to-end tests publish, check and play video with them)…"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg chromium >/dev/null; \
	  else \
	    echo "note: ffmpeg/ffprobe/chromium not found: the end-to-end tests that need them will be skipped (install: sudo apt-get install ffmpeg chromium)." >&2; \
	  fi; \
	fi

.PHONY: need-protoc
need-protoc:
	@command -v protoc >/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null; \
	  else echo "protoc is required: sudo apt-get install protobuf-compiler" >&2; exit 1; fi; }

.PHONY: build
build: need-go ## build bin/vigie
	$(GO) build -ldflags "$(LDFLAGS)" -o $(BIN)/vigie ./tools/vigie

.PHONY: run
run: build ## run one node with the embedded defaults (data in ./vigie-data)
	$(BIN)/vigie node

.PHONY: demo
demo: build ## run a node with simulated cameras recording; prints the URLs to open
	$(BIN)/vigie demo

.PHONY: test
test: need-go need-media-tools ## run every test (unit, fuzz seeds, in-process, end-to-end)
	$(GO) vet $(PKGS)
	$(GO) test -count=1 -timeout 30m $(TESTFLAGS) $(PKGS)

.PHONY: test-race
test-race: need-go ## run the tests with the race detector (slower)
	$(GO) test -race -count=1 -timeout 45m -p 1 $(TESTFLAGS) $(PKGS)

.PHONY: bench
bench: need-go need-media-tools ## run the benchmarks; figures go into BENCHMARKS.md by hand with the machine and date
	$(GO) test -run '^$$' -bench . -benchmem -count=1 -timeout 60m ./storage/... ./cluster/... ./node/... ./gateway/... ./loadtest/...
	$(GO) run ./loadtest/cmd/recbench -cameras 50,200

.PHONY: generate
generate: need-go need-protoc ## regenerate protobuf/gRPC/REST code and the OpenAPI document
	bash gateway/api/generate.sh

.PHONY: lint
lint: need-go ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '\.pb\.')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

.PHONY: check
check: lint test ## everything CI checks

.PHONY: clean
clean: ## remove build output (not ./vigie-data)
	rm -rf $(BIN)
