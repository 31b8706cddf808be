//! Decoding every message type of the bus: the first byte picks the type,
//! the rest is the message. Whatever bytes arrive are refused with an
//! error or read as a message that writes and reads back unchanged.

#![no_main]

use std::fmt::Debug;

use fleetroll_bus::codec::{self, Message};
use fleetroll_bus::messages::audit::{
    AuditList, AuditQuery, AuditRecord, ListedRecord, OverrideSnapshot,
};
use fleetroll_bus::messages::auth::{Revocation, VerifyingKeyRecord};
use fleetroll_bus::messages::command::{Command, CommandEnvelope, LeaseRecord, Outcome};
use fleetroll_bus::messages::event::Event;
use fleetroll_bus::messages::host::{
    Drift, DriftSummary, HostHistory, HostIntent, HostKeyPin, HostList, HostName, HostQuery,
    HostRecord, Observation, Population, PopulationList, ProbeJob,
};
use fleetroll_bus::messages::rollout::{
    ApplyJob, GateEvaluation, HostApply, Rollout, RolloutId, RolloutList, RolloutStatus,
};
use fleetroll_bus::messages::workload::{TaskRun, Workload, WorkloadSweep};
use fleetroll_bus::messages::{Heartbeat, NoParams, Seed, SeedList};
use libfuzzer_sys::fuzz_target;

fn check<T: Message + Debug>(bytes: &[u8]) {
    // Query parameters come as CBOR or JSON; everything else as CBOR.
    if let Ok(message) = codec::from_cbor::<T>(bytes) {
        fleetroll_fuzz::round_trips(&message);
        // A message is its whole payload, as in JSON: a byte after it makes
        // the payload something else.
        let longer = [bytes, &[0]].concat();
        assert!(
            codec::from_cbor::<T>(&longer).is_err(),
            "`{}` read with a byte after it",
            T::KIND
        );
    }
    if let Ok(message) = codec::from_json::<T>(bytes) {
        fleetroll_fuzz::round_trips(&message);
    }
}

/// Every type that implements `Message`, in one list.
const TYPES: &[fn(&[u8])] = &[
    check::<AuditList>,
    check::<AuditQuery>,
    check::<AuditRecord>,
    check::<ListedRecord>,
    check::<OverrideSnapshot>,
    check::<Revocation>,
    check::<VerifyingKeyRecord>,
    check::<Command>,
    check::<CommandEnvelope>,
    check::<Outcome>,
    check::<Event>,
    check::<Drift>,
    check::<DriftSummary>,
    check::<HostHistory>,
    check::<HostIntent>,
    check::<HostKeyPin>,
    check::<LeaseRecord>,
    check::<HostList>,
    check::<HostName>,
    check::<HostQuery>,
    check::<HostRecord>,
    check::<Observation>,
    check::<Population>,
    check::<PopulationList>,
    check::<ProbeJob>,
    check::<ApplyJob>,
    check::<GateEvaluation>,
    check::<HostApply>,
    check::<Rollout>,
    check::<RolloutId>,
    check::<RolloutList>,
    check::<RolloutStatus>,
    check::<TaskRun>,
    check::<Workload>,
    check::<WorkloadSweep>,
    check::<Heartbeat>,
    check::<NoParams>,
    check::<Seed>,
    check::<SeedList>,
];

fuzz_target!(|data: &[u8]| {
    if let Some((&pick, bytes)) = data.split_first() {
        let bytes = bytes.to_vec();
        fleetroll_fuzz::on_worker_stack(move || TYPES[usize::from(pick) % TYPES.len()](&bytes));
    }
});
