#!/bin/sh
#
# fleetroll-lab's sw_vers for macOS-like hosts.

name=macOS
version=14.6.1
build=23G93
case ${1:-} in
    '') printf 'ProductName:\t\t%s\nProductVersion:\t\t%s\nBuildVersion:\t\t%s\n' "$name" "$version" "$build" ;;
    -productName | --productName) echo "$name" ;;
    -productVersion | --productVersion) echo "$version" ;;
    -buildVersion | --buildVersion) echo "$build" ;;
    *)
        echo "usage: sw_vers [-productName|-productVersion|-buildVersion]" >&2
        exit 1
        ;;
esac
