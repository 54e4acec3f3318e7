# Tandem: `make run` starts one instance on embedded defaults, `make test`
# runs everything CI runs.
GO      ?= go
BIN     := bin/tandem
FUZZTIME ?= 10s

export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build run test vet unit fuzz sim simtest bench bench-deps clean

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

# The deterministic simulator (sim/, docs/architecture.md "Deterministic
# simulation"): SEEDS seeds from SEED (default: 1,000 from a random start,
# printed). One line per failure with its replay command; exit 1 if any.
# `make sim SEEDS=1 SEED=S` also prints the trace digest. SIMFLAGS passes
# more flags (-topology=NAME, -broken=NAME, -restore, -v).
SEEDS ?= 1000
SEED ?= -1
SIMFLAGS ?=

sim:
	$(GO) run ./sim/simcmd -seeds $(SEEDS) -seed $(SEED) $(SIMFLAGS)

# make test's share of the simulator: a few hundred fresh seeds, outside
# -race (the unit step runs the sim package's own tests under -race).
SIMTEST_SEEDS ?= 500
simtest:
	$(GO) run ./sim/simcmd -seeds $(SIMTEST_SEEDS) -seed $(SEED) $(SIMFLAGS)
	$(GO) test -count=1 -run 'TestBrokenBuildsCaught|TestRegressionSeeds' ./sim/

test: vet unit simtest fuzz

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
