#!/bin/sh
#
# fleetroll-lab's ForceCommand. Every SSH command to a lab host runs through
# this script, as the SSH user, inside the mount namespace the lab daemon set
# up for the address the client dialled. It checks that address against the
# host mounted here, applies the host's misbehaviour knobs (hang, slow, a
# reply lost after the override changed), and
# runs the client's command exactly as a real sshd would: /bin/sh -c "$cmd".

set -f
conf=/usr/local/sbin/.fleetroll-lab-host
if [ ! -r "$conf" ]; then
    echo "fleetroll-lab: no lab host is mounted in this session" >&2
    exit 255
fi
# shellcheck source=/dev/null
. "$conf"

# SSH_CONNECTION is "client-address client-port server-address server-port";
# the server address is the one the client dialled, i.e. the virtual host.
# shellcheck disable=SC2086
set -- ${SSH_CONNECTION:-}
addr=${3:-}
name=
case $addr in
    '' | *[!0-9.]*) ;;
    *)
        if [ -r "$LAB_DIR/by-addr/$addr" ]; then
            IFS= read -r name <"$LAB_DIR/by-addr/$addr"
        fi
        ;;
esac
if [ -z "$name" ] || [ "$name" != "$LAB_HOST" ]; then
    echo "fleetroll-lab: address ${addr:-?} is not the lab host mounted in this session" >&2
    exit 255
fi
FLEETROLL_LAB_HOST=$name
export FLEETROLL_LAB_HOST

knobs=$LAB_HOST_DIR/knobs
if [ -e "$knobs/hang" ]; then
    # A hung host: the command was accepted and never answers.
    exec sleep 2147483647
fi
if [ -r "$knobs/slow" ]; then
    IFS= read -r delay <"$knobs/slow" && sleep "$delay"
fi

PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
if [ -z "${SSH_ORIGINAL_COMMAND+set}" ]; then
    exec /bin/sh -l
fi
if [ -e "$knobs/lose_reply_after_override_change" ]; then
    # The command runs to its end; if it changed the override file, its
    # reply never comes (the network dropped right after the write).
    before=$(stat -c '%i %Y %s' "$LAB_OVERRIDE_PATH" 2>/dev/null || echo none)
    out=$(mktemp) && err=$(mktemp) || exit 255
    rc=0
    /bin/sh -c "$SSH_ORIGINAL_COMMAND" >"$out" 2>"$err" || rc=$?
    after=$(stat -c '%i %Y %s' "$LAB_OVERRIDE_PATH" 2>/dev/null || echo none)
    if [ "$before" != "$after" ]; then
        rm -f "$out" "$err"
        exec sleep 2147483647
    fi
    cat "$out"
    cat "$err" >&2
    rm -f "$out" "$err"
    exit "$rc"
fi
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
