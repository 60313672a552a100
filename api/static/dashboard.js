// The cloudmirror dashboard: reads the REST API with the key the user gives (sessionStorage,
// or #key=... in the URL fragment) and redraws every REFRESH_MS. No framework, no build step.
"use strict";

(() => {
  const REFRESH_MS = 7000;
  const HISTORY_S = 3600;  // the chart's window
  const POINTS = 120;
  const STORAGE = "cloudmirror.apiKey";
  const SVG_NS = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  let timer = null;
  let memoryKey = null;  // where storage is disabled
  let generation = 0;  // bumped when the key changes: an answer to an older key is dropped

  // ---------------------------------------------------------------- the key
  function getKey() {
    try { return sessionStorage.getItem(STORAGE); } catch { return null; }
  }

  function setKey(key) {
    try {
      if (key) sessionStorage.setItem(STORAGE, key); else sessionStorage.removeItem(STORAGE);
    } catch { /* storage disabled: the key lives until the tab reloads */ }
    memoryKey = key || null;
    generation += 1;
  }

  const currentKey = () => getKey() || memoryKey;

  function keyFromFragment() {
    const m = /(?:^#|&)key=([^&]+)/.exec(location.hash);
    if (!m) return;
    setKey(decodeURIComponent(m[1]));
    window.history.replaceState(null, "", location.pathname + location.search);  // not left in the address bar
  }

  // ---------------------------------------------------------------- the API
  class ApiError extends Error {
    constructor(status, code, message) { super(message); this.status = status; this.code = code; }
  }

  async function api(path) {
    let r;
    try {
      r = await fetch(path, { headers: { Authorization: `Bearer ${currentKey()}`, Accept: "application/json" },
                              cache: "no-store" });
    } catch (e) {
      throw new ApiError(0, "unreachable", `cannot reach the API (${e.message})`);
    }
    let body = null;
    try { body = await r.json(); } catch { /* not JSON: said below */ }
    if (!r.ok) {
      const err = body && body.error;
      throw new ApiError(r.status, err ? err.code : "http", `${path}: ${err ? err.message : `HTTP ${r.status}`}`);
    }
    if (body === null) throw new ApiError(r.status, "bad_body", `${path}: the answer is not JSON`);
    return body;
  }

  // null on 404 (e.g. a mirror deleted since the list was read)
  async function optional(promise) {
    try { return await promise; } catch (e) { if (e.status === 404) return null; throw e; }
  }

  const enc = encodeURIComponent;

  // The routes this server has, from its OpenAPI document (open, no data): the page asks only
  // for those, so an older server shows less instead of answering 404s.
  let routes = null;
  async function apiRoutes() {
    if (!routes) {
      let doc = null;
      try {
        const r = await fetch("/openapi.json", { headers: { Accept: "application/json" } });
        doc = r.ok ? await r.json() : null;
      } catch { /* said below */ }
      if (!doc || !doc.paths) throw new ApiError(0, "unreachable", "cannot read the API's description (/openapi.json)");
      routes = new Set(Object.keys(doc.paths));
    }
    return routes;
  }

  async function rpoHistory(has, name, live) {
    const until = Date.now() / 1000;
    const since = until - HISTORY_S;
    if (has.has("/v1/mirrors/{name}/rpo/history")) {
      const got = await optional(api(`/v1/mirrors/${enc(name)}/rpo/history?since=${since.toFixed(0)}` +
                                     `&until=${until.toFixed(0)}&points=${POINTS}`));
      if (got && Array.isArray(got.series)) {
        return { since, until, objective: got.objective_s, series: got.series.map((p) => [p.t, p.rpo_s]) };
      }
    }
    // no history route: the live figures carry the last hour too
    const m = live && Array.isArray(live.mirrors) ? live.mirrors.find((x) => x.mirror === name) : null;
    if (m && m.history && Array.isArray(m.history.series)) {
      return { since, until, objective: m.rpo_objective_seconds, series: m.history.series };
    }
    return null;
  }

  async function load() {
    const has = await apiRoutes();
    const [mirrors, status, failures] = await Promise.all([
      api("/v1/mirrors?limit=1000"), api("/v1/status"), api("/v1/failures?limit=10")]);
    const names = mirrors.items.map((m) => m.name);
    const live = await Promise.all(names.map((n) => (has.has("/v1/mirrors/{name}/rpo")
      ? optional(api(`/v1/mirrors/${enc(n)}/rpo`)) : null)));
    const charts = await Promise.all(names.map((n, i) => rpoHistory(has, n, live[i])));
    const dead = has.has("/v1/dead-letters") ? (await api("/v1/dead-letters?limit=10")).items : null;
    return { mirrors: mirrors.items, status, failures: failures.items, live, charts, dead };
  }

  // ---------------------------------------------------------------- formatting
  const trim = (x, digits) => x.toFixed(digits).replace(/\.0+$/, "");

  function fmtDur(s) {
    if (s === null || s === undefined || Number.isNaN(Number(s))) return "—";
    s = Number(s);
    if (s < 60) return `${trim(s, s < 10 ? 1 : 0)} s`;
    if (s < 3600) return `${trim(s / 60, s < 600 ? 1 : 0)} min`;
    if (s < 86400) return `${trim(s / 3600, 1)} h`;
    return `${trim(s / 86400, 1)} d`;
  }

  // a step for about four grid lines over 0..max, in round durations
  const STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400, 21600, 43200, 86400];
  function gridStep(max) {
    return STEPS.find((st) => max / st <= 4) || Math.ceil(max / 4 / 86400) * 86400;
  }

  function fmtBytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return `${i ? n.toFixed(1) : n} ${units[i]}`;
  }

  const fmtClock = (t) => new Date(t * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const fmtWhen = (iso) => (iso ? new Date(iso).toLocaleString() : "—");

  // ---------------------------------------------------------------- DOM helpers (text only: no innerHTML)
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined && v !== false) node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children.flat()) {
      if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    }
    return node;
  }

  function svg(tag, attrs, text) {
    const node = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  const badge = (cls, text) => el("span", { class: `badge ${cls}` }, text);
  const urlOf = (t) => (typeof t === "string" ? t : t.url);

  function fill(tbody, rows, empty, span) {
    tbody.replaceChildren(...(rows.length ? rows : [el("tr", {}, el("td", { colspan: span, class: "muted" }, empty))]));
  }

  // ---------------------------------------------------------------- the views
  function renderMirrors(mirrors) {
    fill($("mirrors").tBodies[0], mirrors.map((m) => {
      const active = m.active || m.source;
      return el("tr", { "data-mirror": m.name },
        el("td", {}, el("strong", {}, m.name)),
        el("td", {}, el("code", {}, m.source), el("span", { class: "arrow" }, "→"),
          el("span", { class: "targets-list" }, (m.targets || []).map((t) => el("code", {}, urlOf(t))))),
        el("td", {}, el("code", {}, active), active !== m.source ? [" ", badge("warn", "failed over")] : null),
        el("td", {}, m.paused ? badge("warn", "paused") : badge("ok", "running")));
    }), "No mirrors configured.", 4);
  }

  // Per target: /v1/status, with the live figures of /v1/mirrors/{name}/rpo where the server has
  // them (backlog bytes; and their RPO, which a failed replication holds until retried).
  function renderTargets(status, live) {
    const byTarget = new Map();
    for (const l of live) for (const t of (l && l.targets) || []) byTarget.set(`${t.mirror}\n${t.target}`, t);
    fill($("targets").tBodies[0], status.targets.map((s) => {
      const l = byTarget.get(`${s.mirror}\n${s.target}`);
      const rpo = l ? l.rpo_seconds : s.rpo_seconds;
      const met = l ? l.objective_met : s.objective_met;
      const failed = l ? l.failed : s.failed;
      return el("tr", { "data-mirror": s.mirror, "data-target": s.target },
        el("td", {}, s.mirror), el("td", {}, el("code", {}, s.target)),
        el("td", { class: "num" }, fmtDur(rpo)), el("td", { class: "num" }, fmtDur(s.rpo_objective)),
        el("td", {}, met ? badge("ok", "met") : badge("bad", "breached")),
        el("td", { class: "num" }, l ? l.backlog_objects : s.pending + s.in_progress),
        el("td", { class: "num" }, fmtBytes(l ? l.backlog_bytes : null)),
        el("td", { class: "num" }, failed ? el("span", { class: "error-text" }, failed) : "0"));
    }), "No targets.", 8);
  }

  function renderFailures(items) {
    fill($("failures").tBodies[0], items.map((f) => el("tr", {},
      el("td", {}, fmtWhen(f.failed_at)), el("td", {}, f.mirror), el("td", {}, el("code", {}, f.target)),
      el("td", {}, el("code", {}, f.key)), el("td", { class: "num" }, f.attempts),
      el("td", { class: "error-text" }, f.last_error || ""))), "No failed replications.", 6);
  }

  // The pending count from /v1/status, the newest pending ones from /v1/dead-letters.
  function renderDeadLetters(counts, items) {
    const pending = counts ? counts.pending : (items || []).length;
    const badgeEl = $("dead-count");
    badgeEl.textContent = `${pending} pending`;
    badgeEl.className = `badge ${pending ? "bad" : "ok"}`;
    fill($("dead-letters").tBodies[0], (items || []).map((d) => el("tr", { "data-dead-letter": d.id },
      el("td", {}, fmtWhen(d.received_at)), el("td", { class: "num" }, d.id), el("td", {}, el("code", {}, d.feed)),
      el("td", { class: "error-text" }, d.reason))),
    items ? "No pending dead letters." : "This server has no dead-letter route.", 4);
  }

  // One SVG per mirror: the RPO series and a dashed line at the objective.
  function chart(name, h) {
    const W = 640, H = 200, L = 52, R = 12, T = 12, B = 24;
    const pts = h.series.filter((p) => p[0] >= h.since && p[0] <= h.until);
    const peak = pts.reduce((m, p) => Math.max(m, p[1]), 0);
    const step = gridStep(Math.max(h.objective * 1.1, peak, 1));
    const ymax = Math.ceil(Math.max(h.objective * 1.1, peak, 1) / step) * step;
    const x = (t) => L + ((t - h.since) / (h.until - h.since)) * (W - L - R);
    const y = (v) => T + (1 - v / ymax) * (H - T - B);
    const root = svg("svg", { class: "rpo-chart", viewBox: `0 0 ${W} ${H}`, role: "img",
                              "aria-label": `RPO of ${name} over the last hour` });
    for (let v = 0; v <= ymax; v += step) {
      root.append(svg("line", { class: "grid", x1: L, x2: W - R, y1: y(v), y2: y(v) }),
                  svg("text", { class: "axis-label", x: L - 6, y: y(v) + 3, "text-anchor": "end" }, fmtDur(v)));
    }
    for (let i = 0; i <= 4; i += 1) {
      const t = h.since + ((h.until - h.since) * i) / 4;
      root.append(svg("text", { class: "axis-label", x: x(t), y: H - 6, "text-anchor": i === 0 ? "start" : i === 4 ? "end" : "middle" },
                      fmtClock(t)));
    }
    if (pts.length) {
      const line = pts.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
      root.append(svg("polygon", { class: "rpo-area",
                                   points: `${x(pts[0][0]).toFixed(1)},${y(0)} ${line} ${x(pts[pts.length - 1][0]).toFixed(1)},${y(0)}` }),
                  svg("polyline", { class: "rpo", points: line }));
    }
    root.append(svg("line", { class: "objective", x1: L, x2: W - R, y1: y(h.objective), y2: y(h.objective) }),
                svg("text", { class: "objective-label", x: W - R - 2, y: y(h.objective) - 4, "text-anchor": "end" },
                    `objective ${fmtDur(h.objective)}`));
    const last = pts.length ? pts[pts.length - 1][1] : null;
    return el("figure", { "data-mirror": name },
      el("figcaption", {}, name, " ", el("span", { class: "muted" },
        `now ${fmtDur(last)}, worst ${fmtDur(peak)} in the hour`)), root);
  }

  function renderCharts(mirrors, charts) {
    $("charts").replaceChildren(...mirrors.map((m, i) => (charts[i]
      ? chart(m.name, charts[i])
      : el("figure", { "data-mirror": m.name }, el("figcaption", {}, m.name),
        el("p", { class: "muted" }, "This server has no RPO history route.")))));
  }

  // ---------------------------------------------------------------- the loop
  function showError(message) {
    const p = $("error");
    p.textContent = message || "";
    p.hidden = !message;
  }

  function showForm(message) {
    $("data").hidden = true;
    $("forget").hidden = true;
    $("updated").textContent = "";
    if (message) $("key-message").textContent = message;
    $("key-form").hidden = false;
    $("key-input").focus();
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(refresh, REFRESH_MS);
  }

  async function refresh() {
    clearTimeout(timer);
    if (!currentKey()) { showForm(); return; }
    const gen = generation;
    try {
      const d = await load();
      if (gen !== generation) return;
      renderMirrors(d.mirrors);
      renderTargets(d.status, d.live);
      renderCharts(d.mirrors, d.charts);
      renderFailures(d.failures);
      renderDeadLetters(d.status.dead_letters, d.dead);
      showError(null);
      $("key-form").hidden = true;
      $("data").hidden = false;
      $("forget").hidden = false;
      $("updated").textContent = `updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`;
      document.body.dataset.loaded = "true";
    } catch (e) {
      if (gen !== generation) return;
      if (e.status === 401) {
        setKey(null);
        showError(null);
        showForm(`The API refused the key: ${e.message.replace(/^[^:]*: /, "")}. Enter another.`);
        return;
      }
      showError(e.message || String(e));
    }
    if (gen === generation) schedule();
  }

  function start() {
    keyFromFragment();
    $("key-form").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const key = $("key-input").value.trim();
      if (!key) return;
      $("key-input").value = "";
      setKey(key);
      refresh();
    });
    $("forget").addEventListener("click", () => {
      clearTimeout(timer);
      setKey(null);
      showError(null);
      showForm();
    });
    window.addEventListener("hashchange", () => { if (/key=/.test(location.hash)) { keyFromFragment(); refresh(); } });
    refresh();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
