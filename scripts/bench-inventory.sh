#!/usr/bin/env bash
# Inventory benchmark (SPEC 11, second part): a private mesh (`fleetroll up`
# on a temporary data dir and a free loopback port), N host records in its
# inventory, a full observation of each recorded the way the prober records
# one, then the latency of `hosts.list` queries through the query service.
# Prints Markdown table rows and a `summary:` line (`fleetroll-bench
# inventory`); `make bench` puts them in BENCHMARKS.md. Extra arguments go
# to `fleetroll-bench inventory` (e.g. `--queries 100`).
#
#   scripts/bench-inventory.sh 100000
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${1:-100000}
shift || true
# Release builds only: debug figures say little about either side.
bin=${BENCH_BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/fleetroll/target}/release}
for b in fleetroll fleetroll-bench; do
  if [ ! -x "$bin/$b" ]; then
    echo "$bin/$b is missing: cargo build --release --workspace --bins" >&2
    exit 1
  fi
done
PATH="$bin:$PATH"
unset FLEETROLL_NATS_URL FLEETROLL_TOKEN FLEETROLL_TOKEN_FILE FLEETROLL_CONFIG FLEETROLL_NATS_CREDENTIALS
work=$(mktemp -d /tmp/fleetroll-bench-inventory.XXXXXX)
export FLEETROLL_DATA_DIR="$work/data"
up=""
cleanup() {
  local status=$?
  if [ -n "$up" ]; then
    kill -TERM "$up" 2>/dev/null || true
    wait "$up" 2>/dev/null || true
  fi
  if [ "$status" != 0 ] && [ -f "$work/up.log" ]; then
    echo "--- the last lines of fleetroll up's log" >&2
    tail -n 20 "$work/up.log" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

mkdir -p "$FLEETROLL_DATA_DIR"
echo "bench-inventory: fleetroll up in $FLEETROLL_DATA_DIR" >&2
fleetroll up --nats-port 0 > "$work/up.log" 2>&1 &
up=$!
# `up` writes its server's URL into the data dir once the server is up;
# until then `fleetroll status` would look at the default port, where
# another mesh may be running.
live=0
url=""
for _ in $(seq 1 60); do
  if ! kill -0 "$up" 2>/dev/null; then
    echo "bench-inventory: fleetroll up exited" >&2
    exit 1
  fi
  if [ -z "$url" ] && [ -s "$FLEETROLL_DATA_DIR/nats.url" ]; then
    url=$(cat "$FLEETROLL_DATA_DIR/nats.url")
  fi
  if [ -n "$url" ]; then
    live=$(fleetroll --nats-url "$url" status --json 2>/dev/null \
      | python3 -c 'import json,sys; print(sum(1 for w in json.load(sys.stdin)["workers"] if w["live"]))' 2>/dev/null \
      || echo 0)
    [ "$live" = 4 ] && break
  fi
  sleep 1
done
if [ "$live" != 4 ]; then
  echo "bench-inventory: the mesh did not come up within 60 s" >&2
  exit 1
fi
export FLEETROLL_NATS_URL="$url"
# The benchmark reads as a bot would: a read-only token.
fleetroll auth issue --actor fleetroll-bench --role readonly --ttl 8h --out "$work/bench.token" > /dev/null
# It writes the inventory as the prober does (the `worker` NATS user) and
# asks as a reader (`readonly`), with the credentials `up` made.
fleetroll-bench inventory --nats-url "$url" --token-file "$work/bench.token" \
  --worker-credentials "$FLEETROLL_DATA_DIR/credentials/worker.toml" \
  --nats-credentials "$FLEETROLL_DATA_DIR/credentials/readonly.toml" \
  --hosts "$hosts" "$@"
