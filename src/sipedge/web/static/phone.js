// sipedge softphone: one JsSIP user agent driven by the form in index.html.
// Plain JS, no framework. JsSIP itself is bundled at set-up (scripts/setup-web) into
// /static/jssip.js and exposes the global `JsSIP`.
//
// The page state is mirrored in data-state attributes (#reg-state, #call-state,
// #send-state) so a person sees it and a test can wait for it; window.phone exposes the
// same actions for the console.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const params = new URLSearchParams(location.search);
  const saved = window.sessionStorage; // per tab: two tabs can be two different users
  const ICE_GATHER_MS = 1000; // end ICE gathering this long after the first candidate
  const SIPEDGE_DEFAULT_LISTEN = ["ws:127.0.0.1:8080", "wss:127.0.0.1:4443"];

  let ua = null;
  let session = null; // the one call this page handles at a time
  let statsTimer = null;
  let inboundBytes = 0;

  // -- settings ------------------------------------------------------------------------
  function pageConfig() {
    try {
      return JSON.parse($("sipedge-config").textContent || "{}") || {};
    } catch (e) {
      return {};
    }
  }

  function pageHost() {
    const h = location.hostname;
    if (!h) return "127.0.0.1";
    return h.includes(":") && !h.startsWith("[") ? `[${h}]` : h;
  }

  // "ws:host:port" listener entries -> the URL a browser on this page should use
  function serverFromListeners(listen) {
    const schemes = location.protocol === "https:" ? ["wss"] : ["ws", "wss"];
    for (const scheme of schemes) {
      const entry = listen.find((e) => typeof e === "string" && e.startsWith(scheme + ":"));
      if (!entry) continue;
      const rest = entry.slice(scheme.length + 1);
      const cut = rest.lastIndexOf(":");
      let host = rest.slice(0, cut);
      const port = rest.slice(cut + 1);
      if (["", "0.0.0.0", "::", "[::]"].includes(host)) host = pageHost();
      if (host.includes(":") && !host.startsWith("[")) host = `[${host}]`;
      return `${scheme}://${host}:${port}`;
    }
    return "";
  }

  function defaults() {
    const cfg = pageConfig();
    const listen = Array.isArray(cfg.listen) ? cfg.listen : SIPEDGE_DEFAULT_LISTEN;
    const domains = Array.isArray(cfg.domains) ? cfg.domains : [];
    return {
      server: serverFromListeners(listen),
      domain: domains[0] || pageHost(),
    };
  }

  const FIELDS = ["server", "user", "domain", "display-name", "target", "msg-target"];

  function loadFields() {
    const d = defaults();
    for (const f of FIELDS) {
      const v = params.get(f) || saved.getItem("sipedge." + f) || d[f] || "";
      if (v) $(f).value = v;
    }
    if (!$("msg-target").value && $("target").value) $("msg-target").value = $("target").value;
    const server = $("server").value;
    if (server.startsWith("wss:")) {
      const https = server.replace(/^wss:/, "https:");
      $("cert-hint").textContent =
        `With sipedge's self-signed certificate, open ${https}/ once and accept it, or use the ws:// listener on loopback.`;
    }
    if (!window.isSecureContext) {
      log("this page is not a secure context: browsers allow the microphone only on https or http://localhost");
    }
  }

  function saveFields() {
    for (const f of FIELDS) saved.setItem("sipedge." + f, $(f).value.trim());
  }

  // -- display ------------------------------------------------------------------------
  function setState(id, state, text) {
    const el = $(id);
    el.dataset.state = state;
    el.textContent = text || state;
  }

  function log(text) {
    const li = document.createElement("li");
    li.textContent = `${new Date().toLocaleTimeString()} ${text}`;
    $("log").prepend(li);
    while ($("log").children.length > 200) $("log").lastChild.remove();
  }

  function showMessage(direction, peer, body) {
    const li = document.createElement("li");
    li.className = direction;
    li.dataset.peer = peer;
    li.dataset.body = body;
    li.textContent = `${direction === "in" ? "from" : "to"} ${peer}: ${body}`;
    $("messages").append(li);
  }

  function updateButtons() {
    const registered = ua !== null && ua.isRegistered();
    const connected = ua !== null && ua.isConnected();
    $("register").disabled = ua !== null;
    $("unregister").disabled = ua === null;
    $("dial").disabled = !connected || session !== null;
    $("send").disabled = !connected;
    $("hangup").disabled = session === null;
    const ringing = session !== null && session.direction === "incoming" && !session.isEstablished() && !session.isEnded();
    $("incoming").classList.toggle("show", ringing);
    if (!registered && ua === null) setState("reg-state", "unregistered");
  }

  // -- media --------------------------------------------------------------------------
  let iceServers = [];
  let iceServersLoaded = Promise.resolve();

  // sipedge's TURN role hands out time-limited credentials at /turn/ice-servers, to
  // subscribers only: the page answers its HTTP digest challenge (RFC 7616) with the
  // user, domain and password it registers with. No TURN, a 404 or a refusal: none.
  async function digestHex(algorithm, text) {
    if (algorithm === "MD5") return JsSIP.Utils.calculateMD5(text);
    const buf = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
    return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  // The Digest challenges of a WWW-Authenticate value (fetch joins several with ", ").
  function digestChallenges(header) {
    const out = [];
    // a new challenge starts where a token is followed by a space and a parameter
    for (const part of (header || "").split(/,\s*(?=[\w-]+\s+[\w-]+\s*=)/)) {
      const m = /^Digest\s+(.*)$/is.exec(part.trim());
      if (!m) continue;
      const params = {};
      for (const p of m[1].matchAll(/([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))/g)) {
        params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, "$1") : p[3];
      }
      out.push(params);
    }
    return out;
  }

  async function digestAuthorization(header, user, password, method, uri) {
    const supported = (ch) => {
      const alg = (ch.algorithm || "MD5").toUpperCase();
      return (alg === "MD5" || (alg === "SHA-256" && window.crypto && crypto.subtle)) &&
        (!ch.qop || ch.qop.split(",").map((q) => q.trim()).includes("auth"));
    };
    const ch = digestChallenges(header).find(supported);
    if (!ch) return null;
    const alg = (ch.algorithm || "MD5").toUpperCase();
    const quote = (v) => '"' + String(v).replace(/(["\\])/g, "\\$1") + '"';
    const cnonce = Array.from(crypto.getRandomValues(new Uint8Array(8)), (b) => b.toString(16).padStart(2, "0")).join("");
    const nc = "00000001";
    const ha1 = await digestHex(alg, `${user}:${ch.realm}:${password}`);
    const ha2 = await digestHex(alg, `${method}:${uri}`);
    const qop = ch.qop ? "auth" : null;
    const response = await digestHex(alg, qop ? `${ha1}:${ch.nonce}:${nc}:${cnonce}:auth:${ha2}` : `${ha1}:${ch.nonce}:${ha2}`);
    const parts = [`username=${quote(user)}`, `realm=${quote(ch.realm)}`, `nonce=${quote(ch.nonce)}`,
      `uri=${quote(uri)}`, `response=${quote(response)}`, `algorithm=${alg}`];
    if (qop) parts.push(`qop=auth`, `nc=${nc}`, `cnonce=${quote(cnonce)}`);
    if (ch.opaque !== undefined) parts.push(`opaque=${quote(ch.opaque)}`);
    return "Digest " + parts.join(", ");
  }

  async function loadIceServers(user, domain, password) {
    if (!location.protocol.startsWith("http")) return;
    const ctl = new AbortController();
    const timer = setTimeout(() => ctl.abort(), 3000);
    const url = new URL(`/turn/ice-servers?user=${encodeURIComponent(user)}&domain=${encodeURIComponent(domain)}`, location.href);
    const uri = url.pathname + url.search; // exactly what the browser puts on the request line
    // credentials "omit": no cookies, and no browser login dialog on the 401
    const opts = { signal: ctl.signal, credentials: "omit", cache: "no-store" };
    try {
      let r = await fetch(url, opts);
      if (r.status === 401 && password) {
        const auth = await digestAuthorization(r.headers.get("WWW-Authenticate"), user, password, "GET", uri);
        if (auth) r = await fetch(url, { ...opts, headers: { Authorization: auth } });
      }
      if (!r.ok) {
        if (r.status !== 404) log(`no TURN credentials from /turn/ice-servers: ${r.status}`);
        return;
      }
      const j = await r.json();
      if (Array.isArray(j.iceServers)) {
        iceServers = j.iceServers;
        log(`ICE servers: ${iceServers.map((x) => [].concat(x.urls).join(" ")).join(" ")}`);
      }
    } catch (e) {
      /* no TURN endpoint here */
    } finally {
      clearTimeout(timer);
    }
  }

  function pcConfig() {
    return { iceServers, bundlePolicy: "max-bundle", rtcpMuxPolicy: "require" };
  }

  function callOptions() {
    return {
      mediaConstraints: { audio: true, video: false },
      pcConfig: pcConfig(),
    };
  }

  async function readInboundBytes() {
    const pc = session && session.connection;
    if (!pc) return 0;
    let total = 0;
    const report = await pc.getStats();
    report.forEach((s) => {
      if (s.type === "inbound-rtp" && (s.kind === "audio" || s.mediaType === "audio")) total += s.bytesReceived || 0;
    });
    return total;
  }

  function startStats() {
    stopStats();
    statsTimer = setInterval(async () => {
      try {
        inboundBytes = await readInboundBytes();
        $("rtp-in").textContent = String(inboundBytes);
      } catch (e) {
        /* the connection went away between ticks */
      }
    }, 500);
  }

  function stopStats() {
    if (statsTimer !== null) clearInterval(statsTimer);
    statsTimer = null;
  }

  const attached = new WeakSet();

  function attachPeerConnection(pc) {
    if (attached.has(pc)) return;
    attached.add(pc);
    pc.addEventListener("track", (ev) => {
      const audio = $("remote-audio");
      audio.srcObject = ev.streams[0] || new MediaStream([ev.track]);
      audio.play().catch(() => {}); // autoplay may need a click first; the call works anyway
    });
    pc.addEventListener("iceconnectionstatechange", () => log(`ICE ${pc.iceConnectionState}`));
  }

  // -- calls --------------------------------------------------------------------------
  function peerOf(s) {
    const id = s.remote_identity;
    return id ? id.uri.toString() : "?";
  }

  function trackSession(s) {
    session = s;
    $("peer").textContent = peerOf(s);
    let gatherTimer = null;
    s.on("icecandidate", (e) => {
      if (gatherTimer === null) gatherTimer = setTimeout(e.ready, ICE_GATHER_MS);
    });
    s.on("peerconnection", (e) => attachPeerConnection(e.peerconnection));
    s.on("sending", () => setState("call-state", "calling"));
    s.on("progress", () => setState("call-state", s.direction === "incoming" ? "incoming" : "ringing"));
    s.on("accepted", () => setState("call-state", "accepted"));
    s.on("confirmed", () => {
      setState("call-state", "confirmed", "in call");
      log(`call with ${peerOf(s)} established`);
      startStats();
    });
    const finish = (state) => (e) => {
      const who = e.originator === "local" ? "we" : e.originator === "remote" ? "they" : "system";
      setState("call-state", state, `${state} (${e.cause}, ${who})`);
      $("call-state").dataset.cause = e.cause || "";
      $("call-state").dataset.originator = e.originator || "";
      log(`call ${state}: ${e.cause} (${who})`);
      if (gatherTimer !== null) clearTimeout(gatherTimer);
      stopStats();
      if (session === s) session = null;
      updateButtons();
    };
    s.on("ended", finish("ended"));
    s.on("failed", finish("failed"));
    // the peer connection exists already for outgoing calls
    if (s.connection) attachPeerConnection(s.connection);
    updateButtons();
  }

  function dial() {
    const target = $("target").value.trim();
    if (!ua || !target || session) return;
    saveFields();
    setState("call-state", "calling");
    try {
      ua.call(target, callOptions()); // newRTCSession tracks it
    } catch (e) {
      setState("call-state", "failed", `failed (${e.message})`);
      log(`cannot call ${target}: ${e.message}`);
    }
  }

  function answer() {
    if (session && session.direction === "incoming" && !session.isEstablished()) {
      session.answer(callOptions());
      if (session.connection) attachPeerConnection(session.connection);
      updateButtons();
    }
  }

  function reject() {
    if (session && !session.isEnded()) session.terminate({ status_code: 486, reason_phrase: "Busy Here" });
  }

  function hangup() {
    if (session && !session.isEnded()) session.terminate();
  }

  // -- messages -----------------------------------------------------------------------
  function sendMessage() {
    const target = $("msg-target").value.trim();
    const text = $("msg-text").value;
    if (!ua || !target || !text) return;
    saveFields();
    setState("send-state", "sending");
    ua.sendMessage(target, text, {
      contentType: "text/plain",
      eventHandlers: {
        succeeded: () => {
          setState("send-state", "sent");
          showMessage("out", target, text);
          $("msg-text").value = "";
        },
        failed: (e) => {
          setState("send-state", "failed", `failed (${e.cause})`);
          log(`MESSAGE to ${target} failed: ${e.cause}`);
        },
      },
    });
  }

  // -- registration -------------------------------------------------------------------
  function register() {
    if (typeof window.JsSIP === "undefined") {
      setState("reg-state", "registration-failed", "JsSIP missing");
      log("/static/jssip.js is missing: run scripts/setup-web on the server (it bundles JsSIP from npm)");
      return;
    }
    const server = $("server").value.trim();
    const user = $("user").value.trim();
    const domain = $("domain").value.trim();
    if (!server || !user || !domain) {
      log("server, user and domain are needed");
      return;
    }
    saveFields();
    iceServersLoaded = loadIceServers(user, domain, $("password").value);
    if (params.get("debug")) JsSIP.debug.enable("JsSIP:*");
    let socket;
    try {
      socket = new JsSIP.WebSocketInterface(server);
    } catch (e) {
      log(`bad server URL ${server}: ${e.message}`);
      return;
    }
    const cfg = {
      sockets: [socket],
      uri: `sip:${user}@${domain}`,
      password: $("password").value,
      register: true,
      register_expires: 300,
      session_timers: false,
      user_agent: "sipedge-phone (JsSIP " + JsSIP.version + ")",
      connection_recovery_min_interval: 2,
      connection_recovery_max_interval: 30,
    };
    const name = $("display-name").value.trim();
    if (name) cfg.display_name = name;
    try {
      ua = new JsSIP.UA(cfg);
    } catch (e) {
      log(`cannot start: ${e.message}`);
      ua = null;
      return;
    }
    ua.on("connecting", () => setState("reg-state", "connecting"));
    ua.on("connected", () => {
      log(`connected to ${server}`);
      updateButtons();
    });
    ua.on("disconnected", (e) => {
      setState("reg-state", "disconnected");
      log(`disconnected from ${server}${e && e.error ? " (error)" : ""}`);
      updateButtons();
    });
    ua.on("registered", () => {
      setState("reg-state", "registered", `registered as ${user}@${domain}`);
      updateButtons();
    });
    ua.on("unregistered", () => {
      setState("reg-state", "unregistered");
      updateButtons();
    });
    ua.on("registrationFailed", (e) => {
      setState("reg-state", "registration-failed", `registration failed (${e.cause})`);
      log(`registration failed: ${e.cause}`);
      updateButtons();
    });
    ua.on("newRTCSession", (e) => {
      if (session !== null && e.originator === "remote") {
        e.session.terminate({ status_code: 486, reason_phrase: "Busy Here" });
        return;
      }
      trackSession(e.session);
      if (e.originator === "remote") {
        $("incoming-from").textContent = peerOf(e.session);
        setState("call-state", "incoming");
        log(`incoming call from ${peerOf(e.session)}`);
        updateButtons();
      }
    });
    ua.on("newMessage", (e) => {
      if (e.originator !== "remote") return;
      const from = e.request.from.uri.toString();
      showMessage("in", from, e.request.body || "");
      log(`message from ${from}`);
    });
    ua.start();
    updateButtons();
  }

  function unregister() {
    if (!ua) return;
    hangup();
    ua.stop();
    ua = null;
    setState("reg-state", "unregistered");
    updateButtons();
  }

  // -- wiring -------------------------------------------------------------------------
  $("register").addEventListener("click", register);
  $("unregister").addEventListener("click", unregister);
  $("dial").addEventListener("click", dial);
  $("answer").addEventListener("click", answer);
  $("reject").addEventListener("click", reject);
  $("hangup").addEventListener("click", hangup);
  $("send").addEventListener("click", sendMessage);
  $("target").addEventListener("keydown", (e) => e.key === "Enter" && dial());
  $("msg-text").addEventListener("keydown", (e) => e.key === "Enter" && sendMessage());
  window.addEventListener("beforeunload", () => ua && ua.stop());

  loadFields();
  updateButtons();
  if (typeof window.JsSIP === "undefined") {
    log("/static/jssip.js is missing: run scripts/setup-web on the server (it bundles JsSIP from npm)");
  }

  window.phone = {
    register, unregister, dial, answer, reject, hangup, sendMessage,
    inboundBytes: readInboundBytes,
    get ua() { return ua; },
    get iceServers() { return iceServersLoaded.then(() => iceServers); },
    get session() { return session; },
  };
})();
