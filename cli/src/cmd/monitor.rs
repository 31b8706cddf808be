//! `fleetroll monitor`: a live host table in the terminal (SPEC 8).
//!
//! What is shown is decided by pure functions: [`host_row`] turns a record
//! into cells, [`sort_rows`] orders them, and [`App`] takes keys and fetch
//! results. [`run`] only wires the terminal, the keyboard and the
//! `hosts.list` query to them, so all of it but the wiring is tested
//! without a terminal.

use std::cmp::Ordering;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering as AtomicOrdering};
use std::time::Duration;

use fleetroll_bus::connect::Bus;
use fleetroll_bus::messages::host::{DriftType, HostList, HostQuery, HostRecord};
use fleetroll_bus::query::{self, QueryFailure};
use fleetroll_bus::subjects::queries;
use ratatui::Frame;
use ratatui::crossterm::event::{self, Event, KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Clear, Paragraph, Row, Table, TableState, Wrap};
use time::OffsetDateTime;
use tokio::sync::mpsc;

use crate::context::Context;
use crate::exit::{self, fail};

/// More rows than anyone reads in a terminal; the status line says when
/// the table holds only the first ones (by hostname, the query's order).
pub const ROW_CAP: usize = 5000;

/// One `hosts.list` page may wait this long: a refresh is due every few
/// seconds, so a mesh that is slower than this counts as not answering.
const QUERY_WAIT: Duration = Duration::from_secs(10);

/// Ages are redrawn this often between fetches.
const TICK: Duration = Duration::from_secs(1);

/// Fast probes come every 5 minutes by default, so data older than two of
/// them means the fast refresh is not reaching the host.
const FRESH: i64 = 10 * 60;

/// Full probes come hourly by default: past two of them, even the full
/// refresh has missed the host.
const STALE: i64 = 2 * 3600;

/// What the overrides-only toggle ANDs onto the filter.
pub const OVERRIDES_ONLY: &str = "override_present:true";

/// The table's columns, in display order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Column {
    Host,
    Os,
    Role,
    Override,
    Uptime,
    Puppet,
    Sha,
    Applied,
    Workload,
    Quarantine,
    Healthy,
    Age,
}

impl Column {
    pub const ALL: [Column; 12] = [
        Column::Host,
        Column::Os,
        Column::Role,
        Column::Override,
        Column::Uptime,
        Column::Puppet,
        Column::Sha,
        Column::Applied,
        Column::Workload,
        Column::Quarantine,
        Column::Healthy,
        Column::Age,
    ];

    pub fn title(self) -> &'static str {
        match self {
            Column::Host => "HOST",
            Column::Os => "OS",
            Column::Role => "ROLE",
            Column::Override => "OVERRIDE",
            Column::Uptime => "UPTIME",
            Column::Puppet => "PUPPET RUN",
            Column::Sha => "GIT SHA",
            Column::Applied => "APPLIED",
            Column::Workload => "WORKLOAD",
            Column::Quarantine => "TC_QUAR",
            Column::Healthy => "HEALTHY",
            Column::Age => "DATA AGE",
        }
    }

    /// Widest a column grows, however long its values.
    fn max_width(self) -> usize {
        match self {
            Column::Host => 40,
            Column::Os => 22,
            Column::Role => 28,
            Column::Override => 30,
            Column::Workload => 20,
            _ => 12,
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    /// The next column to sort by (wrapping).
    pub fn next(self) -> Column {
        Column::ALL[(self.index() + 1) % Column::ALL.len()]
    }
}

/// How a cell is coloured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tone {
    Plain,
    /// Healthy, applied, fresh.
    Good,
    /// Not applied, stale data, role drift.
    Warn,
    /// Unhealthy, unreachable, a failed Puppet run, old data.
    Bad,
    /// Unknown or absent.
    Dim,
    /// Worth a look without being wrong: an override.
    Note,
}

impl Tone {
    fn style(self) -> Style {
        match self {
            Tone::Plain => Style::default(),
            Tone::Good => Style::default().fg(Color::Green),
            Tone::Warn => Style::default().fg(Color::Yellow),
            Tone::Bad => Style::default().fg(Color::Red).add_modifier(Modifier::BOLD),
            Tone::Dim => Style::default()
                .fg(Color::DarkGray)
                .add_modifier(Modifier::DIM),
            Tone::Note => Style::default().fg(Color::Cyan),
        }
    }
}

/// What a column sorts on: numbers as numbers, ages in seconds.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Key {
    Num(i64),
    Text(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    pub text: String,
    pub tone: Tone,
    /// `None` for an unknown value, which sorts last in either direction.
    pub key: Option<Key>,
}

impl Cell {
    /// A cell showing `text`, which may have come from the host: its
    /// control characters are shown, not obeyed.
    fn new(text: impl Into<String>, tone: Tone, key: Option<Key>) -> Cell {
        let text = text.into();
        Cell {
            text: crate::term::escape(&text).into_owned(),
            tone,
            key,
        }
    }

    fn unknown(text: &str) -> Cell {
        Cell::new(text, Tone::Dim, None)
    }
}

/// One host as the table shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRow {
    pub hostname: String,
    pub cells: [Cell; 12],
}

impl HostRow {
    pub fn cell(&self, column: Column) -> &Cell {
        &self.cells[column.index()]
    }
}

/// `secs` as one unit, the way people say an age: 45s, 12m, 5h, 3d.
pub fn short_age(secs: i64) -> String {
    // A clock a little behind the prober's makes tiny negative ages.
    let secs = secs.max(0);
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..172_800 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// An uptime in its two largest units: 3d 4h, 5h 12m, 7m.
pub fn uptime(secs: u64) -> String {
    let (d, h, m) = (secs / 86_400, secs % 86_400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d}d {h}h")
    } else if h > 0 {
        format!("{h}h {m}m")
    } else {
        format!("{m}m")
    }
}

/// The first `n` characters of a sha (git's habit of short ones).
fn short_sha(sha: &str, n: usize) -> String {
    sha.chars().take(n).collect()
}

/// `PUPPET_BRANCH` of an override file (shell `KEY=value` lines, maybe
/// quoted, maybe `export`ed).
pub fn override_branch(contents: &str) -> Option<String> {
    contents.lines().find_map(|line| {
        let line = line.trim();
        let line = line.strip_prefix("export ").unwrap_or(line);
        let (key, value) = line.split_once('=')?;
        if key.trim() != "PUPPET_BRANCH" {
            return None;
        }
        let value = value.trim();
        let unquoted = ['"', '\'']
            .iter()
            .find_map(|q| value.strip_prefix(*q)?.strip_suffix(*q))
            .unwrap_or(value);
        (!unquoted.is_empty()).then(|| unquoted.to_string())
    })
}

/// The OS as people name it: the distribution (`Debian 12 (bookworm)`),
/// `macOS 14.1`, else the kernel's name (`uname -s`).
pub fn os_label(os: Option<&str>, version: Option<&str>) -> Option<String> {
    let version = version.map(str::trim).filter(|v| !v.is_empty());
    match (os, version) {
        (Some("Darwin"), Some(v)) => Some(format!("macOS {v}")),
        (_, Some(v)) => Some(v.replace(" GNU/Linux", "")),
        (Some(os), None) => Some(os.to_string()),
        (None, None) => None,
    }
}

fn age_secs(at: OffsetDateTime, now: OffsetDateTime) -> i64 {
    (now - at).whole_seconds()
}

fn yes_no(value: Option<bool>, no: Tone) -> Cell {
    match value {
        Some(true) => Cell::new("yes", Tone::Good, Some(Key::Num(1))),
        Some(false) => Cell::new("no", no, Some(Key::Num(0))),
        None => Cell::unknown("-"),
    }
}

/// One host's row at `now`; `active_window` is how recently a host must
/// have worked to count as active (`[workload] active_window`).
pub fn host_row(record: &HostRecord, now: OffsetDateTime, active_window: Duration) -> HostRow {
    let h = &record.observation;
    let puppet = h.puppet.as_ref();
    let host = Cell::new(
        h.hostname.clone(),
        if record.intent.disabled {
            Tone::Dim
        } else if h.sshable == Some(false) {
            Tone::Bad
        } else {
            Tone::Plain
        },
        Some(Key::Text(h.hostname.clone())),
    );
    let os = match os_label(h.os.as_deref(), h.os_version.as_deref()) {
        Some(label) => Cell::new(label.clone(), Tone::Plain, Some(Key::Text(label))),
        None => Cell::unknown("-"),
    };
    let role = match &h.role {
        Some(role) => Cell::new(
            role.clone(),
            if record.drift.contains(&DriftType::Role) {
                Tone::Warn
            } else {
                Tone::Plain
            },
            Some(Key::Text(role.clone())),
        ),
        None => Cell::unknown("-"),
    };
    let override_cell = match h.override_present {
        Some(true) => {
            let branch = h.override_contents.as_deref().and_then(override_branch);
            let sha = h.override_sha256.as_deref().map(|s| short_sha(s, 8));
            let text = match (branch, sha) {
                (Some(b), Some(s)) => format!("{b}@{s}"),
                (Some(b), None) => b,
                (None, Some(s)) => format!("(no branch)@{s}"),
                (None, None) => "present".to_string(),
            };
            Cell::new(text.clone(), Tone::Note, Some(Key::Text(text)))
        }
        Some(false) => Cell::unknown("-"),
        None => Cell::unknown("?"),
    };
    let uptime_cell = match h.uptime_s {
        Some(s) => Cell::new(uptime(s), Tone::Plain, Some(Key::Num(s as i64))),
        None => Cell::unknown("-"),
    };
    let puppet_run = match puppet.and_then(|p| p.ts) {
        Some(ts) => {
            let age = age_secs(ts, now);
            let failed = puppet.and_then(|p| p.success) == Some(false);
            Cell::new(
                format!(
                    "{} {}",
                    short_age(age),
                    if failed { "FAILED" } else { "ago" }
                ),
                if failed { Tone::Bad } else { Tone::Plain },
                Some(Key::Num(age)),
            )
        }
        None => Cell::unknown("-"),
    };
    let sha = match puppet.and_then(|p| p.git_sha.as_deref()) {
        Some(s) => Cell::new(short_sha(s, 7), Tone::Plain, Some(Key::Text(s.to_string()))),
        None => Cell::unknown("-"),
    };
    let workload = workload_cell(record, now, active_window);
    let quarantine = quarantine_cell(record, now);
    let age = match h.probed_at {
        Some(at) => {
            let age = age_secs(at, now);
            let tone = if age <= FRESH {
                Tone::Good
            } else if age <= STALE {
                Tone::Warn
            } else {
                Tone::Bad
            };
            Cell::new(short_age(age), tone, Some(Key::Num(age)))
        }
        None => Cell::unknown("never"),
    };
    HostRow {
        hostname: h.hostname.clone(),
        cells: [
            host,
            os,
            role,
            override_cell,
            uptime_cell,
            puppet_run,
            sha,
            yes_no(h.applied, Tone::Warn),
            workload,
            quarantine,
            yes_no(record.healthy, Tone::Bad),
            age,
        ],
    }
}

/// How long the worker's quarantine still lasts.
fn quarantine_cell(record: &HostRecord, now: OffsetDateTime) -> Cell {
    let Some(w) = record.workload.as_ref().filter(|w| w.worker_pool.is_some()) else {
        return Cell::unknown("-");
    };
    match w.quarantine.as_ref().filter(|q| q.until > now) {
        Some(q) => {
            let left = age_secs(now, q.until);
            Cell::new(
                format!("{} left", short_age(left)),
                Tone::Bad,
                Some(Key::Num(left)),
            )
        }
        None => Cell::new("no", Tone::Plain, Some(Key::Num(0))),
    }
}

/// What the workload source last said: the worker's state and when it
/// last worked; green within the active window.
fn workload_cell(record: &HostRecord, now: OffsetDateTime, active_window: Duration) -> Cell {
    let Some(w) = &record.workload else {
        return Cell::unknown("-");
    };
    if w.worker_pool.is_none() {
        return Cell::new("not in source", Tone::Warn, None);
    }
    let state = w.state.as_deref().unwrap_or("?");
    match w.last_active {
        Some(at) => {
            let age = age_secs(at, now);
            let active = age <= i64::try_from(active_window.as_secs()).unwrap_or(i64::MAX);
            Cell::new(
                format!("{state} {}", short_age(age)),
                if active { Tone::Good } else { Tone::Warn },
                Some(Key::Num(age)),
            )
        }
        None => Cell::new(format!("{state}, idle"), Tone::Warn, None),
    }
}

/// Orders rows by `column` (unknown values last, either way), then by
/// hostname.
pub fn sort_rows(rows: &mut [HostRow], column: Column, reverse: bool) {
    rows.sort_by(|a, b| {
        let order = match (&a.cell(column).key, &b.cell(column).key) {
            (Some(x), Some(y)) if reverse => y.cmp(x),
            (Some(x), Some(y)) => x.cmp(y),
            (Some(_), None) => Ordering::Less,
            (None, Some(_)) => Ordering::Greater,
            (None, None) => Ordering::Equal,
        };
        order.then_with(|| a.hostname.cmp(&b.hostname))
    });
}

/// The query sent for a filter, with the overrides-only toggle.
pub fn effective_query(filter: &str, overrides_only: bool) -> String {
    match (filter.trim(), overrides_only) {
        (f, false) => f.to_string(),
        ("", true) => OVERRIDES_ONLY.to_string(),
        (f, true) => format!("({f}) AND {OVERRIDES_ONLY}"),
    }
}

/// What the screen is showing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Table,
    /// The filter being typed.
    Filter(String),
    Help,
}

/// What the event loop should do after a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Nothing,
    /// Fetch now (what to show changed, or asked for).
    Fetch,
    Quit,
}

/// One fetch: the state of the filters when it was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub generation: u64,
    pub filter: String,
    pub overrides_only: bool,
}

impl Request {
    pub fn query(&self) -> String {
        effective_query(&self.filter, self.overrides_only)
    }
}

/// The hosts one fetch got.
#[derive(Debug, Clone)]
pub struct Page {
    pub hosts: Vec<HostRecord>,
    /// More hosts matched than [`ROW_CAP`].
    pub capped: bool,
}

/// Why a fetch got no hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server refused the query; its message names the position.
    BadQuery(String),
    /// Anything else: the mesh unreachable, no worker answering, a token.
    Other(String),
}

/// The monitor's state, apart from the terminal.
#[derive(Debug)]
pub struct App {
    pub records: Vec<HostRecord>,
    pub capped: bool,
    /// The filter the rows were fetched with (empty: every host).
    pub filter: String,
    /// A filter typed but not yet accepted by the server.
    pub proposed: Option<String>,
    pub overrides_only: bool,
    pub sort: Column,
    pub reverse: bool,
    pub mode: Mode,
    pub fetched_at: Option<OffsetDateTime>,
    /// Why the last fetch failed, while it is the last.
    pub error: Option<String>,
    /// A typed filter the server refused.
    pub notice: Option<String>,
    /// Bumped whenever what to fetch changes: older answers are dropped.
    pub generation: u64,
    /// The selected row (in display order).
    pub selected: usize,
    /// Rows that fit the table, for page up and down.
    pub page_rows: usize,
    /// The first row shown.
    pub offset: usize,
}

impl Default for App {
    fn default() -> Self {
        App::new()
    }
}

impl App {
    pub fn new() -> App {
        App {
            records: Vec::new(),
            capped: false,
            filter: String::new(),
            proposed: None,
            overrides_only: false,
            sort: Column::Host,
            reverse: false,
            mode: Mode::Table,
            fetched_at: None,
            error: None,
            notice: None,
            generation: 0,
            selected: 0,
            page_rows: 10,
            offset: 0,
        }
    }

    /// What to fetch now.
    pub fn request(&self) -> Request {
        Request {
            generation: self.generation,
            filter: self.proposed.clone().unwrap_or_else(|| self.filter.clone()),
            overrides_only: self.overrides_only,
        }
    }

    /// The rows to show at `now`, sorted.
    pub fn rows(&self, now: OffsetDateTime, active_window: Duration) -> Vec<HostRow> {
        let mut rows: Vec<HostRow> = self
            .records
            .iter()
            .map(|r| host_row(r, now, active_window))
            .collect();
        sort_rows(&mut rows, self.sort, self.reverse);
        rows
    }

    pub fn on_key(&mut self, key: KeyEvent) -> Action {
        if key.kind != KeyEventKind::Press {
            return Action::Nothing;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        // Raw mode turns Ctrl-C into a key; it quits from anywhere.
        if ctrl && key.code == KeyCode::Char('c') {
            return Action::Quit;
        }
        match &mut self.mode {
            Mode::Help => {
                if key.code == KeyCode::Char('q') {
                    return Action::Quit;
                }
                self.mode = Mode::Table;
                Action::Nothing
            }
            Mode::Filter(input) => match key.code {
                KeyCode::Enter => {
                    let text = input.trim().to_string();
                    self.mode = Mode::Table;
                    if self.proposed.is_none() && text == self.filter {
                        return Action::Nothing;
                    }
                    self.proposed = Some(text);
                    self.notice = None;
                    self.generation += 1;
                    Action::Fetch
                }
                KeyCode::Esc => {
                    self.mode = Mode::Table;
                    Action::Nothing
                }
                KeyCode::Backspace => {
                    input.pop();
                    Action::Nothing
                }
                KeyCode::Char('u') if ctrl => {
                    input.clear();
                    Action::Nothing
                }
                KeyCode::Char(c) if !ctrl => {
                    input.push(c);
                    Action::Nothing
                }
                _ => Action::Nothing,
            },
            Mode::Table => self.on_table_key(key.code),
        }
    }

    fn on_table_key(&mut self, code: KeyCode) -> Action {
        let last = self.records.len().saturating_sub(1);
        match code {
            KeyCode::Char('q') => return Action::Quit,
            KeyCode::Char('/') => {
                let current = self.proposed.as_ref().unwrap_or(&self.filter);
                self.mode = Mode::Filter(current.clone());
            }
            KeyCode::Char('o') => {
                self.overrides_only = !self.overrides_only;
                self.generation += 1;
                return Action::Fetch;
            }
            KeyCode::Char('s') => self.sort = self.sort.next(),
            KeyCode::Char('r') => self.reverse = !self.reverse,
            KeyCode::Char('u') => return Action::Fetch,
            KeyCode::Char('?') => self.mode = Mode::Help,
            KeyCode::Down | KeyCode::Char('j') => self.selected = (self.selected + 1).min(last),
            KeyCode::Up | KeyCode::Char('k') => self.selected = self.selected.saturating_sub(1),
            KeyCode::PageDown => self.selected = (self.selected + self.page_rows).min(last),
            KeyCode::PageUp => self.selected = self.selected.saturating_sub(self.page_rows),
            KeyCode::Home | KeyCode::Char('g') => self.selected = 0,
            KeyCode::End | KeyCode::Char('G') => self.selected = last,
            _ => {}
        }
        Action::Nothing
    }

    /// Takes a fetch's outcome; true when it answered an older request, so
    /// the caller should fetch again.
    pub fn on_fetched(
        &mut self,
        request: &Request,
        outcome: Result<Page, Failure>,
        at: OffsetDateTime,
    ) -> bool {
        if request.generation != self.generation {
            return true;
        }
        match outcome {
            Ok(page) => {
                self.records = page.hosts;
                self.capped = page.capped;
                self.fetched_at = Some(at);
                self.error = None;
                self.selected = self.selected.min(self.records.len().saturating_sub(1));
                if self.proposed.as_ref() == Some(&request.filter) {
                    self.filter = request.filter.clone();
                    self.proposed = None;
                }
                false
            }
            Err(Failure::BadQuery(message)) => match self.proposed.take() {
                Some(refused) => {
                    let kept = if self.filter.is_empty() {
                        "no filter".to_string()
                    } else {
                        format!("`{}`", self.filter)
                    };
                    self.notice = Some(format!(
                        "filter `{refused}` refused, keeping {kept}: {message}"
                    ));
                    self.generation += 1;
                    true
                }
                None => {
                    self.error = Some(message);
                    false
                }
            },
            Err(Failure::Other(message)) => {
                // A proposed filter stays proposed: the next refresh tries it again.
                self.error = Some(message);
                false
            }
        }
    }
}

/// `HH:MM:SSZ`.
fn clock(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    format!("{:02}:{:02}:{:02}Z", t.hour(), t.minute(), t.second())
}

fn title_line(app: &App) -> Line<'static> {
    let mut spans = vec![Span::styled(
        " fleetroll monitor ",
        Style::default().add_modifier(Modifier::REVERSED | Modifier::BOLD),
    )];
    let count = if app.capped {
        format!("  first {} host(s) by name", app.records.len())
    } else {
        format!("  {} host(s)", app.records.len())
    };
    spans.push(Span::raw(count));
    spans.push(Span::raw("  filter: "));
    spans.push(if app.filter.is_empty() {
        Span::styled("none", Tone::Dim.style())
    } else {
        Span::styled(app.filter.clone(), Tone::Note.style())
    });
    if let Some(p) = &app.proposed {
        spans.push(Span::styled(format!(" (trying `{p}`)"), Tone::Warn.style()));
    }
    if app.overrides_only {
        spans.push(Span::styled("  overrides only", Tone::Note.style()));
    }
    spans.push(Span::raw(format!(
        "  sort: {} {}",
        app.sort.title().to_lowercase(),
        if app.reverse { "desc" } else { "asc" }
    )));
    Line::from(spans)
}

fn status_line(app: &App, now: OffsetDateTime) -> Line<'static> {
    let fetched = app.fetched_at.map(|at| {
        format!(
            "fetched {} ({} ago)",
            clock(at),
            short_age(age_secs(at, now))
        )
    });
    let mut spans = Vec::new();
    match (&app.error, &fetched) {
        (Some(e), Some(f)) => {
            spans.push(Span::styled(
                format!("fetch failed: {e}"),
                Tone::Bad.style(),
            ));
            spans.push(Span::raw(format!(" | showing rows {f}")));
        }
        (Some(e), None) => spans.push(Span::styled(
            format!("fetch failed: {e}"),
            Tone::Bad.style(),
        )),
        (None, Some(f)) => spans.push(Span::raw(f.clone())),
        (None, None) => spans.push(Span::styled("fetching hosts...", Tone::Dim.style())),
    }
    if let Some(n) = &app.notice {
        spans.push(Span::raw(" | "));
        spans.push(Span::styled(n.clone(), Tone::Warn.style()));
    }
    Line::from(spans)
}

const HELP: &[(&str, &str)] = &[
    (
        "/",
        "filter in the query language; Enter applies, Esc cancels, Ctrl-U clears",
    ),
    (
        "o",
        "overrides only (ANDs override_present:true onto the filter)",
    ),
    ("s / r", "sort by the next column / reverse the order"),
    ("j k arrows", "move; PgUp PgDn Home End"),
    ("u", "fetch now (otherwise every --interval)"),
    ("?", "this help; any key closes it"),
    ("q, Ctrl-C", "quit"),
];

fn help_text() -> Vec<Line<'static>> {
    let mut lines = vec![Line::styled(
        "Keys",
        Style::default().add_modifier(Modifier::BOLD),
    )];
    for (key, what) in HELP {
        lines.push(Line::from(vec![
            Span::styled(format!("  {key:<12}"), Tone::Note.style()),
            Span::raw(*what),
        ]));
    }
    lines.push(Line::raw(""));
    lines.push(Line::styled(
        "Colours",
        Style::default().add_modifier(Modifier::BOLD),
    ));
    lines.push(Line::from(vec![
        Span::raw("  verdicts: "),
        Span::styled("healthy / applied", Tone::Good.style()),
        Span::raw("  "),
        Span::styled("not applied", Tone::Warn.style()),
        Span::raw("  "),
        Span::styled("unhealthy, unreachable, Puppet failed", Tone::Bad.style()),
        Span::raw("  "),
        Span::styled("unknown", Tone::Dim.style()),
    ]));
    lines.push(Line::from(vec![
        Span::raw("  data age: "),
        Span::styled(format!("fresh <= {}", short_age(FRESH)), Tone::Good.style()),
        Span::raw("  "),
        Span::styled(format!("stale <= {}", short_age(STALE)), Tone::Warn.style()),
        Span::raw("  "),
        Span::styled("old", Tone::Bad.style()),
        Span::raw("  (since the last probe)"),
    ]));
    lines.push(Line::from(vec![
        Span::raw("  override: "),
        Span::styled("PUPPET_BRANCH@sha256", Tone::Note.style()),
        Span::raw("   workload: state and last activity, "),
        Span::styled("within the active window", Tone::Good.style()),
    ]));
    lines
}

/// Draws the whole screen.
pub fn draw(frame: &mut Frame, app: &mut App, now: OffsetDateTime, active_window: Duration) {
    let [top, body, status, bottom] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Min(3),
        Constraint::Length(1),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(Paragraph::new(title_line(app)), top);

    let rows = app.rows(now, active_window);
    app.page_rows = usize::from(body.height.saturating_sub(2)).max(1);
    app.selected = app.selected.min(rows.len().saturating_sub(1));
    let widths: Vec<Constraint> = Column::ALL
        .iter()
        .map(|&c| {
            let widest = rows
                .iter()
                .map(|r| r.cell(c).text.chars().count())
                .max()
                .unwrap_or(0);
            let title = c.title().len() + if c == app.sort { 2 } else { 0 };
            Constraint::Length(widest.max(title).min(c.max_width()) as u16)
        })
        .collect();
    let header = Row::new(Column::ALL.iter().map(|&c| {
        let mut title = c.title().to_string();
        if c == app.sort {
            title.push_str(if app.reverse { " v" } else { " ^" });
        }
        title
    }))
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
    let table_rows =
        rows.iter().map(|r| {
            Row::new(r.cells.iter().map(|c| {
                ratatui::widgets::Cell::from(Span::styled(c.text.clone(), c.tone.style()))
            }))
        });
    let table = Table::new(table_rows, widths)
        .header(header)
        .column_spacing(2)
        .row_highlight_style(Style::default().add_modifier(Modifier::REVERSED));
    // The scroll offset is kept between frames so the view only moves
    // when the selection leaves it.
    let mut state = TableState::default()
        .with_offset(app.offset)
        .with_selected((!rows.is_empty()).then_some(app.selected));
    frame.render_stateful_widget(table, body, &mut state);
    app.offset = state.offset();
    if rows.is_empty() {
        // Never a blank screen: say why there is nothing to show.
        let why = match (&app.error, app.fetched_at) {
            (Some(e), None) => Line::styled(format!("no data yet: {e}"), Tone::Bad.style()),
            (_, None) => Line::styled("fetching hosts...", Tone::Dim.style()),
            (_, Some(_)) => Line::styled(
                format!(
                    "no host matches `{}`",
                    effective_query(&app.filter, app.overrides_only)
                ),
                Tone::Dim.style(),
            ),
        };
        let area = Rect {
            y: body.y + 1,
            height: body.height.saturating_sub(1),
            ..body
        };
        frame.render_widget(Paragraph::new(why).wrap(Wrap { trim: false }), area);
    }

    frame.render_widget(Paragraph::new(status_line(app, now)), status);
    match &app.mode {
        Mode::Filter(input) => {
            let prompt = format!("/{input}");
            let x = bottom.x + (prompt.chars().count() as u16).min(bottom.width.saturating_sub(1));
            frame.render_widget(Paragraph::new(prompt), bottom);
            frame.set_cursor_position((x, bottom.y));
        }
        _ => frame.render_widget(
            Paragraph::new(Line::styled(
                "/ filter  o overrides only  s sort  r reverse  u refresh  ? help  q quit",
                Tone::Dim.style(),
            )),
            bottom,
        ),
    }
    if app.mode == Mode::Help {
        let text = help_text();
        let area = frame.area().centered(
            Constraint::Length(100.min(frame.area().width)),
            Constraint::Length((text.len() as u16 + 2).min(frame.area().height)),
        );
        frame.render_widget(Clear, area);
        frame.render_widget(
            Paragraph::new(text)
                .wrap(Wrap { trim: false })
                .block(Block::bordered().title(" fleetroll monitor: help ")),
            area,
        );
    }
}

/// Every host matching the request, up to [`ROW_CAP`], page after page.
/// Drops the connection when the bus failed, so the next fetch reconnects.
async fn fetch(ctx: &Context, bus: &mut Option<Bus>, request: &Request) -> Result<Page, Failure> {
    let token = ctx.token().map_err(|e| Failure::Other(format!("{e:#}")))?;
    let connected = match bus {
        Some(b) => b.clone(),
        None => {
            let b = ctx
                .connect()
                .await
                .map_err(|e| Failure::Other(format!("{e:#}")))?;
            *bus = Some(b.clone());
            b
        }
    };
    let query = request.query();
    let ask = |filter: String, after: Option<String>, limit: usize| {
        let connected = connected.clone();
        let token = token.clone();
        async move {
            let params = HostQuery {
                filter,
                after,
                limit: Some(u32::try_from(limit).unwrap_or(u32::MAX)),
            };
            query::request::<HostQuery, HostList>(
                &connected,
                &token,
                queries::HOSTS_LIST,
                &params,
                QUERY_WAIT,
            )
            .await
        }
    };
    let mut hosts: Vec<HostRecord> = Vec::new();
    let mut after = None;
    loop {
        let page = match ask(query.clone(), after.take(), ROW_CAP - hosts.len()).await {
            Ok(page) => page,
            Err(QueryFailure::Invalid(message)) => {
                // The message's position is in the query sent; with the
                // overrides toggle that is not what the operator typed, so
                // ask about the typed filter alone.
                if query != request.filter
                    && let Err(QueryFailure::Invalid(own)) =
                        ask(request.filter.clone(), None, 1).await
                {
                    return Err(Failure::BadQuery(own));
                }
                return Err(Failure::BadQuery(message));
            }
            Err(e) => {
                if matches!(e, QueryFailure::Bus(_)) {
                    *bus = None;
                }
                return Err(Failure::Other(e.to_string()));
            }
        };
        hosts.extend(page.hosts);
        match page.next {
            Some(next) if hosts.len() < ROW_CAP => after = Some(next),
            next => {
                let capped = next.is_some() || hosts.len() > ROW_CAP;
                hosts.truncate(ROW_CAP);
                return Ok(Page { hosts, capped });
            }
        }
    }
}

/// Restores the terminal however the monitor ends (error paths included;
/// ratatui's own panic hook covers panics).
struct Screen(ratatui::DefaultTerminal);

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.0.show_cursor();
        ratatui::restore();
    }
}

/// Reads the keyboard on its own thread (crossterm's reads block) until
/// `stop` is set or the receiver is gone.
fn spawn_keys(
    stop: Arc<AtomicBool>,
) -> (
    mpsc::UnboundedReceiver<std::io::Result<Event>>,
    std::thread::JoinHandle<()>,
) {
    let (tx, rx) = mpsc::unbounded_channel();
    let handle = std::thread::spawn(move || {
        while !stop.load(AtomicOrdering::Relaxed) {
            let event = match event::poll(Duration::from_millis(100)) {
                Ok(false) => continue,
                Ok(true) => event::read(),
                Err(e) => Err(e),
            };
            let failed = event.is_err();
            if tx.send(event).is_err() || failed {
                return;
            }
        }
    });
    (rx, handle)
}

pub async fn run(ctx: &Context, interval: Duration) -> anyhow::Result<u8> {
    if interval < Duration::from_millis(100) {
        return Err(fail(
            exit::INVALID,
            format!(
                "--interval {} is too short: at least 100ms",
                humantime::format_duration(interval)
            ),
        ));
    }
    if !std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        return Err(fail(
            exit::INVALID,
            "the monitor draws on a terminal; for scripts, `fleetroll host list --json`",
        ));
    }
    let active_window = ctx.settings.drift().active_window;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let mut screen = match ratatui::try_init() {
        Ok(terminal) => Screen(terminal),
        Err(e) => {
            // Raw mode may be on already when the alternate screen failed.
            ratatui::restore();
            return Err(fail(
                exit::INTERNAL,
                format!("cannot set up the terminal: {e}"),
            ));
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let (mut keys, reader) = spawn_keys(stop.clone());
    let result = event_loop(
        ctx,
        &mut screen,
        &mut keys,
        interval,
        active_window,
        &mut terminate,
        &mut hangup,
    )
    .await;
    stop.store(true, AtomicOrdering::Relaxed);
    drop(keys);
    let _ = reader.join();
    drop(screen);
    result.map(|()| exit::OK)
}

async fn event_loop(
    ctx: &Context,
    screen: &mut Screen,
    keys: &mut mpsc::UnboundedReceiver<std::io::Result<Event>>,
    interval: Duration,
    active_window: Duration,
    terminate: &mut tokio::signal::unix::Signal,
    hangup: &mut tokio::signal::unix::Signal,
) -> anyhow::Result<()> {
    let mut app = App::new();
    let mut bus: Option<Bus> = None;
    let mut refresh = tokio::time::interval(interval);
    refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight: Option<Pin<Box<dyn Future<Output = Fetched> + '_>>> = None;
    let mut wanted = true;
    loop {
        if wanted {
            // Replaces (drops) a fetch under way: it asked for what is no
            // longer wanted.
            in_flight = Some(Box::pin(fetch_owned(ctx, bus.clone(), app.request())));
            wanted = false;
        }
        screen
            .0
            .draw(|frame| draw(frame, &mut app, OffsetDateTime::now_utc(), active_window))?;
        let fetched = async {
            match in_flight.as_mut() {
                Some(fetching) => fetching.await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            key = keys.recv() => match key {
                Some(Ok(Event::Key(key))) => match app.on_key(key) {
                    Action::Quit => return Ok(()),
                    Action::Fetch => wanted = true,
                    Action::Nothing => {}
                },
                Some(Ok(_)) => {}
                Some(Err(e)) => return Err(fail(exit::INTERNAL, format!("reading the keyboard: {e}"))),
                None => return Ok(()),
            },
            done = fetched => {
                in_flight = None;
                bus = done.bus;
                wanted = app.on_fetched(&done.request, done.outcome, OffsetDateTime::now_utc());
            }
            // A slow mesh gets to finish the fetch under way: refreshes
            // never pile up or starve it.
            _ = refresh.tick() => wanted = in_flight.is_none(),
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
            _ = terminate.recv() => return Ok(()),
            _ = hangup.recv() => return Ok(()),
        }
    }
}

/// A finished fetch, with the connection to use next time.
struct Fetched {
    request: Request,
    bus: Option<Bus>,
    outcome: Result<Page, Failure>,
}

async fn fetch_owned(ctx: &Context, mut bus: Option<Bus>, request: Request) -> Fetched {
    let outcome = fetch(ctx, &mut bus, &request).await;
    Fetched {
        request,
        bus,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetroll_bus::messages::host::{HostIntent, Observation, PuppetSource, PuppetState};
    use fleetroll_bus::messages::workload::{Quarantine, Workload};
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-11-22 12:00:00 UTC);
    const HOUR: Duration = Duration::from_secs(3600);

    fn record(name: &str) -> HostRecord {
        let mut o = Observation::discovered(name, NOW - time::Duration::days(3));
        o.probed_at = Some(NOW - time::Duration::seconds(30));
        o.last_seen = o.probed_at;
        o.sshable = Some(true);
        o.os = Some("Linux".into());
        o.role = Some("gecko_t_linux_talos".into());
        o.uptime_s = Some(3 * 86_400 + 4 * 3600 + 60);
        o.override_present = Some(false);
        o.applied = Some(true);
        let mut puppet = PuppetState::unknown(PuppetSource::Metadata);
        puppet.ts = Some(NOW - time::Duration::minutes(12));
        puppet.success = Some(true);
        puppet.git_sha = Some("0123456789abcdef0123456789abcdef01234567".into());
        o.puppet = Some(puppet);
        HostRecord {
            observation: o,
            intent: HostIntent::default(),
            drift: Vec::new(),
            healthy: Some(true),
            workload: None,
        }
    }

    fn workload(last_active: Option<OffsetDateTime>) -> Workload {
        Workload {
            source: "taskcluster".into(),
            expected_pool: None,
            worker_pool: Some("releng-hardware/gecko-t-linux-talos-1804".into()),
            worker_group: Some("mdc1".into()),
            worker_id: "lab-0001".into(),
            state: Some("standalone".into()),
            capacity: Some(0),
            provider_id: Some("none".into()),
            last_active,
            first_claim: None,
            latest_task: None,
            quarantine: None,
            collected_at: NOW,
            error: None,
            recorded: Vec::new(),
            pending: Vec::new(),
        }
    }

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    fn text(row: &HostRow, c: Column) -> (&str, Tone) {
        (row.cell(c).text.as_str(), row.cell(c).tone)
    }

    #[test]
    fn ages_and_uptimes_read_like_people_say_them() {
        assert_eq!(short_age(-3), "0s");
        assert_eq!(short_age(59), "59s");
        assert_eq!(short_age(60), "1m");
        assert_eq!(short_age(3599), "59m");
        assert_eq!(short_age(3600), "1h");
        assert_eq!(short_age(47 * 3600), "47h");
        assert_eq!(short_age(3 * 86_400), "3d");
        assert_eq!(uptime(7 * 60 + 5), "7m");
        assert_eq!(uptime(5 * 3600 + 12 * 60), "5h 12m");
        assert_eq!(uptime(3 * 86_400 + 4 * 3600 + 59), "3d 4h");
    }

    #[test]
    fn the_os_is_named_as_people_name_it() {
        let label = |os, v| os_label(os, v);
        assert_eq!(
            label(Some("Linux"), Some("Debian GNU/Linux 12 (bookworm)")).as_deref(),
            Some("Debian 12 (bookworm)")
        );
        assert_eq!(
            label(Some("Darwin"), Some("14.1")).as_deref(),
            Some("macOS 14.1")
        );
        assert_eq!(label(Some("Linux"), Some(" ")).as_deref(), Some("Linux"));
        assert_eq!(label(None, None), None);
    }

    #[test]
    fn the_override_branch_is_read_like_a_shell_would() {
        assert_eq!(
            override_branch("PUPPET_BRANCH=feature_x\n").as_deref(),
            Some("feature_x")
        );
        assert_eq!(
            override_branch("PUPPET_MAIL=a@b\nexport PUPPET_BRANCH=\"quoted\"\n").as_deref(),
            Some("quoted")
        );
        assert_eq!(override_branch("PUPPET_BRANCH=''\n"), None);
        assert_eq!(override_branch("WORKER_TYPE_OVERRIDE=x"), None);
    }

    #[test]
    fn a_healthy_host_reads_well_and_green() {
        let row = host_row(&record("lab-0001.fleetroll.test"), NOW, HOUR);
        assert_eq!(
            text(&row, Column::Host),
            ("lab-0001.fleetroll.test", Tone::Plain)
        );
        assert_eq!(text(&row, Column::Os), ("Linux", Tone::Plain));
        assert_eq!(text(&row, Column::Override), ("-", Tone::Dim));
        assert_eq!(text(&row, Column::Uptime), ("3d 4h", Tone::Plain));
        assert_eq!(text(&row, Column::Puppet), ("12m ago", Tone::Plain));
        assert_eq!(text(&row, Column::Sha), ("0123456", Tone::Plain));
        assert_eq!(text(&row, Column::Applied), ("yes", Tone::Good));
        assert_eq!(text(&row, Column::Workload), ("-", Tone::Dim));
        assert_eq!(text(&row, Column::Healthy), ("yes", Tone::Good));
        assert_eq!(text(&row, Column::Age), ("30s", Tone::Good));
    }

    #[test]
    fn verdicts_and_ages_pick_their_colours() {
        let mut r = record("lab-0002.fleetroll.test");
        let o = &mut r.observation;
        o.override_present = Some(true);
        o.override_contents = Some("PUPPET_BRANCH=feature_x".into());
        o.override_sha256 = Some("abcdef0123456789".into());
        o.applied = Some(false);
        o.probed_at = Some(NOW - time::Duration::minutes(30));
        if let Some(p) = o.puppet.as_mut() {
            p.success = Some(false);
        }
        r.healthy = Some(false);
        r.drift = vec![DriftType::Role];
        r.workload = Some(workload(Some(NOW - time::Duration::hours(3))));
        let row = host_row(&r, NOW, HOUR);
        assert_eq!(
            text(&row, Column::Override),
            ("feature_x@abcdef01", Tone::Note)
        );
        assert_eq!(text(&row, Column::Applied), ("no", Tone::Warn));
        assert_eq!(text(&row, Column::Healthy), ("no", Tone::Bad));
        assert_eq!(text(&row, Column::Puppet), ("12m FAILED", Tone::Bad));
        assert_eq!(text(&row, Column::Age), ("30m", Tone::Warn));
        assert_eq!(text(&row, Column::Role).1, Tone::Warn);
        assert_eq!(text(&row, Column::Workload), ("standalone 3h", Tone::Warn));
        assert_eq!(text(&row, Column::Quarantine), ("no", Tone::Plain));

        let mut quarantined = workload(Some(NOW - time::Duration::minutes(2)));
        quarantined.quarantine = Some(Quarantine {
            until: NOW + time::Duration::hours(5),
            by: Some("relops".into()),
            at: Some(NOW),
            reason: Some("bad disk".into()),
        });
        r.workload = Some(quarantined);
        r.observation.probed_at = Some(NOW - time::Duration::hours(5));
        r.observation.sshable = Some(false);
        let row = host_row(&r, NOW, HOUR);
        assert_eq!(text(&row, Column::Workload), ("standalone 2m", Tone::Good));
        assert_eq!(text(&row, Column::Quarantine), ("5h left", Tone::Bad));
        assert_eq!(text(&row, Column::Age), ("5h", Tone::Bad));
        assert_eq!(text(&row, Column::Host).1, Tone::Bad);
    }

    #[test]
    fn a_host_never_probed_is_unknown_everywhere_but_its_name() {
        let r = HostRecord {
            observation: Observation::discovered("new.example.com", NOW),
            intent: HostIntent::default(),
            drift: Vec::new(),
            healthy: None,
            workload: None,
        };
        let row = host_row(&r, NOW, HOUR);
        assert_eq!(text(&row, Column::Age), ("never", Tone::Dim));
        assert_eq!(text(&row, Column::Override), ("?", Tone::Dim));
        for c in &Column::ALL[1..] {
            assert_eq!(row.cell(*c).tone, Tone::Dim, "{c:?}");
            assert_eq!(row.cell(*c).key, None, "{c:?}");
        }
    }

    #[test]
    fn sorting_is_by_value_with_unknowns_last_either_way() {
        let mut a = record("a.example.com");
        a.observation.uptime_s = Some(600);
        let mut b = record("b.example.com");
        b.observation.uptime_s = Some(90_000);
        let mut c = record("c.example.com");
        c.observation.uptime_s = None;
        let mut d = record("d.example.com");
        d.observation.uptime_s = Some(5_000);
        let mut rows: Vec<HostRow> = [&c, &b, &d, &a]
            .iter()
            .map(|r| host_row(r, NOW, HOUR))
            .collect();
        let names = |rows: &[HostRow]| -> Vec<String> {
            rows.iter().map(|r| r.hostname[..1].to_string()).collect()
        };
        // As numbers: "1d 1h" is more than "1h 23m", whatever the text says.
        sort_rows(&mut rows, Column::Uptime, false);
        assert_eq!(names(&rows), ["a", "d", "b", "c"]);
        sort_rows(&mut rows, Column::Uptime, true);
        assert_eq!(names(&rows), ["b", "d", "a", "c"]);
        // Equal values fall back to the hostname.
        sort_rows(&mut rows, Column::Role, true);
        assert_eq!(names(&rows), ["a", "b", "c", "d"]);
        sort_rows(&mut rows, Column::Host, true);
        assert_eq!(names(&rows), ["d", "c", "b", "a"]);
    }

    #[test]
    fn the_sort_key_cycles_through_every_column() {
        let mut c = Column::Host;
        for _ in 0..Column::ALL.len() {
            c = c.next();
        }
        assert_eq!(c, Column::Host);
        assert_eq!(Column::Age.next(), Column::Host);
    }

    #[test]
    fn overrides_only_is_anded_onto_the_filter() {
        assert_eq!(effective_query("", false), "");
        assert_eq!(effective_query(" ", true), "override_present:true");
        assert_eq!(
            effective_query("role:a OR role:b", true),
            "(role:a OR role:b) AND override_present:true"
        );
    }

    fn page(names: &[&str]) -> Result<Page, Failure> {
        Ok(Page {
            hosts: names.iter().map(|n| record(n)).collect(),
            capped: false,
        })
    }

    fn type_filter(app: &mut App, text: &str) -> Action {
        assert_eq!(app.on_key(key(KeyCode::Char('/'))), Action::Nothing);
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL)),
            Action::Nothing
        );
        for c in text.chars() {
            app.on_key(key(KeyCode::Char(c)));
        }
        app.on_key(key(KeyCode::Enter))
    }

    #[test]
    fn a_filter_is_kept_only_once_the_server_accepts_it() {
        let mut app = App::new();
        assert!(!app.on_fetched(&app.request(), page(&["a", "b"]), NOW));
        assert_eq!(type_filter(&mut app, "hostname:a"), Action::Fetch);
        let request = app.request();
        assert_eq!(request.query(), "hostname:a");
        assert!(!app.on_fetched(&request, page(&["a"]), NOW));
        assert_eq!(app.filter, "hostname:a");
        assert_eq!(app.proposed, None);

        // Refused: the message is shown, the previous filter stays.
        assert_eq!(type_filter(&mut app, "role:("), Action::Fetch);
        let request = app.request();
        let refetch = app.on_fetched(
            &request,
            Err(Failure::BadQuery(
                "bad query at position 6: expected a value".into(),
            )),
            NOW,
        );
        assert!(refetch);
        assert_eq!(app.filter, "hostname:a");
        assert_eq!(app.request().filter, "hostname:a");
        assert_eq!(app.records.len(), 1);
        let notice = app.notice.clone().unwrap_or_default();
        assert!(notice.contains("position 6"), "{notice}");
        assert!(notice.contains("keeping `hostname:a`"), "{notice}");

        // The mesh is away: the rows stay, the filter is tried again.
        assert_eq!(type_filter(&mut app, "role:x"), Action::Fetch);
        let request = app.request();
        assert!(!app.on_fetched(&request, Err(Failure::Other("unreachable".into())), NOW));
        assert_eq!(app.records.len(), 1);
        assert_eq!(app.error.as_deref(), Some("unreachable"));
        assert_eq!(app.request().filter, "role:x");
    }

    #[test]
    fn an_answer_to_an_older_request_is_dropped() {
        let mut app = App::new();
        let old = app.request();
        assert_eq!(app.on_key(key(KeyCode::Char('o'))), Action::Fetch);
        assert!(app.on_fetched(&old, page(&["a", "b"]), NOW));
        assert!(app.records.is_empty());
        let new = app.request();
        assert_eq!(new.query(), OVERRIDES_ONLY);
        assert!(!app.on_fetched(&new, page(&["b"]), NOW));
        assert_eq!(app.records.len(), 1);
    }

    #[test]
    fn keys_quit_help_sort_and_cancel() {
        let mut app = App::new();
        assert_eq!(app.on_key(key(KeyCode::Char('s'))), Action::Nothing);
        assert_eq!(app.sort, Column::Os);
        assert_eq!(app.on_key(key(KeyCode::Char('r'))), Action::Nothing);
        assert!(app.reverse);
        assert_eq!(app.on_key(key(KeyCode::Char('?'))), Action::Nothing);
        assert_eq!(app.mode, Mode::Help);
        assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Nothing);
        assert_eq!(app.mode, Mode::Table);
        // Typing a `q` into the filter is not quitting; Esc drops the edit.
        app.on_key(key(KeyCode::Char('/')));
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Nothing);
        assert_eq!(app.mode, Mode::Filter("q".into()));
        assert_eq!(app.on_key(key(KeyCode::Esc)), Action::Nothing);
        assert_eq!(app.filter, "");
        assert_eq!(app.on_key(key(KeyCode::Char('q'))), Action::Quit);
        app.mode = Mode::Filter(String::new());
        assert_eq!(
            app.on_key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
    }

    fn screen(app: &mut App, width: u16, height: u16) -> String {
        let mut terminal = Terminal::new(TestBackend::new(width, height)).expect("test terminal");
        terminal.draw(|f| draw(f, app, NOW, HOUR)).expect("drawing");
        let buffer = terminal.backend().buffer();
        (0..height)
            .map(|y| {
                (0..width)
                    .map(|x| buffer[(x, y)].symbol().to_string())
                    .collect::<String>()
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn the_view_scrolls_to_the_selection_and_stays() {
        let mut app = App::new();
        let names: Vec<String> = (0..30).map(|i| format!("h{i:02}.example.com")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        app.on_fetched(&app.request(), page(&names), NOW);
        let s = screen(&mut app, 160, 12);
        assert!(
            s.contains("h00.example.com") && !s.contains("h29.example.com"),
            "{s}"
        );
        app.on_key(key(KeyCode::End));
        let s = screen(&mut app, 160, 12);
        assert!(
            s.contains("h29.example.com") && !s.contains("h00.example.com"),
            "{s}"
        );
        let first_shown = app.offset;
        app.on_key(key(KeyCode::Up));
        screen(&mut app, 160, 12);
        assert_eq!(
            app.offset, first_shown,
            "moving inside the view does not scroll"
        );
        app.on_key(key(KeyCode::Home));
        let s = screen(&mut app, 160, 12);
        assert!(s.contains("h00.example.com"), "{s}");
    }

    #[test]
    fn the_screen_shows_rows_status_and_errors_but_never_nothing() {
        let mut app = App::new();
        let s = screen(&mut app, 160, 12);
        assert!(s.contains("fetching hosts"), "{s}");

        app.on_fetched(
            &app.request(),
            Err(Failure::Other("cannot reach NATS".into())),
            NOW,
        );
        let s = screen(&mut app, 160, 12);
        assert!(s.contains("no data yet: cannot reach NATS"), "{s}");

        app.on_fetched(&app.request(), page(&["lab-0001.fleetroll.test"]), NOW);
        app.on_fetched(
            &app.request(),
            Err(Failure::Other("cannot reach NATS".into())),
            NOW + time::Duration::seconds(4),
        );
        let s = screen(&mut app, 160, 12);
        assert!(s.contains("lab-0001.fleetroll.test"), "{s}");
        assert!(s.contains("HOST ^"), "{s}");
        assert!(s.contains("fetch failed: cannot reach NATS"), "{s}");
        assert!(s.contains("showing rows fetched 12:00:00Z"), "{s}");

        app.on_key(key(KeyCode::Char('?')));
        let s = screen(&mut app, 160, 20);
        assert!(s.contains("overrides only"), "{s}");
    }
}
