#!/bin/sh
#
# fleetroll-lab's shutdown: only reboots (-r) are simulated.

for arg in "$@"; do
    case $arg in
        -r | --reboot) exec reboot ;;
        -c) exit 0 ;;
    esac
done
echo "shutdown: only 'shutdown -r' is simulated on a lab host" >&2
exit 1
