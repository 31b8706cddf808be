#!/usr/bin/env bash
# Bastion benchmark: against one lab of N hosts behind its jump host
# (`fleetroll-lab up --bastion`: the hosts refuse direct connections), the
# same probe script by the ad-hoc loop an operator types
# (`xargs -P 32 ssh -F <lab ssh_config> -J bastion.<domain>`) and by
# fleetroll reading the same OpenSSH config (`[ssh] config_file`): its
# first full probe and its steady-state (fast) refresh. Each is run
# BENCH_BASTION_RUNS times (default 3), fleetroll on a fresh mesh and data
# dir each time; prints a Markdown table row per tool with the median and
# every run, and the ratios of the medians. `make bench` puts them in
# BENCHMARKS.md.
set -euo pipefail
cd "$(dirname "$0")/.."
hosts=${1:-1000}
runs=${BENCH_BASTION_RUNS:-3}
case $runs in
  '' | *[!0-9]* | 0) echo "BENCH_BASTION_RUNS must be a positive number, not \`$runs'" >&2; exit 2 ;;
esac
# shellcheck source=scripts/bench-lib.sh
. scripts/bench-lib.sh
bench_path fleetroll fleetroll-lab
work=$(mktemp -d /tmp/fleetroll-bench.XXXXXX)
trap bench_cleanup EXIT
trap 'exit 130' INT TERM

bench_lab_bastion "$hosts" "$work/data.template"
# The probe exactly as fleetroll sends it: the state function, then the probe.
script="$work/probe.sh"
cat prober/src/probe/state.sh prober/src/probe/probe.sh > "$script"
# The lab's client config (ProxyJump, user, port, key, known_hosts), with -J
# spelled out as an operator types it; -o options reach only the last hop.
ssh_opts=(-F "$lab_ssh_config" -J "$bastion_host" -o BatchMode=yes -o LogLevel=ERROR -o ConnectTimeout=10)

seconds() { python3 -c 'import sys,time; print(f"{time.time()-float(sys.argv[1]):.1f}")' "$1"; }
now() { python3 -c 'import time; print(time.time())'; }
count() { python3 -c 'import json,sys; print(len(json.load(sys.stdin)))'; }
# Established connections from this machine's clients to the bastion.
bastion_conns() { ss -Htn state established dst "$bastion_address" dport = ":$bastion_port" 2>/dev/null | wc -l; }

xargs_s=() xargs_ok=() first_s=() first_ok=() first_conns=() fast_s=() fast_ok=()
for run in $(seq 1 "$runs"); do
  # The ad-hoc loop: one ssh per host (and one more to the bastion for
  # it), 32 at a time, the same script on stdin (the hostname is an
  # argument, never part of the shell text).
  out="$work/xargs.$run"
  mkdir -p "$out"
  export SCRIPT="$script" OUT="$out"
  start=$(now)
  # shellcheck disable=SC2016
  xargs -P 32 -I{} sh -c 'h=$1; shift; ssh "$@" "$h" /bin/sh -s < "$SCRIPT" > "$OUT/$h" 2>/dev/null' _ {} \
    "${ssh_opts[@]}" < "$lab_hosts" || true
  xargs_s+=("$(seconds "$start")")
  xargs_ok+=("$(grep -l '^END ' "$out"/* 2>/dev/null | wc -l)")
  rm -rf "$out"

  # fleetroll on a fresh mesh: nothing pinned, no connection pooled yet.
  export FLEETROLL_DATA_DIR="$work/data.$run"
  mkdir -p "$FLEETROLL_DATA_DIR"
  cp "$work/data.template/fleetroll.toml" "$FLEETROLL_DATA_DIR/"
  bench_up
  # The first full probe: adding the seeds queues a probe of each; it is
  # done when no host is left unprobed.
  conns=0
  start=$(now)
  fleetroll inventory seed sync --from-file "$lab_hosts" > /dev/null 2>&1
  deadline=$(( $(date +%s) + 1800 ))
  while [ "$(fleetroll host list --filter 'probed_at:null' --json | count)" != 0 ]; do
    c=$(bastion_conns)
    [ "$c" -gt "$conns" ] && conns=$c
    if [ "$(date +%s)" -gt "$deadline" ]; then
      echo "bench: the first probe did not end within 30 minutes" >&2
      exit 1
    fi
    sleep 0.5
  done
  first_s+=("$(seconds "$start")")
  first_ok+=("$(fleetroll host list --filter 'error:null' --json | count)")
  first_conns+=("$conns")
  # The steady state: the fast refresh, every host unchanged since the
  # full probe (the schedule's every-5-minutes refresh).
  start=$(now)
  fleetroll inventory refresh --seed all --fast > "$work/fast.$run" 2>&1 || true
  fast_s+=("$(seconds "$start")")
  fast_ok+=("$(grep -c '^ok' "$work/fast.$run" || true)")
  bench_down
  echo "run $run of $runs: xargs -J ${xargs_s[-1]} s (${xargs_ok[-1]} complete), fleetroll first probe ${first_s[-1]} s (${first_ok[-1]} ok, at most ${first_conns[-1]} connections to the bastion), fast refresh ${fast_s[-1]} s (${fast_ok[-1]} ok)" >&2
done

join() { local IFS=,; local s="$*"; echo "${s//,/, }"; }
median() { python3 -c 'import statistics,sys; print(f"{statistics.median(float(a) for a in sys.argv[1:]):.1f}")' "$@"; }
row() { printf '| %s | %s | %s | %s s | %s s | %s |\n' "$1" "$hosts" "$runs" "$2" "$3" "$4"; }
xargs_m=$(median "${xargs_s[@]}")
first_m=$(median "${first_s[@]}")
fast_m=$(median "${fast_s[@]}")
row "xargs -P 32 ssh -J" "$xargs_m" "$(join "${xargs_s[@]}")" "$(join "${xargs_ok[@]}") answers complete"
row "fleetroll, first full probe" "$first_m" "$(join "${first_s[@]}")" \
  "$(join "${first_ok[@]}") ok, parallelism 32; connections to the bastion at once, at most: $(join "${first_conns[@]}")"
row "fleetroll, fast refresh (steady state)" "$fast_m" "$(join "${fast_s[@]}")" "$(join "${fast_ok[@]}") ok"
python3 - "$xargs_m" "$first_m" "$fast_m" "${xargs_s[*]}" "${first_s[*]}" "${fast_s[*]}" <<'PY'
import sys
x, first, fast = (float(a) for a in sys.argv[1:4])
xs, firsts, fasts = ([float(v) for v in a.split()] for a in sys.argv[4:7])
print(f"bastion ratios vs xargs -J: first probe {x/first:.2f}x, steady state (fast) {x/fast:.2f}x")
each = lambda ys: ", ".join(f"{a/b:.2f}x" for a, b in zip(xs, ys))
print(f"per-run ratios vs xargs -J: first probe {each(firsts)}; steady state (fast) {each(fasts)}")
PY
