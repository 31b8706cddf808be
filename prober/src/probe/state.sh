# fleetroll_state: one line per file the probe reads that exists (size,
# mtime, ctime, inode) and the boot id. Nothing is read and nothing needs
# root, so the fast refresh runs it alone as the SSH user: an unchanged
# answer means an unchanged host, and only a changed one costs a full probe.
# The full probe runs it too (before sudo) so both answers come from the
# same user. One `stat` and shell builtins: it must stay cheap for the host.
fleetroll_state() {
  set -- /etc/puppet_role /etc/puppet/ronin_settings /opt/puppet_environments/ronin_settings \
    /etc/puppet/last_run_metadata.json /opt/puppet_environments/last_run_metadata.json \
    /opt/puppetlabs/puppet/cache/state/last_run_summary.yaml /var/lib/puppet/state/last_run_summary.yaml
  if [ -r /proc/sys/kernel/random/boot_id ]; then
    LC_ALL=C stat -c '%n %s %Y %Z %i' "$@" 2>/dev/null
    read -r boot < /proc/sys/kernel/random/boot_id
    echo "boot $boot"
  else
    LC_ALL=C stat -f '%N %z %m %c %i' "$@" 2>/dev/null
    echo "boot $(sysctl -n kern.boottime 2>/dev/null)"
  fi
}
