//! A synthetic fleet, the same for the same host number every run: what a
//! probe of host `i` would have found. Proportions (per host, from a hash of
//! its number): ten roles alike, 2% unreachable, 5% with an override (60% of
//! those applied), 4% with a failed last Puppet run, 85% seen in the last
//! half hour and the rest 1 to 72 hours ago.

use fleetroll_bus::filter::Value;
use fleetroll_bus::messages::host::{AppliedSource, Observation, PuppetSource, PuppetState};
use time::OffsetDateTime;

pub const ROLES: [&str; 10] = [
    "gecko_t_linux_talos",
    "gecko_t_linux_2404_talos",
    "gecko_t_linux_netperf",
    "gecko_t_linux_2404_netperf",
    "gecko_3_b_linux_talos",
    "gecko_t_osx_1015",
    "gecko_t_osx_1400_r8",
    "gecko_t_osx_1500_m4",
    "gecko_t_osx_1400_m2_vms",
    "gecko_3_b_osx_arm64",
];

const PUPPET_REPO: &str = "https://github.com/mozilla-platform-ops/ronin_puppet.git";
const OVERRIDE_PATH: &str = "/etc/puppet/ronin_settings";

pub fn hostname(i: usize) -> String {
    format!("bench-{i:06}.fleetroll.test")
}

/// splitmix64: a well-mixed 64-bit value per (host, purpose).
fn mix(i: usize, salt: u64) -> u64 {
    let mut z = (i as u64)
        .wrapping_mul(0x9e37_79b9_7f4a_7c15)
        .wrapping_add(salt.wrapping_mul(0xd1b5_4a32_d192_ed69));
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// `n` hex digits standing in for a digest of `what`.
fn digest(what: &str, n: usize) -> String {
    let seed = what.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut out = String::with_capacity(n + 16);
    let mut k = 0;
    while out.len() < n {
        out.push_str(&format!("{:016x}", mix(seed as usize, k)));
        k += 1;
    }
    out.truncate(n);
    out
}

/// What a full probe of host `i` found, at `now`, on top of `previous`
/// (its record as discovered).
pub fn observation(i: usize, previous: Observation, now: OffsetDateTime) -> Observation {
    let chance = |salt: u64, per_mille: u64| mix(i, salt) % 1000 < per_mille;
    let role = ROLES[(mix(i, 1) % ROLES.len() as u64) as usize];
    let mac = role.contains("osx");
    let reachable = !chance(2, 20);
    let override_contents = chance(3, 50).then(|| {
        format!(
            "PUPPET_REPO=https://github.com/relops-{}/ronin_puppet.git\nPUPPET_BRANCH=bug{}_test\nPUPPET_MAIL=relops@example.invalid\n",
            mix(i, 4) % 40,
            1_900_000 + mix(i, 5) % 50_000
        )
    });
    let override_sha256 = override_contents.as_deref().map(|c| digest(c, 64));
    let success = !chance(6, 40);
    // Most overrides were picked up by the next Puppet run; some not yet.
    let override_applied = override_sha256.is_some() && chance(7, 600);
    let ago = if !reachable || chance(8, 150) {
        time::Duration::seconds((1 + mix(i, 9) % 72) as i64 * 3600 + 1800)
    } else {
        time::Duration::seconds((mix(i, 9) % 1800) as i64)
    };
    let last_seen = now - ago;
    let fleet_sha = digest(&format!("fleet-{}", mix(i, 10) % 3), 40);
    let vault_sha = digest(&format!("vault-{}", mix(i, 11) % 2), 64);
    let puppet = PuppetState {
        source: PuppetSource::Metadata,
        ts: Some(last_seen - time::Duration::seconds((60 + mix(i, 12) % 3600) as i64)),
        success: Some(success),
        exit_code: Some(if success { 0 } else { 6 }),
        git_repo: Some(PUPPET_REPO.into()),
        git_branch: Some(match &override_contents {
            Some(_) if override_applied => format!("bug{}_test", 1_900_000 + mix(i, 5) % 50_000),
            _ => "master".into(),
        }),
        git_sha: Some(fleet_sha),
        override_sha: if override_applied {
            override_sha256.clone()
        } else {
            None
        },
        vault_sha: Some(vault_sha.clone()),
        role: Some(role.into()),
        duration_s: Some((30 + mix(i, 13) % 270) as f64 + 0.25),
        error: None,
    };
    // As the prober decides it from the metadata (SPEC 2).
    let applied = success && puppet.override_sha == override_sha256;
    Observation {
        hostname: previous.hostname.clone(),
        discovered_at: previous.discovered_at,
        probed_at: Some(now),
        probed_for: Some("bench-ingest".into()),
        last_seen: Some(last_seen),
        address: Some(format!(
            "10.{}.{}.{}",
            40 + i / 65536 % 200,
            i / 256 % 256,
            i % 256
        )),
        sshable: Some(reachable),
        sudoable: Some(true),
        os: Some(if mac { "Darwin" } else { "Linux" }.into()),
        os_version: Some(
            match role {
                r if r.starts_with("gecko_t_osx_1015") => "10.15.7",
                r if r.contains("osx_1400") => "14.7.1",
                r if r.contains("osx") => "15.3.1",
                r if r.contains("2404") => "Ubuntu 24.04.2 LTS",
                _ => "Ubuntu 18.04.6 LTS",
            }
            .into(),
        ),
        uptime_s: Some(mix(i, 14) % (30 * 86400)),
        role: Some(role.into()),
        override_present: Some(override_contents.is_some()),
        override_size: override_contents.as_ref().map(|c| c.len() as u64),
        override_path: override_contents.as_ref().map(|_| OVERRIDE_PATH.into()),
        override_snapshot_id: None,
        override_sha256,
        override_contents: override_contents.map(|c| c.trim().to_string()),
        puppet: Some(puppet),
        vault_sha256: Some(vault_sha),
        applied: Some(applied),
        applied_source: Some(AppliedSource::Metadata),
        host_key_fingerprint: Some(format!("SHA256:{}", digest(&previous.hostname, 43))),
        state_token: None,
        last_error: (!reachable).then(|| {
            format!(
                "ssh: connecting to {}:22 timed out after 10s",
                previous.hostname
            )
        }),
        last_error_at: (!reachable).then_some(now),
    }
}

/// A host's field for the query language as the query service sees a host
/// nobody has assigned yet (no intent, no drift: the benchmark's filters do
/// not name drift, which the gatekeeper computes on its own time).
pub fn field<'a>(o: &'a Observation, name: &str) -> Value<'a> {
    fleetroll_bus::messages::host::HostView {
        observation: o,
        intent: None,
        drift: &[],
        healthy: None,
        workload: None,
    }
    .field(name)
}
