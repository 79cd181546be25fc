// Staff console: live alarms, devices and the building view over server-sent events,
// acknowledgement by fetch, the age of each time kept current, attention for a new or
// escalated alarm (sound, tab title and icon, a notification), and a page that says so
// over everything when it is no longer live.  Words come from the page (its language);
// local times come formatted by the gateway (its time zone).  Everything is built with
// textContent, so nothing from the network is parsed as HTML.
"use strict";
(function () {
  const main = document.querySelector("main[data-csrf]");
  if (!main || !main.dataset.words) return;
  const csrf = main.dataset.csrf;
  const cards = document.getElementById("alarms");
  const noAlarms = document.getElementById("no-alarms");
  const devices = document.querySelector("#devices tbody");
  const live = document.getElementById("live");
  const stale = document.getElementById("stale");
  const staleSince = document.getElementById("stale-since");
  const words = JSON.parse(main.dataset.words);
  const site = main.dataset.site || "";
  const sep = main.dataset.lang === "zh" ? "：" : ": ";
  const alarmsById = new Map();
  const devicesById = new Map();
  // The gateway's clock minus this device's: ages are reckoned by the gateway's clock.
  let skew = 0;
  function setNow(iso) { const t = Date.parse(iso); if (!isNaN(t)) skew = t - Date.now(); }
  setNow(main.dataset.now);
  let lastContact = Date.now();  // of this device's clock: when the stream last spoke

  function word(prefix, value) {
    const w = words[prefix + "_" + value];
    return w === undefined ? (value == null ? "" : String(value)) : w;
  }
  function fill(text, field, value) { return text.replace("{" + field + "}", String(value)); }
  function agoSeconds(s) {
    if (s < 10) return words.ago_now;
    const units = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
    for (const [unit, size] of units) {
      if (s >= size) return fill(words["ago_" + unit], "n", Math.floor(s / size));
    }
    return "";
  }
  function ago(iso) {
    const t = Date.parse(iso);
    if (isNaN(t)) return "";
    return agoSeconds(Math.max(0, Math.floor((Date.now() + skew - t) / 1000)));
  }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = String(text);
    return e;
  }
  function when(parent, iso, local) {
    if (!iso) return;
    const time = el("time", "", local || iso);
    time.dateTime = iso; time.title = iso;
    parent.append(time, " ", el("span", "ago", ago(iso)));
  }
  function refreshAges() {
    if (document.body.classList.contains("is-stale")) {
      // A page that is not live does not pretend its ages are current: it says how
      // old the page is instead.
      staleSince.textContent = fill(words.c_stale_since, "ago",
        agoSeconds(Math.floor((Date.now() - lastContact) / 1000)));
      return;
    }
    document.querySelectorAll(".when time").forEach(function (time) {
      const span = time.parentNode.querySelector(".ago");
      if (span) span.textContent = ago(time.dateTime);
    });
  }

  function place(loc) {
    loc = loc || {};
    const p = [];
    if (loc.building) p.push(fill(words.c_bldg, "v", loc.building));
    if (loc.floor != null) p.push(fill(words.c_floor, "v", loc.floor));
    if (loc.unit) p.push(loc.unit);
    return p.join(" / ");
  }
  function placeKey(loc) {
    loc = loc || {};
    if (!loc.building) return null;
    return loc.building + "|" + (loc.floor == null ? "" : loc.floor) + "|" + (loc.unit || "");
  }

  // ---- alarms ------------------------------------------------------------------------

  function ackForm(doc) {
    const f = el("form", "ack");
    f.method = "post";
    f.action = "/console/alarms/" + encodeURIComponent(doc.alarm_id) + "/ack";
    const h = el("input"); h.type = "hidden"; h.name = "csrf"; h.value = csrf;
    const n = el("input"); n.name = "note"; n.maxLength = 500; n.placeholder = words.c_note;
    n.setAttribute("aria-label", words.c_note);
    const msg = el("p", "ack-msg error"); msg.setAttribute("role", "alert"); msg.hidden = true;
    f.append(h, n, el("button", "", words.c_ack), msg);
    return f;
  }
  function alarmCard(doc) {
    const a = el("article", "alarm sev-" + doc.severity + " state-" + doc.state);
    a.dataset.alarm = doc.alarm_id;
    a.dataset.rev = doc.rev;
    const head = el("p", "a-head");
    head.append(el("strong", "a-type", word("type", doc.type)), " · ",
      el("span", "a-cause", word("evt", doc.cause)));
    const badges = el("p", "a-badges");
    badges.append(el("span", "badge sev", word("sev", doc.severity)), " ",
      el("span", "badge st", word("state", doc.state)));
    if (doc.escalation) badges.append(el("span", "badge esc", fill(words.c_escalation_n, "n", doc.escalation)));
    const dev = doc.device || {};
    const where = el("p", "a-place");
    where.append(el("strong", "", place(dev.location)), el("br"), el("small", "", dev.name || dev.id));
    const w = el("p", "when");
    when(w, doc.raised_at, doc.since_local);
    a.append(head, badges, where, w);
    if (doc.ack) {
      a.append(el("p", "a-ack", "✓ " + doc.ack.by + (doc.ack.note ? sep + doc.ack.note : "")));
    }
    if (!doc.acknowledged && doc.state !== "closed") a.append(ackForm(doc));
    return a;
  }
  function showAlarm(doc, fromSnapshot) {
    const old = alarmsById.get(doc.alarm_id);
    if (old && old.rev != null && Number(old.rev) >= doc.rev) return;  // stale
    alarmsById.set(doc.alarm_id, doc);
    const card = alarmCard(doc);
    const shown = cards.querySelector('[data-alarm="' + CSS.escape(doc.alarm_id) + '"]');
    if (shown) shown.replaceWith(card); else cards.prepend(card);
    noAlarms.hidden = true;
    paintPlace(placeKey((doc.device || {}).location));
    if (!fromSnapshot) attend(doc, old);
  }

  // ---- devices and the building view -------------------------------------------------

  function deviceValue(d) {
    if (d.last_event) return word("evt", d.last_event);
    if (d.last_readings && d.last_readings.length) {
      return d.last_readings.map(function (r) {
        return word("read", r[0]) + " " + r[1] + (r[2] ? " " + r[2] : "");
      }).join(main.dataset.lang === "zh" ? "，" : ", ");
    }
    return d.last_value || "";
  }
  function deviceRow(d) {
    const tr = el("tr");
    tr.dataset.device = d.id;
    const avail = d.available === true ? "online" : d.available === false ? "offline" : "unknown";
    tr.className = "avail-" + avail;
    const name = el("td", "", d.name || d.id); name.append(el("br"), el("small", "", d.id));
    const av = el("td", "", word("avail", avail));
    if (d.reason) av.append(el("br"), el("small", "", d.reason));
    const at = el("td", "when");
    when(at, d.last_at, d.at_local);
    tr.append(name, el("td", "", word("kind", d.kind)), el("td", "", place(d.location)), av,
      el("td", "", deviceValue(d)), at);
    return tr;
  }
  function showDevice(d) {
    const before = devicesById.get(d.id);
    devicesById.set(d.id, d);
    if (devices) {
      const old = devices.querySelector('tr[data-device="' + CSS.escape(d.id) + '"]');
      const tr = deviceRow(d);
      if (old) old.replaceWith(tr); else devices.appendChild(tr);
    }
    if (!before || before.available !== d.available) paintPlace(placeKey(d.location));
  }
  // The same order as gateway/web/building.py: alarm, offline, acknowledged, fine.
  const ORDER = ["alarm", "offline", "acknowledged", "fine"];
  function alarmPlaceState(doc) {
    if (doc.state === "closed") return "fine";
    if (doc.acknowledged) return doc.state !== "cleared" ? "acknowledged" : "fine";
    return doc.severity !== "low" ? "alarm" : "fine";
  }
  function paintPlace(key) {
    if (key == null) return;
    const cell = document.querySelector('.bldgs [data-place="' + CSS.escape(key) + '"]');
    if (!cell) return;
    let worst = 3;
    devicesById.forEach(function (d) {
      if (placeKey(d.location) === key && d.available === false) worst = Math.min(worst, 1);
    });
    alarmsById.forEach(function (a) {
      if (placeKey((a.device || {}).location) === key) {
        worst = Math.min(worst, ORDER.indexOf(alarmPlaceState(a)));
      }
    });
    const state = ORDER[worst];
    cell.className = "cell place-" + state;
    cell.title = word("c_place", state);
  }

  // ---- attention: sound, title, icon, notification -----------------------------------

  const icon = document.querySelector('link[rel="icon"]');
  const alertsButton = document.getElementById("alerts");
  const baseTitle = document.title;
  const notes = new Map();  // alarm_id -> Notification
  let audio = null;
  let beepTimer = null;
  let beeps = 0;
  function needsAttention(doc) {
    return doc && !doc.acknowledged && doc.state === "active" && doc.severity !== "low";
  }
  function pending() {
    const out = [];
    alarmsById.forEach(function (a) { if (needsAttention(a) && a._attend) out.push(a); });
    return out;
  }
  function beep() {
    if (!audio || audio.state !== "running") return;
    // Two short tones: heard over an office, not mistaken for a phone.
    [0, 0.35].forEach(function (at, i) {
      const o = audio.createOscillator();
      const g = audio.createGain();
      o.frequency.value = i ? 660 : 880;
      g.gain.setValueAtTime(0.0001, audio.currentTime + at);
      g.gain.exponentialRampToValueAtTime(0.4, audio.currentTime + at + 0.02);
      g.gain.exponentialRampToValueAtTime(0.0001, audio.currentTime + at + 0.3);
      o.connect(g).connect(audio.destination);
      o.start(audio.currentTime + at); o.stop(audio.currentTime + at + 0.32);
    });
    beeps += 1;
    document.documentElement.dataset.beeps = String(beeps);
  }
  function refreshAttention() {
    const list = pending();
    const on = list.length > 0;
    document.documentElement.dataset.attention = on ? "on" : "off";
    document.title = on ? "(" + list.length + ") ⚠ " + word("type", list[0].type) + " · " + baseTitle : baseTitle;
    if (icon) icon.href = on ? "/static/icon-alarm.svg" : "/static/icon.svg";
    if (on && !beepTimer) { beep(); beepTimer = setInterval(beep, 4000); }
    if (!on && beepTimer) { clearInterval(beepTimer); beepTimer = null; }
    notes.forEach(function (n, id) {
      if (!needsAttention(alarmsById.get(id))) { n.close(); notes.delete(id); }
    });
  }
  function attend(doc, old) {
    const fresh = !old || (doc.escalation || 0) > (old.escalation || 0) ||
      (old.state !== "active" && doc.state === "active");
    doc._attend = (old && old._attend) || (fresh && needsAttention(doc));
    if (fresh && needsAttention(doc) && "Notification" in window &&
        Notification.permission === "granted") {
      const title = (old ? words.c_escalated : words.c_new_alarm) + sep + word("type", doc.type);
      const body = word("evt", doc.cause) + " · " + place((doc.device || {}).location) + " · " + site;
      const n = new Notification(title, { body: body, tag: doc.alarm_id, requireInteraction: true });
      n.onclick = function () { window.focus(); n.close(); };
      const before = notes.get(doc.alarm_id);
      if (before) before.close();  // the same tag: the new one takes its place
      notes.set(doc.alarm_id, n);
    }
    refreshAttention();
  }
  // Browsers let a page make sound only after a user gesture: the first tap anywhere
  // (or the button) starts the audio and asks for notifications.
  function enableAlerts() {
    try {
      if (!audio) { const AC = window.AudioContext || window.webkitAudioContext; if (AC) audio = new AC(); }
      if (audio && audio.state !== "running") audio.resume();
    } catch (e) { audio = null; }
    if ("Notification" in window && Notification.permission === "default") {
      Notification.requestPermission();
    }
    alertsButton.textContent = words.c_alerts_active;
    alertsButton.classList.add("on");
  }
  alertsButton.hidden = false;
  alertsButton.addEventListener("click", enableAlerts);
  document.addEventListener("pointerdown", function () { if (!audio) enableAlerts(); }, { once: true });
  document.addEventListener("keydown", function () { if (!audio) enableAlerts(); }, { once: true });

  // ---- acknowledge without leaving the page; the card updates from the stream ------

  function ackError(r, body) {
    if (r.status === 401 || body.code === "session-ended") return words.c_session_ended;
    if (r.status === 403) return words.c_ack_expired;
    if (r.status === 404) return words.c_ack_gone;
    return fill(words.c_ack_failed, "n", r.status);
  }
  document.addEventListener("submit", function (ev) {
    const f = ev.target;
    if (!f.classList || !f.classList.contains("ack")) return;
    ev.preventDefault();
    const btn = f.querySelector("button");
    const msg = f.querySelector(".ack-msg");
    btn.disabled = true;
    msg.hidden = true;
    fetch(f.action, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
      body: new URLSearchParams(new FormData(f)),
    }).then(function (r) {
      // Any answer may be text or HTML (a proxy, an old gateway): never show a parse error.
      return r.text().then(function (text) {
        let body = {};
        try { body = JSON.parse(text); } catch (e) { body = {}; }
        if (r.ok && body.alarm) { showAlarm(body.alarm); return; }
        btn.disabled = false;
        msg.textContent = ackError(r, body);
        msg.hidden = false;
        // Long enough to read why, then to the sign-in page.
        if (r.status === 401 || body.code === "session-ended") setTimeout(signIn, 3000);
      });
    }).catch(function () {
      btn.disabled = false;
      msg.textContent = words.c_ack_offline;
      msg.hidden = false;
    });
  });

  // ---- the event stream, and a page that says when it is not live --------------------

  let es = null;
  let hadSnapshot = false;
  let retry = null;
  let probing = false;
  function setStale(on) {
    document.body.classList.toggle("is-stale", on);
    stale.hidden = !on;
    live.classList.toggle("off", on);
    live.textContent = on ? words.c_stale_retry : words.c_live;
    refreshAges();
  }
  function signIn() {
    if (es) es.close();
    clearTimeout(retry);
    setStale(true);
    staleSince.textContent = words.c_session_ended;
    window.location.assign("/signin");
  }
  function probe() {
    // The stream failed: a 401 here means the session ended (sign in), anything else
    // a gateway restarting or a network problem (try again in a while).
    if (probing) return;
    probing = true;
    fetch("/console/state", { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { if (r.status === 401) signIn(); else reopen(); })
      .catch(function () { reopen(); })
      .finally(function () { probing = false; });
  }
  // 5 s, then longer up to 30 s while the gateway keeps refusing (too many streams).
  let delay = 5000;
  function reopen() {
    clearTimeout(retry);
    retry = setTimeout(connect, delay);
    delay = Math.min(delay * 2, 30000);
  }
  function connect() {
    if (es) es.close();
    es = new EventSource("/console/events");
    es.addEventListener("open", function () { lastContact = Date.now(); delay = 5000; });
    es.addEventListener("error", function () {
      setStale(true);
      // CLOSED: the browser gave up (a status other than 200); else it retries itself.
      if (es.readyState === EventSource.CLOSED) probe();
    });
    es.addEventListener("session-ended", signIn);
    es.addEventListener("snapshot", function (m) {
      const s = JSON.parse(m.data);
      lastContact = Date.now();
      if (s.now) setNow(s.now);
      const before = new Map(alarmsById);
      const reconnect = hadSnapshot;
      hadSnapshot = true;
      alarmsById.clear(); devicesById.clear();
      cards.textContent = "";
      s.devices.forEach(function (d) { devicesById.set(d.id, d); });
      if (devices) { devices.textContent = ""; s.devices.forEach(function (d) { devices.appendChild(deviceRow(d)); }); }
      s.alarms.slice().reverse().forEach(function (a) {
        const old = before.get(a.alarm_id);
        a._attend = old ? old._attend : false;
        showAlarm(a, true);
        // After a reconnect, what was raised or escalated meanwhile needs attention too.
        if (reconnect && (!old || old.rev !== a.rev)) attend(a, old);
      });
      noAlarms.hidden = s.alarms.length > 0;
      document.querySelectorAll(".bldgs [data-place]").forEach(function (c) { paintPlace(c.dataset.place); });
      setStale(false);
      refreshAttention();
    });
    // The heartbeat (every 15 s): the stream is alive, and the gateway's clock for ages.
    es.addEventListener("ping", function (m) {
      lastContact = Date.now();
      try { setNow(JSON.parse(m.data).now); } catch (e) { /* an older gateway */ }
    });
    es.addEventListener("alarm", function (m) { lastContact = Date.now(); showAlarm(JSON.parse(m.data)); });
    es.addEventListener("device", function (m) { lastContact = Date.now(); showDevice(JSON.parse(m.data)); });
  }
  connect();
  refreshAges();
  setInterval(refreshAges, 15000);
  // A stream can die without an error (Wi-Fi gone and back: the old connection is
  // half-open and silent).  A stream that has said nothing for 90 s, not even its
  // heartbeat (`ping`, every 15 s), is replaced by a fresh one; if that fails, the page
  // goes stale as above.
  setInterval(function () {
    if (es && es.readyState === EventSource.OPEN && Date.now() - lastContact > 90000) connect();
  }, 15000);
})();
