// Ferret dashboard: the pages behind the agent's `dashboard` sink (issue #9).
// Plain JavaScript, no libraries: hash routes, SVG charts, a flame graph and a
// span waterfall drawn here, data from the JSON API (Sources/Sinks/Dashboard/README.md),
// refreshed every 2 s while the tab is visible.
"use strict";

const REFRESH_MS = 2000;
const COLORS = ["#2f6fde", "#e0703a", "#16a39a", "#9b59b6", "#d64545", "#8a6d1f", "#5b6b8c"];
const main = document.getElementById("main");
const statusEl = document.getElementById("status");
let page = null;        // the current page: {update()}
let generation = 0;     // bumps on navigation; stale responses are dropped

// ---- helpers ---------------------------------------------------------------

function esc(s) {
  return String(s == null ? "" : s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

async function api(path) {
  const r = await fetch(path, { cache: "no-store" });
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { msg = (await r.json()).error || msg; } catch (_) { /* not JSON */ }
    const e = new Error(msg); e.status = r.status; throw e;
  }
  return r.json();
}

function fmtTime(ms) {
  const d = new Date(ms);
  return d.toLocaleTimeString([], { hour12: false });
}
function fmtDateTime(ms) {
  const d = new Date(ms);
  return d.toLocaleDateString([], { month: "short", day: "numeric" }) + " " + fmtTime(ms);
}
function fmtNum(v, digits) {
  if (v == null || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(2) + "G";
  if (a >= 1e6) return (v / 1e6).toFixed(2) + "M";
  if (a >= 1e4) return (v / 1e3).toFixed(1) + "k";
  if (Number.isInteger(v)) return String(v);
  if (a < 0.01) return String(Number(v.toPrecision(2)));
  return String(Number(v.toFixed(digits == null ? (a < 1 ? 3 : 2) : digits)));
}
function fmtBytes(v) {
  if (v == null || !isFinite(v)) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0, a = Math.abs(v);
  while (a >= 1024 && i < units.length - 1) { a /= 1024; v /= 1024; i++; }
  return (i === 0 ? String(Math.round(v)) : v.toFixed(a >= 100 ? 0 : 1)) + " " + units[i];
}
function fmtSeconds(v) {
  if (v == null || !isFinite(v)) return "–";
  const a = Math.abs(v);
  if (a === 0) return "0";
  if (a < 1e-3) return (v * 1e6).toFixed(a < 1e-5 ? 1 : 0) + " µs";
  if (a < 1) return (v * 1e3).toFixed(a < 1e-2 ? 2 : 1) + " ms";
  return v.toFixed(2) + " s";
}
function fmtUnit(v, unit) {
  if (unit === "By") return fmtBytes(v);
  if (unit === "s") return fmtSeconds(v);
  if (unit === "%") return fmtNum(v, 1) + "%";
  if (unit === "ratio") return fmtRatio(v);
  return fmtNum(v);
}
function fmtRatio(f) {
  if (f == null || !isFinite(f)) return "–";
  const p = f * 100, a = Math.abs(p);
  return (a === 0 ? "0" : a >= 10 ? p.toFixed(1) : String(Number(p.toPrecision(2)))) + "%";
}
function fmtPercent(f) { return f == null || !isFinite(f) ? "–" : (f * 100).toFixed(f < 0.1 ? 2 : 1) + "%"; }
function badge(text, cls) { return `<span class="badge ${esc(cls || text)}">${esc(text)}</span>`; }
function setNav(name) {
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.dataset.nav === name);
}

// ---- SVG line chart ----------------------------------------------------------

const SVGNS = "http://www.w3.org/2000/svg";
function svgEl(name, attrs, text) {
  const e = document.createElementNS(SVGNS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text != null) e.textContent = text;
  return e;
}

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) { hi = lo + 1; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw) || raw;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
}

// A chart: a titled box with an SVG and a legend of last values. `lines` are
// {label, series (metric name), attrs, points: [[t, v]]}.
function drawChart(box, lines, unit, from, to) {
  const svg = box.querySelector("svg");
  // A series younger than the range: the time axis starts at its first point
  // (and spans a minute at least).
  const first = Math.min(...lines.flatMap(l => l.points.map(p => p[0])));
  if (isFinite(first) && first > from) from = Math.max(from, Math.min(first, to - 60e3));
  const w = svg.clientWidth || 400, h = svg.clientHeight || 170;
  const L = 62, R = 8, T = 8, B = 20;
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`);
  const all = lines.flatMap(l => l.points.map(p => p[1])).filter(v => isFinite(v));
  if (all.length === 0) {
    svg.appendChild(svgEl("text", { x: w / 2, y: h / 2, "text-anchor": "middle", class: "empty" }, "no data in this range"));
  } else {
    let lo = Math.min(0, ...all), hi = Math.max(...all);
    if (hi === lo) hi = lo + (lo === 0 ? 1 : Math.abs(lo) * 0.1);
    hi = hi + (hi - lo) * 0.05;
    const ticks = niceTicks(lo, hi, 4);
    hi = Math.max(hi, ticks[ticks.length - 1]);
    const x = t => L + (t - from) / (to - from) * (w - L - R);
    const y = v => T + (1 - (v - lo) / (hi - lo)) * (h - T - B);
    for (const t of ticks) {
      svg.appendChild(svgEl("line", { x1: L, x2: w - R, y1: y(t), y2: y(t), class: "gridline" }));
      svg.appendChild(svgEl("text", { x: L - 6, y: y(t) + 4, "text-anchor": "end" }, fmtUnit(t, unit)));
    }
    for (let i = 0; i <= 3; i++) {
      const t = from + (to - from) * i / 3;
      svg.appendChild(svgEl("text", { x: x(t), y: h - 5, "text-anchor": i === 0 ? "start" : i === 3 ? "end" : "middle" }, fmtTime(t)));
    }
    lines.forEach((l, i) => {
      const pts = l.points.filter(p => isFinite(p[1]) && p[0] >= from && p[0] <= to);
      if (pts.length === 0) return;
      const d = pts.map((p, j) => (j ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join("");
      svg.appendChild(svgEl("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 1.6 }));
    });
  }
  const legend = box.querySelector(".legend");
  legend.innerHTML = lines.map((l, i) => {
    const last = l.points.length ? l.points[l.points.length - 1] : null;
    return `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(l.label)} ` +
      `<span class="last" data-series="${esc(l.series)}" data-attributes="${esc(l.attrs || "")}" ` +
      `data-time="${last ? last[0] : ""}" data-value="${last ? last[1] : ""}">${last ? esc(fmtUnit(last[1], unit)) : "–"}</span></span>`;
  }).join("");
}

// The points of a series for a chart: gauges as they are (the last value of
// each point), counters as a per-second rate between consecutive points.
function chartPoints(s, total) {
  const p = s.points;
  if (s.kind !== "counter" || total) return p.map(q => [q[0], q[4]]);
  const out = [];
  for (let i = 1; i < p.length; i++) {
    const dt = (p[i][0] - p[i - 1][0]) / 1000, dv = p[i][4] - p[i - 1][4];
    if (dt > 0 && dv >= 0) out.push([p[i][0], dv / dt]);
  }
  return out;
}

// ---- pages -------------------------------------------------------------------

const RANGES = [["5m", 300e3], ["15m", 900e3], ["1h", 3600e3], ["6h", 21600e3], ["24h", 86400e3]];
let rangeMs = 900e3;

function rangePicker() {
  return `<label>Range <select id="range">${RANGES.map(([n, ms]) =>
    `<option value="${ms}"${ms === rangeMs ? " selected" : ""}>last ${n}</option>`).join("")}</select></label>`;
}
function bindRange(onChange) {
  const sel = document.getElementById("range");
  if (sel) sel.addEventListener("change", () => { rangeMs = Number(sel.value); onChange(); });
}

function overviewPage() {
  setNav("overview");
  main.innerHTML = `<h1>Process groups</h1>
    <table id="groups"><thead><tr><th>Group</th><th>Rule</th><th class="num">Instances</th><th>Go</th><th>Linkage</th>
    <th>Health</th><th>Active alerts</th></tr></thead><tbody></tbody></table>
    <p class="muted" id="history-note"></p>`;
  const body = main.querySelector("#groups tbody");
  return {
    async update(gen) {
      const o = await api("/api/overview");
      if (gen !== generation) return;
      body.innerHTML = o.groups.length === 0
        ? `<tr><td colspan="7" class="muted">No process matched a rule yet.</td></tr>`
        : o.groups.map(g => `<tr class="clickable" data-group="${esc(g.name)}">
          <td><a href="#/group/${encodeURIComponent(g.name)}">${esc(g.name)}</a></td><td>${esc(g.rule)}</td>
          <td class="num">${g.instances}</td><td class="go-versions">${esc(g.go_versions.join(", ") || "–")}</td>
          <td>${esc(g.linkage.join(", ") || "–")}</td><td>${badge(g.health)}</td>
          <td>${g.alerts.length ? badge(String(g.alerts.length), "alert") + " " + alertText(g.alerts[0]) : '<span class="muted">none</span>'}</td></tr>`).join("");
      main.querySelector("#history-note").textContent =
        `${o.history.series} series in memory (${fmtBytes(o.history.bytes)})` + (o.history.refused_series ? `, ${o.history.refused_series} refused (max_bytes)` : "");
    },
    click(e) {
      const tr = e.target.closest("tr[data-group]");
      if (tr && e.target.tagName !== "A") location.hash = "#/group/" + encodeURIComponent(tr.dataset.group);
    },
  };
}

// The group page's charts: one line per process (the largest GROUP_LINES).
const GROUP_CHARTS = [
  { id: "goroutines", title: "Goroutines", unit: "", name: "go.goroutine.count" },
  { id: "heap", title: "Heap used", unit: "By", name: "go.memory.heap.used" },
  { id: "cpu", title: "CPU (cores, user + system)", unit: "", name: "process.cpu.time" },
  { id: "rss", title: "Resident memory", unit: "By", name: "process.memory.usage" },
];
const GROUP_LINES = 8;

// Adds up the series of one process that differ only by attributes (user and
// system CPU), point by point.
function sumByTime(lists) {
  const m = new Map();
  for (const pts of lists) for (const [t, v] of pts) m.set(t, (m.get(t) || 0) + v);
  return [...m.entries()].sort((a, b) => a[0] - b[0]);
}

function groupPage(group) {
  setNav("overview");
  main.innerHTML = `<h1>Group ${esc(group)}</h1>
    <div class="toolbar"><a href="#/http/${encodeURIComponent(group)}">HTTP</a><a href="#/events/${encodeURIComponent(group)}">Events</a>
    <span style="flex:1"></span>${rangePicker()}</div>
    <table id="processes"><thead><tr><th class="num">PID</th><th>Executable</th><th>Go</th><th>Linkage</th><th>Stripped</th>
    <th>Health</th><th>Seen</th><th></th></tr></thead><tbody></tbody></table>
    <div class="grid" id="charts" style="margin-top:14px">${GROUP_CHARTS.map(c =>
      `<div class="chart" data-chart="${c.id}"><h3>${esc(c.title)}</h3><svg></svg><div class="legend"></div></div>`).join("")}</div>`;
  const body = main.querySelector("#processes tbody");
  const p = {
    async update(gen) {
      const now = Date.now(), from = now - rangeMs;
      const [r, data] = await Promise.all([api("/api/processes?group=" + encodeURIComponent(group)),
        api(`/api/series/batch?group=${encodeURIComponent(group)}&names=${GROUP_CHARTS.map(c => c.name).join(",")}&from=${from}&to=${now}&points=300`)]);
      if (gen !== generation) return;
      for (const c of GROUP_CHARTS) {
        const byPid = new Map();
        for (const s of data.series.filter(s => s.name === c.name)) {
          if (!byPid.has(s.pid)) byPid.set(s.pid, []);
          byPid.get(s.pid).push(chartPoints(s));
        }
        const lines = [...byPid.entries()].map(([pid, lists]) => ({ label: "pid " + pid, series: c.name, attrs: "pid=" + pid, points: sumByTime(lists) }))
          .sort((a, b) => (b.points.length ? b.points[b.points.length - 1][1] : 0) - (a.points.length ? a.points[a.points.length - 1][1] : 0))
          .slice(0, GROUP_LINES);
        drawChart(main.querySelector(`.chart[data-chart="${c.id}"]`), lines, c.unit, from, now);
      }
      body.innerHTML = r.processes.length === 0 ? `<tr><td colspan="8" class="muted">No process in this group.</td></tr>` :
        r.processes.map(p => `<tr class="clickable" data-pid="${p.pid}"><td class="num"><a href="#/process/${p.pid}">${p.pid}</a></td>
          <td>${esc(p.executable)}</td><td>${esc(p.go_version || "–")}</td><td>${esc(p.linkage || "–")}</td>
          <td>${p.stripped == null ? "–" : p.stripped ? "yes" : "no"}</td><td>${badge(p.health)}</td>
          <td>${fmtDateTime(p.last_seen)}</td>
          <td>${p.has_profile ? `<a href="#/hotspots/${p.pid}">hotspots</a>` : ""}</td></tr>`).join("");
    },
    click(e) {
      const tr = e.target.closest("tr[data-pid]");
      if (tr && e.target.tagName !== "A") location.hash = "#/process/" + tr.dataset.pid;
    },
  };
  bindRange(() => p.update(generation));
  return p;
}

// The process page's charts: title, unit, and the series drawn (metric name,
// an attribute filter, a label).
const CHARTS = [
  { id: "goroutines", title: "Goroutines", unit: "", lines: [["go.goroutine.count", null, "goroutines"]] },
  { id: "threads", title: "Threads and idle Ps", unit: "", lines: [["go.sched.threads", null, "Ms"], ["process.thread.count", null, "OS threads"],
    ["go.sched.threads.idle", null, "idle Ms"], ["go.sched.procs.idle", null, "idle Ps"]] },
  { id: "heap", title: "Memory", unit: "By", lines: [["go.memory.heap.used", null, "heap used"], ["go.memory.heap.committed", null, "heap committed"],
    ["go.memory.heap.idle", null, "heap idle"], ["go.memory.heap.released", null, "released"],
    ["go.memory.stack.committed", null, "stacks"], ["go.memory.offheap.committed", null, "off-heap"]] },
  { id: "gc", title: "GC cycles (count)", unit: "", lines: [["go.gc.count", null, "GCs", "total"]] },
  { id: "gc-pause", title: "GC suspension and GC CPU (share of time)", unit: "ratio", lines: [["go.gc.pause.time", null, "stopped the world"],
    ["go.gc.cpu.fraction", null, "GC CPU"]] },
  { id: "cpu", title: "CPU (cores)", unit: "", lines: [["process.cpu.time", "cpu.mode=user", "user"], ["process.cpu.time", "cpu.mode=system", "system"]] },
  { id: "rss", title: "Resident memory", unit: "By", lines: [["process.memory.usage", null, "RSS"]] },
];
const CHART_NAMES = [...new Set(CHARTS.flatMap(c => c.lines.map(l => l[0])))];

function processPage(pid) {
  setNav("overview");
  main.innerHTML = `<h1 id="title">Process ${pid}</h1>
    <div class="toolbar"><a href="#/hotspots/${pid}" id="hotspots-link">Hotspots</a><a href="#/goroutines/${pid}" id="goroutines-link">Goroutines</a>
    <a id="http-link" href="#/http">HTTP</a>
    <a href="#/events" id="events-link">Events</a><span style="flex:1"></span>${rangePicker()}</div>
    <div class="panel"><dl class="props" id="props"></dl></div>
    <div class="grid" id="charts">${CHARTS.map(c => `<div class="chart" data-chart="${c.id}"><h3>${esc(c.title)}</h3><svg></svg><div class="legend"></div></div>`).join("")}</div>`;
  let propsShown = false;
  const p = {
    async update(gen) {
      const now = Date.now(), from = now - rangeMs;
      const [proc, data] = await Promise.all([
        propsShown ? null : api("/api/process?pid=" + pid),
        api(`/api/series/batch?pid=${pid}&names=${CHART_NAMES.join(",")}&from=${from}&to=${now}&points=400`),
      ]);
      if (gen !== generation) return;
      if (proc) {
        propsShown = true;
        document.getElementById("title").textContent = `${proc.group} · pid ${proc.pid}`;
        document.getElementById("http-link").href = "#/http/" + encodeURIComponent(proc.group);
        document.getElementById("events-link").href = "#/events/" + encodeURIComponent(proc.group);
        const rows = [["Group", proc.group], ["Rule", proc.rule], ["Health", null, badge(proc.health)],
          ["Go version", proc.go_version || "not Go"], ["Linkage", proc.linkage || "–"],
          ["Stripped", proc.stripped == null ? "–" : proc.stripped ? "yes (no symbol table)" : "no"],
          ["Module", proc.module || "–"], ["Executable", proc.executable_path], ["Command line", proc.command_line],
          ["Build settings", null, proc.build_settings.length ? `<details><summary>${proc.build_settings.length} settings</summary>` +
            proc.build_settings.map(esc).join("<br>") + "</details>" : "–"]];
        const ct = proc.container || {};
        if (ct["container.id"] || ct["k8s.pod.uid"]) {
          rows.splice(3, 0, ["Container", [ct["container.runtime"], ct["container.name"], (ct["container.id"] || "").slice(0, 12)].filter(Boolean).join(" · ") || "–"]);
          if (ct["container.image.name"]) rows.splice(4, 0, ["Image", ct["container.image.name"] + (ct["container.image.tags"] ? ":" + ct["container.image.tags"] : "")]);
          if (ct["k8s.pod.uid"]) rows.splice(4, 0, ["Pod", [ct["k8s.namespace.name"], ct["k8s.pod.name"]].filter(Boolean).join("/") || ct["k8s.pod.uid"]]);
        }
        if (proc.runtime_problem) rows.push(["Runtime figures", null, `<span class="error-text">${esc(proc.runtime_problem)}</span>`]);
        document.getElementById("props").innerHTML = rows.map(([k, v, html]) =>
          `<dt>${esc(k)}</dt><dd data-prop="${esc(k)}">${html != null ? html : esc(v)}</dd>`).join("");
      }
      for (const c of CHARTS) {
        const lines = [];
        for (const [name, attrs, label, total] of c.lines) {
          for (const s of data.series.filter(s => s.name === name && (attrs == null || s.attributes === attrs))) {
            lines.push({ label: label + (attrs == null && s.attributes ? " " + s.attributes : ""), series: name, attrs: s.attributes, points: chartPoints(s, total === "total") });
          }
        }
        drawChart(main.querySelector(`.chart[data-chart="${c.id}"]`), lines, c.unit, from, now);
      }
    },
  };
  bindRange(() => p.update(generation));
  return p;
}

function flameColor(name) {
  let h = 0;
  for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
  const go = name.startsWith("runtime.") ? 200 : name.includes("(") || name.includes(".") ? 20 : 45;
  return `hsl(${go + (h % 30)}, ${55 + (h % 20)}%, ${62 + (h % 12)}%)`;
}

// A flame graph (root at the top, callees below) of a {n, v, c} tree; a click
// zooms into a frame, a click on the root zooms out.
function drawFlame(svg, root, total) {
  const rowH = 18, width = svg.clientWidth || 1200;
  let depth = 0;
  (function walk(n, d) { depth = Math.max(depth, d); (n.c || []).forEach(k => walk(k, d + 1)); })(root, 0);
  svg.setAttribute("height", (depth + 1) * rowH + 4);
  svg.setAttribute("viewBox", `0 0 ${width} ${(depth + 1) * rowH + 4}`);
  function render(focus, path) {
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    const scale = width / Math.max(1, focus.v);
    function node(n, x, d) {
      const w = n.v * scale;
      if (w < 0.5) return;
      const g = svgEl("g", { "data-name": n.n });
      const r = svgEl("rect", { x: x, y: d * rowH, width: Math.max(0, w - 0.5), height: rowH - 1, fill: d === 0 ? "#c9d2e3" : flameColor(n.n) });
      const t = svgEl("title", {}, `${n.n}\n${n.v} samples, ${fmtPercent(n.v / total)}`);
      g.appendChild(r); g.appendChild(t);
      if (w > 40) {
        const chars = Math.floor((w - 6) / 6.2);
        g.appendChild(svgEl("text", { x: x + 3, y: d * rowH + 13 }, n.n.length > chars ? n.n.slice(0, Math.max(0, chars - 1)) + "…" : n.n));
      }
      g.addEventListener("click", ev => { ev.stopPropagation(); render(d === 0 && path.length ? path[path.length - 1] : n, d === 0 ? path.slice(0, -1) : path.concat([focus])); });
      svg.appendChild(g);
      let cx = x;
      for (const k of n.c || []) { node(k, cx, d + 1); cx += k.v * scale; }
    }
    node(focus, 0, 0);
  }
  render(root, []);
}

function hotspotsPage(pid) {
  setNav("overview");
  main.innerHTML = `<h1>Hotspots · pid ${pid}</h1>
    <div class="toolbar"><a href="#/process/${pid}">Process</a><span id="window" class="muted"></span>
    <span style="flex:1"></span><a id="download" href="/api/profile.pb.gz?pid=${pid}" download>Download .pb.gz</a>
    <label><input type="checkbox" id="follow" checked> follow new windows</label></div>
    <h2>Flame graph</h2><svg id="flame"></svg>
    <h2>Top functions</h2>
    <table id="top"><thead><tr><th>Function</th><th class="num">Self</th><th class="num">Total</th></tr></thead><tbody></tbody></table>`;
  let shown = null;
  return {
    async update(gen) {
      if (shown && !document.getElementById("follow").checked) return;
      const proc = await api("/api/process?pid=" + pid);
      if (!proc.has_profile) {
        if (gen === generation) main.querySelector("#window").textContent = "No profile of this process yet (the cpu_profiler collector sends one per window).";
        return;
      }
      // The profile is decoded only when a new window has arrived.
      if (proc.profile_start === shown) return;
      const r = await api("/api/profile?pid=" + pid + "&limit=40");
      if (gen !== generation) return;
      shown = r.start;
      const v = r.view;
      main.querySelector("#window").textContent =
        `window of ${fmtSeconds(r.duration_ns / 1e9)} from ${fmtDateTime(r.start)} · ${v.total} samples`;
      main.querySelector("#top tbody").innerHTML = v.functions.map(f => `<tr><td class="fn">${esc(f.name)}</td>
        <td class="num">${fmtPercent(v.total ? f.flat / v.total : 0)}</td><td class="num">${fmtPercent(v.total ? f.cumulative / v.total : 0)}</td></tr>`).join("");
      drawFlame(document.getElementById("flame"), v.flame, v.total);
    },
  };
}

function tracesTable(id, traces) {
  return `<table id="${id}"><thead><tr><th>Trace</th><th>Group</th><th>Started</th><th class="num">Duration</th><th class="num">Spans</th><th></th></tr></thead><tbody>` +
    (traces.length === 0 ? `<tr><td colspan="6" class="muted">No traces yet.</td></tr>` :
      traces.map(t => `<tr class="clickable" data-trace="${esc(t.id)}"><td><a href="#/trace/${esc(t.id)}">${esc(t.name || t.id)}</a></td>
        <td>${esc(t.group || "")}</td><td>${fmtTime(t.start / 1e6)}</td><td class="num">${fmtSeconds(t.duration_ns / 1e9)}</td>
        <td class="num">${t.spans}</td><td>${t.error ? badge("error") : ""}</td></tr>`).join("")) + "</tbody></table>";
}

function httpPage(group) {
  setNav("http");
  main.innerHTML = `<h1>HTTP${group ? " · " + esc(group) : ""}</h1>
    <div class="toolbar">${group ? `<a href="#/group/${encodeURIComponent(group)}">Group</a><a href="#/http">All groups</a>` : ""}
    <span style="flex:1"></span>${rangePicker()}</div>
    <h2>Routes</h2>
    <table id="routes"><thead><tr><th>Group</th><th>Route</th><th class="num">Requests</th><th class="num">Rate</th><th class="num">Errors</th>
    <th class="num">p50</th><th class="num">p95</th><th class="num">p99</th></tr></thead><tbody></tbody></table>
    <div class="grid" id="route-charts" style="margin-top:14px">
      <div class="chart" data-chart="rate"><h3 id="route-title">Requests per second</h3><svg></svg><div class="legend"></div></div>
      <div class="chart" data-chart="latency"><h3>Latency</h3><svg></svg><div class="legend"></div></div></div>
    <h2>Recent traces</h2><div id="recent"></div>
    <h2>Slowest traces</h2><div id="slowest"></div>`;
  let selected = null;
  const g = group ? "&group=" + encodeURIComponent(group) : "";
  const p = {
    async update(gen) {
      const now = Date.now(), from = now - rangeMs;
      const [routes, recent, slowest] = await Promise.all([
        api(`/api/http?from=${from}&to=${now}${g}`), api(`/api/traces?limit=20${g}`), api(`/api/traces?limit=10&sort=slowest${g}`)]);
      if (gen !== generation) return;
      if (!selected && routes.routes.length) selected = routes.routes[0];
      main.querySelector("#routes tbody").innerHTML = routes.routes.length === 0
        ? `<tr><td colspan="8" class="muted">No server requests in this range (the http_tracer collector sends them).</td></tr>`
        : routes.routes.map(r => `<tr class="clickable${selected && r.group === selected.group && r.route === selected.route ? " sel" : ""}"
          data-group="${esc(r.group)}" data-route="${esc(r.route)}"><td>${esc(r.group)}</td><td>${esc(r.route)}</td>
          <td class="num">${r.requests}</td><td class="num">${fmtNum(r.rate)}/s</td><td class="num">${fmtPercent(r.error_rate)}</td>
          <td class="num">${fmtSeconds(r.p50)}</td><td class="num">${fmtSeconds(r.p95)}</td><td class="num">${fmtSeconds(r.p99)}</td></tr>`).join("");
      main.querySelector("#recent").innerHTML = tracesTable("recent-traces", recent.traces);
      main.querySelector("#slowest").innerHTML = tracesTable("slowest-traces", slowest.traces);
      const rate = main.querySelector('.chart[data-chart="rate"]'), lat = main.querySelector('.chart[data-chart="latency"]');
      if (selected) {
        const s = await api(`/api/http/series?group=${encodeURIComponent(selected.group)}&route=${encodeURIComponent(selected.route)}&from=${from}&to=${now}`);
        if (gen !== generation) return;
        // Per second of each bucket; the current bucket has only run since its start.
        const secs = p => Math.max(1, Math.min(s.bucket_ms, now - p[0])) / 1000;
        main.querySelector("#route-title").textContent = `Requests per second · ${selected.route}`;
        drawChart(rate, [{ label: "requests/s", series: "rate", points: s.points.map(p => [p[0], p[1] / secs(p)]) },
          { label: "errors/s", series: "errors", points: s.points.map(p => [p[0], p[2] / secs(p)]) }], "", from, now);
        drawChart(lat, [["p50", 3], ["p95", 4], ["p99", 5]].map(([l, i]) => ({ label: l, series: l, points: s.points.map(p => [p[0], p[i]]) })), "s", from, now);
      } else {
        drawChart(rate, [], "", from, now); drawChart(lat, [], "s", from, now);
      }
    },
    click(e) {
      const tr = e.target.closest("tr[data-route]");
      if (tr) { selected = { group: tr.dataset.group, route: tr.dataset.route }; p.update(generation); return; }
      const t = e.target.closest("tr[data-trace]");
      if (t && e.target.tagName !== "A") location.hash = "#/trace/" + t.dataset.trace;
    },
  };
  bindRange(() => p.update(generation));
  return p;
}

function tracePage(id) {
  setNav("http");
  main.innerHTML = `<h1>Trace <span class="muted" style="font-size:14px">${esc(id)}</span></h1>
    <div class="toolbar"><a href="#/http">HTTP</a><span id="trace-summary" class="muted"></span></div>
    <div class="waterfall" id="waterfall"></div><div class="panel" id="span-detail" style="margin-top:14px"></div>`;
  let spans = [];
  return {
    async update(gen) {
      if (spans.length) return; // a trace is shown once; it does not change
      const t = await api("/api/traces/" + encodeURIComponent(id));
      if (gen !== generation) return;
      spans = t.spans;
      const ids = new Set(spans.map(s => s.span_id));
      const children = {};
      const roots = [];
      for (const s of spans) {
        if (s.parent_span_id && ids.has(s.parent_span_id)) (children[s.parent_span_id] = children[s.parent_span_id] || []).push(s);
        else roots.push(s);
      }
      const ordered = [];
      (function walk(list, depth) { for (const s of list.sort((a, b) => a.start - b.start)) { ordered.push([s, depth]); walk(children[s.span_id] || [], depth + 1); } })(roots, 0);
      const t0 = Math.min(...spans.map(s => s.start)), t1 = Math.max(...spans.map(s => s.end)), total = Math.max(1, t1 - t0);
      main.querySelector("#trace-summary").textContent = `${spans.length} spans · ${fmtSeconds(total / 1e9)}` +
        (t.dropped_spans ? ` · ${t.dropped_spans} more spans not kept (max 1,000 a trace)` : "");
      main.querySelector("#waterfall").innerHTML = ordered.map(([s, depth], i) => {
        const left = (s.start - t0) / total * 100, width = Math.max(0.2, (s.end - s.start) / total * 100);
        return `<div class="span-row" data-index="${i}" data-kind="${esc(s.kind)}" data-depth="${depth}" data-span="${esc(s.span_id)}" data-parent="${esc(s.parent_span_id)}">
          <div class="label" style="padding-left:${10 + depth * 18}px"><span class="kind">${esc(s.kind)}</span>${esc(s.name)}</div>
          <div class="track"><div class="bar ${esc(s.kind)}${s.status === "error" ? " error" : ""}" style="left:${left}%;width:${width}%"></div>
          <span class="dur" style="${left + width > 85 ? "right:" + (100 - left - width) + "%;padding-right:4px;color:#fff" : "left:" + (left + width) + "%;padding-left:4px"}">${fmtSeconds((s.end - s.start) / 1e9)}</span></div></div>`;
      }).join("");
      const show = i => {
        const s = ordered[i][0];
        main.querySelector("#span-detail").innerHTML = `<dl class="props"><dt>Span</dt><dd>${esc(s.name)} (${esc(s.kind)})</dd>
          <dt>Process</dt><dd>${s.pid != null ? `<a href="#/process/${s.pid}">${esc(s.group || "")} · pid ${s.pid}</a>` : "–"}</dd>
          <dt>Duration</dt><dd>${fmtSeconds((s.end - s.start) / 1e9)}</dd><dt>Status</dt><dd>${esc(s.status)}</dd>` +
          Object.entries(s.attributes).map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(v)}</dd>`).join("") + "</dl>";
      };
      if (ordered.length) show(0);
      main.querySelector("#waterfall").onclick = e => { const r = e.target.closest(".span-row"); if (r) show(Number(r.dataset.index)); };
    },
  };
}

function eventsPage(group) {
  setNav("events");
  main.innerHTML = `<h1>Events${group ? " · " + esc(group) : ""}</h1>
    <div class="toolbar"><input type="search" id="filter" placeholder="filter by name, group or text">
    <label><input type="checkbox" id="hotspots"> hotspot events (one per profile window)</label>
    <span class="muted">newest first</span></div>
    <table id="events"><thead><tr><th>Time</th><th>Severity</th><th>Event</th><th>Group</th><th class="num">PID</th><th>What</th></tr></thead><tbody></tbody></table>`;
  const filter = main.querySelector("#filter"), hotspots = main.querySelector("#hotspots");
  let last = [];
  const render = () => {
    const f = filter.value.toLowerCase();
    const rows = last.filter(e => (hotspots.checked || e.name !== "cpu.hotspots") &&
      (!f || (e.name + " " + (e.group || "") + " " + e.body).toLowerCase().includes(f)));
    main.querySelector("#events tbody").innerHTML = rows.length === 0 ? `<tr><td colspan="6" class="muted">No events.</td></tr>` :
      rows.map(e => `<tr data-event="${esc(e.name)}"><td>${fmtDateTime(e.time)}</td><td>${badge(e.severity)}</td><td>${esc(e.name)}</td>
        <td>${esc(e.group || "")}</td><td class="num">${e.pid != null ? `<a href="#/process/${e.pid}">${e.pid}</a>` : ""}</td><td>${alertText(e)}</td></tr>`).join("");
  };
  filter.addEventListener("input", render);
  hotspots.addEventListener("change", render);
  return {
    async update(gen) {
      const r = await api("/api/events?limit=500" + (group ? "&group=" + encodeURIComponent(group) : ""));
      if (gen !== generation) return;
      last = r.events;
      render();
    },
  };
}

// An alert's text; a goroutine leak links to the process's goroutine groups.
function alertText(a) {
  if (a.name === "go.goroutine.leak" && a.pid != null) {
    return esc(a.body) + ` <a class="leak-link" href="#/goroutines/${a.pid}">goroutine groups</a>`;
  }
  return esc(a.body);
}

// A small trend line of [[t, v]] points.
function sparkline(points, w, h) {
  const pts = points.filter(p => isFinite(p[1]));
  if (pts.length < 2) return `<svg class="spark" width="${w}" height="${h}"></svg>`;
  const t0 = pts[0][0], t1 = pts[pts.length - 1][0];
  const lo = Math.min(...pts.map(p => p[1])), hi = Math.max(...pts.map(p => p[1]));
  const x = t => 1 + (t - t0) / Math.max(1, t1 - t0) * (w - 2);
  const y = v => h - 2 - (hi > lo ? (v - lo) / (hi - lo) : 0.5) * (h - 4);
  const d = pts.map((p, i) => (i ? "L" : "M") + x(p[0]).toFixed(1) + " " + y(p[1]).toFixed(1)).join("");
  return `<svg class="spark" width="${w}" height="${h}" viewBox="0 0 ${w} ${h}"><path d="${d}" fill="none" stroke="${COLORS[0]}" stroke-width="1.4"/></svg>`;
}

// The goroutines page of a process: the census's groups (start function,
// creator, site, state) with a trend, count, growth and oldest wait; a click
// on a group shows its stacks; the leak alert marks the groups it names.
const GOROUTINE_CHARTS = [
  { id: "states", title: "Goroutines by state", name: "go.goroutine.state.count" },
  { id: "reasons", title: "Waiting goroutines by wait reason", name: "go.goroutine.wait_reason.count" },
];
function goroutinesPage(pid) {
  setNav("overview");
  main.innerHTML = `<h1 id="title">Goroutines · pid ${pid}</h1>
    <div class="toolbar"><a href="#/process/${pid}">Process</a><span id="census" class="muted"></span>
    <span style="flex:1"></span><a id="download" href="/api/profile.pb.gz?pid=${pid}&type=goroutine" download>Goroutine profile (.pb.gz)</a>${rangePicker()}</div>
    <div id="leak"></div>
    <table id="ggroups"><thead><tr><th>Trend</th><th>Start function</th><th>Created by</th><th>State</th><th class="num">Count</th>
    <th class="num">Growth</th><th class="num">Oldest wait</th></tr></thead><tbody></tbody></table>
    <div class="grid" style="margin-top:14px">${GOROUTINE_CHARTS.map(c =>
      `<div class="chart" data-chart="${c.id}"><h3>${esc(c.title)}</h3><svg></svg><div class="legend"></div></div>`).join("")}</div>`;
  const open = new Set();  // the groups whose stacks are shown, by attributes
  let last = null;
  const render = () => {
    const r = last;
    const body = main.querySelector("#ggroups tbody");
    if (!r.groups.length) {
      body.innerHTML = `<tr><td colspan="7" class="muted">No goroutine census of this process yet (the goroutines collector takes one every census_interval).</td></tr>`;
      return;
    }
    body.innerHTML = r.groups.map(g => {
      const shown = open.has(g.attributes);
      let html = `<tr class="clickable${g.leaking ? " leaking" : ""}${shown ? " sel" : ""}" data-group="${esc(g.attributes)}">
        <td>${sparkline(g.trend, 90, 22)}</td>
        <td class="fn">${esc(g.start)}${g.leaking ? " " + badge("leak", "alert") : ""}</td>
        <td class="fn">${esc(g.creator)}${g.location ? `<div class="muted site">${esc(g.location)}</div>` : ""}</td>
        <td>${esc(g.state)}</td><td class="num">${fmtNum(g.count)}</td>
        <td class="num">${g.growth_rate == null ? "–" : fmtNum(g.growth_rate) + "/s"}</td>
        <td class="num">${fmtSeconds(g.oldest_wait)}</td></tr>`;
      if (shown) {
        html += `<tr class="stacks" data-stacks="${esc(g.attributes)}"><td></td><td colspan="6">` + (g.stacks.length === 0
          ? `<span class="muted">${g.start === "other" ? "The groups past top_groups, summed." : "No stack in the latest goroutine profile (stacks off, or the group is past the profile)."}</span>`
          : g.stacks.map(st => `<div class="stack"><div class="muted">${st.count} goroutine${st.count === 1 ? "" : "s"} with this stack</div>` +
            st.frames.map(f => `<div class="frame"><span class="fn">${esc(f.function)}</span> <span class="muted">${esc(f.file)}:${f.line}</span></div>`).join("") +
            `</div>`).join("")) + `</td></tr>`;
      }
      return html;
    }).join("");
  };
  const p = {
    async update(gen) {
      const now = Date.now(), from = now - rangeMs;
      const [r, proc, data] = await Promise.all([
        api(`/api/goroutines?pid=${pid}&from=${from}&to=${now}&points=60`),
        api("/api/process?pid=" + pid).catch(() => null),
        api(`/api/series/batch?pid=${pid}&names=${GOROUTINE_CHARTS.map(c => c.name).join(",")}&from=${from}&to=${now}&points=300`),
      ]);
      if (gen !== generation) return;
      last = r;
      if (proc) document.getElementById("title").textContent = `Goroutines · ${proc.group} · pid ${pid}`;
      main.querySelector("#census").textContent = r.census_time ? "census of " + fmtDateTime(r.census_time) : "";
      main.querySelector("#leak").innerHTML = r.leak ? `<div class="panel leak">${badge("goroutine leak", "alert")} ${esc(r.leak.body)}
        <div class="muted">Since ${fmtDateTime(r.leak.time)}; the groups it names are marked below.</div></div>` : "";
      render();
      for (const c of GOROUTINE_CHARTS) {
        const lines = data.series.filter(s => s.name === c.name)
          .map(s => ({ label: s.attributes.replace(/^[^=]*=/, ""), series: c.name, attrs: s.attributes, points: chartPoints(s) }));
        drawChart(main.querySelector(`.chart[data-chart="${c.id}"]`), lines, "", from, now);
      }
    },
    click(e) {
      const tr = e.target.closest("tr[data-group]");
      if (!tr || !last) return;
      const k = tr.dataset.group;
      if (open.has(k)) open.delete(k); else open.add(k);
      render();
    },
  };
  bindRange(() => p.update(generation));
  return p;
}

// ---- routing and refresh -----------------------------------------------------

function route() {
  generation++;
  const parts = location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  switch (parts[0]) {
    case "group": page = groupPage(parts[1] || ""); break;
    case "process": page = processPage(Number(parts[1])); break;
    case "hotspots": page = hotspotsPage(Number(parts[1])); break;
    case "goroutines": page = goroutinesPage(Number(parts[1])); break;
    case "http": page = httpPage(parts[1] || null); break;
    case "trace": page = tracePage(parts[1] || ""); break;
    case "events": page = eventsPage(parts[1] || null); break;
    default: page = overviewPage();
  }
  refresh();
}

let inFlight = null; // the generation whose refresh is running
async function refresh() {
  if (inFlight === generation) return;
  const gen = generation;
  inFlight = gen;
  try {
    await page.update(gen);
    statusEl.textContent = "updated " + fmtTime(Date.now());
    statusEl.classList.remove("stale");
  } catch (e) {
    if (gen === generation) {
      statusEl.textContent = "cannot reach the agent: " + e.message;
      statusEl.classList.add("stale");
    }
  } finally {
    if (inFlight === gen) inFlight = null;
  }
}

main.addEventListener("click", e => { if (page && page.click) page.click(e); });
window.addEventListener("hashchange", route);
setInterval(() => { if (!document.hidden) refresh(); }, REFRESH_MS);
route();
