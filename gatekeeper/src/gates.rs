//! Health gates (SPEC 6): every few seconds, each running rollout's
//! current stage is judged against a baseline taken when it started, from
//! the hosts' records and the task runs the workload source reported. The
//! evaluation is kept in the gates bucket (the orchestrator decides a
//! normal advance on it) and published when a verdict changes. A rollout
//! whose every target host is applied and healthy has succeeded.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use fleetroll_bus::codec;
use fleetroll_bus::connect::{Bus, BusError};
use fleetroll_bus::events;
use fleetroll_bus::host_index::HostIndex;
use fleetroll_bus::messages::event::EventDetail;
use fleetroll_bus::messages::host::HostRecord;
use fleetroll_bus::messages::rollout::{
    ApplyOutcome, Baseline, GateEvaluation, GateResult, GateVerdict, HeldBack, HostApply, Rollout,
    RolloutState, StageStatus,
};
use fleetroll_bus::messages::workload::{RunCount, RunResult, TaskRun};
use fleetroll_bus::rollout_store;
use fleetroll_bus::topology;
use time::OffsetDateTime;

use crate::runs::RunLog;
use tracing::{info, warn};

/// How often running rollouts are judged.
const EVERY: Duration = Duration::from_secs(3);

/// For this long after the gatekeeper paused or marked a rollout, it
/// announces that again on every pass: a replica killed between the
/// compare-and-swap and the event would otherwise leave it unaudited.
/// Within NATS's duplicate window (2 min) a repeat is dropped by its
/// message id; the auditor writes one record per subject anyway.
const REANNOUNCE_FOR: time::Duration = time::Duration::seconds(90);

/// Judges every running rollout until the bus fails for good.
pub async fn maintain(bus: Bus, workload: bool, source: String) -> Result<(), BusError> {
    let index = HostIndex::start(bus.clone());
    let mut runs = RunLog::default();
    loop {
        tokio::time::sleep(EVERY).await;
        let rollouts = bus.snapshot::<Rollout>(&topology::ROLLOUTS).await?;
        for rollout in rollouts.into_values() {
            let judged = match rollout.state {
                RolloutState::Running => {
                    judge(&bus, &index, &rollout, workload, &source, &mut runs).await
                }
                RolloutState::Paused => {
                    reannounce_blast(&bus, &index, &rollout, &source, &mut runs).await
                }
                RolloutState::Finalized => observe(&bus, &rollout, &source, &mut runs).await,
                _ => Ok(()),
            };
            if let Err(e) = judged {
                warn!(rollout = %rollout.id, error = %e, "rollout not judged");
            }
        }
        runs.forget_unasked();
    }
}

/// What a rollout's hosts did: their results and records, and the runs
/// (those older than the rollout's window too).
struct Evidence<'a> {
    results: HashMap<String, HostApply>,
    records: HashMap<String, HostRecord>,
    runs: &'a HashMap<String, Vec<TaskRun>>,
    now: OffsetDateTime,
    window: time::Duration,
}

/// What the rollout's hosts did since it started (and the window before).
async fn gather<'a>(
    bus: &Bus,
    index: &Arc<HostIndex>,
    rollout: &Rollout,
    runs: &'a mut RunLog,
) -> Result<Evidence<'a>, BusError> {
    let window = rollout.plan.gates.window();
    let now = OffsetDateTime::now_utc();
    let started = rollout.stages.first().map_or(now, |s| s.started_at);
    runs.update(bus, started - window).await?;
    let runs = runs.by_host();
    let mut records = HashMap::new();
    for host in &rollout.targets {
        if let Ok(Some(record)) = index.get(host).await {
            records.insert(host.clone(), record);
        }
    }
    // The apply results of this rollout (not its removals).
    let results: HashMap<String, HostApply> = bus
        .snapshot::<HostApply>(&topology::ROLLOUT_HOSTS)
        .await?
        .into_iter()
        .filter(|(key, r)| *key == topology::rollout_host_key(&rollout.id, &r.hostname))
        .map(|(_, r)| (r.hostname.clone(), r))
        .collect();
    Ok(Evidence {
        results,
        records,
        runs,
        now,
        window,
    })
}

async fn judge(
    bus: &Bus,
    index: &Arc<HostIndex>,
    rollout: &Rollout,
    workload: bool,
    source: &str,
    runs: &mut RunLog,
) -> Result<(), BusError> {
    let Some(stage) = rollout.current_stage() else {
        return Ok(());
    };
    let gates_bucket = bus.kv(&topology::GATES).await?;
    let previous: Option<GateEvaluation> = gates_bucket
        .get(&rollout.id)
        .await
        .map_err(|e| BusError::js("reading the gate evaluation", e))?
        .and_then(|b| codec::from_cbor(&b).ok());
    let evidence = gather(bus, index, rollout, runs).await?;
    let now = evidence.now;
    let baseline = match previous.as_ref().filter(|p| p.rollout == rollout.id) {
        Some(p) => p.baseline.clone(),
        None => baseline(rollout, &evidence, workload),
    };
    let evaluation = GateEvaluation {
        rollout: rollout.id.clone(),
        stage: stage.number,
        at: now,
        gates: evaluate(rollout, &stage.hosts, &evidence, &baseline, workload),
        baseline,
        holding_back: holding_back(rollout, &evidence),
    };
    gates_bucket
        .put(&rollout.id, codec::to_cbor(&evaluation).into())
        .await
        .map_err(|e| BusError::js("writing the gate evaluation", e))?;
    metrics::gauge!("fleetroll_rollout_stage", "rollout" => rollout.id.clone())
        .set(f64::from(stage.number));
    for gate in &evaluation.gates {
        for verdict in [
            GateVerdict::Pass,
            GateVerdict::Fail,
            GateVerdict::Inconclusive,
        ] {
            metrics::gauge!(
                "fleetroll_gate_verdict",
                "rollout" => rollout.id.clone(),
                "gate" => gate.name.clone(),
                "verdict" => verdict.as_str()
            )
            .set(if gate.verdict == verdict { 1.0 } else { 0.0 });
        }
    }
    let verdicts = |e: &GateEvaluation| {
        e.gates
            .iter()
            .map(|g| (g.name.clone(), g.verdict))
            .collect::<Vec<_>>()
    };
    let changed = previous
        .as_ref()
        .is_none_or(|p| p.stage != evaluation.stage || verdicts(p) != verdicts(&evaluation));
    if changed {
        let key: String = evaluation
            .gates
            .iter()
            .map(|g| &g.verdict.as_str()[..1])
            .collect();
        let _ = events::rollout(
            bus,
            source,
            &rollout.id,
            &format!("{}-{key}-{}", stage.number, now.unix_timestamp()),
            EventDetail::RolloutGates {
                evaluation: Box::new(evaluation.clone()),
            },
        )
        .await;
    }
    blast_radius(bus, rollout, &evidence, source).await?;
    if rollout.remaining().is_empty() && evaluation.holding_back.is_empty() {
        succeed(bus, rollout, source).await?;
    }
    Ok(())
}

/// Once every target is in a stage, the hosts that keep the rollout from
/// having succeeded (SPEC 5: every target applied and healthy), each with
/// why; none before that.
fn holding_back(rollout: &Rollout, evidence: &Evidence) -> Vec<HeldBack> {
    if !rollout.remaining().is_empty() {
        return Vec::new();
    }
    let why = |host: &String| -> Option<String> {
        let result = evidence.results.get(host);
        match result.map(|r| &r.outcome) {
            None => return Some("its change is not written yet".into()),
            Some(ApplyOutcome::Retrying { .. }) => {
                return Some("its change is being written again".into());
            }
            Some(ApplyOutcome::Failed { error }) => {
                return Some(format!(
                    "its change could not be written ({error}); `fleetroll rollout retry {} --host {host}` tries again",
                    rollout.id
                ));
            }
            Some(ApplyOutcome::SkippedDisabled) => {
                return Some("it is disabled, so its change was not written".into());
            }
            Some(ApplyOutcome::Applied { .. } | ApplyOutcome::Removed { .. }) => {}
        }
        match evidence.records.get(host).and_then(|r| r.healthy) {
            Some(true) => None,
            Some(false) => {
                Some("not healthy (Puppet has not applied the change, or no recent work)".into())
            }
            None => Some("its health is not known yet (no probe or workload since)".into()),
        }
    };
    rollout
        .targets
        .iter()
        .filter_map(|host| {
            why(host).map(|why| HeldBack {
                hostname: host.clone(),
                why,
            })
        })
        .collect()
}

/// Why a changed host counts as failing, if it does.
fn failure(result: &HostApply, evidence: &Evidence) -> Option<String> {
    if let ApplyOutcome::Failed { .. } = result.outcome {
        return Some("the change could not be written".into());
    }
    let record = evidence.records.get(&result.hostname)?;
    if record.observation.sshable == Some(false) {
        return Some("unreachable".into());
    }
    let puppet = record.observation.puppet.as_ref();
    if puppet.is_some_and(|p| p.success == Some(false) && p.ts.is_some_and(|t| t > result.at)) {
        return Some("Puppet failed".into());
    }
    let tally = Tally::of(runs_since_applied(&result.hostname, evidence).into_iter());
    let failed = tally.failed + tally.host_exceptions;
    (tally.counted() >= 2 && failed * 2 > tally.counted()).then(|| "most jobs fail".into())
}

/// A stage whose failing hosts passed the blast radius.
struct Blast {
    failing: Vec<(String, String)>,
    changed: usize,
    groups: Vec<(String, usize)>,
    reason: String,
}

/// Seed 004's blast radius: once enough hosts are changed, too large a
/// failing fraction, with what the failing hosts share (role, error, OS) as
/// a hint.
fn assess_blast(rollout: &Rollout, evidence: &Evidence) -> Option<Blast> {
    let config = &rollout.plan.gates;
    let changed: Vec<&HostApply> = evidence
        .results
        .values()
        .filter(|r| !matches!(r.outcome, ApplyOutcome::SkippedDisabled))
        .collect();
    if (changed.len() as u64) < config.blast_min_applied.max(1) {
        return None;
    }
    let mut failing: Vec<(String, String)> = changed
        .iter()
        .filter_map(|r| failure(r, evidence).map(|why| (r.hostname.clone(), why)))
        .collect();
    failing.sort();
    let fraction = failing.len() as f64 / changed.len() as f64;
    if at_most(fraction, config.blast_max_failing_fraction) {
        return None;
    }
    let mut counts: HashMap<String, usize> = HashMap::new();
    for (host, why) in &failing {
        *counts.entry(format!("error: {why}")).or_default() += 1;
        if let Some(record) = evidence.records.get(host) {
            let o = &record.observation;
            if let Some(role) = &o.role {
                *counts.entry(format!("role {role}")).or_default() += 1;
            }
            if let Some(os) = &o.os {
                *counts.entry(format!("os {os}")).or_default() += 1;
            }
        }
    }
    let mut groups: Vec<(String, usize)> = counts.into_iter().collect();
    groups.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let shared: Vec<String> = groups
        .iter()
        .take(3)
        .map(|(what, n)| format!("{what} ({n})"))
        .collect();
    let reason = format!(
        "blast radius: {} of {} changed hosts failing (more than {:.0}%); they share {}",
        failing.len(),
        changed.len(),
        config.blast_max_failing_fraction * 100.0,
        shared.join(", ")
    );
    Some(Blast {
        failing,
        changed: changed.len(),
        groups,
        reason,
    })
}

/// Pauses a running rollout whose stage passed its blast radius.
async fn blast_radius(
    bus: &Bus,
    rollout: &Rollout,
    evidence: &Evidence<'_>,
    source: &str,
) -> Result<(), BusError> {
    let Some(blast) = assess_blast(rollout, evidence) else {
        return Ok(());
    };
    // An operator's pause or rollback meanwhile wins.
    let paused = rollout_store::update(bus, &rollout.id, |current| {
        if current.state != RolloutState::Running {
            return false;
        }
        current.state = RolloutState::Paused;
        current.pause_reason = Some(blast.reason.clone());
        current.updated_at = OffsetDateTime::now_utc();
        if let Some(last) = current.stages.last_mut() {
            last.status = StageStatus::Paused;
        }
        true
    })
    .await?;
    let Some(paused) = paused else {
        return Ok(());
    };
    warn!(rollout = %rollout.id, reason = %blast.reason, "paused by its blast radius");
    announce_blast(bus, &paused, blast, source).await
}

/// Says a rollout paused itself: the auditor records it.
async fn announce_blast(
    bus: &Bus,
    rollout: &Rollout,
    blast: Blast,
    source: &str,
) -> Result<(), BusError> {
    let stage = rollout.stages.last().map_or(0, |s| s.number);
    events::rollout(
        bus,
        source,
        &rollout.id,
        &stage.to_string(),
        EventDetail::BlastRadius {
            rollout: rollout.id.clone(),
            stage,
            failing: blast.failing,
            changed: blast.changed,
            groups: blast.groups,
            reason: blast.reason.clone(),
        },
    )
    .await?;
    events::rollout(
        bus,
        source,
        &rollout.id,
        &format!("paused-blast-{stage}"),
        EventDetail::RolloutState {
            rollout: rollout.id.clone(),
            state: RolloutState::Paused,
            reason: Some(blast.reason),
        },
    )
    .await
}

/// A rollout this gatekeeper (or one that died) paused a moment ago: its
/// pause is announced again. Only a pause whose reason is the one the
/// evidence still gives counts, so an operator's pause is never announced
/// as the gatekeeper's.
async fn reannounce_blast(
    bus: &Bus,
    index: &Arc<HostIndex>,
    rollout: &Rollout,
    source: &str,
    runs: &mut RunLog,
) -> Result<(), BusError> {
    let recent = OffsetDateTime::now_utc() - rollout.updated_at < REANNOUNCE_FOR;
    let maybe_ours = rollout
        .pause_reason
        .as_deref()
        .is_some_and(|r| r.starts_with("blast radius: "));
    if !recent || !maybe_ours {
        return Ok(());
    }
    let evidence = gather(bus, index, rollout, runs).await?;
    match assess_blast(rollout, &evidence) {
        Some(blast) if rollout.pause_reason.as_deref() == Some(blast.reason.as_str()) => {
            announce_blast(bus, rollout, blast, source).await
        }
        _ => Ok(()),
    }
}

/// How the reason of a post-finalize regression begins.
const REGRESSION: &str = "post-finalize regression: ";

/// Says a finalized rollout regressed: the auditor records it.
async fn announce_regression(
    bus: &Bus,
    rollout: &Rollout,
    reason: String,
    source: &str,
) -> Result<(), BusError> {
    events::rollout(
        bus,
        source,
        &rollout.id,
        "finalized",
        EventDetail::Regression {
            rollout: rollout.id.clone(),
            reason,
        },
    )
    .await
}

/// After finalize, for one window: a success rate that falls more than
/// twice the gate's allowance below the baseline is a severe regression.
/// fleetroll does not put the override back (a new rollout does that); it
/// marks the rollout, and says so to whoever watches, once.
async fn observe(
    bus: &Bus,
    rollout: &Rollout,
    source: &str,
    runs: &mut RunLog,
) -> Result<(), BusError> {
    let Some(finalized) = rollout.finalize.as_ref().map(|f| f.at) else {
        return Ok(());
    };
    let now = OffsetDateTime::now_utc();
    let window = rollout.plan.gates.window();
    if let Some(reason) = rollout.pause_reason.as_deref() {
        // Marked already: announced again for a while, in case the
        // replica that marked it died before it could.
        if reason.starts_with(REGRESSION) && now - rollout.updated_at < REANNOUNCE_FOR {
            return announce_regression(bus, rollout, reason.to_string(), source).await;
        }
        return Ok(());
    }
    if now > finalized + window {
        return Ok(());
    }
    let Some(baseline) = bus
        .kv(&topology::GATES)
        .await?
        .get(&rollout.id)
        .await
        .map_err(|e| BusError::js("reading the gate evaluation", e))?
        .and_then(|b| codec::from_cbor::<GateEvaluation>(&b).ok())
        .and_then(|e| e.baseline.success_rate)
    else {
        return Ok(());
    };
    runs.update(bus, finalized).await?;
    let runs = runs.by_host();
    let since: Vec<&TaskRun> = rollout
        .targets
        .iter()
        .flat_map(|h| runs.get(h).into_iter().flatten())
        .filter(|r| r.resolved > finalized)
        .collect();
    let needed = (rollout.targets.len() as f64 * rollout.plan.gates.min_jobs_per_host).ceil();
    let tally = Tally::of(since.into_iter());
    let (Some(rate), total) = (tally.rate(), tally.counted()) else {
        return Ok(());
    };
    let drop = (baseline - rate) * 100.0;
    if (total as f64) < needed.max(1.0) || drop <= 2.0 * rollout.plan.gates.tc_success_rate_drop {
        return Ok(());
    }
    let reason = format!(
        "{REGRESSION}success rate {:.1}% over {total} runs since finalize, baseline {:.1}%; the override is not put back: create a new rollout if it must return",
        rate * 100.0,
        baseline * 100.0
    );
    let marked = rollout_store::update(bus, &rollout.id, |current| {
        if current.pause_reason.is_some() {
            return false;
        }
        current.pause_reason = Some(reason.clone());
        current.updated_at = now;
        true
    })
    .await?;
    if marked.is_some() {
        warn!(rollout = %rollout.id, %reason, "regression after finalize");
        announce_regression(bus, rollout, reason, source).await?;
    }
    Ok(())
}

/// Runs counted the way the success rate counts them.
#[derive(Debug, Default, PartialEq)]
struct Tally {
    completed: u64,
    failed: u64,
    /// Exceptions the host may have caused (claim-expired, worker-shutdown, ...).
    host_exceptions: u64,
    /// Left out of the rate, by reason.
    not_the_host: BTreeMap<String, u64>,
}

impl Tally {
    fn of<'a>(runs: impl Iterator<Item = &'a TaskRun>) -> Tally {
        let mut tally = Tally::default();
        for run in runs {
            match (run.counts_as(), run.result) {
                (RunCount::Success, _) => tally.completed += 1,
                (RunCount::Failure, RunResult::Exception) => tally.host_exceptions += 1,
                (RunCount::Failure, _) => tally.failed += 1,
                (RunCount::NotTheHost, _) => {
                    let reason = run.reason.clone().unwrap_or_else(|| "exception".into());
                    *tally.not_the_host.entry(reason).or_default() += 1;
                }
            }
        }
        tally
    }

    /// The runs the rate counts.
    fn counted(&self) -> u64 {
        self.completed + self.failed + self.host_exceptions
    }

    fn left_out(&self) -> u64 {
        self.not_the_host.values().sum()
    }

    fn rate(&self) -> Option<f64> {
        let counted = self.counted();
        (counted > 0).then(|| self.completed as f64 / counted as f64)
    }

    /// `38 completed, 1 failed, 1 host exception; 5 left out (3 canceled,
    /// 2 superseded)`.
    fn breakdown(&self) -> String {
        let mut text = format!(
            "{} completed, {} failed, {} host exception{}",
            self.completed,
            self.failed,
            self.host_exceptions,
            if self.host_exceptions == 1 { "" } else { "s" }
        );
        if !self.not_the_host.is_empty() {
            let reasons: Vec<String> = self
                .not_the_host
                .iter()
                .map(|(reason, n)| format!("{n} {reason}"))
                .collect();
            text.push_str(&format!(
                "; {} not the host's doing, left out ({})",
                self.left_out(),
                reasons.join(", ")
            ));
        }
        text
    }
}

fn online_fraction(hosts: &[String], evidence: &Evidence) -> Option<f64> {
    if hosts.is_empty() {
        return None;
    }
    let since = evidence.now - evidence.window;
    let online = hosts
        .iter()
        .filter(|h| {
            evidence
                .records
                .get(*h)
                .and_then(|r| r.workload.as_ref())
                .is_some_and(|w| w.active_since(since, evidence.now))
        })
        .count();
    Some(online as f64 / hosts.len() as f64)
}

/// The targets before the rollout: runs over the window before it started.
fn baseline(rollout: &Rollout, evidence: &Evidence<'_>, workload: bool) -> Baseline {
    let started = rollout.stages[0].started_at;
    let before = rollout.targets.iter().flat_map(|h| {
        evidence
            .runs
            .get(h)
            .into_iter()
            .flatten()
            .filter(move |r| r.resolved <= started && r.resolved >= started - evidence.window)
    });
    let tally = Tally::of(before);
    Baseline {
        taken_at: evidence.now,
        success_rate: tally.rate(),
        runs: tally.counted(),
        not_the_host: tally.left_out(),
        online_fraction: if workload {
            online_fraction(&rollout.targets, evidence)
        } else {
            None
        },
    }
}

/// The runs on `host` since the rollout changed it, within the window.
fn runs_since_applied<'a>(host: &str, evidence: &'a Evidence) -> Vec<&'a TaskRun> {
    let Some(applied_at) = evidence.results.get(host).map(|r| r.at) else {
        return Vec::new();
    };
    let since = applied_at.max(evidence.now - evidence.window);
    evidence
        .runs
        .get(host)
        .into_iter()
        .flatten()
        .filter(|r| r.resolved >= since)
        .collect()
}

fn gate(
    name: &str,
    verdict: GateVerdict,
    value: Option<f64>,
    threshold: f64,
    detail: String,
) -> GateResult {
    GateResult {
        name: name.to_string(),
        verdict,
        value,
        threshold,
        detail,
    }
}

/// Slack in comparisons with a threshold: a value that is the threshold
/// but computed in floating point (a 5-point drop, `(1.0 - 0.95) * 100`,
/// is 5.000000000000004) is at it, not over. NaN is within nothing.
const SLACK: f64 = 1e-9;

fn at_most(value: f64, limit: f64) -> bool {
    value <= limit + SLACK
}

fn at_least(value: f64, floor: f64) -> bool {
    value >= floor - SLACK
}

/// Judges the stage's hosts (the outcome gates: every host applied so far).
fn evaluate(
    rollout: &Rollout,
    stage_hosts: &[String],
    evidence: &Evidence<'_>,
    baseline: &Baseline,
    workload: bool,
) -> Vec<GateResult> {
    let config = &rollout.plan.gates;
    let applied: Vec<String> = evidence
        .results
        .values()
        .filter(|r| matches!(r.outcome, ApplyOutcome::Applied { .. }))
        .map(|r| r.hostname.clone())
        .collect();
    let stage: Vec<&String> = stage_hosts.iter().filter(|h| applied.contains(h)).collect();
    let counts: Vec<usize> = stage
        .iter()
        .map(|h| runs_since_applied(h, evidence).len())
        .collect();
    let total: usize = counts.iter().sum();
    let fewest = counts.iter().min().copied().unwrap_or(0);
    let with_jobs = if stage.is_empty() {
        0.0
    } else {
        counts.iter().filter(|c| **c > 0).count() as f64 / stage.len() as f64
    };
    let evidence_gate = |name: &str, value: f64, threshold: f64, what: String| {
        let verdict = if !workload {
            GateVerdict::Inconclusive
        } else if at_least(value, threshold) && !stage.is_empty() {
            GateVerdict::Pass
        } else {
            GateVerdict::Inconclusive
        };
        let detail = if workload {
            what
        } else {
            "no workload source configured".to_string()
        };
        gate(name, verdict, Some(value), threshold, detail)
    };
    let mut gates = vec![
        evidence_gate(
            "min_jobs_per_host",
            fewest as f64,
            config.min_jobs_per_host,
            format!("fewest jobs on a stage host since it was changed: {fewest}"),
        ),
        evidence_gate(
            "min_jobs_total",
            total as f64,
            config.min_jobs_total as f64,
            format!("{total} jobs on the stage's hosts"),
        ),
        evidence_gate(
            "min_hosts_with_jobs_fraction",
            with_jobs,
            config.min_hosts_with_jobs_fraction,
            format!("{:.0}% of the stage's hosts ran jobs", with_jobs * 100.0),
        ),
    ];
    let enough = gates.iter().all(|g| g.verdict == GateVerdict::Pass);
    let tally = Tally::of(
        stage
            .iter()
            .flat_map(|h| runs_since_applied(h, evidence).into_iter()),
    );
    gates.push(match (enough, baseline.success_rate, tally.rate()) {
        (true, Some(before), Some(now)) => {
            let drop = (before - now) * 100.0;
            let verdict = if at_most(drop, config.tc_success_rate_drop) {
                GateVerdict::Pass
            } else {
                GateVerdict::Fail
            };
            gate(
                "tc_success_rate_drop",
                verdict,
                Some(drop),
                config.tc_success_rate_drop,
                format!(
                    "success rate {:.1}% over {} runs ({}), baseline {:.1}% over {} runs",
                    now * 100.0,
                    tally.counted(),
                    tally.breakdown(),
                    before * 100.0,
                    baseline.runs
                ),
            )
        }
        (_, None, _) => gate(
            "tc_success_rate_drop",
            GateVerdict::Inconclusive,
            None,
            config.tc_success_rate_drop,
            "no baseline: no runs before the rollout".into(),
        ),
        _ => gate(
            "tc_success_rate_drop",
            GateVerdict::Inconclusive,
            None,
            config.tc_success_rate_drop,
            "not enough jobs yet".into(),
        ),
    });
    let online_now = online_fraction(&applied, evidence).filter(|_| workload);
    gates.push(match (baseline.online_fraction, online_now) {
        (Some(before), Some(now)) if before > 0.0 => {
            let drop = ((before - now) / before * 100.0).max(0.0);
            let verdict = if at_most(drop, config.tc_online_drop_pct) {
                GateVerdict::Pass
            } else {
                GateVerdict::Fail
            };
            gate(
                "tc_online_drop_pct",
                verdict,
                Some(drop),
                config.tc_online_drop_pct,
                format!(
                    "{:.0}% of the changed hosts active, {:.0}% before",
                    now * 100.0,
                    before * 100.0
                ),
            )
        }
        _ => gate(
            "tc_online_drop_pct",
            GateVerdict::Inconclusive,
            None,
            config.tc_online_drop_pct,
            "no workload activity to compare".into(),
        ),
    });
    let pct = |n: usize, of: usize| {
        if of == 0 {
            0.0
        } else {
            n as f64 * 100.0 / of as f64
        }
    };
    let record = |h: &String| evidence.records.get(h);
    let sshable = applied
        .iter()
        .filter(|h| record(h).is_some_and(|r| r.observation.sshable == Some(true)))
        .count();
    let sshable_pct = pct(sshable, applied.len());
    gates.push(gate(
        "sshable_min_pct",
        if !applied.is_empty() && at_least(sshable_pct, config.sshable_min_pct) {
            GateVerdict::Pass
        } else {
            GateVerdict::Fail
        },
        Some(sshable_pct),
        config.sshable_min_pct,
        format!("{sshable} of {} changed hosts answer SSH", applied.len()),
    ));
    // Applied by Puppet: seen, after the change was written, with the
    // change's contents and Puppet having applied them.
    let change_sha = fleetroll_bus::messages::audit::payload_hash(rollout.plan.change.as_bytes());
    let by_puppet = stage
        .iter()
        .filter(|h| {
            let written = evidence.results.get(h.as_str()).map(|r| r.at);
            record(h).is_some_and(|r| {
                let o = &r.observation;
                o.applied == Some(true)
                    && o.override_sha256.as_deref() == Some(change_sha.as_str())
                    && o.probed_at.zip(written).is_some_and(|(seen, at)| seen > at)
            })
        })
        .count();
    let applied_pct = pct(by_puppet, stage_hosts.len());
    gates.push(gate(
        "applied_min_pct",
        if at_least(applied_pct, config.applied_min_pct) {
            GateVerdict::Pass
        } else {
            GateVerdict::Fail
        },
        Some(applied_pct),
        config.applied_min_pct,
        format!(
            "Puppet applied the change on {by_puppet} of the stage's {} hosts",
            stage_hosts.len()
        ),
    ));
    gates
}

/// SUCCEEDED: every target host has the change, and is healthy.
async fn succeed(bus: &Bus, rollout: &Rollout, source: &str) -> Result<(), BusError> {
    // A compare-and-swap: an operator's pause or rollback meanwhile wins.
    let succeeded = rollout_store::update(bus, &rollout.id, |current| {
        if current.state != RolloutState::Running {
            return false;
        }
        current.state = RolloutState::Succeeded;
        current.updated_at = OffsetDateTime::now_utc();
        true
    })
    .await?;
    if succeeded.is_some() {
        info!(rollout = %rollout.id, "succeeded: every target applied and healthy");
        let _ = events::rollout(
            bus,
            source,
            &rollout.id,
            "succeeded",
            EventDetail::RolloutState {
                rollout: rollout.id.clone(),
                state: RolloutState::Succeeded,
                reason: None,
            },
        )
        .await;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(result: RunResult, reason: &str) -> TaskRun {
        TaskRun {
            hostname: "h".into(),
            worker_pool: "releng-hardware/gecko-t-linux-talos-1804".into(),
            task_id: "fN1SbArXTPSVFNUvaOlinQ".into(),
            run_id: 0,
            result,
            reason: Some(reason.into()),
            started: None,
            resolved: OffsetDateTime::now_utc(),
        }
    }

    use fleetroll_bus::messages::host::{HostIntent, Observation};
    use fleetroll_bus::messages::rollout::{GateConfig, RolloutPlan, Stage};
    use fleetroll_bus::messages::workload::Workload;

    const CHANGE: &str = "PUPPET_BRANCH=feature_xyz";

    /// A running rollout whose one stage holds every target, each written
    /// and applied by Puppet, answering SSH, active, and with `jobs`
    /// completed runs since: the evidence every gate passes on (with
    /// workload), which each test then spoils one way.
    struct Case {
        rollout: Rollout,
        results: HashMap<String, HostApply>,
        records: HashMap<String, HostRecord>,
        runs: HashMap<String, Vec<TaskRun>>,
        baseline: Baseline,
        workload: bool,
        now: OffsetDateTime,
    }

    impl Case {
        fn new(hosts: usize, jobs: usize) -> Case {
            let now = OffsetDateTime::now_utc();
            let started = now - time::Duration::minutes(30);
            let written = started + time::Duration::minutes(1);
            let targets: Vec<String> = (1..=hosts).map(|n| format!("h{n}")).collect();
            let rollout = Rollout {
                id: "r".into(),
                plan: RolloutPlan {
                    target: "hostname:h*".into(),
                    canary: hosts,
                    batch_pct: 25,
                    change: CHANGE.into(),
                    gates: GateConfig::default(),
                    skip: Vec::new(),
                },
                state: RolloutState::Running,
                created_by: "alice".into(),
                created_at: started,
                updated_at: started,
                targets: targets.clone(),
                stages: vec![Stage {
                    number: 1,
                    hosts: targets.clone(),
                    status: StageStatus::WaitingForAssessment,
                    started_at: started,
                    started_by: "alice".into(),
                    started_by_command: "c".into(),
                    forced: false,
                    reason: None,
                }],
                pause_reason: None,
                rollback: None,
                finalize: None,
            };
            let sha = fleetroll_bus::messages::audit::payload_hash(CHANGE.as_bytes());
            let mut case = Case {
                rollout,
                results: HashMap::new(),
                records: HashMap::new(),
                runs: HashMap::new(),
                baseline: Baseline {
                    taken_at: started,
                    success_rate: Some(1.0),
                    runs: 100,
                    not_the_host: 0,
                    online_fraction: Some(1.0),
                },
                workload: true,
                now,
            };
            for host in &targets {
                case.results.insert(
                    host.clone(),
                    HostApply {
                        rollout: "r".into(),
                        stage: 1,
                        hostname: host.clone(),
                        outcome: ApplyOutcome::Applied { snapshot: None },
                        at: written,
                        by: "orchestrator-1".into(),
                        attempt: 0,
                    },
                );
                let mut observation = Observation::discovered(host, started);
                observation.sshable = Some(true);
                observation.applied = Some(true);
                observation.override_sha256 = Some(sha.clone());
                observation.probed_at = Some(written + time::Duration::minutes(1));
                case.records.insert(
                    host.clone(),
                    HostRecord {
                        observation,
                        intent: HostIntent::default(),
                        drift: Vec::new(),
                        healthy: Some(true),
                        workload: Some(active(host, now)),
                    },
                );
                case.set_runs(host, jobs, 0);
            }
            case
        }

        /// `host`'s runs since it was written: `completed`, then `failed`.
        fn set_runs(&mut self, host: &str, completed: usize, failed: usize) {
            let at = self.now - time::Duration::minutes(5);
            let mut runs = vec![ran(host, RunResult::Completed, "completed", at); completed];
            runs.extend(vec![ran(host, RunResult::Failed, "failed", at); failed]);
            self.runs.insert(host.to_string(), runs);
        }

        fn gates(&self) -> Vec<GateResult> {
            let evidence = Evidence {
                results: self.results.clone(),
                records: self.records.clone(),
                runs: &self.runs,
                now: self.now,
                window: self.rollout.plan.gates.window(),
            };
            evaluate(
                &self.rollout,
                &self.rollout.stages[0].hosts,
                &evidence,
                &self.baseline,
                self.workload,
            )
        }

        fn verdict(&self, name: &str) -> GateVerdict {
            let gates = self.gates();
            gates
                .iter()
                .find(|g| g.name == name)
                .unwrap_or_else(|| panic!("no gate {name}: {gates:?}"))
                .verdict
        }

        fn config(&mut self) -> &mut GateConfig {
            &mut self.rollout.plan.gates
        }
    }

    fn active(host: &str, now: OffsetDateTime) -> Workload {
        Workload {
            source: "taskcluster".into(),
            expected_pool: None,
            worker_pool: Some("releng-hardware/gecko-t-linux-talos-1804".into()),
            worker_group: None,
            worker_id: host.into(),
            state: Some("standalone".into()),
            capacity: None,
            provider_id: None,
            last_active: Some(now - time::Duration::minutes(2)),
            first_claim: None,
            latest_task: None,
            quarantine: None,
            collected_at: now,
            error: None,
            recorded: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn ran(host: &str, result: RunResult, reason: &str, at: OffsetDateTime) -> TaskRun {
        TaskRun {
            hostname: host.into(),
            resolved: at,
            ..run(result, reason)
        }
    }

    use GateVerdict::{Fail, Inconclusive, Pass};

    /// The default gates, in the order they are shown, all passing on
    /// healthy evidence.
    #[test]
    fn the_default_gates_pass_on_healthy_evidence() {
        let case = Case::new(4, 2);
        let names: Vec<(String, GateVerdict)> = case
            .gates()
            .into_iter()
            .map(|g| (g.name, g.verdict))
            .collect();
        // Every gate name but the window and the blast radius's two.
        let expected = &GateConfig::NAMES[1..8];
        assert_eq!(
            names,
            expected
                .iter()
                .map(|n| (n.to_string(), Pass))
                .collect::<Vec<_>>(),
            "{:?}",
            case.gates()
        );
        let defaults = GateConfig::default();
        assert_eq!(
            (
                defaults.min_jobs_per_host,
                defaults.min_jobs_total,
                defaults.min_hosts_with_jobs_fraction,
                defaults.tc_success_rate_drop,
                defaults.tc_online_drop_pct,
                defaults.sshable_min_pct,
                defaults.applied_min_pct,
            ),
            (1.0, 0, 0.8, 5.0, 10.0, 95.0, 100.0)
        );
    }

    #[test]
    fn min_jobs_per_host_at_under_and_over() {
        let mut case = Case::new(4, 3);
        case.config().min_jobs_per_host = 3.0;
        assert_eq!(case.verdict("min_jobs_per_host"), Pass, "at");
        case.config().min_jobs_per_host = 2.0;
        assert_eq!(case.verdict("min_jobs_per_host"), Pass, "over");
        case.config().min_jobs_per_host = 3.0;
        case.set_runs("h2", 2, 0);
        assert_eq!(case.verdict("min_jobs_per_host"), Inconclusive, "one under");
        // Too little evidence holds the outcome gate back too.
        assert_eq!(case.verdict("tc_success_rate_drop"), Inconclusive);
    }

    #[test]
    fn min_jobs_total_at_under_and_over() {
        let mut case = Case::new(4, 3);
        case.config().min_jobs_total = 12;
        assert_eq!(case.verdict("min_jobs_total"), Pass, "at");
        case.config().min_jobs_total = 11;
        assert_eq!(case.verdict("min_jobs_total"), Pass, "over");
        case.config().min_jobs_total = 13;
        assert_eq!(case.verdict("min_jobs_total"), Inconclusive, "under");
    }

    #[test]
    fn min_hosts_with_jobs_fraction_at_under_and_over() {
        let mut case = Case::new(5, 1);
        case.config().min_jobs_per_host = 0.0;
        case.set_runs("h5", 0, 0);
        // 4 of 5 hosts ran jobs.
        case.config().min_hosts_with_jobs_fraction = 0.8;
        assert_eq!(case.verdict("min_hosts_with_jobs_fraction"), Pass, "at");
        case.config().min_hosts_with_jobs_fraction = 0.79;
        assert_eq!(case.verdict("min_hosts_with_jobs_fraction"), Pass);
        case.config().min_hosts_with_jobs_fraction = 0.81;
        assert_eq!(
            case.verdict("min_hosts_with_jobs_fraction"),
            Inconclusive,
            "under"
        );
    }

    #[test]
    fn tc_success_rate_drop_at_under_and_over() {
        // 100 runs on the stage, against a baseline of 100%.
        let mut case = Case::new(4, 25);
        case.set_runs("h1", 20, 5);
        assert_eq!(case.verdict("tc_success_rate_drop"), Pass, "a 5-point drop");
        case.set_runs("h1", 21, 4);
        assert_eq!(case.verdict("tc_success_rate_drop"), Pass, "4 points");
        case.set_runs("h1", 19, 6);
        assert_eq!(case.verdict("tc_success_rate_drop"), Fail, "6 points");
        // A rate above the baseline is no drop.
        case.baseline.success_rate = Some(0.9);
        case.set_runs("h1", 25, 0);
        assert_eq!(case.verdict("tc_success_rate_drop"), Pass);
        // No runs before the rollout: nothing to compare with.
        case.baseline.success_rate = None;
        assert_eq!(case.verdict("tc_success_rate_drop"), Inconclusive);
    }

    #[test]
    fn tc_online_drop_pct_at_under_and_over() {
        let mut case = Case::new(10, 1);
        let idle = |case: &mut Case, host: &str| {
            let record = case.records.get_mut(host).unwrap();
            record.workload.as_mut().unwrap().last_active = None;
        };
        idle(&mut case, "h1");
        assert_eq!(case.verdict("tc_online_drop_pct"), Pass, "a 10% drop");
        case.config().tc_online_drop_pct = 9.0;
        assert_eq!(case.verdict("tc_online_drop_pct"), Fail, "over");
        case.config().tc_online_drop_pct = 10.0;
        idle(&mut case, "h2");
        assert_eq!(case.verdict("tc_online_drop_pct"), Fail, "20%");
        // A quarantined worker is not active either.
        let mut quarantined = Case::new(10, 1);
        let workload = quarantined
            .records
            .get_mut("h3")
            .unwrap()
            .workload
            .as_mut()
            .unwrap();
        workload.quarantine = Some(fleetroll_bus::messages::workload::Quarantine {
            until: quarantined.now + time::Duration::hours(1),
            by: None,
            at: None,
            reason: None,
        });
        quarantined.config().tc_online_drop_pct = 9.0;
        assert_eq!(quarantined.verdict("tc_online_drop_pct"), Fail);
    }

    #[test]
    fn sshable_min_pct_at_under_and_over() {
        let mut case = Case::new(20, 1);
        case.records.get_mut("h7").unwrap().observation.sshable = Some(false);
        assert_eq!(case.verdict("sshable_min_pct"), Pass, "95% of hosts");
        case.config().sshable_min_pct = 95.1;
        assert_eq!(case.verdict("sshable_min_pct"), Fail, "under");
        case.config().sshable_min_pct = 95.0;
        case.records.get_mut("h8").unwrap().observation.sshable = None;
        assert_eq!(case.verdict("sshable_min_pct"), Fail, "90%, one unknown");
    }

    #[test]
    fn applied_min_pct_needs_puppet_to_have_applied_the_change_after_it_was_written() {
        let mut case = Case::new(4, 1);
        assert_eq!(case.verdict("applied_min_pct"), Pass);
        // Seen before the change was written: not evidence of it.
        let written = case.results["h1"].at;
        case.records.get_mut("h1").unwrap().observation.probed_at = Some(written);
        assert_eq!(case.verdict("applied_min_pct"), Fail, "3 of 4");
        case.config().applied_min_pct = 75.0;
        assert_eq!(case.verdict("applied_min_pct"), Pass, "at 75%");
        case.config().applied_min_pct = 76.0;
        assert_eq!(case.verdict("applied_min_pct"), Fail);
        // Other contents, or Puppet not applied, are not the change either.
        let mut other = Case::new(2, 1);
        other
            .records
            .get_mut("h1")
            .unwrap()
            .observation
            .override_sha256 = Some("0".repeat(64));
        other.records.get_mut("h2").unwrap().observation.applied = Some(false);
        assert_eq!(other.gates().last().unwrap().value, Some(0.0));
    }

    /// Without a workload source the evidence gates cannot pass: they stay
    /// inconclusive, so only a forced advance moves on.
    #[test]
    fn without_a_workload_source_the_evidence_gates_are_inconclusive() {
        let mut case = Case::new(4, 5);
        case.workload = false;
        for gate in case.gates().iter().take(5) {
            assert_eq!(gate.verdict, Inconclusive, "{gate:?}");
        }
        assert_eq!(case.gates()[0].detail, "no workload source configured");
    }

    /// No results at all: nothing passes.
    #[test]
    fn empty_evidence_passes_no_gate() {
        let mut case = Case::new(4, 0);
        case.results.clear();
        case.runs.clear();
        let gates = case.gates();
        assert!(gates.iter().all(|g| g.verdict != Pass), "{gates:?}");
        assert_eq!(gates[5].value, Some(0.0), "no host to answer SSH");
    }

    /// A threshold or baseline that is not a number never lets a gate pass.
    #[test]
    fn nan_passes_no_gate() {
        let mut case = Case::new(4, 2);
        {
            let config = case.config();
            config.min_jobs_per_host = f64::NAN;
            config.min_hosts_with_jobs_fraction = f64::NAN;
            config.tc_success_rate_drop = f64::NAN;
            config.tc_online_drop_pct = f64::NAN;
            config.sshable_min_pct = f64::NAN;
            config.applied_min_pct = f64::NAN;
        }
        let gates = case.gates();
        let passed: Vec<_> = gates
            .iter()
            .filter(|g| g.verdict == Pass && g.name != "min_jobs_total")
            .collect();
        assert!(passed.is_empty(), "{passed:?}");
        let mut case = Case::new(4, 2);
        case.baseline.success_rate = Some(f64::NAN);
        case.baseline.online_fraction = Some(f64::NAN);
        assert_ne!(case.verdict("tc_success_rate_drop"), Pass);
        assert_ne!(case.verdict("tc_online_drop_pct"), Pass);
    }

    fn blast(case: &Case) -> Option<Blast> {
        let evidence = Evidence {
            results: case.results.clone(),
            records: case.records.clone(),
            runs: &case.runs,
            now: case.now,
            window: case.rollout.plan.gates.window(),
        };
        assess_blast(&case.rollout, &evidence)
    }

    fn unreachable(case: &mut Case, host: &str) {
        case.records.get_mut(host).unwrap().observation.sshable = Some(false);
    }

    /// The blast radius (defaults: from 3 changed hosts, more than 25%
    /// failing) pauses only past its fraction, and never before enough
    /// hosts are changed.
    #[test]
    fn the_blast_radius_at_under_and_over() {
        let mut case = Case::new(4, 2);
        assert!(blast(&case).is_none(), "healthy");
        unreachable(&mut case, "h1");
        assert!(blast(&case).is_none(), "1 of 4 is 25%: at the limit");
        unreachable(&mut case, "h2");
        let past = blast(&case).expect("2 of 4 is over 25%");
        assert_eq!(past.changed, 4);
        assert_eq!(
            past.failing,
            [
                ("h1".to_string(), "unreachable".to_string()),
                ("h2".to_string(), "unreachable".to_string())
            ]
        );
        assert!(
            past.reason
                .starts_with("blast radius: 2 of 4 changed hosts failing (more than 25%)"),
            "{}",
            past.reason
        );
        assert_eq!(past.groups[0], ("error: unreachable".to_string(), 2));
        // Too few hosts changed to judge: every one failing pauses nothing.
        let mut few = Case::new(2, 2);
        unreachable(&mut few, "h1");
        unreachable(&mut few, "h2");
        assert!(blast(&few).is_none(), "2 changed, 3 needed");
        few.config().blast_min_applied = 2;
        assert!(blast(&few).is_some());
        // Disabled hosts were not changed: they count for neither side.
        let mut skipped = Case::new(4, 2);
        unreachable(&mut skipped, "h1");
        skipped.results.get_mut("h4").unwrap().outcome = ApplyOutcome::SkippedDisabled;
        let over = blast(&skipped).expect("1 of 3 is over 25%");
        assert_eq!(over.changed, 3);
        // A fraction that is not a number pauses (fail closed).
        let mut nan = Case::new(4, 2);
        unreachable(&mut nan, "h1");
        nan.config().blast_max_failing_fraction = f64::NAN;
        assert!(blast(&nan).is_some());
    }

    /// What makes a changed host count as failing.
    #[test]
    fn a_host_fails_for_the_blast_radius_by_write_ssh_puppet_or_jobs() {
        use fleetroll_bus::messages::host::{PuppetSource, PuppetState};
        let mut case = Case::new(6, 2);
        case.config().blast_max_failing_fraction = 0.0;
        case.results.get_mut("h1").unwrap().outcome = ApplyOutcome::Failed {
            error: "sudo: a password is required".into(),
        };
        unreachable(&mut case, "h2");
        let written = case.results["h3"].at;
        let puppet = |success: bool, ts: OffsetDateTime| PuppetState {
            ts: Some(ts),
            success: Some(success),
            ..PuppetState::unknown(PuppetSource::Metadata)
        };
        let minute = time::Duration::minutes(1);
        case.records.get_mut("h3").unwrap().observation.puppet =
            Some(puppet(false, written + minute));
        // A Puppet failure from before the change is not the change's.
        case.records.get_mut("h4").unwrap().observation.puppet =
            Some(puppet(false, written - minute));
        case.set_runs("h5", 1, 2);
        // One failed run of one is not "most jobs" yet.
        case.set_runs("h6", 0, 1);
        let failing = blast(&case).expect("failing hosts").failing;
        assert_eq!(
            failing,
            [
                ("h1", "the change could not be written"),
                ("h2", "unreachable"),
                ("h3", "Puppet failed"),
                ("h5", "most jobs fail"),
            ]
            .map(|(h, w)| (h.to_string(), w.to_string()))
        );
    }

    #[test]
    fn runs_that_are_not_the_hosts_doing_are_left_out_of_the_rate() {
        use RunResult::*;
        let mut runs = vec![run(Completed, "completed"); 8];
        runs.push(run(Failed, "failed"));
        runs.push(run(Exception, "worker-shutdown"));
        let before = Tally::of(runs.iter());
        runs.extend([
            run(Exception, "canceled"),
            run(Exception, "canceled"),
            run(Exception, "superseded"),
            run(Exception, "deadline-exceeded"),
        ]);
        let tally = Tally::of(runs.iter());
        assert_eq!(tally.rate(), before.rate());
        assert_eq!(tally.rate(), Some(0.8));
        assert_eq!((tally.counted(), tally.left_out()), (10, 4));
        assert_eq!(
            tally.breakdown(),
            "8 completed, 1 failed, 1 host exception; 4 not the host's doing, left out (2 canceled, 1 deadline-exceeded, 1 superseded)"
        );
        let only_canceled = Tally::of([run(Exception, "canceled")].iter());
        assert_eq!(only_canceled.rate(), None, "nothing to judge");
    }
}
