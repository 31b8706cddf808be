//! Puppet's files as the prober reads them: any `last_run_metadata.json`
//! (and, when it is no good, `last_run_summary.yaml` with the same bytes)
//! makes an observation that travels the bus.

#![no_main]

use fleetroll_prober::probe::{self, FileRead, FileState, ProbeReport, VaultState};
use libfuzzer_sys::fuzz_target;

fn file(path: &str, content: &[u8]) -> FileState {
    FileState::Present(FileRead {
        path: path.into(),
        size: content.len() as u64,
        sha256: probe::hex_sha256(content),
        mtime: 1_790_000_000,
        content: content.to_vec(),
        truncated: false,
    })
}

fn check(content: &[u8]) {
    let report = ProbeReport {
        os: "Linux".into(),
        os_version: None,
        uptime_s: Some(3600),
        sudo: true,
        state: b"boot 1".to_vec(),
        role: file("/etc/puppet_role", b"gecko_t_linux_talos\n"),
        override_file: file("/etc/puppet/ronin_settings", b"PUPPET_BRANCH=x\n"),
        metadata: file("/etc/puppet/last_run_metadata.json", content),
        summary: file("/var/lib/puppet/state/last_run_summary.yaml", content),
        vault: VaultState::Absent,
    };
    fleetroll_fuzz::observation_round_trips(&report);
}

fuzz_target!(|content: &[u8]| {
    let content = content.to_vec();
    fleetroll_fuzz::on_worker_stack(move || check(&content));
});
