# fleetroll_state: one line per file the probe reads (size, mtime, ctime,
# inode) and the boot id. Nothing is read and nothing needs root, so the
# fast refresh runs it alone as the SSH user: an unchanged answer means an
# unchanged host, and only a changed one costs a full probe. The full probe
# runs it too (before sudo) so both answers come from the same user.
fleetroll_state() {
  for f in /etc/puppet_role /etc/puppet/ronin_settings /opt/puppet_environments/ronin_settings \
    /etc/puppet/last_run_metadata.json /opt/puppet_environments/last_run_metadata.json \
    /opt/puppetlabs/puppet/cache/state/last_run_summary.yaml /var/lib/puppet/state/last_run_summary.yaml; do
    LC_ALL=C stat -c '%n %s %Y %Z %i' "$f" 2>/dev/null \
      || LC_ALL=C stat -f '%N %z %m %c %i' "$f" 2>/dev/null \
      || printf '%s -\n' "$f"
  done
  cat /proc/sys/kernel/random/boot_id 2>/dev/null || sysctl -n kern.boottime 2>/dev/null || true
}
