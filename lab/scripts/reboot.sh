#!/bin/sh
#
# fleetroll-lab's reboot: asks the lab daemon to take this host away for its
# reboot duration. Like a real reboot it drops every SSH connection to the
# host; the host comes back after Puppet has run at boot.

# shellcheck source=/dev/null
. /usr/local/sbin/.fleetroll-lab-host
if [ "$(id -u)" -ne 0 ]; then
    echo "Call to Reboot failed: Access denied" >&2
    exit 1
fi
: >"$LAB_DIR/requests/reboot.$LAB_HOST" || exit 1
exit 0
