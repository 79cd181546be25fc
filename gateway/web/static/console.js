// Staff console: live alarms and devices over server-sent events, acknowledgement by fetch.
// Rows are built with textContent only, so nothing from the network is parsed as HTML.
"use strict";
(function () {
  const main = document.querySelector("main[data-csrf]");
  if (!main) return;
  const csrf = main.dataset.csrf;
  const alarms = document.querySelector("#alarms tbody");
  const devices = document.querySelector("#devices tbody");
  const live = document.getElementById("live");

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
    if (loc.building) p.push("Bldg " + loc.building);
    if (loc.floor != null) p.push("fl. " + loc.floor);
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
    n.name = "note"; n.maxLength = 500; n.placeholder = "note"; n.setAttribute("aria-label", "note");
    const b = document.createElement("button");
    b.textContent = "Acknowledge";
    f.append(h, n, b);
    return f;
  }
  function alarmRow(doc) {
    const tr = document.createElement("tr");
    tr.dataset.alarm = doc.alarm_id;
    tr.dataset.rev = doc.rev;
    tr.className = "sev-" + doc.severity + " state-" + doc.state;
    const dev = doc.device || {};
    cell(tr, doc.type); cell(tr, doc.severity); cell(tr, doc.state);
    cell(tr, dev.name || dev.id, place(dev.location));
    cell(tr, doc.raised_at); cell(tr, doc.escalation);
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
    cell(tr, avail, d.reason || ""); cell(tr, d.last_value); cell(tr, d.last_at);
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
      alert("Not acknowledged: " + e.message);
    });
  });

  function connect() {
    const es = new EventSource("/console/events");
    es.addEventListener("open", function () {
      live.textContent = "live"; live.classList.remove("off");
    });
    es.addEventListener("error", function () {
      live.textContent = "reconnecting…"; live.classList.add("off");
    });
    es.addEventListener("snapshot", function (m) {
      const s = JSON.parse(m.data);
      alarms.textContent = "";
      s.alarms.forEach(function (a) { alarms.appendChild(alarmRow(a)); });
      devices.textContent = "";
      s.devices.forEach(function (d) { devices.appendChild(deviceRow(d)); });
    });
    es.addEventListener("alarm", function (m) { showAlarm(JSON.parse(m.data)); });
    es.addEventListener("device", function (m) { showDevice(JSON.parse(m.data)); });
  }
  connect();
})();
