#!/usr/bin/env bash
# The demo: a 50-host lab fleet, the mesh (`fleetroll up`) pointed at it, and
# the seed runbook: sync the seeds, probe, look at what is unassigned,
# create a population, assign by filter, verify, and see the drift. The
# mesh and the lab keep running until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."
PATH="$PWD/.tools/bin:$PATH"
mkdir -p .data
log=.data/demo-up.log
export FLEETROLL_DATA_DIR="$PWD/.data/demo"

step() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

fleetroll-lab down --dir .lab >/dev/null 2>&1 || true
# Every run is a new lab (new host keys): start from a fresh data dir too.
rm -rf "$FLEETROLL_DATA_DIR"
step "a lab of 50 hosts on loopback (real OpenSSH, one sshd, a mount namespace per host)"
fleetroll-lab up --hosts 50 --dir .lab --port 0 --scenario scripts/demo-lab.toml > .data/lab.json
python3 - <<'PY'
import json
lab = json.load(open(".data/lab.json"))
print(f"{len(lab['hosts'])} hosts, ssh {lab['ssh_user']}@<host> port {lab['ssh_port']}, Taskcluster double at {lab['taskcluster_url']}")
with open(".data/seeds.txt", "w") as f:
    f.write("# the demo pool\n" + "\n".join(h["hostname"] for h in lab["hosts"]) + "\n")
PY
# The lab's SSH settings and a drift threshold that shows unreachable hosts
# at once go into the data dir's fleetroll.toml, so every fleetroll command
# and any extra `fleetroll worker` started with this data dir uses them.
mkdir -p "$FLEETROLL_DATA_DIR"
python3 - "$FLEETROLL_DATA_DIR/fleetroll.toml" <<'PY'
import json, os, sys
lab = json.load(open(".data/lab.json"))
with open(sys.argv[1], "w") as f:
    f.write("[ssh]\n")
    # The ssh config the lab writes (User, Port, IdentityFile and its
    # known_hosts), as an operator's own would be read.
    f.write(f"config_file = {json.dumps(lab['ssh_config_file'])}\n")
    f.write("\n[drift]\nunreachable_after = \"0s\"\n")
    f.write("\n[workload]\n")
    f.write(f"root_url = {json.dumps(lab['taskcluster_url'])}\n")
    f.write(f"provisioner = {json.dumps(lab['taskcluster_provisioner'])}\n")
    f.write("interval = \"5s\"\n")
    # The double's own client, so that `host quarantine` works in the demo.
    client = lab["taskcluster_client"]
    token = ".data/taskcluster-token"
    with os.fdopen(os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as t:
        t.write(client["access_token"])
    f.write(f"client_id = {json.dumps(client['client_id'])}\n")
    f.write(f"access_token_file = {json.dumps(os.path.abspath(token))}\n")
PY

step "fleetroll up (log: $log)"
fleetroll up >"$log" 2>&1 &
up=$!
cleanup() {
  kill -TERM "$up" 2>/dev/null || true
  wait "$up" 2>/dev/null || true
  fleetroll-lab down --dir .lab >/dev/null 2>&1 || true
}
trap cleanup EXIT
trap 'exit 130' INT TERM
for _ in $(seq 1 60); do
  if ! kill -0 "$up" 2>/dev/null; then cat "$log"; echo "fleetroll up failed"; exit 1; fi
  live=$(fleetroll status --json 2>/dev/null | python3 -c 'import json,sys; s=json.load(sys.stdin); print(sum(1 for w in s["workers"] if w["live"]))' 2>/dev/null || echo 0)
  [ "$live" = 4 ] && break
  sleep 1
done
run fleetroll status

step "the seed runbook"
run fleetroll inventory seed sync --from-file .data/seeds.txt 2>&1 | tail -1
# Exit 2 says some hosts could not be reached (the lab has an unreachable one).
run fleetroll inventory refresh --seed all 2>&1 | grep -v '^ok ' || echo "(exit 2: some hosts could not be reached; the others are recorded)"
run fleetroll host list --filter 'expected_role:null' 2>&1 | tail -1
run fleetroll host list --filter 'role:gecko_t_linux_talos AND expected_role:null' 2>&1 | tail -1
run fleetroll population create linux-talos --expected-role gecko_t_linux_talos \
  --target-query 'role:gecko_t_linux*' --description 'Linux talos testers'
run fleetroll host assign-population --filter 'role:gecko_t_linux* AND expected_role:null' --population linux-talos | tail -2 || true
run fleetroll host assign-population --filter 'role:gecko_t_linux* AND expected_role:null' --population linux-talos --confirm | tail -1
run fleetroll population create macs --expected-role gecko_t_osx_1400 --target-query 'os:Darwin'
run fleetroll host assign-population --filter 'os:Darwin' --population macs --confirm | tail -1
run fleetroll host list --filter 'expected_role:null'
step "a fast refresh: one cheap exec per host, a full probe only where something changed"
run fleetroll inventory refresh --seed all --fast 2>&1 | tail -1 || true
step "workload from the Taskcluster double, and drift"
sleep 6
run fleetroll host list --filter 'healthy:true' 2>&1 | tail -1
run fleetroll host list --drift-type any
quarantined=$(python3 -c 'import json; print(json.load(open(".data/lab.json"))["hosts"][1]["hostname"])')
run fleetroll host quarantine "$quarantined" --until 2h --reason "demo: a flaky disk" --confirm
run fleetroll host show "$quarantined" | grep '^tc '
run fleetroll host unquarantine "$quarantined" --confirm
step "rollouts: a good branch from canary to finalize, then a bad branch rolled back"
status_of() { fleetroll rollout status "$1" --json; }
state_of() { status_of "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rollout"]["state"])'; }
until_state() { # ID STATE
  for _ in $(seq 120); do [ "$(state_of "$1")" = "$2" ] && return 0; sleep 1; done
  echo "rollout $1 did not reach $2"; return 1
}
until_stage_applied() { # ID STAGE
  for _ in $(seq 120); do
    status_of "$1" | python3 -c 'import json,sys; s=json.load(sys.stdin)["rollout"]["stages"]; sys.exit(0 if len(s) >= '"$2"' and s['"$2"'-1]["status"] == "waiting_for_assessment" else 1)' && return 0
    sleep 1
  done
  echo "stage $2 of $1 did not finish"; return 1
}
until_gates() { # ID pass|GATE=VERDICT: every gate passes, or that gate says that
  for _ in $(seq 180); do
    status_of "$1" | python3 -c '
import json,sys
s=json.load(sys.stdin); e=s.get("evaluation") or {}; want=sys.argv[1]
if e.get("stage") != len(s["rollout"]["stages"]): sys.exit(1)
g={x["name"]: x["verdict"] for x in e.get("gates", [])}
ok = all(v == "pass" for v in g.values()) if want == "pass" else g.get(want.split("=")[0]) == want.split("=")[1]
sys.exit(0 if g and ok else 1)' "$2" && return 0
    sleep 1
  done
  echo "the gates of $1 did not get to $2"; return 1
}
converge_stage() { # ID STAGE: Puppet runs on the stage's hosts (as it would on its own schedule)
  for h in $(status_of "$1" | python3 -c 'import json,sys; print(" ".join(json.load(sys.stdin)["rollout"]["stages"]['"$2"'-1]["hosts"]))'); do
    fleetroll converge host "$h" >/dev/null 2>&1 || true
  done
}
blocked=$(fleetroll rollout create --target 'population:linux-talos' --canary 2 --change 'PUPPET_BRANCH=feature_xyz' 2>/dev/null)
run fleetroll rollout start "$blocked" || true
good=$(fleetroll rollout create --target 'population:linux-talos AND sudoable:true AND override_present:false AND hostname:lab-001*' \
  --canary 1 --batch-pct 50 --change 'PUPPET_BRANCH=feature_xyz' 2>/dev/null)
echo "created $good"
run fleetroll rollout start "$good"
until_stage_applied "$good" 1
canary=$(status_of "$good" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rollout"]["stages"][0]["hosts"][0])')
run fleetroll converge host "$canary" | tail -2
run fleetroll rollout advance "$good" --batch-size 4 || true
until_gates "$good" pass
run fleetroll rollout status "$good" | sed -n '/^gates/,$p'
run fleetroll rollout advance "$good" --batch-size 4
until_stage_applied "$good" 2
converge_stage "$good" 2
until_gates "$good" pass
run fleetroll rollout advance "$good" --batch-size 4
until_stage_applied "$good" 3
converge_stage "$good" 3
until_state "$good" succeeded
run fleetroll rollout status "$good" | sed -n 1,5p
run fleetroll rollout finalize "$good" --all --confirm
until_state "$good" finalized

bad=$(fleetroll rollout create --target 'population:linux-talos AND sudoable:true AND override_present:false AND hostname:lab-002*' \
  --canary 2 --change 'PUPPET_BRANCH=feature_bad' 2>/dev/null)
echo "created $bad (feature_bad: its jobs fail)"
run fleetroll rollout start "$bad"
until_stage_applied "$bad" 1
converge_stage "$bad" 1
until_gates "$bad" tc_success_rate_drop=fail
run fleetroll rollout status "$bad" | sed -n '/^gates/,$p'
run fleetroll rollout advance "$bad" --batch-size 4 || true
run fleetroll rollout rollback "$bad" --remove-overrides --confirm --reason 'feature_bad fails its jobs'
until_state "$bad" rolled_back
run fleetroll rollout list

step "the audit log: every command above, signed and chained; an override kept byte for byte"
run fleetroll audit list --rollout "$good" --limit 8
run fleetroll audit verify
snapshot=$(fleetroll host list --filter 'override_present:true' --json | python3 -c 'import json,sys; print(next(h["override_snapshot_id"] for h in json.load(sys.stdin) if h.get("override_snapshot_id")))')
run fleetroll audit snapshot "$snapshot"

echo
echo "The mesh and the lab are running."
echo "The web UI (read-only): $(cat "$FLEETROLL_DATA_DIR/web.url")  (metrics: $(cat "$FLEETROLL_DATA_DIR/web.url")metrics)"
echo "In another terminal:"
echo "  export PATH=$PWD/.tools/bin:\$PATH FLEETROLL_DATA_DIR=$FLEETROLL_DATA_DIR"
echo "  fleetroll status"
echo "  fleetroll host list --filter 'override_present:true'"
echo "  fleetroll monitor                                 # the live host table"
echo "  fleetroll watch                                   # every rollout's events, live"
echo "  fleetroll rollout status $good                # a finished rollout, stage by stage"
echo "  fleetroll audit list --rollout $bad"
echo "  fleetroll worker prober      # a second prober replica"
echo "Ctrl-C here stops the mesh and the lab."
wait "$up"
