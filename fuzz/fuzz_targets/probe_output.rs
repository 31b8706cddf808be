//! The probe's answer: any bytes are refused or read as a complete,
//! consistent report, and the observation made of it travels the bus.

#![no_main]

use fleetroll_prober::probe::{self, CONTENT_CAP, FileState};
use libfuzzer_sys::fuzz_target;

fn check(stdout: &[u8]) {
    let Ok(report) = probe::parse(stdout) else {
        return;
    };
    let files = [
        &report.role,
        &report.override_file,
        &report.metadata,
        &report.summary,
    ];
    for read in files.into_iter().filter_map(FileState::read) {
        let got = read.content.len() as u64;
        assert!(
            read.content.len() <= CONTENT_CAP,
            "{} over the cap",
            read.path
        );
        assert_eq!(read.truncated, read.size > got, "{}", read.path);
        if read.truncated {
            assert_eq!(read.content.len(), CONTENT_CAP, "{}", read.path);
        } else {
            assert_eq!(
                read.size, got,
                "{}: size disagrees with its contents",
                read.path
            );
            assert_eq!(
                read.sha256,
                probe::hex_sha256(&read.content),
                "{}",
                read.path
            );
        }
    }
    fleetroll_fuzz::observation_round_trips(&report);
}

fuzz_target!(|stdout: &[u8]| {
    let stdout = stdout.to_vec();
    fleetroll_fuzz::on_worker_stack(move || check(&stdout));
});
