// sluice console: plain JavaScript on sluice serve's HTTP API, no framework and no build step.
// Every value from the server goes into the page as text (never as HTML).
"use strict";

const TOKEN_KEY = "sluice.token";
const REFRESH_MS = 5000;
let refreshTimer = null;
let lastOverview = null;

// ---- the API ----------------------------------------------------------------------------

class Refused extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    options.body = JSON.stringify(options.json);
  }
  const response = await fetch(path, { method: options.method || "GET", headers, body: options.body });
  if (response.status === 401) {
    showLogin();
    throw new Refused("this server asks for its token: enter it above");
  }
  if (!response.ok) {
    let message = response.status + " " + response.statusText;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return options.raw ? response : response.json();
}

function showLogin() {
  const form = document.getElementById("login");
  form.hidden = false;
  document.getElementById("token").focus();
}

// ---- building the page -------------------------------------------------------------------

// h("td", {class: "num"}, "12") — children are nodes or text; attributes starting with "on"
// are listeners.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function view(...children) {
  const main = document.getElementById("view");
  main.replaceChildren(...children);
}

function notice(message, isError) {
  const n = document.getElementById("notice");
  n.textContent = message || "";
  n.className = isError ? "error" : "";
}

function number(n) {
  return n === undefined || n === null ? "–" : Number(n).toLocaleString("en-US");
}

function ago(time) {
  if (!time) return "never";
  const s = Math.round((Date.now() - new Date(time).getTime()) / 1000);
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function seconds(s) {
  if (s === undefined || s === null) return "–";
  if (s < 120) return s.toFixed(1) + " s";
  if (s < 7200) return (s / 60).toFixed(1) + " min";
  return (s / 3600).toFixed(1) + " h";
}

function badge(state) {
  return h("span", { class: "state " + state }, state);
}

function table(headers, rows, caption) {
  return h("table", {},
    caption ? h("caption", { class: "muted" }, caption) : null,
    h("thead", {}, h("tr", {}, headers.map(([label, cls]) => h("th", { scope: "col", class: cls }, label)))),
    h("tbody", {}, rows));
}

// ---- charts: SVG drawn here, one bar or point per value ------------------------------------

function chart(kind, labels, values, title) {
  const W = 720, H = 260, left = 64, right = 16, top = 24, bottom = 56;
  const ns = "http://www.w3.org/2000/svg";
  const s = (tag, attrs, text) => {
    const el = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
    if (text !== undefined) el.textContent = text;
    return el;
  };
  const svg = s("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title });
  svg.append(s("title", {}, title));
  svg.append(s("text", { x: left, y: 14 }, title));
  const numeric = values.map((v) => (v === null || v === undefined || isNaN(Number(v)) ? 0 : Number(v)));
  const max = Math.max(0, ...numeric), min = Math.min(0, ...numeric);
  const span = max - min || 1;
  const plotW = W - left - right, plotH = H - top - bottom;
  const y = (v) => top + plotH - ((v - min) / span) * plotH;
  svg.append(s("line", { class: "axis", x1: left, y1: y(0), x2: W - right, y2: y(0) }));
  svg.append(s("line", { class: "axis", x1: left, y1: top, x2: left, y2: top + plotH }));
  for (const t of [min, (min + max) / 2, max]) {
    svg.append(s("text", { x: left - 6, y: y(t) + 4, "text-anchor": "end" }, compact(t)));
  }
  const n = numeric.length;
  const step = plotW / Math.max(n, 1);
  const labelEvery = Math.max(1, Math.ceil(n / 12));
  numeric.forEach((v, i) => {
    const cx = left + step * i + step / 2;
    if (kind === "bar") {
      const bar = s("rect", {
        class: "bar", x: cx - Math.max(step * 0.35, 0.5), width: Math.max(step * 0.7, 1),
        y: Math.min(y(v), y(0)), height: Math.abs(y(v) - y(0)),
      });
      bar.append(s("title", {}, `${labels[i]}: ${v}`));
      svg.append(bar);
    } else {
      const dot = s("circle", { class: "dot", cx, cy: y(v), r: n > 60 ? 1.5 : 3 });
      dot.append(s("title", {}, `${labels[i]}: ${v}`));
      svg.append(dot);
    }
    if (i % labelEvery === 0) {
      svg.append(s("text", { x: cx, y: H - bottom + 16, "text-anchor": "middle" }, shorten(String(labels[i]), 14)));
    }
  });
  if (kind === "line" && n > 1) {
    const points = numeric.map((v, i) => `${left + step * i + step / 2},${y(v)}`).join(" ");
    svg.insertBefore(s("polyline", { class: "line", points }), svg.querySelector(".dot"));
  }
  return svg;
}

function compact(v) {
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (a >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return Number.isInteger(v) ? String(v) : v.toFixed(2);
}

function shorten(s, n) {
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

// ---- overview ----------------------------------------------------------------------------

function targetsCell(t, render) {
  return h("td", { class: "num" }, t.targets.map((x) => h("div", {}, render(x))));
}

async function overview() {
  const data = await api("/api/overview");
  lastOverview = data;
  const counts = { halted: 0, failed: 0, running: 0, idle: 0 };
  for (const t of data.tables) counts[t.state]++;
  const filter = h("input", { type: "search", id: "filter", placeholder: "Filter tables", "aria-label": "Filter tables" });
  const rows = data.tables.map((t) => {
    const run = t.last_run;
    return h("tr", { "data-table": t.name, "data-state": t.state },
      h("td", {}, h("a", { href: "#/table/" + encodeURIComponent(t.name) }, t.name)),
      h("td", {}, badge(t.state)),
      h("td", {}, t.mode),
      h("td", { class: "num", "data-field": "changes" }, number(t.changes)),
      targetsCell(t, (x) => [h("span", { class: "muted" }, x.target + " "), h("span", { "data-field": "rows" }, number(x.rows))]),
      targetsCell(t, (x) => (x.halted || x.check_halted) ? "halted" : x.lag_versions + " versions"),
      h("td", { class: "num" }, seconds(t.lag_seconds)),
      h("td", {}, run ? [ago(run.ended_at), " ", badge(run.outcome === "ok" ? "ok" : run.outcome === "failed" ? "failed" : "halted")] : "never"),
      h("td", { class: "num", "data-field": "quarantined" }, number(t.quarantined)));
  });
  const body = table(
    [["Table"], ["State"], ["Mode"], ["Changes in lake", "num"], ["Warehouse rows", "num"],
     ["Load lag", "num"], ["Lag", "num"], ["Last run"], ["Quarantined", "num"]],
    rows);
  filter.addEventListener("input", () => {
    const q = filter.value.toLowerCase();
    for (const tr of body.tBodies[0].rows) tr.hidden = !tr.dataset.table.toLowerCase().includes(q);
  });
  const previous = document.getElementById("filter");
  if (previous && previous.value) {
    filter.value = previous.value;
    filter.dispatchEvent(new Event("input"));
  }
  const card = (label, n, state) => h("div", { class: "card", "data-count": state }, h("b", {}, number(n)), label);
  view(
    h("h1", {}, "Tables"),
    h("div", { class: "summary" },
      card("halted", counts.halted, "halted"), card("failed", counts.failed, "failed"),
      card("running", counts.running, "running"), card("idle", counts.idle, "idle"),
      h("span", { class: "muted" }, `${data.tables.length} tables · as of ${ago(data.generated_at)} (computed in ${data.took_ms} ms) · refreshes every ${REFRESH_MS / 1000} s`)),
    h("div", { class: "toolbar" }, filter),
    body);
  if (previous === document.activeElement) filter.focus();
}

// ---- one table ---------------------------------------------------------------------------

async function tablePage(name) {
  const t = await api("/api/tables/" + encodeURIComponent(name));
  const status = t.status;
  const syncButton = h("button", { class: "primary", id: "sync-now", onclick: () => act(syncButton, "/api/tables/" + encodeURIComponent(name) + "/sync", "sync of " + name + " queued") }, "Sync now");
  const parts = [
    h("p", {}, h("a", { href: "#/" }, "← All tables")),
    h("h1", {}, name, " ", badge(t.state)),
    h("p", { class: "muted" },
      `${status.mode} · key ${status.key.length ? status.key.join(", ") : "none"} · lake version ${status.lake_version ?? "–"} · ${number(status.changes)} changes · ${number(status.quarantined)} quarantined · lag ${seconds(t.lag_seconds)}`),
    h("div", { class: "toolbar" }, syncButton),
  ];
  // Each warehouse table: rows, lag, the gate's pending diff with Accept, halting checks.
  parts.push(h("h2", {}, "Warehouse tables"));
  const diffs = Object.fromEntries((t.diff || []).map((d) => [d.target, d]));
  const cards = status.targets.map((x) => {
    const d = diffs[x.target];
    const pending = (d && d.pending && d.pending.length) ? d.pending : [];
    const card = h("div", { class: "panel" + (x.halted || x.check_halted ? " pending" : ""), "data-target": x.target },
      h("b", {}, x.target), " ", h("span", { class: "muted" }, x.mode),
      h("p", {}, h("span", { "data-field": "rows" }, number(x.rows)), ` rows · loaded lake version ${x.loaded_version ?? "never"} · ${x.lag_versions} versions behind`));
    if (x.halted) card.append(h("p", {}, badge("halted"), " by a schema change the gate holds for review:"));
    if (pending.length || x.schema_pending) {
      card.append(h("pre", { class: "diff" }, x.schema_pending || pending.map((p) => `v${p.version}: ${describeChange(p.change)} (${p.policy})`).join("\n")));
    }
    if (x.halted || pending.length) {
      const accept = h("button", { class: "danger", "data-action": "accept-schema",
        onclick: () => act(accept, "/api/tables/" + encodeURIComponent(name) + "/schema/accept", "schema change accepted: " + name + " loaded", true) },
        "Accept schema change and load");
      card.append(accept);
    }
    if (x.check_halted) {
      card.append(h("p", {}, badge("halted"), " by a data-quality check."));
      const accept = h("button", { class: "danger", "data-action": "accept-checks",
        onclick: () => act(accept, "/api/tables/" + encodeURIComponent(name) + "/checks/accept", "failing changes accepted: " + name + " loaded", true) },
        "Accept failing changes and load");
      card.append(accept);
    }
    if (x.left_out && x.left_out.length) card.append(h("p", { class: "muted" }, "left out: " + x.left_out.join(", ")));
    for (const c of x.checks || []) {
      card.append(h("div", {}, badge(c.outcome === "pass" || c.outcome === "accepted" ? "ok" : c.outcome === "warned" ? "failed" : "halted"),
        ` check "${c.check}" (${c.rule}, ${c.action}): ${c.failed} of ${c.checked} failing`));
    }
    return card;
  });
  parts.push(h("div", { class: "grid2" }, cards));
  // Charts from the run history (oldest first) and the lag samples.
  const runs = (t.runs || []).slice().reverse();
  const label = (r) => new Date(r.ended_at).toLocaleTimeString();
  const rate = (r) => {
    const s = (new Date(r.ended_at) - new Date(r.started_at)) / 1000;
    return s > 0 ? Math.round(r.rows_landed / s) : r.rows_landed;
  };
  parts.push(h("h2", {}, "Over time"));
  const charts = h("div", { class: "grid2" });
  if (runs.length) {
    charts.append(h("div", { class: "panel" }, chart("bar", runs.map(label), runs.map((r) => r.rows_landed), "Rows landed per run")));
    charts.append(h("div", { class: "panel" }, chart("line", runs.map(label), runs.map(rate), "Throughput per run (rows/s)")));
  }
  if (t.lag && t.lag.length) {
    charts.append(h("div", { class: "panel" }, chart("line", t.lag.map(([at]) => new Date(at).toLocaleTimeString()), t.lag.map(([, s]) => s), "Lag (seconds), sampled every 10 s")));
  }
  if (!charts.childElementCount) charts.append(h("p", { class: "muted" }, "No runs recorded yet."));
  parts.push(charts);
  // The schema, its versions.
  if (t.schema) {
    parts.push(h("h2", {}, `Schema (version ${t.schema.current.version})`));
    parts.push(table([["Column"], ["Type"], ["Note"]], t.schema.current.columns.map((c) =>
      h("tr", {}, h("td", {}, c.name), h("td", {}, c.type),
        h("td", { class: "muted" }, c.dropped ? "dropped at the source" : c.variant_of ? "values of " + c.variant_of + " that did not fit" : "")))));
    parts.push(h("h2", {}, "Schema versions"));
    parts.push(table([["Version"], ["At"], ["Lake version", "num"], ["Changes"]], t.schema.history.map((v) =>
      h("tr", {}, h("td", {}, "v" + v.version), h("td", {}, v.at || "–"), h("td", { class: "num" }, v.lake_version),
        h("td", {}, (v.changes || []).map(describeChange).join("; "))))));
  }
  parts.push(h("h2", {}, "Recent runs"));
  parts.push(runsTable(t.runs || []));
  if (t.quarantine && t.quarantine.length) {
    parts.push(h("h2", {}, `Quarantined records (latest ${t.quarantine.length})`));
    parts.push(h("div", { class: "result" }, table([["File"], ["Line", "num"], ["Column"], ["Reason"], ["Raw"]], t.quarantine.map((q) =>
      h("tr", {}, h("td", {}, q.file), h("td", { class: "num" }, q.line), h("td", {}, q.column ?? ""), h("td", {}, q.reason), h("td", {}, h("code", {}, q.raw)))))));
  }
  view(...parts);
}

// One schema change in words, as `sluice schema show` says it.
function describeChange(c) {
  switch (c.kind) {
    case "new_table": return "new table";
    case "new_column": return `new column ${c.column} ${c.to || ""}`;
    case "dropped_column": return `dropped column ${c.column} (kept in the lake as NULLs)`;
    default: return `${c.kind.replace("_", " ")} ${c.column}: ${c.from} -> ${c.to} (values that do not fit go to ${c.variant})`;
  }
}

// Posts an action; says what happened and shows the page again.
async function act(button, path, done, reload) {
  button.disabled = true;
  try {
    await api(path, { method: "POST" });
    notice(done);
    if (reload) await route();
  } catch (e) {
    notice(e.message, true);
  } finally {
    button.disabled = false;
  }
}

// ---- runs --------------------------------------------------------------------------------

function runsTable(runs) {
  return table(
    [["Ended"], ["Table"], ["Trigger"], ["Outcome"], ["Rows landed", "num"], ["Loaded", "num"], ["Quarantined", "num"], ["Seconds", "num"], ["Error"]],
    runs.map((r) => h("tr", { "data-outcome": r.outcome },
      h("td", { title: r.ended_at }, new Date(r.ended_at).toLocaleString()),
      h("td", {}, h("a", { href: "#/table/" + encodeURIComponent(r.source + "." + r.table) }, r.source + "." + r.table)),
      h("td", {}, r.trigger),
      h("td", {}, badge(r.outcome === "ok" ? "ok" : r.outcome)),
      h("td", { class: "num" }, number(r.rows_landed)),
      h("td", { class: "num" }, number(r.changes_loaded)),
      h("td", { class: "num" }, number(r.rows_quarantined)),
      h("td", { class: "num" }, ((new Date(r.ended_at) - new Date(r.started_at)) / 1000).toFixed(1)),
      h("td", {}, r.error ? h("pre", { class: "error" }, r.error) : ""))));
}

async function runsPage(params) {
  const tableName = params.get("table") || "";
  const outcome = params.get("outcome") || "";
  const query = new URLSearchParams({ limit: "500" });
  if (tableName) {
    const [source, ...rest] = tableName.split(".");
    query.set("source", source);
    query.set("table", rest.join("."));
  }
  if (outcome) query.set("outcome", outcome);
  const [runs, names] = await Promise.all([
    api("/api/runs?" + query),
    lastOverview ? Promise.resolve(lastOverview) : api("/api/overview"),
  ]);
  const pick = h("select", { id: "runs-table", "aria-label": "Table" },
    h("option", { value: "" }, "every table"),
    names.tables.map((t) => h("option", { value: t.name, selected: t.name === tableName }, t.name)));
  const result = h("select", { id: "runs-outcome", "aria-label": "Outcome" },
    ["", "ok", "failed", "halted"].map((o) => h("option", { value: o, selected: o === outcome }, o || "every outcome")));
  const go = () => {
    const p = new URLSearchParams();
    if (pick.value) p.set("table", pick.value);
    if (result.value) p.set("outcome", result.value);
    location.hash = "#/runs" + (p.toString() ? "?" + p : "");
  };
  pick.addEventListener("change", go);
  result.addEventListener("change", go);
  view(h("h1", {}, "Runs"), h("div", { class: "toolbar" }, pick, result, h("span", { class: "muted" }, `${runs.length} runs (newest first)`)), runsTable(runs));
}

// ---- SQL workbench -----------------------------------------------------------------------

let lastSql = "";

function sqlPage() {
  const area = h("textarea", { id: "sql", "aria-label": "SQL over the lake", spellcheck: "false" });
  area.value = lastSql || (lastOverview && lastOverview.tables.length
    ? `SELECT * FROM ${lastOverview.tables[0].name} LIMIT 100`
    : "SELECT 1 AS one");
  const out = h("div", { id: "sql-result" });
  const run = h("button", { class: "primary", id: "run-sql", onclick: () => runSql(area.value, out) }, "Run (Ctrl+Enter)");
  const csv = h("button", { id: "download-csv", onclick: () => downloadCsv(area.value, csv) }, "Download CSV");
  area.addEventListener("keydown", (e) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); runSql(area.value, out); }
  });
  view(
    h("h1", {}, "SQL"),
    h("p", { class: "muted" }, "Read-only SQL over the lake: SOURCE.TABLE is a table's current rows, SOURCE.TABLE__changes its change log, SOURCE.TABLE__quarantine its quarantine; WAREHOUSE.SCHEMA.TABLE reads a warehouse table."),
    area, h("div", { class: "toolbar" }, run, csv), out);
}

async function runSql(sql, out) {
  lastSql = sql;
  out.replaceChildren(h("p", { class: "muted" }, "running…"));
  let result;
  const started = performance.now();
  try {
    result = await api("/api/query", { method: "POST", json: { sql, format: "table", max_rows: 10000 } });
  } catch (e) {
    out.replaceChildren(h("pre", { class: "error", role: "alert" }, e.message));
    return;
  }
  const ms = Math.round(performance.now() - started);
  const names = result.columns.map((c) => c.name);
  const grid = table(result.columns.map((c) => [c.name + " ", ""]), result.rows.map((r) =>
    h("tr", {}, names.map((n) => h("td", {}, r[n] === undefined || r[n] === null ? "NULL" : typeof r[n] === "object" ? JSON.stringify(r[n]) : r[n])))));
  grid.id = "result-grid";
  result.columns.forEach((c, i) => grid.tHead.rows[0].cells[i].append(h("span", { class: "muted" }, c.type)));
  const numeric = result.columns.filter((c) => /Int|Float|Decimal|UInt/.test(c.type)).map((c) => c.name);
  const x = h("select", { id: "chart-x", "aria-label": "Chart: label column" }, names.map((n) => h("option", { value: n }, n)));
  const y = h("select", { id: "chart-y", "aria-label": "Chart: value column" }, (numeric.length ? numeric : names).map((n) => h("option", { value: n }, n)));
  if (numeric.length && names.length > 1) {
    const firstOther = names.find((n) => n !== numeric[numeric.length - 1]);
    x.value = firstOther;
    y.value = numeric[numeric.length - 1];
  }
  const chartBox = h("div", { id: "chart" });
  const draw = (kind) => {
    const rows = result.rows.slice(0, 500);
    chartBox.replaceChildren(chart(kind, rows.map((r) => r[x.value] ?? "NULL"), rows.map((r) => r[y.value]), `${y.value} by ${x.value}`));
  };
  out.replaceChildren(
    h("p", { class: "muted", id: "row-count" }, `${number(result.row_count)} rows in ${ms} ms` + (result.truncated ? ` (first ${number(result.rows.length)} shown; the CSV has them all)` : "")),
    h("div", { class: "result" }, grid),
    h("div", { class: "toolbar" },
      "Chart", x, y,
      h("button", { id: "chart-bar", onclick: () => draw("bar") }, "Bar chart"),
      h("button", { id: "chart-line", onclick: () => draw("line") }, "Line chart")),
    chartBox);
}

async function downloadCsv(sql, button) {
  button.disabled = true;
  try {
    const response = await api("/api/query", { method: "POST", json: { sql, format: "csv" }, raw: true });
    const blob = await response.blob();
    const link = h("a", { href: URL.createObjectURL(blob), download: "query.csv" });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(link.href), 10000);
  } catch (e) {
    notice(e.message, true);
  } finally {
    button.disabled = false;
  }
}

// ---- routing -----------------------------------------------------------------------------

async function route() {
  clearTimeout(refreshTimer);
  const hash = location.hash.slice(1) || "/";
  const [path, search] = hash.split("?");
  const params = new URLSearchParams(search || "");
  const section = path.startsWith("/table/") ? "overview" : path === "/runs" ? "runs" : path === "/sql" ? "sql" : "overview";
  for (const a of document.querySelectorAll("nav a")) {
    if (a.dataset.nav === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  try {
    if (path.startsWith("/table/")) {
      await tablePage(decodeURIComponent(path.slice(7)));
    } else if (path === "/runs") {
      await runsPage(params);
    } else if (path === "/sql") {
      if (!lastOverview) lastOverview = await api("/api/overview");
      sqlPage();
    } else {
      await overview();
      refreshTimer = setTimeout(() => { if (!document.hidden) route(); else refreshTimer = setTimeout(route, REFRESH_MS); }, REFRESH_MS);
    }
    document.body.dataset.ready = section;
  } catch (e) {
    view(h("pre", { class: "error", role: "alert", id: "failure" }, e.message));
    document.body.dataset.ready = "error";
  }
}

document.getElementById("login").addEventListener("submit", (e) => {
  e.preventDefault();
  sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value);
  document.getElementById("token").value = "";
  e.target.hidden = true;
  notice("");
  route();
});
window.addEventListener("hashchange", () => { notice(""); route(); });
route();
