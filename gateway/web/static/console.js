// Staff console: live alarms and devices over server-sent events, acknowledgement by fetch,
// and the age of each time ("3 min ago") kept current.  Words come from the page (its
// language); local times come formatted by the gateway (its time zone).
// Rows are built with textContent only, so nothing from the network is parsed as HTML.
"use strict";
(function () {
  const main = document.querySelector("main[data-csrf]");
  if (!main) return;
  const csrf = main.dataset.csrf;
  const alarms = document.querySelector("#alarms tbody");
  const devices = document.querySelector("#devices tbody");
  const live = document.getElementById("live");
  const words = JSON.parse(main.dataset.words);
  // The gateway's clock minus this device's: ages are reckoned by the gateway's clock.
  let skew = 0;
  function setNow(iso) { const t = Date.parse(iso); if (!isNaN(t)) skew = t - Date.now(); }
  setNow(main.dataset.now);

  function word(prefix, value) {
    const w = words[prefix + "_" + value];
    return w === undefined ? (value == null ? "" : String(value)) : w;
  }
  function ago(iso) {
    const t = Date.parse(iso);
    if (isNaN(t)) return "";
    const s = Math.max(0, Math.floor((Date.now() + skew - t) / 1000));
    if (s < 10) return words.ago_now;
    const units = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];
    for (const [unit, size] of units) {
      if (s >= size) return words["ago_" + unit].replace("{n}", String(Math.floor(s / size)));
    }
    return "";
  }
  function whenCell(tr, iso, local) {
    const td = document.createElement("td");
    td.className = "when";
    if (iso) {
      const time = document.createElement("time");
      time.dateTime = iso; time.title = iso;
      time.textContent = local || iso;
      const span = document.createElement("span");
      span.className = "ago";
      span.textContent = ago(iso);
      td.append(time, " ", span);
    }
    tr.appendChild(td);
  }
  function refreshAges() {
    document.querySelectorAll("td.when time").forEach(function (time) {
      const span = time.parentNode.querySelector(".ago");
      if (span) span.textContent = ago(time.dateTime);
    });
  }

  function cell(tr, text, small) {
    const td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    if (small) {
      td.appendChild(document.createElement("br"));
      const s = document.createElement("small");
      s.textContent = small;
      td.appendChild(s);
    }
    tr.appendChild(td);
    return td;
  }
  function place(loc) {
    loc = loc || {};
    const p = [];
    if (loc.building) p.push(words.c_bldg.replace("{v}", loc.building));
    if (loc.floor != null) p.push(words.c_floor.replace("{v}", loc.floor));
    if (loc.unit) p.push(loc.unit);
    return p.join(" / ");
  }
  function ackForm(doc) {
    const f = document.createElement("form");
    f.className = "ack";
    f.method = "post";
    f.action = "/console/alarms/" + encodeURIComponent(doc.alarm_id) + "/ack";
    const h = document.createElement("input");
    h.type = "hidden"; h.name = "csrf"; h.value = csrf;
    const n = document.createElement("input");
    n.name = "note"; n.maxLength = 500; n.placeholder = words.c_note;
    n.setAttribute("aria-label", words.c_note);
    const b = document.createElement("button");
    b.textContent = words.c_ack;
    f.append(h, n, b);
    return f;
  }
  function alarmRow(doc) {
    const tr = document.createElement("tr");
    tr.dataset.alarm = doc.alarm_id;
    tr.dataset.rev = doc.rev;
    tr.className = "sev-" + doc.severity + " state-" + doc.state;
    const dev = doc.device || {};
    cell(tr, word("type", doc.type)); cell(tr, word("sev", doc.severity));
    cell(tr, word("state", doc.state));
    cell(tr, dev.name || dev.id, place(dev.location));
    whenCell(tr, doc.raised_at, doc.since_local); cell(tr, doc.escalation);
    const ack = doc.ack ? (doc.ack.by + (doc.ack.note ? ": " + doc.ack.note : "")) : "";
    cell(tr, ack);
    const td = cell(tr, "");
    if (!doc.acknowledged && doc.state !== "closed") td.appendChild(ackForm(doc));
    return tr;
  }
  function showAlarm(doc) {
    const old = alarms.querySelector('tr[data-alarm="' + CSS.escape(doc.alarm_id) + '"]');
    if (old && old.dataset.rev && Number(old.dataset.rev) >= doc.rev) return;  // stale
    const tr = alarmRow(doc);
    if (old) old.replaceWith(tr); else alarms.prepend(tr);
  }
  function deviceRow(d) {
    const tr = document.createElement("tr");
    tr.dataset.device = d.id;
    const avail = d.available === true ? "online" : d.available === false ? "offline" : "unknown";
    tr.className = "avail-" + avail;
    cell(tr, d.name || d.id, d.id); cell(tr, d.kind); cell(tr, place(d.location));
    cell(tr, word("avail", avail), d.reason || ""); cell(tr, d.last_value);
    whenCell(tr, d.last_at, d.at_local);
    return tr;
  }
  function showDevice(d) {
    const old = devices.querySelector('tr[data-device="' + CSS.escape(d.id) + '"]');
    const tr = deviceRow(d);
    if (old) old.replaceWith(tr); else devices.appendChild(tr);
  }

  // Acknowledge without leaving the page; the row updates from the event stream.
  document.addEventListener("submit", function (ev) {
    const f = ev.target;
    if (!f.classList || !f.classList.contains("ack")) return;
    ev.preventDefault();
    const btn = f.querySelector("button");
    btn.disabled = true;
    fetch(f.action, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRF-Token": csrf, "Accept": "application/json" },
      body: new URLSearchParams(new FormData(f)),
    }).then(function (r) {
      return r.json().then(function (body) {
        if (!r.ok) throw new Error(body.error || r.status);
        showAlarm(body.alarm);
      });
    }).catch(function (e) {
      btn.disabled = false;
      alert(words.c_not_acked + ": " + e.message);
    });
  });

  function connect() {
    const es = new EventSource("/console/events");
    es.addEventListener("open", function () {
      live.textContent = words.c_live; live.classList.remove("off");
    });
    es.addEventListener("error", function () {
      live.textContent = words.c_reconnecting; live.classList.add("off");
    });
    es.addEventListener("snapshot", function (m) {
      const s = JSON.parse(m.data);
      if (s.now) setNow(s.now);
      alarms.textContent = "";
      s.alarms.forEach(function (a) { alarms.appendChild(alarmRow(a)); });
      devices.textContent = "";
      s.devices.forEach(function (d) { devices.appendChild(deviceRow(d)); });
    });
    es.addEventListener("alarm", function (m) { showAlarm(JSON.parse(m.data)); });
    es.addEventListener("device", function (m) { showDevice(JSON.parse(m.data)); });
  }
  connect();
  refreshAges();
  setInterval(refreshAges, 15000);
})();
