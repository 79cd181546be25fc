// Kiosk: live alarm banner over server-sent events, and the code keypad.
// Everything else (filing, checking) works without this script.
"use strict";
(function () {
  const main = document.querySelector("main[data-kiosk]");
  if (!main) return;
  const banner = document.getElementById("banner");
  const url = "/kiosk/" + encodeURIComponent(main.dataset.kiosk) + "/events?lang=" +
    encodeURIComponent(main.dataset.lang);
  const es = new EventSource(url);
  es.addEventListener("banner", function (m) {
    const lines = JSON.parse(m.data);
    banner.textContent = "";
    lines.forEach(function (line) {
      const p = document.createElement("p");
      p.textContent = line;
      banner.appendChild(p);
    });
    banner.hidden = lines.length === 0;
  });

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
})();
