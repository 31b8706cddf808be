# fleetroll probe, format 1. Runs as `sh -s` with this script on stdin, so
# nothing about the host is ever spliced into a command line. It prints one
# record of `key=value` lines between a header and an END line that counts
# them; everything read from the host is base64-encoded. Root-only files are
# read through `sudo -n` when sudo allows it (it never prompts).
set -u
LC_ALL=C
export LC_ALL
CAP=65536
lines=0
emit() {
  printf '%s=%s\n' "$1" "$2"
  lines=$((lines + 1))
}
b64() { base64 | tr -d '\n'; }
sha() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1
  else shasum -a 256 | cut -d' ' -f1; fi
}
mtime() { $S stat -c %Y "$1" 2>/dev/null || $S stat -f %m "$1" 2>/dev/null || echo 0; }

printf 'FLEETROLL-PROBE 1\n'
os=$(uname -s 2>/dev/null || echo unknown)
emit os "$os"
if sudo -n true >/dev/null 2>&1; then emit sudo ok; S="sudo -n"; else emit sudo refused; S=""; fi

case "$os" in
  Darwin)
    emit os_version "$(sw_vers -productVersion 2>/dev/null | b64)"
    boot=$(sysctl -n kern.boottime 2>/dev/null | sed -n 's/.*sec = \([0-9]*\).*/\1/p')
    emit uptime_s "$(( $(date +%s) - ${boot:-$(date +%s)} ))"
    override=/opt/puppet_environments/ronin_settings
    metadata="/opt/puppet_environments/last_run_metadata.json /etc/puppet/last_run_metadata.json"
    vault=/var/root/vault.yaml
    ;;
  *)
    # shellcheck source=/dev/null
    emit os_version "$(. /etc/os-release 2>/dev/null && printf '%s' "${PRETTY_NAME:-}" | b64)"
    emit uptime_s "$(cut -d' ' -f1 /proc/uptime 2>/dev/null | cut -d. -f1)"
    override=/etc/puppet/ronin_settings
    metadata=/etc/puppet/last_run_metadata.json
    vault=/root/vault.yaml
    ;;
esac

# file NAME PATH: presence, size, sha256, mtime and (capped) contents.
file() {
  if ! $S test -e "$2"; then emit "$1" absent; return; fi
  if ! $S cat "$2" >/dev/null 2>&1; then emit "$1" unreadable; return; fi
  emit "$1" present
  emit "$1_path" "$2"
  emit "$1_size" "$($S cat "$2" | wc -c | tr -d ' ')"
  emit "$1_sha256" "$($S cat "$2" | sha)"
  emit "$1_mtime" "$(mtime "$2")"
  emit "$1_b64" "$($S head -c "$CAP" "$2" | b64)"
}

file role /etc/puppet_role
file override "$override"
found=""
for m in $metadata; do
  if $S test -e "$m"; then found=$m; break; fi
done
if [ -n "$found" ]; then file metadata "$found"; else emit metadata absent; fi
summary=""
for m in /opt/puppetlabs/puppet/cache/state/last_run_summary.yaml /var/lib/puppet/state/last_run_summary.yaml; do
  if $S test -e "$m"; then summary=$m; break; fi
done
if [ -n "$summary" ]; then file summary "$summary"; else emit summary absent; fi
# The vault file's contents are never read off the host: only its hash.
if ! $S test -e "$vault"; then emit vault absent
elif v=$($S cat "$vault" 2>/dev/null | sha) && [ -n "$v" ]; then emit vault present; emit vault_sha256 "$v"
else emit vault unreadable; fi
printf 'END %s\n' "$lines"
