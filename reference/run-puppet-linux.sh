#!/bin/sh
#
# Reference run-puppet.sh for Linux hosts: converge the host once with
# masterless Puppet, then record what was applied in
# /etc/puppet/last_run_metadata.json (write_puppet_state, seed 003).
#
# Exit code: Puppet's --detailed-exitcodes (0 no changes, 2 changes applied,
# 1/4/6 failure), or 1 when Puppet could not be started at all. Writing the
# state file never changes it.
#
# Integration points a site adapts:
#   PUPPET_BIN        puppet executable (default /opt/puppetlabs/bin/puppet)
#   R10K_BIN          r10k executable, used when the checkout has a Puppetfile
#   WRITE_PUPPET_STATE_LIB
#                     the state writer (default: write_puppet_state.sh beside
#                     this script, then /usr/local/lib/fleetroll/)
#   RUN_PUPPET_ROOT   prefix for every host path below (tests only; default
#                     empty, i.e. the real /etc/puppet, /root, ...)
#   /etc/puppet/ronin_settings may set PUPPET_REPO, PUPPET_BRANCH, PUPPET_MAIL
#   and WORKER_TYPE_OVERRIDE; it overrides the defaults below until removed.

# shellcheck source-path=SCRIPTDIR
set -u

PATH=/opt/puppetlabs/bin:${PATH:+$PATH:}/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH

ROOT=${RUN_PUPPET_ROOT:-}
OVERRIDE_FILE=$ROOT/etc/puppet/ronin_settings
ROLE_FILE=$ROOT/etc/puppet_role
VAULT_FILE=$ROOT/root/vault.yaml
STATE_FILE=$ROOT/etc/puppet/last_run_metadata.json

PUPPET_REPO=https://github.com/mozilla-platform-ops/ronin_puppet.git
PUPPET_BRANCH=master
PUPPET_MAIL=
WORKER_TYPE_OVERRIDE=
PUPPET_BIN=${PUPPET_BIN:-/opt/puppetlabs/bin/puppet}
R10K_BIN=${R10K_BIN:-r10k}

log() {
    printf 'run-puppet: %s\n' "$*" >&2
}

# The state writer is optional: without it Puppet still runs.
script_dir=$(dirname "$0")
for lib in "${WRITE_PUPPET_STATE_LIB:-}" "$script_dir/write_puppet_state.sh" \
    /usr/local/lib/fleetroll/write_puppet_state.sh; do
    if [ -n "$lib" ] && [ -r "$lib" ]; then
        # shellcheck source=write_puppet_state.sh
        . "$lib"
        break
    fi
done
if ! command -v write_puppet_state >/dev/null 2>&1; then
    log "write_puppet_state not found; the state file will not be updated"
    write_puppet_state() { return 0; }
fi

if [ -f "$OVERRIDE_FILE" ]; then
    log "using override $OVERRIDE_FILE"
    # shellcheck source=/dev/null
    . "$OVERRIDE_FILE"
fi

if ! IFS= read -r ROLE <"$ROLE_FILE" && [ -z "${ROLE:-}" ]; then
    log "no role in $ROLE_FILE; refusing to run Puppet"
    exit 1
fi

start=$(date +%s)
workdir=$(mktemp -d "${TMPDIR:-/tmp}/run-puppet.XXXXXX") || exit 1
trap 'rm -rf "$workdir"' EXIT
trap 'exit 130' INT TERM

puppet_exit=1
if git clone --quiet --depth 1 --single-branch --branch "$PUPPET_BRANCH" -- \
    "$PUPPET_REPO" "$workdir/checkout"; then
    cd "$workdir/checkout" || exit 1
    if [ -f Puppetfile ] && command -v "$R10K_BIN" >/dev/null 2>&1; then
        "$R10K_BIN" puppetfile install --moduledir ./r10k_modules || log "r10k failed"
    fi
    if [ -r "$VAULT_FILE" ]; then
        mkdir -p data/secrets && cp "$VAULT_FILE" data/secrets/vault.yaml
    fi
    FACTER_puppet_role=$ROLE
    FACTER_worker_type_override=$WORKER_TYPE_OVERRIDE
    export FACTER_puppet_role FACTER_worker_type_override
    "$PUPPET_BIN" apply \
        --modulepath=./modules:./r10k_modules \
        --hiera_config=./hiera.yaml \
        --logdest=console --color=false \
        --detailed-exitcodes \
        ./manifests/
    puppet_exit=$?
else
    log "could not check out $PUPPET_REPO branch $PUPPET_BRANCH"
fi
end=$(date +%s)

case $puppet_exit in
    0 | 2) log "Puppet run succeeded (exit $puppet_exit)" ;;
    *)
        log "Puppet run failed (exit $puppet_exit)"
        if [ -n "$PUPPET_MAIL" ] && command -v mail >/dev/null 2>&1; then
            echo "Puppet run failed on $(hostname) with exit $puppet_exit" |
                mail -s "puppet failure on $(hostname)" "$PUPPET_MAIL" || true
        fi
        ;;
esac

PUPPET_STATE_FILE=$STATE_FILE \
    PUPPET_STATE_OVERRIDE_PATH=$OVERRIDE_FILE \
    PUPPET_STATE_VAULT_PATH=$VAULT_FILE \
    PUPPET_STATE_ROLE_FILE=$ROLE_FILE \
    PUPPET_STATE_GIT_DIR=$workdir/checkout \
    write_puppet_state "$puppet_exit" "$((end - start))"

exit "$puppet_exit"
