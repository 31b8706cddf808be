# fleetroll: read, write or remove the Puppet override file of this host, as
# root (under `sudo -n`). What to write comes on stdin, never in a command
# line. This text is passed to `sh -c` in single quotes: it must never hold
# a single quote.
set -eu
case "$(uname -s)" in
  Darwin) f=/opt/puppet_environments/ronin_settings ;;
  *) f=/etc/puppet/ronin_settings ;;
esac
sha() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1"; else shasum -a 256 "$1"; fi | cut -d" " -f1
}
case "$1" in
  read)
    # The size first: a file larger than the caller can keep whole ($2
    # bytes) is not sent at all, so a cut copy is never taken for it.
    if [ -e "$f" ]; then
      n=$(wc -c <"$f" | tr -d " ")
      if [ "$n" -gt "$2" ]; then printf "toolarge %s\n" "$n"; else printf "present %s\n" "$n"; cat "$f"; fi
    else
      printf "absent\n"
    fi
    ;;
  apply)
    d=$(dirname "$f")
    mkdir -p "$d"
    # A temporary file in the same directory, renamed over the old one:
    # Puppet never reads a half-written override.
    t=$(mktemp "$d/.ronin_settings.XXXXXX")
    if ! cat >"$t" || ! chmod 0644 "$t" || ! chown 0:0 "$t"; then
      rm -f "$t"
      exit 1
    fi
    mv -f "$t" "$f"
    printf "sha256 %s\n" "$(sha "$f")"
    ;;
  remove)
    rm -f "$f"
    if [ -e "$f" ]; then echo "$f is still there" >&2; exit 1; fi
    printf "absent\n"
    ;;
  *)
    echo "unknown operation" >&2
    exit 2
    ;;
esac
