# fleetroll: `make demo` and `make test` set up everything they need (as root
# on Debian): Debian packages, nats-server in .tools/, the build.

# The build lives outside the clone so fresh clones (CI) reuse it.
CARGO_TARGET_DIR ?= $(HOME)/.cache/fleetroll/target
export CARGO_TARGET_DIR

.PHONY: setup build test chaos demo bench fuzz clean

setup:
	@bash scripts/setup.sh

build: setup
	cargo build --workspace --bins
	@mkdir -p .tools/bin
	@for b in fleetroll fleetroll-lab; do \
	  if [ -x "$(CARGO_TARGET_DIR)/debug/$$b" ]; then ln -sf "$(CARGO_TARGET_DIR)/debug/$$b" .tools/bin/$$b; fi; \
	done

test: build
	@bash scripts/setup.sh test
	cargo test --workspace --no-fail-fast

# The full chaos run (300 lab hosts on a 3-node cluster); `make test` runs a
# small one.
chaos: build
	cargo test -p fleetroll --test chaos -- --ignored --nocapture chaos_full

demo: build
	@bash scripts/demo.sh

# Benchmarks run release builds only (debug figures mislead); the scripts
# take them from $(CARGO_TARGET_DIR)/release.
bench: setup
	cargo build --release --workspace --bins
	@bash scripts/bench.sh

# Fuzzing (cargo-fuzz, installed into .tools/ on first use): every target
# under fuzz/ for FUZZ_SECONDS each. Never part of `test` or CI.
FUZZ_SECONDS ?= 60
export FUZZ_SECONDS
fuzz:
	@bash scripts/fuzz.sh

clean:
	cargo clean
	rm -rf .tools .lab .data
