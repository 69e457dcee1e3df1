// tcpdispatch dashboard: reads /v1/events (Server-Sent Events over fetch, so the token can go in a
// header), keeps one table row per gateway and touches only the rows and cells that changed.
// The token lives in memory and sessionStorage only: never in a URL, a cookie or localStorage.
"use strict";

(function () {
  const TOKEN_KEY = "tcpdispatch.token";
  const MAX_EVENTS = 300;
  const MAX_POINTS = 300;
  const $ = (id) => document.getElementById(id);

  let token = sessionStorage.getItem(TOKEN_KEY) || "";
  const rows = new Map();           // id -> {data, tr, cells}
  let order = [];                   // ids in the DOM's current order
  let sortKey = "id", sortDir = 1;
  let filterText = "";
  const seenEvents = new Set();
  const series = {t: [], rate: [], u503: [], mean: [], p99: []};
  const charts = {};
  // firstRenderMs: building the table from the first snapshot; readyAtMs: from navigation start
  // until that table was built; lastUpdateMs/maxUpdateMs: applying one pool update.
  const perf = {firstRenderMs: null, readyAtMs: null, lastUpdateMs: null, maxUpdateMs: 0, updates: 0, rows: 0};
  window.tcpdispatchDashboard = perf;  // read by the headless test and shown in the footer

  // ---------------------------------------------------------------- helpers

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  function authHeaders() {
    return token ? {"Authorization": "Bearer " + token} : {};
  }

  function showStatus(text, kind) {
    const s = $("action-status");
    s.textContent = text;
    s.className = "status" + (kind ? " " + kind : "");
  }

  function fmt(n) {
    return n === null || n === undefined ? "–" : String(n);
  }

  // ---------------------------------------------------------------- token

  $("token").value = token;
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    token = $("token").value.trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token); else sessionStorage.removeItem(TOKEN_KEY);
    showStatus(token ? "token set for this tab" : "token cleared", "ok");
    restartStream();
  });
  $("token-forget").addEventListener("click", () => {
    token = "";
    $("token").value = "";
    sessionStorage.removeItem(TOKEN_KEY);
    showStatus("token forgotten", "ok");
  });

  // ---------------------------------------------------------------- actions

  async function act(method, path, body, what) {
    if (!token) {
      showStatus(what + ": type the admin token first", "error");
      return;
    }
    let resp;
    try {
      resp = await fetch(path, {
        method: method, cache: "no-store",
        headers: Object.assign({"Content-Type": "application/json"}, authHeaders()),
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (e) {
      showStatus(what + " failed: " + e, "error");
      return;
    }
    let doc = {};
    try { doc = await resp.json(); } catch (e) { /* no JSON body */ }
    if (resp.ok) {
      showStatus(what + ": done (" + resp.status + ")", "ok");
      const row = doc && doc.id ? rows.get(doc.id) : undefined;
      if (row) {  // show the answer now; the next pool update (within a second) refines it
        const was = row.data.state;
        const state = doc.state === "draining" ? "draining" : was === "draining" ? doc.state : was;
        row.data = Object.assign({}, row.data, {state: state, weight: doc.weight});
        paintRow(row, row.data);
      }
      return;
    }
    const reason = resp.status === 401 ? "401 Unauthorized: the token was refused"
      : resp.status === 403 ? "403 Forbidden" : resp.status + " " + (doc.error || resp.statusText);
    showStatus(what + ": " + reason + (doc.detail ? " (" + doc.detail + ")" : ""), "error");
  }

  $("rb-pause").addEventListener("click", () => act("POST", "/v1/rebalance/pause", undefined, "pause rebalancing"));
  $("rb-resume").addEventListener("click", () => act("POST", "/v1/rebalance/resume", undefined, "resume rebalancing"));

  $("pool-body").addEventListener("click", (ev) => {
    const b = ev.target.closest("button");
    if (!b) return;
    const id = b.closest("tr").dataset.id;
    const path = "/v1/gateways/" + encodeURIComponent(id);
    if (b.dataset.act === "drain") act("POST", path + "/drain", undefined, "drain " + id);
    else if (b.dataset.act === "undrain") act("POST", path + "/undrain", undefined, "undrain " + id);
    else if (b.dataset.act === "weight") {
      const w = Number(b.previousElementSibling.value);
      if (b.previousElementSibling.value === "" || !Number.isFinite(w)) {
        showStatus("weight of " + id + ": type a number", "error");
        return;
      }
      act("PATCH", path, {weight: w}, "weight of " + id);
    }
  });

  // ---------------------------------------------------------------- pool table

  function makeRow(id) {
    const tr = el("tr");
    tr.dataset.id = id;
    const cells = {};
    for (const k of ["id", "zone", "state", "held", "target", "weight", "probe"]) {
      cells[k] = el("td", k === "held" || k === "target" || k === "weight" ? "num" : k);
      tr.appendChild(cells[k]);
    }
    const actions = el("td", "actions");
    const drain = el("button", "", "drain");
    drain.type = "button";
    drain.dataset.act = "drain";
    const w = el("input");
    w.type = "number"; w.min = "0"; w.step = "any"; w.setAttribute("aria-label", "weight for " + id);
    const set = el("button", "", "set weight");
    set.type = "button";
    set.dataset.act = "weight";
    actions.append(drain, w, set);
    tr.appendChild(actions);
    cells.drain = drain;
    return {data: null, tr: tr, cells: cells, text: {}};
  }

  function setText(row, key, text) {
    if (row.text[key] !== text) {
      row.text[key] = text;
      row.cells[key].textContent = text;
    }
  }

  function paintRow(row, g) {
    setText(row, "id", g.id);
    setText(row, "zone", g.zone);
    setText(row, "state", g.state);
    const cap = g.capacity === null ? "?" : g.capacity;
    const pct = g.capacity ? " (" + Math.round(100 * g.held / g.capacity) + "%)" : "";
    setText(row, "held", fmt(g.held) + " / " + cap + pct);
    setText(row, "target", g.target === null ? "–" : String(g.target));
    setText(row, "weight", String(g.weight));
    const probe = g.probe_ok === null ? "–" : (g.probe_ok ? "ok" : "failed") +
      (g.probe_ms ? " " + g.probe_ms.toFixed(1) + " ms" : "");
    setText(row, "probe", probe);
    if (row.text.probeTitle !== g.detail) {
      row.text.probeTitle = g.detail;
      row.cells.probe.title = g.detail || "";
    }
    const cls = g.state.replace(" ", "-");
    if (row.tr.className !== cls) row.tr.className = cls;
    row.cells.probe.classList.toggle("bad", g.probe_ok === false);
    const draining = g.state === "draining";
    const act = draining ? "undrain" : "drain";
    if (row.cells.drain.dataset.act !== act) {
      row.cells.drain.dataset.act = act;
      row.cells.drain.textContent = act;
    }
  }

  function sortValue(g, key) {
    const v = key === "held" ? (g.capacity ? g.held / g.capacity : g.held) : g[key];
    return v === null || v === undefined ? -Infinity : v;
  }

  function visibleOrder() {
    const f = filterText;
    const ids = [];
    for (const [id, row] of rows) {
      const g = row.data;
      if (!f || id.toLowerCase().includes(f) || g.zone.toLowerCase().includes(f) || g.state.includes(f)) ids.push(id);
    }
    ids.sort((a, b) => {
      const x = sortValue(rows.get(a).data, sortKey), y = sortValue(rows.get(b).data, sortKey);
      if (x < y) return -sortDir;
      if (x > y) return sortDir;
      return a < b ? -1 : a > b ? 1 : 0;
    });
    return ids;
  }

  // Only the rows in (or near) the scrolled-to window are in the document: a table of 1,000 rows
  // costs the browser seconds of style and layout on a busy machine, 60 rows a few milliseconds.
  // Spacer rows above and below keep the scroll bar true to the whole list.
  const ROW_H = 26;       // px, fixed by style.css (#pool-body tr)
  const OVERSCAN = 10;    // rows kept beyond each edge of the window
  const wrap = $("table-wrap");
  const topPad = el("tr", "spacer"), bottomPad = el("tr", "spacer");
  topPad.appendChild(el("td")).colSpan = 8;
  bottomPad.appendChild(el("td")).colSpan = 8;
  let attached = [];      // ids of the rows in the document, in order

  function reorder() {
    order = visibleOrder();
    renderWindow();
    $("shown").textContent = order.length === rows.size ? rows.size + " gateways"
      : order.length + " of " + rows.size + " shown";
  }

  function renderWindow() {
    const first = Math.max(0, Math.floor(wrap.scrollTop / ROW_H) - OVERSCAN);
    const count = Math.ceil((wrap.clientHeight || 600) / ROW_H) + 2 * OVERSCAN;
    const ids = order.slice(first, first + count);
    let same = ids.length === attached.length && topPad.firstChild.dataset.n === String(first);
    for (let i = 0; same && i < ids.length; i++) same = ids[i] === attached[i];
    if (same) return;
    topPad.firstChild.dataset.n = String(first);
    topPad.firstChild.style.height = first * ROW_H + "px";
    bottomPad.firstChild.style.height = Math.max(0, order.length - first - ids.length) * ROW_H + "px";
    const frag = document.createDocumentFragment();
    frag.appendChild(topPad);
    for (const id of ids) frag.appendChild(rows.get(id).tr);
    frag.appendChild(bottomPad);
    $("pool-body").replaceChildren(frag);
    attached = ids;
  }

  let scrollPending = false;
  wrap.addEventListener("scroll", () => {
    if (scrollPending) return;
    scrollPending = true;
    requestAnimationFrame(() => { scrollPending = false; renderWindow(); });
  }, {passive: true});

  function applyPool(doc, full) {
    const t0 = performance.now();
    if (full) {
      const keep = new Set(doc.gateways.map((g) => g.id));
      for (const id of rows.keys()) if (!keep.has(id)) rows.delete(id);
    }
    for (const id of doc.removed || []) rows.delete(id);
    for (const g of doc.gateways) {
      let row = rows.get(g.id);
      if (!row) { row = makeRow(g.id); rows.set(g.id, row); }
      row.data = g;
      paintRow(row, g);
    }
    reorder();
    header(doc);
    rebalance(doc.rebalance);
    const ms = performance.now() - t0;
    perf.rows = rows.size;
    if (perf.firstRenderMs === null && rows.size) { perf.firstRenderMs = ms; perf.readyAtMs = performance.now(); }
    else { perf.lastUpdateMs = ms; perf.maxUpdateMs = Math.max(perf.maxUpdateMs, ms); }
    perf.updates += 1;
    $("render-time").textContent = "last table update " + ms.toFixed(1) + " ms for " + rows.size + " gateways";
  }

  for (const th of document.querySelectorAll("th.sortable")) {
    th.addEventListener("click", () => {
      const key = th.dataset.key;
      sortDir = key === sortKey ? -sortDir : 1;
      sortKey = key;
      for (const o of document.querySelectorAll("th.sortable")) o.classList.remove("asc", "desc");
      th.classList.add(sortDir > 0 ? "asc" : "desc");
      reorder();
    });
  }
  $("filter").addEventListener("input", () => { filterText = $("filter").value.trim().toLowerCase(); reorder(); });

  // ---------------------------------------------------------------- header, rebalancing, events

  function header(doc) {
    const r = doc.replica;
    let who = "replica " + (r ? r.id : "?");
    if (r) who += r.leader ? " · leads rebalancing" : " · leader: " + (r.leader_id || "unknown");
    $("replica").textContent = who;
    $("policy").textContent = "policy " + doc.policy;
    $("panic").classList.toggle("hidden", !doc.panic);
    const c = doc.counts;
    $("counts").textContent = c.up + " up · " + c.down + " down · " + c.draining + " draining";
  }

  function rebalance(rb) {
    const dl = $("rebalance");
    const facts = [];
    if (!rb) facts.push(["state", "no rebalancer"]);
    else {
      facts.push(["mode", rb.mode + (rb.paused ? " (paused)" : "")]);
      facts.push(["breaker", rb.breaker.state + (rb.breaker.reason ? ": " + rb.breaker.reason : "")]);
      facts.push(["round", rb.round ? rb.round.id + ", " + rb.round.running_s.toFixed(0) + " s, donors " +
        (rb.round.donors.join(", ") || "–") + ", asked " + rb.round.requested : "none running"]);
      facts.push(["progress", rb.moves_requested + " moves asked in " + rb.rounds + " rounds, " + rb.in_flight + " in flight"]);
      facts.push(["imbalance", "max held/target " + rb.imbalance.max_over_target + ", max/mean " + rb.imbalance.max_over_mean]);
    }
    const frag = document.createDocumentFragment();
    for (const [k, v] of facts) { frag.appendChild(el("dt", "", k)); frag.appendChild(el("dd", "", v)); }
    dl.replaceChildren(frag);
  }

  function addEvent(e) {
    if (seenEvents.has(e.seq)) return;
    seenEvents.add(e.seq);
    const li = el("li");
    li.dataset.kind = e.kind;
    li.append(el("span", "time", new Date(e.at * 1000).toLocaleTimeString() + " "), el("span", "kind", e.kind),
      document.createTextNode(" " + e.message));
    const list = $("events");
    list.insertBefore(li, list.firstChild);
    while (list.children.length > MAX_EVENTS) list.removeChild(list.lastChild);
  }

  // ---------------------------------------------------------------- charts

  function makeCharts() {
    if (typeof uPlot === "undefined") return;
    const mk = (id, labels, colors) => {
      const box = $(id);
      const opts = {
        width: box.clientWidth || 300, height: 150, legend: {show: true},
        scales: {x: {time: true}}, axes: [{}, {size: 50}],
        series: [{}].concat(labels.map((l, i) => ({label: l, stroke: colors[i], width: 1.5, spanGaps: true}))),
      };
      charts[id] = new uPlot(opts, [[]].concat(labels.map(() => [])), box);
    };
    mk("chart-rate", ["dispatch/s"], ["#1565c0"]);
    mk("chart-503", ["503/s"], ["#c62828"]);
    mk("chart-latency", ["mean ms", "p99 ms"], ["#1a7f37", "#b26a00"]);
    window.addEventListener("resize", () => {
      for (const [id, c] of Object.entries(charts)) c.setSize({width: $(id).clientWidth, height: 150});
    });
  }

  function addPoint(p) {
    if (!p || p[0] === undefined) return;
    const n = series.t.length;
    if (n && p[0] <= series.t[n - 1]) return;
    series.t.push(p[0]); series.rate.push(p[1]); series.u503.push(p[2]); series.mean.push(p[3]); series.p99.push(p[4]);
    if (series.t.length > MAX_POINTS) for (const k in series) series[k].shift();
  }

  function drawCharts() {
    if (!charts["chart-rate"]) return;
    charts["chart-rate"].setData([series.t, series.rate]);
    charts["chart-503"].setData([series.t, series.u503]);
    charts["chart-latency"].setData([series.t, series.mean, series.p99]);
  }

  // ---------------------------------------------------------------- the stream

  let controller = null;
  let retryTimer = null;

  function setConn(text, on) {
    const c = $("conn");
    c.textContent = text;
    c.className = "badge " + (on ? "on" : "off");
  }

  function handle(name, data) {
    const doc = JSON.parse(data);
    if (name === "snapshot") {
      for (const p of doc.history || []) addPoint(p);
      drawCharts();
      applyPool(doc, true);
      for (const e of doc.events || []) addEvent(e);
    } else if (name === "pool") {
      addPoint([doc.rates.at, doc.rates.dispatch_per_s, doc.rates.unavailable_per_s, doc.rates.mean_ms, doc.rates.p99_ms]);
      drawCharts();
      applyPool(doc, false);
    } else if (name === "event") {
      addEvent(doc);
    } else if (name === "overflow") {
      setConn("fell behind; reconnecting", false);
    }
  }

  async function stream() {
    controller = new AbortController();
    let resp;
    try {
      resp = await fetch("/v1/events", {headers: authHeaders(), cache: "no-store", signal: controller.signal});
    } catch (e) {
      if (e.name === "AbortError") return;
      setConn("disconnected", false);
      return scheduleRetry();
    }
    if (resp.status === 401 || resp.status === 403) {
      setConn("needs token", false);
      showStatus("the event stream answered " + resp.status + ": type the read or admin token", "error");
      return;  // retried when a token is set
    }
    if (!resp.ok || !resp.body) {
      setConn("error " + resp.status, false);
      return scheduleRetry();
    }
    setConn("live", true);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buf = "";
    try {
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut);
          buf = buf.slice(cut + 2);
          let name = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event: ")) name = line.slice(7);
            else if (line.startsWith("data: ")) data += line.slice(6);
          }
          if (data) handle(name, data);
        }
      }
    } catch (e) {
      if (e.name === "AbortError") return;
    }
    setConn("disconnected", false);
    scheduleRetry();
  }

  function scheduleRetry() {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(stream, 2000);
  }

  function restartStream() {
    clearTimeout(retryTimer);
    if (controller) controller.abort();
    stream();
  }

  makeCharts();
  stream();
})();
