# Tandem: `make run` starts one instance on embedded defaults, `make test`
# runs everything CI runs.
GO      ?= go
BIN     := bin/tandem
FUZZTIME ?= 10s

export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build run test vet unit fuzz bench bench-deps clean

all: build

build:
	$(GO) build -o $(BIN) ./cmd/tandem

run: build
	./$(BIN) serve

vet:
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 -timeout 8m ./...

# A short run of every fuzz target (go test -fuzz takes one target at a time).
fuzz:
	@for pkg in $$($(GO) list ./...); do \
	  dir=$$($(GO) list -f '{{.Dir}}' $$pkg); \
	  for t in $$(grep -ho '^func Fuzz[A-Za-z0-9_]*' $$dir/*_test.go 2>/dev/null | sed 's/func //'); do \
	    echo "fuzz $$pkg $$t ($(FUZZTIME))"; \
	    $(GO) test -run=NONE -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) $$pkg || exit 1; \
	  done; \
	done

test: vet unit fuzz

# The bench suite against its peers (bench/, BENCHMARKS.md). bench-deps
# installs the peers: redis-server (Debian package) and nats-server (Go
# module proxy). BENCHFLAGS=--quick gives a one-minute smoke run.
NATS_SERVER_VERSION := v2.15.2
BENCHFLAGS ?=

bench-deps:
	@command -v redis-server >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; }
	@command -v nats-server >/dev/null 2>&1 || test -x "$$($(GO) env GOPATH)/bin/nats-server" || $(GO) install github.com/nats-io/nats-server/v2@$(NATS_SERVER_VERSION)

bench: build
	@mkdir -p bench/results
	./$(BIN) bench $(BENCHFLAGS) --out bench/results/run-$$(date -u +%Y%m%d-%H%M%S).json --report BENCHMARKS.md --plots docs/bench

clean:
	rm -rf bin
