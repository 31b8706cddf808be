//! A Taskcluster double: the queue's and worker-manager's worker and task
//! endpoints, answering for the lab's hosts with the real API's shapes.
//!
//! Worker pool = `<provisioner>/<role>`, worker id = the host's short name.
//! Each host runs jobs at its rate (see [`jobs`]); a job fails while the
//! branch Puppet last applied on the host is marked bad (or that run failed),
//! and no job is claimed while the host is rebooting, unreachable or
//! quarantined.

pub(crate) mod api;
pub(crate) mod jobs;
pub(crate) mod slugid;
