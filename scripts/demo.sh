#!/usr/bin/env bash
# The demo: the embedded mesh (`fleetroll up`), its status, and a ping
# through every worker kind. It keeps the mesh running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
fleetroll=.tools/bin/fleetroll
log=.data/demo-up.log
mkdir -p .data

"$fleetroll" up >"$log" 2>&1 &
up=$!
trap 'kill -TERM $up 2>/dev/null; wait $up 2>/dev/null' INT TERM EXIT

echo "== fleetroll up (pid $up, log $log): waiting for every worker kind"
for _ in $(seq 1 60); do
  if ! kill -0 "$up" 2>/dev/null; then cat "$log"; echo "fleetroll up failed"; exit 1; fi
  live=$("$fleetroll" status --json 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(1 for w in s["workers"] if w["live"]))' 2>/dev/null || echo 0)
  [ "$live" = 4 ] && break
  sleep 1
done
echo
echo "== fleetroll status"
"$fleetroll" status
echo
echo "== fleetroll ping"
"$fleetroll" ping
echo
echo "The mesh is running. In another terminal:"
echo "  export PATH=$PWD/.tools/bin:\$PATH"
echo "  fleetroll status"
echo "  fleetroll worker prober      # a second prober replica"
echo "Ctrl-C here stops it."
wait "$up"
