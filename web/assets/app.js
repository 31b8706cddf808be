// fleetroll's read-only UI: one page, hash routes, data from /api/v1.
"use strict";

const view = document.getElementById("view");
const banner = document.getElementById("banner");
const meshDot = document.getElementById("mesh-dot");
// The page's open event feed, closed when the reader navigates away.
let feed = null;
// Bumped on every navigation, so a slow answer for an old page is dropped.
let generation = 0;

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function api(path) {
  let response;
  try {
    response = await fetch("/api/v1" + path, { headers: { Accept: "application/json" } });
  } catch (e) {
    throw new ApiError(0, "the fleetroll web server does not answer");
  }
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    if (response.status === 401) askToken(body.error);
    throw new ApiError(response.status, body.error || response.statusText);
  }
  return body;
}

// A server that listens beyond loopback wants a token; the browser keeps
// it in a cookie, which the event feed sends too.
function askToken(why) {
  if (document.getElementById("token-form")) return;
  const input = h("input", { type: "password", placeholder: "token (fleetroll auth issue --role readonly)", size: 50 });
  const form = h("form", {
    id: "token-form", class: "filters",
    onsubmit: (e) => {
      e.preventDefault();
      // Secure over HTTPS: the token never goes out in clear text.
      const secure = location.protocol === "https:" ? "; Secure" : "";
      document.cookie = "fleetroll_token=" + encodeURIComponent(input.value.trim()) + "; path=/; SameSite=Strict" + secure;
      location.reload();
    },
  }, input, h("button", { type: "submit" }, "Use token"));
  view.replaceChildren(h("h1", {}, "A token is needed"), h("p", { class: "error" }, why || ""), form);
}

const ago = (iso) => {
  if (!iso) return "—";
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 90) return Math.round(s) + "s ago";
  if (s < 5400) return Math.round(s / 60) + "m ago";
  if (s < 129600) return Math.round(s / 3600) + "h ago";
  return Math.round(s / 86400) + "d ago";
};
const yesNo = (v) => v === true ? h("span", { class: "yes" }, "yes")
  : v === false ? h("span", { class: "no" }, "no") : h("span", { class: "unknown" }, "?");
const short = (sha) => sha ? sha.slice(0, 10) : "—";
const word = (w) => h("span", { class: w }, String(w).replaceAll("_", " "));
const hostLink = (name) => h("a", { href: "#/hosts/" + encodeURIComponent(name) }, name);
const rolloutLink = (id) => h("a", { href: "#/rollouts/" + encodeURIComponent(id) }, id);
const fail = (e) => h("p", { class: "error", "data-error": "" }, e.message);

function table(id, columns, rows, sort) {
  const head = h("tr", {}, columns.map((c, i) => {
    const th = h("th", { class: c.cls || "" }, c.title);
    if (sort) {
      th.classList.add("sortable");
      if (sort.column === i) th.classList.add("sorted", ...(sort.desc ? ["desc"] : []));
      th.addEventListener("click", () => sort.by(i));
    }
    return th;
  }));
  const body = h("tbody", {}, rows.map((r) => h("tr", {}, columns.map((c) => h("td", { class: c.cls || "" }, c.cell(r))))));
  return h("div", { class: "scroll" }, h("table", { id }, h("thead", {}, head), body));
}

function counts(title, map, link) {
  const rows = Object.entries(map || {}).sort((a, b) => b[1] - a[1]);
  return h("section", {}, h("h2", {}, title), table(null, [
    { title: "", cell: ([k]) => link ? h("a", { href: link(k), title: k }, k.length > 16 ? short(k) : k) : k },
    { title: "hosts", cell: ([, n]) => n },
  ], rows));
}

const filterLink = (q) => "#/hosts?filter=" + encodeURIComponent(q);

async function overview(gen) {
  const [summary, rollouts] = await Promise.allSettled([api("/overview"), api("/rollouts")]);
  if (gen !== generation) return;
  const parts = [h("h1", {}, "Fleet overview")];
  if (summary.status === "fulfilled") {
    const s = summary.value;
    parts.push(h("div", { class: "cards" },
      card("hosts", s.hosts, filterLink("")),
      ...Object.entries(s.by_state || {}).map(([k, n]) => card(k.replaceAll("_", " "), n,
        { reachable: filterLink("sshable:true"), unreachable: filterLink("sshable:false"),
          not_probed: filterLink("sshable:null"), disabled: filterLink("disabled:true") }[k])),
      card("healthy", s.healthy, filterLink("healthy:true")),
      card("unhealthy", s.unhealthy, filterLink("healthy:false")),
      card("drifting", s.drifting, filterLink("drift:any"))));
    parts.push(h("div", { class: "grid2" },
      counts("By role", s.by_role, (r) => filterLink(r === "unknown" ? "role:null" : "role:" + r)),
      counts("By Puppet sha", s.by_puppet_sha, (sha) => filterLink(sha === "unknown" ? "puppet_sha:null" : "puppet_sha:" + sha)),
      counts("By drift type", Object.fromEntries((s.types || []).map((t) => [t.drift_type, t.count])),
        (t) => filterLink("drift:" + t))));
  } else parts.push(fail(summary.reason));
  parts.push(h("h2", {}, "Rollouts in progress"));
  if (rollouts.status === "fulfilled") {
    const active = rollouts.value.rollouts.filter((r) => !["finalized", "rolled_back"].includes(r.state));
    parts.push(active.length ? rolloutTable(active) : h("p", { class: "muted" }, "None."));
  } else parts.push(fail(rollouts.reason));
  view.replaceChildren(...parts);
}

function card(label, n, href) {
  const body = [h("div", { class: "n" }, n), h("div", { class: "muted" }, label)];
  return href ? h("a", { class: "card", href, style: "color:inherit;text-decoration:none" }, body) : h("div", { class: "card" }, body);
}

const HOST_COLUMNS = [
  { title: "host", key: (r) => r.hostname, cell: (r) => hostLink(r.hostname) },
  { title: "ssh", key: (r) => String(r.sshable), cell: (r) => yesNo(r.sshable) },
  { title: "role", key: (r) => r.role || "", cell: (r) => r.role || "—" },
  { title: "expected role", cls: "hide-narrow", key: (r) => r.expected_role || "", cell: (r) => r.expected_role || "—" },
  { title: "os", cls: "hide-narrow", key: (r) => r.os || "", cell: (r) => r.os || "—" },
  { title: "override", key: (r) => r.override_sha256 || "", cell: (r) => r.override_present ? h("span", { class: "mono", title: r.override_contents || "" }, short(r.override_sha256)) : "—" },
  { title: "puppet sha", cls: "hide-narrow", key: (r) => (r.puppet && r.puppet.git_sha) || "", cell: (r) => h("span", { class: "mono" }, short(r.puppet && r.puppet.git_sha)) },
  { title: "applied", key: (r) => String(r.applied), cell: (r) => yesNo(r.applied) },
  { title: "healthy", key: (r) => String(r.healthy), cell: (r) => yesNo(r.healthy) },
  { title: "drift", cls: "hide-narrow", key: (r) => (r.drift || []).join(","), cell: (r) => (r.drift || []).join(", ") || "—" },
  { title: "last seen", key: (r) => r.last_seen || "", cell: (r) => ago(r.last_seen) },
];
// Hosts the table loads at most; the API pages through the rest.
const HOST_CAP = 5000;
let hostSort = { column: 0, desc: false };

async function hosts(gen, params) {
  const filter = params.get("filter") || "";
  const input = h("input", { class: "query", id: "filter", name: "filter", value: filter,
    placeholder: "query, e.g. role:gecko_t_linux_talos AND expected_role:null", "aria-label": "filter" });
  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    location.hash = "#/hosts" + (input.value.trim() ? "?filter=" + encodeURIComponent(input.value.trim()) : "");
  } }, input, h("button", { type: "submit" }, "Filter"));
  view.replaceChildren(h("h1", {}, "Hosts"), form, h("p", { class: "muted" }, "Loading…"));
  let rows = [], after = "", capped = false;
  try {
    do {
      const page = await api("/hosts?filter=" + encodeURIComponent(filter) + (after ? "&after=" + encodeURIComponent(after) : ""));
      if (gen !== generation) return;
      rows.push(...page.hosts);
      after = page.next || "";
      capped = rows.length >= HOST_CAP && !!after;
    } while (after && !capped);
  } catch (e) {
    if (gen === generation) view.replaceChildren(h("h1", {}, "Hosts"), form, fail(e));
    return;
  }
  const render = () => {
    const c = HOST_COLUMNS[hostSort.column];
    rows.sort((a, b) => c.key(a).localeCompare(c.key(b), undefined, { numeric: true }) * (hostSort.desc ? -1 : 1));
    view.replaceChildren(h("h1", {}, "Hosts"), form,
      h("p", { class: "muted", id: "host-count" }, `${rows.length} host(s)` + (capped ? ` (the first ${HOST_CAP}; narrow the filter)` : "")),
      table("hosts-table", HOST_COLUMNS, rows, { ...hostSort, by: (i) => {
        hostSort = { column: i, desc: hostSort.column === i ? !hostSort.desc : false };
        render();
      } }));
  };
  render();
}

const POOL_RULES = {
  worker_type_override: "WORKER_TYPE_OVERRIDE in the override file",
  table: "the role's entry in the pool table",
  role_name: "the role's name",
};

function tcPool(w) {
  const expected = w.expected_pool
    ? `expected ${w.expected_pool.pool}, named by ${POOL_RULES[w.expected_pool.rule] || w.expected_pool.rule}`
    : "no pool expected";
  return `${w.worker_pool || "not found"} (${expected})`;
}

function tcQuarantine(q) {
  const who = q.by ? ` by ${q.by}` : "";
  return `until ${q.until}${who}: ${q.reason || "(no reason given)"}`;
}

async function host(gen, name) {
  const [record, history] = await Promise.allSettled([
    api("/hosts/" + encodeURIComponent(name)), api("/hosts/" + encodeURIComponent(name) + "/history")]);
  if (gen !== generation) return;
  const parts = [h("h1", {}, name)];
  if (record.status === "fulfilled") {
    const r = record.value;
    const p = r.puppet || {};
    const rows = [
      ["address", r.address], ["ssh / sudo", [yesNo(r.sshable), " / ", yesNo(r.sudoable)]],
      ["role (expected)", `${r.role || "—"} (${r.expected_role || "none"})`], ["population", r.population],
      ["os", [r.os, r.os_version].filter(Boolean).join(" ")], ["uptime", r.uptime_s != null ? Math.round(r.uptime_s / 3600) + " h" : null],
      ["override", r.override_present ? h("pre", { class: "mono" }, r.override_contents || short(r.override_sha256)) : "none"],
      ["puppet", `${p.source || "?"}: ${p.git_branch || "?"} @ ${short(p.git_sha)}, ${p.success === true ? "succeeded" : p.success === false ? "failed" : "?"} ${ago(p.ts)}`],
      ["applied", [yesNo(r.applied), r.applied_source ? ` (${r.applied_source})` : ""]], ["healthy", yesNo(r.healthy)],
      ["drift", (r.drift || []).join(", ") || "none"],
      ["disabled", r.disabled ? `yes: ${r.disabled_reason || ""} (${r.disabled_by || "?"})` : "no"],
      ["workload", r.workload ? `${r.workload.state || "?"}, last active ${ago(r.workload.last_active)}` : "—"],
      ["tc pool", r.workload ? tcPool(r.workload) : "—"],
      ["tc quarantine", r.workload && r.workload.quarantine ? tcQuarantine(r.workload.quarantine) : "no"],
      ["last seen / probed", `${ago(r.last_seen)} / ${ago(r.probed_at)}`],
      ["last error", r.last_error ? `${r.last_error} (${ago(r.last_error_at)})` : "none"],
    ];
    parts.push(h("dl", { class: "kv", id: "host-detail" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v == null || v === "" ? "—" : v)])));
  } else parts.push(fail(record.reason));
  parts.push(h("h2", {}, "Observation history"));
  if (history.status === "fulfilled") {
    const entries = [...history.value.entries].reverse();
    parts.push(entries.length ? table("history", [
      { title: "probed", cell: (e) => ago(e.observation.probed_at) },
      { title: "what changed", cls: "wrap", cell: (e) => e.changes.length
        ? e.changes.map((c) => `${c.field}: ${JSON.stringify(c.from)} → ${JSON.stringify(c.to)}`).join("; ") : "first observation kept" },
    ], entries) : h("p", { class: "muted" }, "No observations yet."));
  } else parts.push(fail(history.reason));
  view.replaceChildren(...parts);
}

function rolloutTable(list) {
  return table("rollouts-table", [
    { title: "rollout", cell: (r) => rolloutLink(r.id) },
    { title: "state", cell: (r) => word(r.state) },
    { title: "change", cls: "wrap", cell: (r) => h("code", {}, r.plan.change) },
    { title: "target", cls: "hide-narrow", cell: (r) => h("code", {}, r.plan.target) },
    { title: "stage", cell: (r) => r.stages.length },
    { title: "hosts in stages", cell: (r) => `${r.stages.reduce((n, s) => n + s.hosts.length, 0)} / ${r.targets.length}` },
    { title: "by", cls: "hide-narrow", cell: (r) => r.created_by },
    { title: "updated", cell: (r) => ago(r.updated_at) },
  ], list);
}

async function rollouts(gen) {
  try {
    const list = await api("/rollouts");
    if (gen !== generation) return;
    view.replaceChildren(h("h1", {}, "Rollouts"), list.rollouts.length ? rolloutTable(list.rollouts) : h("p", { class: "muted" }, "No rollouts yet."));
  } catch (e) {
    if (gen === generation) view.replaceChildren(h("h1", {}, "Rollouts"), fail(e));
  }
}

function describeEvent(e) {
  const d = e.detail;
  switch (d.type) {
    case "rollout_stage": return `stage ${d.stage} ${d.status.replaceAll("_", " ")} (${d.hosts.length} host(s))`;
    case "rollout_state": return `rollout ${d.state.replaceAll("_", " ")}` + (d.reason ? `: ${d.reason}` : "");
    case "rollout_host": return `host ${d.hostname}: ${d.outcome.result}` + (d.outcome.error ? ` (${d.outcome.error})` : "");
    case "rollout_gates": return "gates: " + d.evaluation.gates.map((g) => `${g.name} ${g.verdict}`).join(", ");
    case "blast_radius": return `paused by blast radius: ${d.reason}`;
    case "regression": return `regression: ${d.reason}`;
    default: return d.type;
  }
}

async function rollout(gen, id) {
  const events = h("ul", { id: "events" });
  const live = h("p", { class: "muted", id: "feed-state" }, "connecting to the live feed…");
  const body = h("div", {}, h("p", { class: "muted" }, "Loading…"));
  view.replaceChildren(h("h1", {}, "Rollout ", h("code", {}, id)), body, h("h2", {}, "Live events"), live, events);
  // Events come in bursts; only the newest refresh may draw, or a slow
  // older answer would put back a state the page already moved past.
  let latest = 0;
  const refresh = async () => {
    const mine = ++latest;
    try {
      const s = await api("/rollouts/" + encodeURIComponent(id));
      if (gen === generation && mine === latest) body.replaceChildren(...rolloutDetail(s));
    } catch (e) {
      if (gen === generation && mine === latest) body.replaceChildren(fail(e));
    }
  };
  await refresh();
  if (gen !== generation) return;
  feed = new EventSource("/api/v1/rollouts/" + encodeURIComponent(id) + "/events");
  feed.onopen = () => { live.textContent = "following live: new events appear at the top"; };
  feed.onerror = () => { live.textContent = "live feed interrupted; reconnecting…"; };
  feed.onmessage = (m) => {
    const e = JSON.parse(m.data);
    events.prepend(h("li", { "data-kind": e.detail.type }, h("span", { class: "muted" }, new Date(e.at).toLocaleTimeString(), " "), describeEvent(e)));
    refresh();
  };
}

function rolloutDetail(s) {
  const r = s.rollout;
  const results = Object.fromEntries(s.hosts.filter((x) => x.outcome.result !== "removed").map((x) => [x.hostname, x]));
  const out = [h("dl", { class: "kv", id: "rollout-summary" }, [
    ["state", word(r.state)], ["change", h("code", {}, r.plan.change)], ["target", h("code", {}, r.plan.target)],
    ["targets", r.targets.length], ["created", `${ago(r.created_at)} by ${r.created_by}`],
    ["pause reason", r.pause_reason], ["rollback", r.rollback && `${r.rollback.by}: ${r.rollback.reason}`],
    ["finalize", r.finalize && `${r.finalize.by} ${ago(r.finalize.at)}`],
  ].filter(([, v]) => v != null && v !== "").flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]))];
  out.push(h("h2", {}, "Gates"));
  if (s.evaluation) {
    out.push(h("p", { class: "muted" }, `stage ${s.evaluation.stage}, evaluated ${ago(s.evaluation.at)}`));
    out.push(table("gates", [
      { title: "gate", cell: (g) => g.name },
      { title: "verdict", cell: (g) => word(g.verdict) },
      { title: "value", cell: (g) => g.value == null ? "—" : +g.value.toFixed(3) },
      { title: "threshold", cell: (g) => +g.threshold.toFixed(3) },
      { title: "detail", cls: "wrap", cell: (g) => g.detail },
    ], s.evaluation.gates));
  } else out.push(h("p", { class: "muted" }, "Not evaluated yet."));
  out.push(h("h2", {}, "Stages"));
  out.push(r.stages.length ? table("stages", [
    { title: "stage", cell: (st) => st.number },
    { title: "status", cell: (st) => word(st.status) },
    { title: "hosts", cls: "wrap", cell: (st) => st.hosts.map((name, i) => [i ? ", " : "", hostLink(name),
      results[name] ? h("span", { class: results[name].outcome.result }, " " + results[name].outcome.result) : h("span", { class: "muted" }, " pending")]) },
    { title: "started", cell: (st) => `${ago(st.started_at)} by ${st.started_by}` + (st.forced ? " (forced)" : "") },
    { title: "reason", cls: "wrap", cell: (st) => st.reason || "—" },
  ], r.stages) : h("p", { class: "muted" }, "Not started."));
  return out;
}

async function audit(gen, params) {
  const fields = ["host", "actor", "rollout", "since"].map((name) =>
    h("input", { name, value: params.get(name) || "", placeholder: name === "since" ? "since (2h or a time)" : name, "aria-label": name }));
  const form = h("form", { class: "filters", onsubmit: (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    for (const f of fields) if (f.value.trim()) q.set(f.name, f.value.trim());
    location.hash = "#/audit" + (q.toString() ? "?" + q : "");
  } }, fields, h("button", { type: "submit" }, "Filter"));
  view.replaceChildren(h("h1", {}, "Audit log"), form, h("p", { class: "muted" }, "Loading…"));
  const q = new URLSearchParams();
  for (const name of ["host", "actor", "rollout", "since"]) if (params.get(name)) q.set(name, params.get(name));
  q.set("limit", "500");
  try {
    const list = await api("/audit?" + q);
    if (gen !== generation) return;
    const records = [...list.records].reverse();
    view.replaceChildren(h("h1", {}, "Audit log"), form,
      h("p", { class: "muted" }, `${records.length} record(s), newest first` + (list.truncated ? " (the newest 500; narrow the filters)" : "")),
      table("audit-table", [
        { title: "#", cell: (x) => x.seq },
        { title: "when", cell: (x) => ago(x.record.at) },
        { title: "action", cell: (x) => x.record.action },
        { title: "actor", cell: (x) => x.record.actor || (x.record.claimed_actor ? `claimed: ${x.record.claimed_actor}` : x.record.handled_by) },
        { title: "outcome", cell: (x) => word(x.record.outcome) },
        { title: "hosts", cls: "wrap", cell: (x) => x.record.hosts.slice(0, 5).join(", ") + (x.record.hosts.length > 5 ? ` +${x.record.hosts.length - 5}` : "") },
        { title: "rollout", cell: (x) => x.record.rollout ? rolloutLink(x.record.rollout) : "—" },
        { title: "force / reason", cls: "wrap", cell: (x) => (x.record.force ? "forced: " : "") + (x.record.reason || x.record.message || "") },
      ], records));
  } catch (e) {
    if (gen === generation) view.replaceChildren(h("h1", {}, "Audit log"), form, fail(e));
  }
}

function route() {
  generation += 1;
  const gen = generation;
  if (feed) { feed.close(); feed = null; }
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const params = new URLSearchParams(query || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  for (const a of document.querySelectorAll("[data-nav]")) a.classList.toggle("active", a.dataset.nav === (parts[0] || "overview"));
  if (parts[0] === "hosts" && parts[1]) return host(gen, parts[1]);
  if (parts[0] === "hosts") return hosts(gen, params);
  if (parts[0] === "rollouts" && parts[1]) return rollout(gen, parts[1]);
  if (parts[0] === "rollouts") return rollouts(gen);
  if (parts[0] === "audit") return audit(gen, params);
  return overview(gen);
}

async function watchMesh() {
  let health;
  try {
    health = await api("/mesh");
  } catch (e) {
    health = { state: "unreachable", problems: [e.message] };
  }
  meshDot.className = health.state;
  meshDot.title = "mesh: " + health.state;
  if (health.state === "ok") {
    banner.hidden = true;
  } else {
    banner.hidden = false;
    banner.className = health.state;
    banner.dataset.state = health.state;
    banner.replaceChildren(
      h("strong", {}, health.state === "unreachable" ? "The mesh is unreachable or recovering." : "The mesh is degraded."),
      h("ul", {}, health.problems.map((p) => h("li", {}, p))));
  }
}

window.addEventListener("hashchange", route);
route();
watchMesh();
setInterval(watchMesh, 3000);
