//! fleetroll's test fleet ("lab"): many virtual hosts behind one real
//! OpenSSH server on loopback.
//!
//! Each host has its own 127.x.y.z address and a name that resolves through
//! /etc/hosts. Every connection runs Debian's `sshd -i` inside a private
//! mount namespace where the host's own `/etc/puppet`, `/etc/puppet_role`,
//! `/opt/puppet_environments`, vault file and tool shims are bind-mounted; a
//! `ForceCommand` wrapper checks the dialled address (`$SSH_CONNECTION`) and
//! applies the host's misbehaviour knobs. The lab's `run-puppet.sh` writes
//! metadata with the project's reference `write_puppet_state`, `reboot` takes
//! a host away and Puppet runs at boot, and a Taskcluster double reports each
//! host's jobs. With [`LabConfig::bastion`] the hosts listen only in a private
//! network namespace that a real sshd jump host forwards into; hosts can also
//! present other host key types or certificates ([`HostHandle::set_host_key`],
//! [`HostHandle::certify_host_key`]).
//!
//! ```no_run
//! use fleetroll_lab::{Lab, LabConfig};
//! # fn main() -> Result<(), fleetroll_lab::LabError> {
//! let lab = Lab::start(LabConfig::new(20, "/tmp/my-lab"))?;
//! let host = &lab.hosts()[2];
//! // ssh -i lab.identity_file() -p lab.ssh_port() fleetroll-lab@<host.hostname> ...
//! lab.host(&host.hostname)?.set_unreachable(true)?;
//! # Ok(()) }
//! // Dropping `lab` stops it and cleans the machine.
//! ```
//!
//! The lab needs root, `openssh-server`, `openssh-client` and `sudo`.

mod down;
mod error;
mod hostfs;
mod hostkey;
mod hostsfile;
mod lab;
mod layout;
mod namespace;
mod netns;
mod overrides;
mod procs;
mod puppet;
mod runtime;
mod scenario;
mod scripts;
mod slots;
mod sshd;
mod system;
mod taskcluster;

pub use down::{Leftovers, down, leftovers};
pub use error::LabError;
pub use hostkey::{HostKeyKind, generate_key_pair};
pub use lab::{
    BastionInfo, HostHandle, HostStatus, Lab, LabConfig, LabHost, LabInfo, LabMode,
    PuppetRunRecord, TaskclusterClient, is_running, read_info,
};
pub use procs::{ProcInfo, lab_processes, mounts_mentioning};
pub use puppet::{git_sha, sha256_hex};
pub use runtime::{OverrideEvent, OverrideEventKind};
pub use scenario::{
    ANONYMOUS_SCOPES, ClientSpec, DEFAULT_PUPPET_REPO, HostConfig, HostGroup, HostSelector,
    HostSpec, LAB_CLIENT_ID, LAB_CLIENT_SCOPES, MetadataMode, Os, PuppetSpec, Scenario,
    TaskclusterSpec,
};
pub use scripts::WRITE_PUPPET_STATE;
pub use system::LAB_USER;
