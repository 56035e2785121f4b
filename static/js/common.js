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

  // The page's language: the server writes each message into the form as data-msg-*.
  function say(form, key, english) { return form.dataset[key] || english; }

  function ui(form) {
    const button = form.querySelector("#submit");
    const errors = form.querySelector("#card-errors");
    const status = form.querySelector("#card-status");
    return {
      busy(on, text) {
        button.disabled = on;
        button.classList.toggle("busy", on);
        form.setAttribute("aria-busy", on ? "true" : "false");
        if (status) status.textContent = on ? (text || say(form, "msgSaving", "Saving your card…")) : "";
      },
      ready() { button.disabled = false; },
      error(message) {
        errors.textContent = message || say(form, "msgError", "Something went wrong. Please try again.");
      },
      clear() { errors.textContent = ""; },
    };
  }

  // Tell the server a person opened the page (a scanner's GET runs no script).
  function opened(url) { post(url, {}).catch(function () {}); }

  // Stripe.js did not load (network, content blocker): say so instead of a dead button.
  function unavailable(form) {
    ui(form).error(say(form, "msgUnavailable", "The secure card form could not load. Check your " +
                   "connection, allow js.stripe.com if a content blocker is on, then reload this page."));
  }

  // The Save flow both Elements forms share: ask our server for the SetupIntent, let Stripe
  // confirm it (`confirm(clientSecret)` → {error} | {setupIntent}), then tell our server, which
  // reads the result back from Stripe. `check()` may stop it before any SetupIntent is made.
  function onSave(form, cfg, view, confirm, check) {
    let working = false;
    form.addEventListener("submit", async function (event) {
      event.preventDefault();
      if (working) return;
      working = true;
      view.clear();
      view.busy(true);
      let leaving = false;
      const leave = function (url) { leaving = true; window.location.assign(url); };
      try {
        if (check) {
          const checked = await check();
          if (checked.error) { view.error(checked.error.message); return; }
        }
        const intent = await post(cfg.intentUrl);
        if (!intent.ok) { view.error(intent.data.message); return; }
        if (intent.data.redirect) { leave(intent.data.redirect); return; }
        const result = await confirm(intent.data.client_secret);
        if (result.error) {
          view.error(result.error.message ||
                     say(form, "msgDeclined", "Your card could not be saved. Please try another card."));
          return;
        }
        const done = await post(cfg.completeUrl, { setup_intent: result.setupIntent.id });
        if (!done.ok) { view.error(done.data.message); return; }
        leave(done.data.redirect);
      } catch (err) {
        view.error(say(form, "msgOffline", "We could not reach the server. Check your connection and try again."));
      } finally {
        working = false;
        if (!leaving) view.busy(false);
      }
    });
  }

  return { post: post, ui: ui, opened: opened, unavailable: unavailable, onSave: onSave };
})();
