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
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_path fleetroll fleetroll-bench
work=$(mktemp -d /tmp/fleetroll-bench-inventory.XXXXXX)
export FLEETROLL_DATA_DIR="$work/data"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

echo "bench-inventory: fleetroll up in $FLEETROLL_DATA_DIR" >&2
bench_up
# The benchmark reads as a bot would: a read-only token.
fleetroll auth issue --actor fleetroll-bench --role readonly --ttl 8h --out "$work/bench.token" > /dev/null
# It writes the inventory as the prober does (the `worker` NATS user) and
# asks as a reader (`readonly`), with the credentials `up` made.
fleetroll-bench inventory --nats-url "$FLEETROLL_NATS_URL" --token-file "$work/bench.token" \
  --worker-credentials "$FLEETROLL_DATA_DIR/credentials/worker.toml" \
  --nats-credentials "$FLEETROLL_DATA_DIR/credentials/readonly.toml" \
  --hosts "$hosts" "$@"
