#!/usr/bin/env bash
# `make fuzz`: every cargo-fuzz target under fuzz/ for FUZZ_SECONDS (60 by
# default) each, after replaying what fuzzing found before
# (fuzz/regressions/<target>); fails when any target crashes. Not part of
# `make test` or CI: it runs for as long as it is given.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-60}"

tools="$PWD/.tools/cargo"
if [ ! -x "$tools/bin/cargo-fuzz" ]; then
  cargo install cargo-fuzz --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH"
# cargo-fuzz passes nightly-only flags (-Zsanitizer); the stable toolchain
# takes them under RUSTC_BOOTSTRAP.
export RUSTC_BOOTSTRAP=1
# Sanitizer flags differ from the main build's: sharing its target dir would
# rebuild both from scratch every time.
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/fleetroll/fuzz-target}"
# What fuzzing learns is kept between runs, outside the clone: fuzz/corpus
# holds only the committed seeds.
learned="${FUZZ_CORPUS_DIR:-$HOME/.cache/fleetroll/fuzz-corpus}"

# Debug assertions: integer overflow is a finding too. AddressSanitizer (the
# default) also reports stack overflows and huge allocations, with the input.
cargo fuzz build --debug-assertions
failed=()
for target in $(cargo fuzz list); do
  printf '\n== fuzz %s for %ss\n' "$target" "$seconds"
  mkdir -p "$learned/$target"
  corpora=("$learned/$target" "fuzz/corpus/$target")
  if [ -d "fuzz/regressions/$target" ]; then corpora+=("fuzz/regressions/$target"); fi
  # Inputs up to 64 KiB: deep nesting needs room, and no regression may be
  # cut short when it is loaded.
  if ! cargo fuzz run --debug-assertions "$target" "${corpora[@]}" -- \
    -max_total_time="$seconds" -timeout=10 -max_len=65536; then
    failed+=("$target")
  fi
done

if [ "${#failed[@]}" -gt 0 ]; then
  printf '\nfuzzing found crashes in: %s (inputs under fuzz/artifacts/)\n' "${failed[*]}" >&2
  exit 1
fi
printf '\nfuzzing found nothing in %ss per target\n' "$seconds"
