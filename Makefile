# Tandem: `make run` starts one instance on embedded defaults, `make test`
# runs everything CI runs.
GO      ?= go
BIN     := bin/tandem
FUZZTIME ?= 10s

export PATH := $(PATH):/usr/local/go/bin

.PHONY: all build run test vet unit fuzz bench clean

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

bench:
	$(GO) test -run=NONE -bench=. -benchtime=2s ./...

clean:
	rm -rf bin
