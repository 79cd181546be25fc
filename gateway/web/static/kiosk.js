// Kiosk: live alarm banner over server-sent events, the code keypad, a request's
// progress kept current, and the way back to the start after a while without a touch
// (with a warning and a "more time" button first, never while someone types).
// Everything else (filing, checking) works without this script.
"use strict";
(function () {
  const main = document.querySelector("main[data-kiosk]");
  if (!main) return;
  const banner = document.getElementById("banner");
  const url = "/kiosk/" + encodeURIComponent(main.dataset.kiosk) + "/events?lang=" +
    encodeURIComponent(main.dataset.lang);
  function showBanner(m) {
    const lines = JSON.parse(m.data);
    banner.textContent = "";
    lines.forEach(function (line) {
      const p = document.createElement("p");
      p.textContent = line;
      banner.appendChild(p);
    });
    banner.hidden = lines.length === 0;
  }
  function listen() {
    const es = new EventSource(url);
    es.addEventListener("banner", showBanner);
    // Refused (too many streams on this network): the browser gives up; try again later.
    es.addEventListener("error", function () {
      if (es.readyState === EventSource.CLOSED) setTimeout(listen, 30000);
    });
  }
  listen();

  const input = document.getElementById("code-input");
  const keypad = document.querySelector(".keypad");
  if (input && keypad) {
    keypad.hidden = false;
    keypad.addEventListener("click", function (ev) {
      const key = ev.target.dataset && ev.target.dataset.key;
      if (!key) return;
      if (key === "del") input.value = input.value.slice(0, -1);
      else if (input.value.length < 12) input.value += key;
    });
  }

  // ---- back to the start after inactivity ---------------------------------------------
  const idle = Number(main.dataset.idle || 0);
  if (idle > 0) {
    const warn = Number(main.dataset.warn || 20);
    const dialog = document.getElementById("idle");
    const text = document.getElementById("idle-text");
    let last = Date.now();
    function touched() {
      last = Date.now();
      if (!dialog.hidden) dialog.hidden = true;
    }
    ["pointerdown", "keydown", "input", "touchstart", "scroll"].forEach(function (type) {
      document.addEventListener(type, touched, { passive: true, capture: true });
    });
    document.getElementById("idle-more").addEventListener("click", touched);
    const ticking = setInterval(function () {
      const left = idle - Math.floor((Date.now() - last) / 1000);
      if (left <= 0) {
        // Once: a home page slower than a second to load was asked for again at each
        // tick, and each new request aborted the one before.
        clearInterval(ticking);
        window.location.assign(main.dataset.home);
        return;
      }
      if (left <= warn) {
        text.textContent = main.dataset.idleText.replace("{n}", String(left));
        dialog.hidden = false;
      }
    }, 1000);
  }

  // ---- a request's progress, re-read while the page is shown --------------------------
  const poll = main.dataset.poll;
  if (poll) {
    setInterval(function () {
      fetch(poll, { credentials: "same-origin" }).then(function (r) {
        return r.ok ? r.text() : null;
      }).then(function (html) {
        if (!html) return;
        // Our own server's page; only its progress list is taken over.
        const fresh = new DOMParser().parseFromString(html, "text/html").getElementById("history");
        const shown = document.getElementById("history");
        if (fresh && shown && fresh.textContent !== shown.textContent) {
          shown.replaceWith(document.importNode(fresh, true));
        }
      }).catch(function () { /* offline for a moment: the next round tries again */ });
    }, 15000);
  }
})();
