#!/usr/bin/env bash
# Probe benchmark (SPEC 11, first part): against one lab of N hosts, in one
# run, the same probe script by fleetroll (first full probe, then the
# steady-state refresh over pooled connections), by the ad-hoc loop it
# replaces (`xargs -P 32 ssh`), and by `parallel-ssh -p 32`. Prints a
# Markdown table row per tool; `make bench` puts them in BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${1:-1000}
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_path fleetroll fleetroll-lab
work=$(mktemp -d /tmp/fleetroll-bench.XXXXXX)
export FLEETROLL_DATA_DIR="$work/data"
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_lab "$hosts" "$FLEETROLL_DATA_DIR"
# The probe exactly as fleetroll sends it: the state function, then the probe.
script="$work/probe.sh"
cat prober/src/probe/state.sh prober/src/probe/probe.sh > "$script"
ssh_opts=(-i "$lab_key" -p "$lab_port" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
          -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=10)

seconds() { python3 -c 'import sys,time; print(f"{time.time()-float(sys.argv[1]):.1f}")' "$1"; }
now() { python3 -c 'import time; print(time.time())'; }
row() { printf '| %s | %s | %s s | %s |\n' "$1" "$hosts" "$2" "$3"; }

# The ad-hoc loop: one ssh per host, 32 at a time, the same script on stdin
# (the hostname is an argument, never part of the shell text).
mkdir -p "$work/xargs"
export SCRIPT="$script" OUT="$work/xargs" LOGIN="$lab_user"
start=$(now)
# shellcheck disable=SC2016
xargs -P 32 -I{} sh -c 'h=$1; shift; ssh "$@" -l "$LOGIN" "$h" /bin/sh -s < "$SCRIPT" > "$OUT/$h" 2>/dev/null' _ {} \
  "${ssh_opts[@]}" < "$lab_hosts" || true
xargs_s=$(seconds "$start")
xargs_ok=$(grep -l '^END ' "$work"/xargs/* 2>/dev/null | wc -l)
row "xargs -P 32 ssh" "$xargs_s" "$xargs_ok answers complete"

start=$(now)
parallel-ssh -h "$lab_hosts" -p 32 -l "$lab_user" -t 60 -o "$work/pssh" \
  -x "-i $lab_key -p $lab_port -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR" \
  -I "/bin/sh -s" < "$script" > /dev/null 2>&1 || true
pssh_s=$(seconds "$start")
pssh_ok=$(grep -l '^END ' "$work"/pssh/* 2>/dev/null | wc -l)
row "parallel-ssh -p 32" "$pssh_s" "$pssh_ok answers complete"

bench_up
# The first full probe: adding the seeds queues a probe of each; it is done
# when no host is left unprobed.
start=$(now)
fleetroll inventory seed sync --from-file "$lab_hosts" > /dev/null 2>&1
while [ "$(fleetroll host list --filter 'probed_at:null' --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')" != 0 ]; do
  sleep 0.5
done
first_s=$(seconds "$start")
row "fleetroll, first full probe" "$first_s" "$(fleetroll host list --filter 'error:null' --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') ok, parallelism 32"
start=$(now)
fleetroll inventory refresh --seed all > "$work/pooled" 2>&1
pooled_s=$(seconds "$start")
row "fleetroll, full refresh over pooled connections" "$pooled_s" "$(grep -c '^ok' "$work/pooled") ok"
# The steady state: the fast refresh, every host unchanged since the last
# full probe (the schedule's every-5-minutes refresh).
start=$(now)
fleetroll inventory refresh --seed all --fast > "$work/fast" 2>&1
fast_s=$(seconds "$start")
row "fleetroll, fast refresh (steady state)" "$fast_s" "$(grep -c '^ok' "$work/fast") ok"
python3 -c "import sys; x=float(sys.argv[1]); print(f'ratios vs xargs: first probe {x/float(sys.argv[2]):.2f}x, full refresh pooled {x/float(sys.argv[3]):.2f}x, steady state (fast) {x/float(sys.argv[4]):.2f}x')" \
  "$xargs_s" "$first_s" "$pooled_s" "$fast_s"
