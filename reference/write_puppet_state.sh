# shellcheck shell=sh
#
# write_puppet_state: record what a Puppet run actually applied, as JSON, in
# /etc/puppet/last_run_metadata.json (schema_version 1, see seed 003).
#
# Source this file from a run-puppet.sh wrapper and call, after `puppet apply`:
#
#     write_puppet_state EXIT_CODE DURATION_S
#
# It is POSIX sh (dash, bash 3.2 as /bin/sh on macOS, busybox) and never fails
# the caller: whatever goes wrong is reported on stderr and the function returns
# 0, so a wrapper running under `set -e` keeps Puppet's own exit code.
#
# Optional settings (variables, read at call time):
#   PUPPET_STATE_FILE           where to write (default /etc/puppet/last_run_metadata.json)
#   PUPPET_STATE_OVERRIDE_PATH  override file (default by OS: Linux /etc/puppet/ronin_settings,
#                               macOS /opt/puppet_environments/ronin_settings)
#   PUPPET_STATE_VAULT_PATH     vault file (default by OS: /root/vault.yaml, /var/root/vault.yaml)
#   PUPPET_STATE_ROLE_FILE      role file (default /etc/puppet_role)
#   PUPPET_STATE_GIT_DIR        checkout Puppet applied, asked with git (default: current dir)
#   PUPPET_STATE_GIT_REPO, PUPPET_STATE_GIT_BRANCH, PUPPET_STATE_GIT_SHA
#                               when set and non-empty, used instead of asking git
#
# Anything unknown (no git checkout, no override file, unreadable vault, ...)
# is written as JSON null, never as an empty string.

# Prints $1 as a JSON string literal, or `null` when $1 is empty. Escapes
# quotes, backslashes and control characters; passes valid UTF-8 through and
# replaces invalid byte sequences with U+FFFD so the file is always valid JSON.
_wps_json_string() {
    if [ -z "$1" ]; then
        printf 'null'
        return 0
    fi
    # A trailing newline is appended so that awk sees every line of the value,
    # including an empty last one; the lines are joined back with "\n".
    printf '%s\n' "$1" | LC_ALL=C awk '
        BEGIN {
            for (i = 1; i < 256; i++) ord[sprintf("%c", i)] = i
            out = ""
        }
        function cont(c) { return c >= 128 && c <= 191 }
        {
            if (NR > 1) out = out "\\n"
            n = length($0)
            i = 1
            while (i <= n) {
                ch = substr($0, i, 1)
                b = ord[ch]
                if (b == 34) { out = out "\\\""; i++; continue }
                if (b == 92) { out = out "\\\\"; i++; continue }
                if (b < 32) {
                    if (b == 8) out = out "\\b"
                    else if (b == 9) out = out "\\t"
                    else if (b == 12) out = out "\\f"
                    else if (b == 13) out = out "\\r"
                    else out = out sprintf("\\u%04x", b)
                    i++
                    continue
                }
                if (b < 128) { out = out ch; i++; continue }
                # UTF-8 lead byte: how many continuation bytes, and the
                # allowed range of the first one (rules out overlong forms
                # and surrogates).
                need = 0; lo = 128; hi = 191
                if (b >= 194 && b <= 223) need = 1
                else if (b == 224) { need = 2; lo = 160 }
                else if (b >= 225 && b <= 236) need = 2
                else if (b == 237) { need = 2; hi = 159 }
                else if (b >= 238 && b <= 239) need = 2
                else if (b == 240) { need = 3; lo = 144 }
                else if (b >= 241 && b <= 243) need = 3
                else if (b == 244) { need = 3; hi = 143 }
                ok = need > 0 && i + need <= n
                if (ok) {
                    c1 = ord[substr($0, i + 1, 1)]
                    if (c1 < lo || c1 > hi) ok = 0
                    for (j = 2; ok && j <= need; j++)
                        if (!cont(ord[substr($0, i + j, 1)])) ok = 0
                }
                if (ok) { out = out substr($0, i, need + 1); i += need + 1 }
                else { out = out "\\ufffd"; i++ }
            }
        }
        END { printf "\"%s\"", out }
    '
}

# Prints $1 if it is a non-negative integer, else `null`.
_wps_json_int() {
    case "$1" in
        '' | *[!0-9]*) printf 'null' ;;
        *) printf '%s' "$1" ;;
    esac
}

# Prints the sha256 (lowercase hex) of file $1, or nothing if it cannot be read.
_wps_sha256() {
    [ -f "$1" ] && [ -r "$1" ] || return 0
    _wps_sum=''
    # macOS ships shasum; Linux ships sha256sum. Prefer the native one, fall
    # back to the other.
    if [ "$(uname -s 2>/dev/null)" = Darwin ]; then
        _wps_tools='shasum sha256sum'
    else
        _wps_tools='sha256sum shasum'
    fi
    for _wps_tool in $_wps_tools; do
        command -v "$_wps_tool" >/dev/null 2>&1 || continue
        if [ "$_wps_tool" = shasum ]; then
            _wps_sum=$(shasum -a 256 <"$1" 2>/dev/null) || _wps_sum=''
        else
            _wps_sum=$(sha256sum <"$1" 2>/dev/null) || _wps_sum=''
        fi
        _wps_sum=${_wps_sum%%[!0-9a-f]*}
        [ ${#_wps_sum} -eq 64 ] && break
        _wps_sum=''
    done
    printf '%s' "$_wps_sum"
}

# The body runs in a subshell so that none of its variables leak into the
# caller's Puppet wrapper.
_wps_write() (
    exit_code=$1
    duration_s=$2

    state_file=${PUPPET_STATE_FILE:-/etc/puppet/last_run_metadata.json}
    if [ "$(uname -s 2>/dev/null)" = Darwin ]; then
        override_path=${PUPPET_STATE_OVERRIDE_PATH:-/opt/puppet_environments/ronin_settings}
        vault_path=${PUPPET_STATE_VAULT_PATH:-/var/root/vault.yaml}
    else
        override_path=${PUPPET_STATE_OVERRIDE_PATH:-/etc/puppet/ronin_settings}
        vault_path=${PUPPET_STATE_VAULT_PATH:-/root/vault.yaml}
    fi
    role_file=${PUPPET_STATE_ROLE_FILE:-/etc/puppet_role}
    git_dir=${PUPPET_STATE_GIT_DIR:-.}

    git_repo=${PUPPET_STATE_GIT_REPO:-}
    git_branch=${PUPPET_STATE_GIT_BRANCH:-}
    git_sha=${PUPPET_STATE_GIT_SHA:-}
    if command -v git >/dev/null 2>&1 && [ -d "$git_dir" ]; then
        [ -n "$git_repo" ] ||
            git_repo=$(git -C "$git_dir" config --get remote.origin.url 2>/dev/null) || git_repo=''
        [ -n "$git_branch" ] ||
            git_branch=$(git -C "$git_dir" rev-parse --abbrev-ref HEAD 2>/dev/null) || git_branch=''
        [ -n "$git_sha" ] ||
            git_sha=$(git -C "$git_dir" rev-parse HEAD 2>/dev/null) || git_sha=''
    fi
    # A detached checkout has no branch name: unknown, not "HEAD".
    [ "$git_branch" = HEAD ] && git_branch=''
    case "$git_sha" in
        *[!0-9a-f]*) git_sha='' ;;
    esac

    override_sha=''
    [ -e "$override_path" ] && override_sha=$(_wps_sha256 "$override_path")
    vault_sha=$(_wps_sha256 "$vault_path")

    role=''
    if [ -r "$role_file" ]; then
        IFS= read -r role <"$role_file" || [ -n "$role" ] || role=''
    fi

    case "$exit_code" in
        0 | 2) success=true ;;
        *) success=false ;;
    esac
    ts=$(date -u +%Y-%m-%dT%H:%M:%SZ 2>/dev/null) || ts=''

    state_dir=$(dirname "$state_file")
    if [ ! -d "$state_dir" ]; then
        echo "write_puppet_state: directory $state_dir does not exist" >&2
        exit 1
    fi
    # Temp file in the same directory, so the final mv is an atomic rename
    # and readers never see a half-written file.
    tmp=$(mktemp "$state_dir/.last_run_metadata.json.XXXXXX") || exit 1
    trap 'rm -f "$tmp"' EXIT
    {
        printf '{\n'
        printf '  "schema_version": 1,\n'
        printf '  "ts": %s,\n' "$(_wps_json_string "$ts")"
        printf '  "success": %s,\n' "$success"
        printf '  "exit_code": %s,\n' "$(_wps_json_int "$exit_code")"
        printf '  "git_repo": %s,\n' "$(_wps_json_string "$git_repo")"
        printf '  "git_branch": %s,\n' "$(_wps_json_string "$git_branch")"
        printf '  "git_sha": %s,\n' "$(_wps_json_string "$git_sha")"
        printf '  "override_sha": %s,\n' "$(_wps_json_string "$override_sha")"
        printf '  "vault_sha": %s,\n' "$(_wps_json_string "$vault_sha")"
        printf '  "override_path": %s,\n' "$(_wps_json_string "$override_path")"
        printf '  "role": %s,\n' "$(_wps_json_string "$role")"
        printf '  "duration_s": %s\n' "$(_wps_json_int "$duration_s")"
        printf '}\n'
    } >"$tmp" || exit 1
    chmod 0644 "$tmp" || exit 1
    mv -f "$tmp" "$state_file" || exit 1
    trap - EXIT
)

write_puppet_state() {
    # `||` keeps errexit from firing inside, whatever the caller's options.
    _wps_write "$@" || echo "write_puppet_state: could not write the Puppet state file (the Puppet run is not affected)" >&2
    return 0
}
