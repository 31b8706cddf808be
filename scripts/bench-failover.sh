#!/usr/bin/env bash
# Failover benchmark (SPEC 11, third part): a mesh of separate processes (a
# bare nats-server, every worker replica a `fleetroll worker KIND`), a lab
# of N hosts for the prober to probe; per worker kind, one of two replicas
# SIGKILLed while busy, and the only replica SIGKILLed and started again,
# timed until the mesh serves that kind's operation again. Prints Markdown
# table rows and a `summary:` line (`fleetroll-bench failover`); `make bench`
# puts them in BENCHMARKS.md. Extra arguments go to `fleetroll-bench
# failover` (e.g. `--runs 3 --kinds auditor`).
#
#   scripts/bench-failover.sh 8
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${1:-8}
shift || true
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_path fleetroll fleetroll-lab fleetroll-bench
work=$(mktemp -d /tmp/fleetroll-bench-failover.XXXXXX)
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_lab "$hosts" "$work/data"
echo "bench-failover: a mesh of worker processes in $work/data" >&2
fleetroll-bench failover --data-dir "$work/data" --hosts-file "$lab_hosts" \
  --fleetroll "$(command -v fleetroll)" "$@"
