// The sipedge dashboard (served at /dashboard; the server side is web/dashboard.py).
// Every value shown here comes from peers (SIP headers, user agents, addresses), so the
// page builds every element with textContent and setAttribute, never with HTML strings.
"use strict";

(() => {
  const SVG = "http://www.w3.org/2000/svg";
  const HISTORY = 150; // samples of the counters kept for the plots (one per snapshot)
  const DEFAULT_PLOTS = ["sip_requests_received", "sip_responses_received", "sip_auth_challenges",
    "sip_connections_open", "trace_messages"];
  const GAUGE = /(_open|_calls|_transactions|_allocations|_sessions|_active)$/;

  const state = {
    history: [], // [{t, stats}]
    plots: DEFAULT_PLOTS.slice(),
    traceCalls: new Map(), // call_id -> summary
    openCall: null,
    ladder: [],
    codecs: new Map(), // call_id -> codec text (from the SDP in the trace)
  };

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(text(c)));
    return node;
  }

  function svg(tag, attrs, content) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (content !== undefined) node.textContent = text(content);
    return node;
  }

  function text(v) {
    if (v === null || v === undefined) return "";
    if (Array.isArray(v)) return v.join(", ");
    if (typeof v === "object") return JSON.stringify(v);
    return String(v);
  }

  function clock(unix) {
    const d = new Date(unix * 1000);
    const pad = (n, w) => String(n).padStart(w || 2, "0");
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`;
  }

  function shown(list, total) {
    return total > list.length ? `showing ${list.length} of ${total}` : "";
  }

  function fill(id, rows, note, empty) {
    const body = document.querySelector(`#${id} tbody`);
    const noteEl = document.getElementById(`${id}-note`);
    if (!Array.isArray(rows)) {
      body.replaceChildren();
      noteEl.textContent = rows && rows.error ? rows.error : "";
      return;
    }
    body.replaceChildren(...rows);
    noteEl.textContent = rows.length ? (note || "") : empty;
  }

  function cells(values, attrs) {
    return el("tr", attrs, ...values.map((v) => el("td", {}, v)));
  }

  // -- panels --------------------------------------------------------------------------
  function renderRegistrations(list, total) {
    if (!Array.isArray(list)) return fill("registrations", list);
    fill("registrations", list.map((b) => {
      const transport = (b.socket || "").split(":")[0] || (b.flow || "").split(":")[0];
      const nat = b.received ? `yes (${b.received})` : "no";
      return cells([b.aor, b.contact, transport, nat, b.user_agent, b.expires], { "data-aor": b.aor });
    }), shown(list, total), "no registered contact");
  }

  function legs(call) {
    const out = [];
    for (const [tag, leg] of Object.entries(call.tags || {})) {
      for (const media of leg.medias || []) {
        const rtp = (media.streams || [])[0] || {};
        const ep = rtp.endpoint ? `${rtp.endpoint.address}:${rtp.endpoint.port}` : "?";
        const path = `${ep} \u2194 relay :${rtp["local port"] === undefined ? "?" : rtp["local port"]}` +
          (media.protocol ? ` (${media.protocol})` : "");
        out.push({ tag, path, packets: (rtp.stats || {}).packets, lost: rtp.lost, jitter: rtp.jitter });
      }
    }
    return out;
  }

  function renderCalls(list, total) {
    if (!Array.isArray(list)) return fill("calls", list);
    const now = Date.now() / 1000;
    const rows = [];
    for (const call of list) {
      const summary = state.traceCalls.get(call.call_id) || {};
      codecOf(call.call_id);
      const duration = call.created ? `${Math.max(0, Math.round(now - call.created))} s` : "";
      const parts = legs(call);
      if (!parts.length) parts.push({ tag: "", path: "", packets: "", lost: "", jitter: "" });
      parts.forEach((leg, i) => {
        const head = i === 0 ? [call.call_id, summary.from, summary.to, duration, state.codecs.get(call.call_id)]
          : ["", "", "", "", ""];
        rows.push(cells([...head, leg.tag, leg.path, leg.packets, leg.lost, leg.jitter],
          { "data-call-id": call.call_id }));
      });
    }
    fill("calls", rows, shown(list, total), "no call in the media relay");
  }

  async function codecOf(callId) {
    if (state.codecs.has(callId)) return;
    state.codecs.set(callId, "");
    const trace = await api("trace.show", { call_id: callId });
    if (!trace || !trace.messages) return;
    for (const m of trace.messages.slice().reverse()) {
      const body = m.message.split("\r\n\r\n")[1] || "";
      const mline = body.match(/^m=\w+ \d+ \S+ (\d+)/m);
      if (!mline) continue;
      const rtpmap = body.match(new RegExp(`^a=rtpmap:${mline[1]} ([^\\r\\n]+)`, "m"));
      state.codecs.set(callId, rtpmap ? rtpmap[1] : `payload ${mline[1]}`);
      return;
    }
  }

  function renderTurn(list, total) {
    if (!Array.isArray(list)) return fill("turn", list);
    fill("turn", list.map((a) => cells([a.client, a.username, a.relayed, a.expires, a.permissions,
      Object.entries(a.channels || {}).map(([n, p]) => `${n}\u2192${p}`)])), shown(list, total), "no allocation");
  }

  function renderBans(list, total) {
    if (!Array.isArray(list)) return fill("bans", list);
    fill("bans", list.map((b) => cells([b.source, b.seconds_left, b.dropped])), shown(list, total),
      "no source is banned");
  }

  // -- counters over time ----------------------------------------------------------------
  function renderPlots() {
    const box = document.getElementById("plots");
    const last = state.history[state.history.length - 1];
    if (last) {
      const names = document.getElementById("counter-names");
      if (names.childElementCount !== Object.keys(last.stats).length) {
        names.replaceChildren(...Object.keys(last.stats).map((n) => el("option", { value: n })));
      }
    }
    box.replaceChildren(...state.plots.map(plot));
  }

  function plot(name) {
    const W = 360, H = 140, L = 50, B = 20;
    const gauge = GAUGE.test(name);
    const points = [];
    for (let i = 1; i < state.history.length; i++) {
      const a = state.history[i - 1], b = state.history[i];
      const v = b.stats[name];
      if (typeof v !== "number") continue;
      const dt = b.t - a.t;
      const y = gauge ? v : (dt > 0 && typeof a.stats[name] === "number" ? (v - a.stats[name]) / dt : 0);
      points.push([b.t, y]);
    }
    const root = svg("svg", { class: "plot", width: W, height: H, "data-counter": name });
    root.append(svg("text", { x: 4, y: 14 }, `${name}${gauge ? "" : " (per second)"}`));
    root.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - 4, y2: H - B }));
    root.append(svg("line", { class: "axis", x1: L, y1: 20, x2: L, y2: H - B }));
    if (!points.length) {
      root.append(svg("text", { x: L + 10, y: H / 2 }, "waiting for samples"));
      return root;
    }
    const t0 = points[0][0], t1 = Math.max(points[points.length - 1][0], t0 + 1);
    const max = Math.max(1, ...points.map((p) => p[1]));
    const xy = points.map(([t, v]) => `${(L + (t - t0) / (t1 - t0) * (W - L - 4)).toFixed(1)},` +
      `${(H - B - v / max * (H - B - 24)).toFixed(1)}`);
    root.append(svg("polyline", { points: xy.join(" ") }));
    root.append(svg("text", { x: 4, y: 28 }, max.toFixed(max < 10 ? 1 : 0)));
    root.append(svg("text", { x: 4, y: H - B }, "0"));
    root.append(svg("text", { x: W - 120, y: 14 }, `now ${points[points.length - 1][1].toFixed(1)}`));
    return root;
  }

  // -- the SIP trace and its ladder ------------------------------------------------------
  function renderTraceCalls() {
    const rows = [...state.traceCalls.values()].sort((a, b) => b.last - a.last).map((c) => {
      const row = cells([c.call_id, c.from, c.to, clock(c.first), clock(c.last), c.messages, c.status],
        { "data-call-id": c.call_id });
      if (c.call_id === state.openCall) row.classList.add("open");
      row.addEventListener("click", () => openLadder(c.call_id));
      return row;
    });
    fill("trace-calls", rows, "", "no traced call yet");
  }

  async function openLadder(callId) {
    state.openCall = callId;
    const trace = await api("trace.show", { call_id: callId });
    if (state.openCall !== callId) return;
    state.ladder = trace && trace.messages ? trace.messages : [];
    document.getElementById("ladder-box").hidden = false;
    document.getElementById("ladder-call").textContent = callId;
    renderLadder();
    renderTraceCalls();
  }

  function label(first) {
    // "INVITE sip:bob@x SIP/2.0" -> "INVITE"; "SIP/2.0 180 Ringing" -> "180"
    const parts = first.split(" ");
    return first.startsWith("SIP/") ? (parts[1] || "?") : (parts[0] || "?");
  }

  function endpoints(messages) {
    // the columns: every address in order of appearance; a send whose local address the
    // transport chose is drawn from the last local address seen on that transport
    const lastLocal = {};
    return messages.map((m) => {
      let local = m.local;
      if (local) lastLocal[m.transport] = local;
      else local = lastLocal[m.transport] || "sipedge";
      const remote = `${m.remote}`;
      return m.direction === "in" ? [remote, local] : [local, remote];
    });
  }

  function renderLadder() {
    const messages = state.ladder;
    const pairs = endpoints(messages);
    const columns = [];
    for (const [a, b] of pairs) for (const c of [a, b]) if (!columns.includes(c)) columns.push(c);
    const X0 = 190, DX = 260, Y0 = 50, DY = 36;
    const width = X0 + Math.max(1, columns.length - 1) * DX + 120;
    const height = Y0 + messages.length * DY + 20;
    const root = document.getElementById("ladder");
    root.setAttribute("width", width);
    root.setAttribute("height", height);
    const nodes = [];
    columns.forEach((c, i) => {
      const x = X0 + i * DX;
      nodes.push(svg("text", { class: "column", x, y: 20, "text-anchor": "middle", "data-column": c }, c));
      nodes.push(svg("line", { class: "life", x1: x, y1: 28, x2: x, y2: height - 10 }));
    });
    messages.forEach((m, i) => {
      const [src, dst] = pairs[i];
      const x1 = X0 + columns.indexOf(src) * DX, x2 = X0 + columns.indexOf(dst) * DX;
      const y = Y0 + i * DY + 12;
      const dir = x2 >= x1 ? 1 : -1;
      const name = label(m.first_line);
      const g = svg("g", {
        class: `arrow ${m.first_line.startsWith("SIP/") ? "response" : "request"}`,
        "data-index": i, "data-label": name, "data-direction": m.direction, tabindex: 0,
      });
      g.append(svg("rect", { class: "hit", x: Math.min(x1, x2), y: y - 18, width: Math.abs(x2 - x1) || 20, height: 24 }));
      g.append(svg("line", { x1, y1: y, x2: x2 - dir * 8, y2: y }));
      g.append(svg("polygon", { points: `${x2},${y} ${x2 - dir * 9},${y - 4} ${x2 - dir * 9},${y + 4}` }));
      const short = m.first_line.length > 48 ? `${m.first_line.slice(0, 47)}\u2026` : m.first_line;
      g.append(svg("text", { x: (x1 + x2) / 2, y: y - 5, "text-anchor": "middle" }, short));
      g.addEventListener("click", () => showMessage(i));
      g.addEventListener("keydown", (e) => { if (e.key === "Enter") showMessage(i); });
      nodes.push(svg("text", { class: "time", x: 4, y: y + 4 }, `${clock(m.time)} ${m.transport}`));
      nodes.push(g);
    });
    root.replaceChildren(...nodes);
    document.getElementById("message").textContent = "";
    document.getElementById("message-title").textContent = "(click an arrow)";
  }

  function showMessage(i) {
    const m = state.ladder[i];
    if (!m) return;
    for (const g of document.querySelectorAll("#ladder g.arrow")) {
      g.classList.toggle("selected", g.getAttribute("data-index") === String(i));
    }
    const where = m.direction === "in" ? `received from ${m.remote}` : `sent to ${m.remote}`;
    document.getElementById("message-title").textContent =
      `${i + 1}: ${clock(m.time)} ${m.transport} ${where}${m.truncated ? ` (first ${m.message.length} of ${m.size} bytes)` : ""}`;
    document.getElementById("message").textContent = m.message;
  }

  // -- data ------------------------------------------------------------------------------
  async function api(name, params) {
    const query = new URLSearchParams(params || {}).toString();
    const reply = await fetch(`/dashboard/api/${name}${query ? `?${query}` : ""}`, { credentials: "same-origin" });
    if (reply.status === 401) { window.location.assign("/dashboard/login"); return null; }
    return reply.ok ? reply.json() : null;
  }

  function onSnapshot(snap) {
    if (snap.stats && !snap.stats.error) {
      state.history.push({ t: snap.time, stats: snap.stats });
      if (state.history.length > HISTORY) state.history.shift();
    }
    renderRegistrations(snap.registrations, snap.registrations_total);
    renderCalls(snap.media, snap.media_total);
    renderTurn(snap.turn, snap.turn_total);
    renderBans(snap.bans, snap.bans_total);
    renderPlots();
  }

  function onTrace(update) {
    for (const c of update.calls) state.traceCalls.set(c.call_id, c);
    renderTraceCalls();
    if (state.openCall && update.calls.some((c) => c.call_id === state.openCall)) openLadder(state.openCall);
  }

  function connect() {
    const live = document.getElementById("live");
    const source = new EventSource("/dashboard/events");
    source.addEventListener("open", () => { live.dataset.state = "live"; live.textContent = "live"; });
    source.addEventListener("snapshot", (e) => onSnapshot(JSON.parse(e.data)));
    source.addEventListener("trace", (e) => onTrace(JSON.parse(e.data)));
    source.addEventListener("error", async () => {
      live.dataset.state = "offline";
      live.textContent = "reconnecting";
      if (await api("stats", { prefix: "sip_requests_received" }) === null) source.close();
    });
  }

  function showView() {
    const view = (window.location.hash || "#registrations").slice(1);
    for (const s of document.querySelectorAll(".view")) s.classList.toggle("shown", s.id === `view-${view}`);
    for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view);
  }

  document.getElementById("add-plot").addEventListener("submit", (e) => {
    e.preventDefault();
    const input = document.getElementById("plot-name");
    const name = input.value.trim();
    if (name && !state.plots.includes(name)) state.plots.push(name);
    input.value = "";
    renderPlots();
  });
  window.addEventListener("hashchange", showView);
  showView();
  renderPlots();
  connect();
})();
