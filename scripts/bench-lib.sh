# shellcheck shell=bash disable=SC2154 # `work` is the sourcing script's.
# Shared by the benchmark scripts (sourced, not run): the release binaries,
# a lab, and a private `fleetroll up`. Each script sets `work` (its temporary
# dir) and calls `bench_cleanup` on exit.

up=""
lab_dir=""

# bench_path NAME...: the release binaries first on PATH (`make bench`
# builds them; debug figures mislead), and no outside mesh or token.
bench_path() {
  local bin=${BENCH_BIN_DIR:-${CARGO_TARGET_DIR:-$HOME/.cache/fleetroll/target}/release}
  local b
  for b in "$@"; do
    if [ ! -x "$bin/$b" ]; then
      echo "$bin/$b is missing: cargo build --release --workspace --bins" >&2
      exit 1
    fi
  done
  PATH="$bin:$PATH"
  unset FLEETROLL_NATS_URL FLEETROLL_TOKEN FLEETROLL_TOKEN_FILE FLEETROLL_CONFIG \
    FLEETROLL_NATS_CREDENTIALS FLEETROLL_WEB_LISTEN
}

# bench_lab N DATA_DIR: a lab of N hosts under $work/lab; sets lab_user,
# lab_port, lab_key and lab_hosts (a file, one hostname a line), and writes
# DATA_DIR/fleetroll.toml so fleetroll reaches the lab, 32 hosts at a time.
bench_lab() {
  local hosts=$1 data_dir=$2
  lab_dir="$work/lab"
  fleetroll-lab up --hosts "$hosts" --dir "$lab_dir" --port 0 > "$work/lab.json"
  local field='import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])'
  lab_user=$(python3 -c "$field" "$work/lab.json" ssh_user)
  lab_port=$(python3 -c "$field" "$work/lab.json" ssh_port)
  lab_key=$(python3 -c "$field" "$work/lab.json" identity_file)
  lab_hosts="$work/hosts"
  python3 -c 'import json,sys; print("\n".join(h["hostname"] for h in json.load(open(sys.argv[1]))["hosts"]))' \
    "$work/lab.json" > "$lab_hosts"
  mkdir -p "$data_dir"
  printf '[ssh]\nuser = "%s"\nport = %s\nidentity_file = "%s"\nparallelism = 32\n' \
    "$lab_user" "$lab_port" "$lab_key" > "$data_dir/fleetroll.toml"
}

# bench_lab_bastion N DATA_DIR: a lab of N hosts behind its bastion
# (`fleetroll-lab up --bastion`) under $work/lab; sets lab_hosts (a file,
# one hostname a line), lab_ssh_config (the lab's OpenSSH client config,
# `Host *.<domain>` with ProxyJump), bastion_host, bastion_address and
# bastion_port, and writes DATA_DIR/fleetroll.toml so fleetroll reaches the
# lab through that config only, 32 hosts at a time: no user, port or key of
# its own and no FLEETROLL_SSH_* (they would win over the config).
# shellcheck disable=SC2034 # the bastion_* are the sourcing script's to use.
bench_lab_bastion() {
  local hosts=$1 data_dir=$2
  unset FLEETROLL_SSH_USER FLEETROLL_SSH_PORT FLEETROLL_SSH_KEY FLEETROLL_SSH_CONFIG
  lab_dir="$work/lab"
  fleetroll-lab up --bastion --hosts "$hosts" --dir "$lab_dir" --port 0 > "$work/lab.json"
  local field='import json,sys
v=json.load(open(sys.argv[1]))
for k in sys.argv[2:]: v=v[k]
print(v)'
  lab_ssh_config=$(python3 -c "$field" "$work/lab.json" ssh_config_file)
  bastion_host=$(python3 -c "$field" "$work/lab.json" bastion hostname)
  bastion_address=$(python3 -c "$field" "$work/lab.json" bastion address)
  bastion_port=$(python3 -c "$field" "$work/lab.json" bastion port)
  lab_hosts="$work/hosts"
  python3 -c 'import json,sys; print("\n".join(h["hostname"] for h in json.load(open(sys.argv[1]))["hosts"]))' \
    "$work/lab.json" > "$lab_hosts"
  mkdir -p "$data_dir"
  printf '[ssh]\nconfig_file = "%s"\nparallelism = 32\n' "$lab_ssh_config" > "$data_dir/fleetroll.toml"
}

# bench_down: stops the `fleetroll up` bench_up started (if any), so that
# another can be started on a fresh data dir.
bench_down() {
  if [ -n "$up" ]; then
    kill -TERM "$up" 2>/dev/null || true
    wait "$up" 2>/dev/null || true
    up=""
  fi
  unset FLEETROLL_NATS_URL
}

# bench_up: `fleetroll up` on $FLEETROLL_DATA_DIR, a free NATS port and a
# free web port, in the background (its pid in `up`, its log in
# $work/up.log); returns once every worker kind is live, with
# FLEETROLL_NATS_URL exported.
bench_up() {
  mkdir -p "$FLEETROLL_DATA_DIR"
  fleetroll up --nats-port 0 --web-listen 127.0.0.1:0 > "$work/up.log" 2>&1 &
  up=$!
  # `up` writes its server's URL into the data dir once the server is up;
  # until then `fleetroll status` would look at the default port, where
  # another mesh may be running.
  local live=0 url="" _
  for _ in $(seq 1 60); do
    if ! kill -0 "$up" 2>/dev/null; then
      echo "bench: fleetroll up exited" >&2
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
    echo "bench: the mesh did not come up within 60 s" >&2
    exit 1
  fi
  export FLEETROLL_NATS_URL="$url"
}

# bench_cleanup: stops what the script started and removes $work; on a
# failure shows the end of `up`'s log.
bench_cleanup() {
  local status=$?
  if [ -n "$up" ]; then
    kill -TERM "$up" 2>/dev/null || true
    wait "$up" 2>/dev/null || true
  fi
  if [ -n "$lab_dir" ]; then
    fleetroll-lab down --dir "$lab_dir" > /dev/null 2>&1 || true
  fi
  if [ "$status" != 0 ] && [ -f "$work/up.log" ]; then
    echo "--- the last lines of fleetroll up's log" >&2
    tail -n 20 "$work/up.log" >&2
  fi
  rm -rf "$work"
}
