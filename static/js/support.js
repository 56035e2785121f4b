// Support console: copy buttons, select-on-focus for one-time values, and live import progress.
"use strict";
(function () {
  function announce(button, text) {
    const scope = button.closest("section, li, form") || document;
    const status = scope.querySelector(".copy-status");
    if (status) {
      status.textContent = "";
      window.setTimeout(function () { status.textContent = text; }, 30);
    }
  }

  function fallbackCopy(text) {
    const area = document.createElement("textarea");
    area.value = text;
    area.setAttribute("readonly", "");
    area.className = "visually-hidden";
    document.body.appendChild(area);
    area.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  document.addEventListener("click", async function (event) {
    const button = event.target.closest("[data-copy], [data-copy-from]");
    if (!button) return;
    const source = button.dataset.copyFrom && document.getElementById(button.dataset.copyFrom);
    const text = source ? source.value : button.dataset.copy;
    let ok = false;
    if (navigator.clipboard && window.isSecureContext) {
      try { await navigator.clipboard.writeText(text); ok = true; } catch (e) { ok = false; }
    }
    if (!ok) ok = fallbackCopy(text);
    if (!ok && source) { source.focus(); source.select(); }
    announce(button, ok ? (button.dataset.copied || "Copied") : "Press Ctrl+C (⌘C) to copy");
  });

  document.querySelectorAll("[data-select-all]").forEach(function (input) {
    input.addEventListener("focus", function () { input.select(); });
  });

  // While an import runs, refresh the list of imports every two seconds (no page reload).
  const panel = document.querySelector("[data-poll]");
  if (panel) {
    const url = panel.dataset.poll;
    const tick = async function () {
      try {
        const response = await fetch(url, { credentials: "same-origin" });
        if (response.ok) {
          panel.innerHTML = await response.text();
          if (response.headers.get("X-Import-Running") !== "1") {
            panel.removeAttribute("data-poll");
            return;
          }
        }
      } catch (e) { /* a missed refresh is harmless; try again */ }
      window.setTimeout(tick, 2000);
    };
    window.setTimeout(tick, 2000);
  }
})();
