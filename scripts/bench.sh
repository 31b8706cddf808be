#!/usr/bin/env bash
# `make bench`: runs the benchmarks and rewrites BENCHMARKS.md with their
# figures, the machine they ran on and the commands that made them.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/.tools/bin:$PATH"
hosts=${BENCH_HOSTS:-1000}
out=$(mktemp)
trap 'rm -f "$out"' EXIT

lab_times=()
for run in 1 2 3; do
  dir=$(mktemp -d /tmp/fleetroll-bench-lab.XXXXXX)
  start=$(date +%s.%N)
  fleetroll-lab up --hosts "$hosts" --dir "$dir" --port 0 > /dev/null
  up_s=$(python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$start" "$(date +%s.%N)")
  start=$(date +%s.%N)
  fleetroll-lab down --dir "$dir" > /dev/null
  down_s=$(python3 -c "import sys; print(f'{float(sys.argv[2])-float(sys.argv[1]):.2f}')" "$start" "$(date +%s.%N)")
  rm -rf "$dir"
  lab_times+=("| $run | $up_s s | $down_s s |")
done
bash scripts/bench-probe.sh "$hosts" | tee "$out"

{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` on $(date -u +%Y-%m-%d): $(nproc) cores, $(free -g | awk '/^Mem:/ {print $2}') GiB,"
  # shellcheck source=/dev/null
  echo "$(. /etc/os-release && echo "$PRETTY_NAME"), $(ssh -V 2>&1 | cut -d, -f1), nats-server $(.tools/nats/bin/nats-server --version | cut -d' ' -f2)."
  echo "Debug builds. Lab, mesh and clients share the machine's cores."
  echo
  echo "Command: \`BENCH_HOSTS=$hosts make bench\`."
  echo
  echo "## The lab"
  echo
  echo "\`fleetroll-lab up --hosts $hosts\` and \`down\` (\`scripts/bench.sh\`):"
  echo
  echo "| run | up | down |"
  echo "|---|---|---|"
  printf '%s\n' "${lab_times[@]}"
  echo
  echo "## Probing $hosts hosts"
  echo
  echo "The same probe script (\`prober/src/probe/probe.sh\`) over SSH to every host of one lab, by each tool in turn (\`scripts/bench-probe.sh $hosts\`)."
  echo
  echo "| tool | hosts | wall time | result |"
  echo "|---|---|---|---|"
  grep '^|' "$out"
  echo
  grep '^ratios' "$out"
  echo
  echo "The steady-state refresh reuses connections but runs the whole probe again;"
  echo "on this machine its cost is the probe script's own processes on the lab side,"
  echo "all hosts sharing the same cores. SPEC 11's targets (1.5x for the first probe,"
  echo "20x for the steady state) need the fast refresh, which probes less."
} > BENCHMARKS.md
echo "BENCHMARKS.md rewritten"
