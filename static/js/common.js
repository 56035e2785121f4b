// Shared by the card forms: CSRF-protected JSON POSTs and the busy/error states of the form.
"use strict";
window.cardbridge = (function () {
  const csrf = document.querySelector('meta[name="csrf-token"]').content;

  async function post(url, body) {
    const response = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await response.json(); } catch (e) { data = {}; }
    return { ok: response.ok, status: response.status, data: data };
  }

  function ui(form) {
    const button = form.querySelector("#submit");
    const errors = form.querySelector("#card-errors");
    const status = form.querySelector("#card-status");
    return {
      busy(on, text) {
        button.disabled = on;
        button.classList.toggle("busy", on);
        form.setAttribute("aria-busy", on ? "true" : "false");
        if (status) status.textContent = on ? (text || "Saving your card…") : "";
      },
      ready() { button.disabled = false; },
      error(message) {
        errors.textContent = message || "Something went wrong. Please try again.";
      },
      clear() { errors.textContent = ""; },
    };
  }

  // Tell the server a person opened the page (a scanner's GET runs no script).
  function opened(url) { post(url, {}).catch(function () {}); }

  // Stripe.js did not load (network, content blocker): say so instead of a dead button.
  function unavailable(form) {
    ui(form).error("The secure card form could not load. Check your connection, allow " +
                   "js.stripe.com if a content blocker is on, then reload this page.");
  }

  return { post: post, ui: ui, opened: opened, unavailable: unavailable };
})();
