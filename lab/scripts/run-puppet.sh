#!/bin/sh
#
# fleetroll-lab's run-puppet.sh. It behaves like a host's real Puppet wrapper
# without running Puppet: reads the role and the override, "applies" the
# branch (its git sha is the sha1 of "<repo>\n<branch>", so tests can predict
# it), exits with Puppet's --detailed-exitcodes (0 no changes, 2 changes,
# the configured failure code for a broken branch), writes Puppet's
# last_run_summary.yaml, and writes the metadata file with the project's
# reference write_puppet_state -- or, on hosts whose wrapper is old or broken,
# no file, truncated JSON, or bytes that are not UTF-8.

set -u
# shellcheck source=/dev/null
. /usr/local/sbin/.fleetroll-lab-host

if [ "$(id -u)" -ne 0 ]; then
    echo "run-puppet.sh: must be run as root" >&2
    exit 1
fi

start=$(date +%s)
PUPPET_REPO=$LAB_DEFAULT_REPO
PUPPET_BRANCH=$LAB_DEFAULT_BRANCH
if [ -f "$LAB_OVERRIDE_PATH" ]; then
    echo "run-puppet: using override $LAB_OVERRIDE_PATH" >&2
    # Sourced, as the real wrapper does; keep the lab's own settings.
    lab_dir=$LAB_DIR
    lab_host_dir=$LAB_HOST_DIR
    set +u
    # shellcheck source=/dev/null
    . "$LAB_OVERRIDE_PATH"
    set -u
    LAB_DIR=$lab_dir
    LAB_HOST_DIR=$lab_host_dir
fi

role=
if ! IFS= read -r role </etc/puppet_role && [ -z "$role" ]; then
    echo "run-puppet: no role in /etc/puppet_role; refusing to run Puppet" >&2
    exit 1
fi

git_sha=$(printf '%s\n%s' "$PUPPET_REPO" "$PUPPET_BRANCH" | sha1sum | cut -c1-40)
branch_key=$(printf '%s' "$PUPPET_BRANCH" | sha1sum | cut -c1-40)
branch_hex=$(printf '%s' "$PUPPET_BRANCH" | od -An -v -tx1 | tr -d ' \n')
override_sha=none
if [ -f "$LAB_OVERRIDE_PATH" ]; then
    override_sha=$(sha256sum <"$LAB_OVERRIDE_PATH" | cut -c1-64)
fi

echo "Notice: Compiled catalog for $(hostname) in environment production (branch $PUPPET_BRANCH)"
if [ "$LAB_PUPPET_DURATION" != 0 ]; then
    sleep "$LAB_PUPPET_DURATION"
fi

if [ -r "$LAB_DIR/puppet/broken/$branch_key" ]; then
    IFS= read -r exit_code <"$LAB_DIR/puppet/broken/$branch_key" || exit_code=1
    echo "Error: Could not apply complete catalog from branch $PUPPET_BRANCH" >&2
else
    applied=
    if [ -r "$LAB_HOST_DIR/applied" ]; then
        IFS= read -r applied <"$LAB_HOST_DIR/applied" || applied=
    fi
    if [ "$applied" = "$git_sha $override_sha $role" ]; then
        exit_code=0
    else
        exit_code=2
        printf '%s\n' "$git_sha $override_sha $role" >"$LAB_HOST_DIR/applied"
    fi
    echo "Notice: Applied catalog in 0.42 seconds"
fi
end=$(date +%s)
duration=$((end - start))

case $exit_code in
    0 | 2) failed=0 changed=$((exit_code / 2)) ;;
    *) failed=1 changed=0 ;;
esac
summary_dir=/opt/puppetlabs/puppet/cache/state
if [ -d "$summary_dir" ]; then
    tmp=$(mktemp "$summary_dir/.last_run_summary.yaml.XXXXXX") && {
        printf -- '---\nversion:\n  config: %s\n  puppet: 7.34.0\n' "$git_sha"
        printf 'resources:\n  changed: %s\n  failed: %s\n  total: 120\n' "$changed" "$failed"
        printf 'time:\n  total: %s\n  last_run: %s\n' "$duration" "$end"
        printf 'changes:\n  total: %s\n' "$changed"
        printf 'events:\n  failure: %s\n  success: %s\n  total: %s\n' "$failed" "$changed" "$((failed + changed))"
    } >"$tmp" && chmod 0644 "$tmp" && mv -f "$tmp" "$summary_dir/last_run_summary.yaml"
fi

# A broken wrapper's metadata: truncated JSON, or bytes that are not UTF-8.
write_broken() {
    raw_tmp=$(mktemp "$(dirname "$LAB_METADATA_PATH")/.last_run_metadata.json.XXXXXX") || return
    if [ "$1" = malformed ]; then
        printf '{"schema_version": 1, "ts": "%s", "success": tru' "$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    else
        printf '{"schema_version": 1, "git_branch": "\377\376\375"}\n'
    fi >"$raw_tmp" && chmod 0644 "$raw_tmp" && mv -f "$raw_tmp" "$LAB_METADATA_PATH"
}

case $LAB_METADATA in
    present)
        # shellcheck source=/dev/null
        . "$LAB_DIR/share/write_puppet_state.sh"
        PUPPET_STATE_FILE=$LAB_METADATA_PATH \
            PUPPET_STATE_OVERRIDE_PATH=$LAB_OVERRIDE_PATH \
            PUPPET_STATE_VAULT_PATH=$LAB_VAULT_PATH \
            PUPPET_STATE_ROLE_FILE=/etc/puppet_role \
            PUPPET_STATE_GIT_DIR=/nonexistent \
            PUPPET_STATE_GIT_REPO=$PUPPET_REPO \
            PUPPET_STATE_GIT_BRANCH=$PUPPET_BRANCH \
            PUPPET_STATE_GIT_SHA=$git_sha \
            write_puppet_state "$exit_code" "$duration"
        ;;
    absent) ;;
    malformed | not_utf8) write_broken "$LAB_METADATA" ;;
esac

printf 'puppet %s %s %s\n' "$(date +%s%3N)" "$exit_code" "$branch_hex" >>"$LAB_HOST_DIR/events.log"
exit "$exit_code"
