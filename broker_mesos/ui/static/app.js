// broker-mesos dashboard. Everything shown came from the cluster and is untrusted: it is only ever set
// with textContent (never parsed as HTML), and ids in links are URI-encoded.
"use strict";

const PAGE = 50;
const LOG_KEEP = 256 * 1024;  // characters of log kept on the page
const TASK_STATES = ["", "STAGING", "STARTING", "RUNNING", "FINISHED", "FAILED", "KILLED", "LOST", "ERROR",
  "DROPPED", "UNREACHABLE", "GONE_BY_OPERATOR"];
const main = document.getElementById("main");
let route = { name: "", args: {}, parts: [] };
let refreshTimer = null;
let logTimer = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "text") node.textContent = v;
    else if (k === "onclick") node.addEventListener("click", v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function fmt(name, v) {
  if (v === undefined || v === null) return "-";
  if (name === "mem" || name === "disk") return v >= 10240 ? (v / 1024).toFixed(1) + "G" : Math.round(v) + "M";
  return String(Math.round(v * 1000) / 1000);
}

function when(ts) { return ts ? new Date(ts * 1000).toLocaleTimeString() : "-"; }

function usedOf(used, total, name) { return fmt(name, (used || {})[name] || 0) + "/" + fmt(name, (total || {})[name] || 0); }

function bar(used, total) {
  const pct = total > 0 ? Math.min(100, 100 * used / total) : 0;
  const inner = el("span"); inner.style.width = pct.toFixed(1) + "%";
  return el("span", { class: "bar", title: pct.toFixed(0) + "%" }, inner);
}

function taskLink(t) {
  return el("a", { href: "#/task/" + encodeURIComponent(t.framework_id) + "/" + encodeURIComponent(t.task_id),
    text: t.task_id });
}

function table(id, headers, rows) {
  const head = el("tr", {}, ...headers.map((h) => el("th", { text: h })));
  const body = el("tbody");
  for (const r of rows) {
    const tr = el("tr", { "data-id": r.id });
    for (const c of r.cells) tr.append(c instanceof Node ? el("td", {}, c) : el("td", { text: c === undefined ? "" : String(c) }));
    body.append(tr);
  }
  return el("table", { id }, el("thead", {}, head), body);
}

async function get(path) {
  const r = await fetch(path, { headers: { Accept: "application/json" } });
  const body = await r.json().catch(() => ({ error: "HTTP " + r.status }));
  if (!r.ok && !body.error) body.error = "HTTP " + r.status;
  return body;
}

function pager(data, base) {
  const from = data.total ? data.offset + 1 : 0, to = data.offset + data.items.length;
  const go = (off) => () => { location.hash = base + (base.includes("?") ? "&" : "?") + "offset=" + off; };
  const box = el("div", { class: "pager" });
  if (data.offset > 0) box.append(el("button", { onclick: go(Math.max(0, data.offset - PAGE)), text: "< prev" }));
  if (to < data.total) box.append(el("button", { onclick: go(data.offset + PAGE), text: "next >" }));
  box.append(el("span", { id: "range", text: from + "-" + to + " of " + data.total }));
  return box;
}

function parseRoute() {
  const h = location.hash.replace(/^#\/?/, "");
  const [path, query] = h.split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const args = Object.fromEntries(new URLSearchParams(query || ""));
  return { name: parts[0] || "overview", parts, args };
}

async function overview() {
  const d = await get("/api/summary");
  const s = d.summary;
  const box = el("div", {}, el("h2", { text: "Overview" }));
  if (!s) { box.append(el("p", { text: "waiting for the master..." })); return box; }
  box.append(el("p", { id: "master", text: "master " + s.master_id + ", up " + Math.round(s.uptime) + " s; " +
    d.agents + " agent(s), " + d.frameworks + " framework(s), " + s.offers + " offer(s) outstanding" }));
  const names = Object.keys(s.total).sort();
  box.append(el("h3", { text: "Resources" }), table("resources", ["RESOURCE", "USED/TOTAL", "", "OFFERED"],
    names.map((n) => ({ id: n, cells: [n, usedOf(s.used, s.total, n), bar(s.used[n] || 0, s.total[n]), fmt(n, s.offered[n])] }))));
  box.append(el("h3", { text: "Agents by state" }), table("agent-states", ["STATE", "AGENTS"],
    Object.entries(s.agents).map(([k, v]) => ({ id: k, cells: [k, v] }))));
  box.append(el("h3", { text: "Tasks by state" }), table("task-states", ["STATE", "TASKS"],
    Object.entries(s.tasks).map(([k, v]) => ({ id: k, cells: [el("a", { href: "#/tasks?state=" + encodeURIComponent(k), text: k }), v] }))));
  if (d.roles.length) {
    box.append(el("h3", { text: "Roles" }), table("roles", ["ROLE", "WEIGHT", "FRAMEWORKS", "ALLOCATED"],
      d.roles.map((r) => ({ id: r.role, cells: [r.role || "*", r.weight, r.frameworks.length,
        Object.entries(r.allocated).map(([k, v]) => k + ":" + fmt(k, v)).join(" ")] }))));
  }
  const ev = await get("/api/events");
  box.append(el("h3", { text: "Recent events" }), table("events", ["TIME", "KIND", "DETAIL"],
    ev.items.slice(0, 20).map((e, i) => ({ id: i, cells: [when(e.timestamp), e.kind, JSON.stringify(e.detail)] }))));
  return box;
}

async function agents() {
  const off = Number(route.args.offset || 0);
  const d = await get("/api/agents?limit=" + PAGE + "&offset=" + off);
  return el("div", {}, el("h2", { text: "Agents" }), pager(d, "#/agents"),
    table("agents", ["AGENT", "HOSTNAME", "STATE", "CPUS", "", "MEM", "DISK", "TASKS", "LAST SEEN"],
      d.items.map((a) => ({ id: a.agent_id, cells: [a.agent_id, a.hostname, a.state, usedOf(a.used, a.total, "cpus"),
        bar((a.used || {}).cpus || 0, (a.total || {}).cpus || 0), usedOf(a.used, a.total, "mem"),
        usedOf(a.used, a.total, "disk"), a.tasks, when(a.last_seen)] }))));
}

async function frameworks() {
  const off = Number(route.args.offset || 0);
  const d = await get("/api/frameworks?limit=" + PAGE + "&offset=" + off);
  return el("div", {}, el("h2", { text: "Frameworks" }), pager(d, "#/frameworks"),
    table("frameworks", ["FRAMEWORK", "NAME", "ROLE", "STATE", "USER", "CPUS", "MEM", "TASKS"],
      d.items.map((f) => ({ id: f.framework_id, cells: [el("a", { href: "#/tasks?framework_id=" + encodeURIComponent(f.framework_id), text: f.framework_id }),
        f.name, f.role, f.state, f.user, fmt("cpus", f.allocated.cpus), fmt("mem", f.allocated.mem), f.tasks] }))));
}

async function tasks() {
  const off = Number(route.args.offset || 0), state = route.args.state || "", fw = route.args.framework_id || "";
  const q = new URLSearchParams({ limit: PAGE, offset: off, state, framework_id: fw });
  const d = await get("/api/tasks?" + q);
  const filters = el("div", { class: "filters" }, "state: ");
  for (const s of TASK_STATES) {
    const on = state.replace(/^TASK_/, "") === s;
    const p = new URLSearchParams(); if (s) p.set("state", s); if (fw) p.set("framework_id", fw);
    filters.append(el("button", { class: on ? "on" : "", text: s || "all", onclick: () => { location.hash = "#/tasks?" + p; } }));
  }
  const base = "#/tasks?" + new URLSearchParams({ state, framework_id: fw });
  return el("div", {}, el("h2", { text: "Tasks" + (fw ? " of " + fw : "") }), filters, pager(d, base),
    table("tasks", ["TASK", "FRAMEWORK", "AGENT", "STATE", "UPDATED", "CPUS", "MEM", "MESSAGE"],
      d.items.map((t) => ({ id: t.framework_id + "/" + t.task_id, cells: [taskLink(t), t.framework_id, t.agent_id,
        el("span", { class: "state-" + t.state, text: t.state }), when(t.updated_at), fmt("cpus", t.resources.cpus),
        fmt("mem", t.resources.mem), t.message] }))));
}

async function taskPage() {
  const [, fw, id] = route.parts;
  const d = await get("/api/task/" + encodeURIComponent(fw) + "/" + encodeURIComponent(id));
  const box = el("div", {}, el("h2", { text: "Task " + id }));
  if (d.error) { box.append(el("p", { class: "error", text: d.error })); return box; }
  const t = d.task;
  box.append(table("task", ["FIELD", "VALUE"], [["framework", t.framework_id], ["agent", t.agent_id + " (" + t.hostname + ")"],
    ["state", t.state], ["resources", Object.entries(t.resources).map(([k, v]) => k + ":" + fmt(k, v)).join(" ")],
    ["message", t.message], ["reason", t.reason], ["exit code", t.exit_code === null ? "-" : t.exit_code]]
    .map(([k, v]) => ({ id: k, cells: [k, v] }))));
  box.append(el("h3", { text: "Status history" }), table("history", ["TIME", "STATE", "SOURCE", "REASON", "MESSAGE"],
    d.history.map((s, i) => ({ id: i, cells: [when(s.timestamp), s.state, s.source, s.reason, s.message] }))));
  const file = route.args.file === "stderr" ? "stderr" : "stdout";
  const other = file === "stdout" ? "stderr" : "stdout";
  box.append(el("h3", {}, "Log (" + file + ") ", el("a", { href: "#/task/" + encodeURIComponent(fw) + "/" +
    encodeURIComponent(id) + "?file=" + other, text: "show " + other })));
  const pre = el("pre", { id: "log" }), note = el("p", { id: "log-state", text: "reading..." });
  box.append(pre, note);
  followLog(fw, id, file, pre, note);
  return box;
}

function followLog(fw, id, file, pre, note) {
  let next = null;
  const base = "/api/log/" + encodeURIComponent(fw) + "/" + encodeURIComponent(id) + "?file=" + file;
  const step = async () => {
    if (!pre.isConnected) return;
    const d = await get(base + (next === null ? "&tail=200" : "&offset=" + next));
    if (!pre.isConnected) return;
    if (d.error) { note.textContent = d.error; note.className = "error"; logTimer = setTimeout(step, 3000); return; }
    if (d.text) {
      pre.textContent = (pre.textContent + d.text).slice(-LOG_KEEP);
      pre.scrollTop = pre.scrollHeight;
    }
    next = d.next;
    if (d.done) { note.textContent = "the task has ended: this is all of its " + file; return; }
    note.textContent = "following (" + d.next + " bytes)";
    logTimer = setTimeout(step, d.next < d.size ? 0 : 1500);
  };
  logTimer = setTimeout(step, 0);  // once the page holding `pre` is shown
}

const pages = { overview, agents, frameworks, tasks, task: taskPage };

async function render() {
  route = parseRoute();
  clearTimeout(logTimer);
  const page = pages[route.name] || overview;
  try {
    const node = await page();
    main.replaceChildren(node);
  } catch (e) {
    main.replaceChildren(el("p", { class: "error", text: "cannot load: " + e }));
  }
}

// A change on the stream re-reads the current page from this server (never the whole state), at most
// every 700 ms; the task page re-reads only its task, when an update is about it.
function changed(kind, data) {
  if (route.name === "task") {
    if (kind !== "status" || data.task.task_id !== route.parts[2] || data.task.framework_id !== route.parts[1]) return;
    if (refreshTimer) return;
    refreshTimer = setTimeout(async () => {
      refreshTimer = null;
      const d = await get("/api/task/" + encodeURIComponent(route.parts[1]) + "/" + encodeURIComponent(route.parts[2]));
      const old = document.getElementById("history");
      if (d.error || !old) return;
      const state = document.querySelector("#task tr[data-id=state] td:last-child");
      if (state) state.textContent = d.task.state;
      old.replaceWith(table("history", ["TIME", "STATE", "SOURCE", "REASON", "MESSAGE"],
        d.history.map((s, i) => ({ id: i, cells: [when(s.timestamp), s.state, s.source, s.reason, s.message] }))));
    }, 300);
    return;
  }
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => { refreshTimer = null; const node = await pages[route.name]?.(); if (node) main.replaceChildren(node); }, 700);
}

function connect() {
  const live = document.getElementById("live");
  const source = new EventSource("/api/stream");
  let lost = false;  // after a lost stream, what happened meanwhile is read again
  source.onopen = () => { live.className = "on"; live.textContent = "live"; if (lost) { lost = false; render(); } };
  source.onerror = () => { lost = true; live.className = "off"; live.textContent = "reconnecting"; };
  for (const kind of ["status", "event", "summary", "loaded"]) {
    source.addEventListener(kind, (m) => { try { changed(kind, JSON.parse(m.data)); } catch (e) { /* ignore a bad message */ } });
  }
  source.addEventListener("resync", () => render());
}

window.addEventListener("hashchange", render);
connect();
render();
