//! What the fuzz targets share: the promise every message of the contract
//! keeps, whatever made it.

use std::fmt::Debug;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::sync::{Mutex, OnceLock};

use fleetroll_bus::codec::{self, Message};
use fleetroll_bus::messages::host::Observation;
use fleetroll_prober::observe;
use fleetroll_prober::probe::ProbeReport;
use time::OffsetDateTime;

/// A message that exists (decoded from the wire, or made from what a host
/// said) is written and read back unchanged, as CBOR for the bus and as JSON
/// for chatops and `--json`. Compared through `Debug`, where a NaN equals
/// itself: the promise is about the codec, not about float equality.
pub fn round_trips<T: Message + Debug>(message: &T) {
    let cbor = codec::to_cbor(message);
    let back: T = codec::from_cbor(&cbor)
        .unwrap_or_else(|e| panic!("`{}` written as CBOR does not read back: {e}", T::KIND));
    assert_eq!(
        format!("{back:?}"),
        format!("{message:?}"),
        "CBOR {}",
        T::KIND
    );
    let json = codec::to_json(message);
    let back: T = codec::from_json(&json).unwrap_or_else(|e| {
        panic!(
            "`{}` written as JSON does not read back: {e}\n{}",
            T::KIND,
            String::from_utf8_lossy(&json)
        )
    });
    assert_eq!(
        format!("{back:?}"),
        format!("{message:?}"),
        "JSON {}",
        T::KIND
    );
}

/// What the prober makes of `report` (at a fixed time) travels the bus:
/// see [`round_trips`].
pub fn observation_round_trips(report: &ProbeReport) {
    let now = OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("a fixed time");
    let observation = observe::observed(
        Observation::discovered("h1.example.com", now),
        report,
        None,
        now,
    );
    round_trips(&observation);
}

/// The stack of a tokio worker thread (2 MiB), where every worker decodes
/// and parses what it is sent: input that nests deep enough to overflow it
/// kills the worker, so the targets run on no bigger a stack.
const WORKER_STACK: usize = 2 << 20;

type Check = Box<dyn FnOnce() + Send>;

/// Runs `check` on a thread with a worker's stack. One thread serves every
/// input: starting a thread per input costs more than most checks. A panic
/// there aborts the process (libfuzzer-sys's hook), which saves the input.
pub fn on_worker_stack(check: impl FnOnce() + Send + 'static) {
    static WORKER: OnceLock<Mutex<(SyncSender<Check>, Receiver<()>)>> = OnceLock::new();
    let worker = WORKER.get_or_init(|| {
        let (checks, inbox) = sync_channel::<Check>(0);
        let (finished, done) = sync_channel(0);
        std::thread::Builder::new()
            .stack_size(WORKER_STACK)
            .spawn(move || {
                for check in inbox {
                    check();
                    let _ = finished.send(());
                }
            })
            .expect("a thread to check inputs on");
        Mutex::new((checks, done))
    });
    let worker = worker.lock().expect("one input at a time");
    worker
        .0
        .send(Box::new(check))
        .expect("the checking thread runs");
    worker
        .1
        .recv()
        .expect("the checking thread finished the input");
}
