// Card Element + stripe.confirmCardSetup. The SetupIntent is asked for only when the customer
// presses Save, so opening the page creates nothing in Stripe.
"use strict";
(function () {
  const form = document.getElementById("card-form");
  if (!form) return;
  if (typeof Stripe === "undefined") { window.cardbridge.unavailable(form); return; }
  const cfg = form.dataset;
  const view = window.cardbridge.ui(form);
  const stripe = Stripe(cfg.publishableKey);
  const card = stripe.elements().create("card", {
    style: { base: { fontSize: "16px", color: "#1f2430" } },
  });
  card.mount("#card-element");
  view.ready();
  window.cardbridge.opened(cfg.openedUrl);

  let working = false;
  form.addEventListener("submit", async function (event) {
    event.preventDefault();
    if (working) return;
    working = true;
    view.clear();
    view.busy(true);
    let leaving = false;
    try {
      const intent = await window.cardbridge.post(cfg.intentUrl);
      if (!intent.ok) { view.error(intent.data.message); return; }
      if (intent.data.redirect) { leaving = true; window.location.assign(intent.data.redirect); return; }
      const result = await stripe.confirmCardSetup(intent.data.client_secret, {
        payment_method: { card: card, billing_details: { name: cfg.name, email: cfg.email } },
      });
      if (result.error) {
        view.error(result.error.message || "Your card could not be saved. Please try another card.");
        return;
      }
      const done = await window.cardbridge.post(cfg.completeUrl, { setup_intent: result.setupIntent.id });
      if (!done.ok) { view.error(done.data.message); return; }
      leaving = true;
      window.location.assign(done.data.redirect);
    } catch (err) {
      view.error("We could not reach the server. Check your connection and try again.");
    } finally {
      working = false;
      if (!leaving) view.busy(false);
    }
  });
})();
