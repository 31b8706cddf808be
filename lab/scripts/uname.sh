#!/bin/sh
#
# fleetroll-lab's uname for macOS-like hosts.

# shellcheck source=/dev/null
. /usr/local/sbin/.fleetroll-lab-host
kernel=Darwin
release=23.6.0
version='Darwin Kernel Version 23.6.0: Mon Jul 29 21:14:30 PDT 2024; root:xnu-10063.141.2~1/RELEASE_ARM64_T8103'
machine=arm64
out=
add() { out="${out:+$out }$1"; }
[ $# -eq 0 ] && set -- -s
for arg in "$@"; do
    case $arg in
        -*) flags=${arg#-} ;;
        *) flags='?' ;;
    esac
    while [ -n "$flags" ]; do
        rest=${flags#?}
        case ${flags%"$rest"} in
            a) add "$kernel"; add "$LAB_FQDN"; add "$release"; add "$version"; add "$machine" ;;
            s) add "$kernel" ;;
            n) add "$LAB_FQDN" ;;
            r) add "$release" ;;
            v) add "$version" ;;
            m) add "$machine" ;;
            p) add arm ;;
            *)
                echo "usage: uname [-amnprsv]" >&2
                exit 1
                ;;
        esac
        flags=$rest
    done
done
printf '%s\n' "$out"
