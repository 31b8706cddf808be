#!/usr/bin/env bash
# Memory benchmark (SPEC 11, fourth part): a private `fleetroll up`, a lab
# of L hosts it probes over SSH, synthetic host records for the rest of N,
# and the resident memory of `up` and of its nats-server while the mesh
# takes them in and works on them. Prints Markdown table rows and a
# `summary:` line (`fleetroll-bench memory`); `make bench` puts them in
# BENCHMARKS.md. Extra arguments go to `fleetroll-bench memory`.
#
#   scripts/bench-memory.sh 10000 1000
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${1:-10000}
lab_size=${2:-1000}
shift 2 || shift $# || true
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_path fleetroll fleetroll-lab fleetroll-bench
work=$(mktemp -d /tmp/fleetroll-bench-memory.XXXXXX)
export FLEETROLL_DATA_DIR="$work/data"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

lab=()
if [ "$lab_size" -gt 0 ]; then
  bench_lab "$lab_size" "$FLEETROLL_DATA_DIR"
  lab=(--lab-hosts-file "$lab_hosts")
fi
echo "bench-memory: fleetroll up in $FLEETROLL_DATA_DIR" >&2
bench_up
# Commands and queries go as the operator `up` made (relops token and NATS
# user); the synthetic inventory is written as the workers write it.
fleetroll-bench memory --pid "$up" --nats-url "$FLEETROLL_NATS_URL" \
  --web-url "$(cat "$FLEETROLL_DATA_DIR/web.url")" \
  --token-file "$FLEETROLL_DATA_DIR/token" \
  --nats-credentials "$FLEETROLL_DATA_DIR/credentials/relops.toml" \
  --worker-credentials "$FLEETROLL_DATA_DIR/credentials/worker.toml" \
  --hosts "$hosts" "${lab[@]}" "$@"
