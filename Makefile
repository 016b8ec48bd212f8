# wsbench: build, run, test, measure. `make test` needs only cargo and
# python3: it creates the interop peers' venv (.venv, git-ignored) itself.

CARGO   ?= cargo
PYTHON  ?= python3
VENV    := .venv
CMP_VENV := compare/python/.venv
TOKIO   := compare/tokio/Cargo.toml
BIN     := target/release/wsbench
HOST    ?= 127.0.0.1
PORT    ?= 7788
URL     ?= ws://$(HOST):$(PORT)/
COUNT   ?= 1000

.PHONY: build run-server run-client run-chat test venv bench bench-quick compare compare-quick compare-servers fmt lint clean

build:
	$(CARGO) build --release --locked

## The server for run-client (Ctrl-C stops it).
run-server: build
	$(BIN) server --host $(HOST) --port $(PORT)

## The original experiment against run-server: serial, then parallel.
run-client: build
	$(BIN) bench --url $(URL) --count $(COUNT) --mode serial --out results-serial.csv
	$(BIN) bench --url $(URL) --count $(COUNT) --mode parallel --out results-parallel.csv

## Type into the run-server server's /chat (Ctrl-D or Ctrl-C ends).
run-chat: build
	$(BIN) chat --url ws://$(HOST):$(PORT)/chat

$(VENV)/.stamp: tests/requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r tests/requirements.txt
	touch $@

venv: $(VENV)/.stamp

## Format, lints, unit and integration tests (release: the tests push real images).
## The --redis tests run a real redis-server: installed here when missing (#18).
test: $(VENV)/.stamp
	command -v redis-server >/dev/null || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server)
	$(CARGO) fmt --check
	$(CARGO) fmt --check --manifest-path compare/tokio/Cargo.toml
	$(CARGO) clippy --release --locked --all-targets -- -D warnings
	$(CARGO) test --release --locked

## Every figure the issues ask for; writes target/bench/results.md.
## Criterion first: the e2e run folds its medians into the same results.
bench: build
	$(CARGO) bench --locked --bench stats -- --noplot
	$(CARGO) bench --locked --bench frames -- --noplot
	$(CARGO) bench --locked --bench e2e

## A quick pass of the same suite.
bench-quick: build
	WSBENCH_QUICK=1 $(CARGO) bench --locked --bench e2e

$(CMP_VENV)/.stamp: compare/python/requirements.txt
	$(PYTHON) -m venv $(CMP_VENV)
	$(CMP_VENV)/bin/pip install --quiet --disable-pip-version-check -r compare/python/requirements.txt
	touch $@

## The tokio server of the comparison, into our target/ (skipped, and so
## said in the summary, while compare/tokio does not exist).
compare-servers: build $(CMP_VENV)/.stamp
	@if [ -f $(TOKIO) ]; then \
		echo "CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) build --release --locked --manifest-path $(TOKIO)"; \
		CARGO_TARGET_DIR=$(CURDIR)/target $(CARGO) build --release --locked --manifest-path $(TOKIO); \
	else \
		echo "no $(TOKIO): the tokio column will be skipped"; \
	fi

## Ours against tokio and Python asyncio on the same workloads, with what
## each server spent (#8, #17); writes target/compare/summary.md and
## summary.json, and draws compare.svg from it with `wsbench report`.
## About 4-5 minutes once built.
compare: compare-servers
	$(CARGO) bench --locked --bench compare

## One short round of every workload, for trying the driver (under 1 min).
compare-quick: compare-servers
	WSBENCH_QUICK=1 $(CARGO) bench --locked --bench compare

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean
	rm -rf $(VENV) $(CMP_VENV)
