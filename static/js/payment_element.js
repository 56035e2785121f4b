// Payment Element + stripe.confirmSetup (redirect only if the card needs it). The Element is
// shown before any SetupIntent exists; the intent is made when the customer presses Save.
"use strict";
(function () {
  const form = document.getElementById("card-form");
  if (!form) return;
  if (typeof Stripe === "undefined") { window.cardbridge.unavailable(form); return; }
  const cfg = form.dataset;
  const view = window.cardbridge.ui(form);
  const stripe = Stripe(cfg.publishableKey);
  const elements = stripe.elements({
    mode: "setup",
    currency: cfg.currency,
    appearance: { theme: "stripe", variables: { fontSizeBase: "16px" } },
  });
  const payment = elements.create("payment", { defaultValues: { billingDetails: { name: cfg.name, email: cfg.email } } });
  payment.mount("#card-element");
  payment.on("ready", function () { view.ready(); });
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
      const checked = await elements.submit();
      if (checked.error) { view.error(checked.error.message); return; }
      const intent = await window.cardbridge.post(cfg.intentUrl);
      if (!intent.ok) { view.error(intent.data.message); return; }
      if (intent.data.redirect) { leaving = true; window.location.assign(intent.data.redirect); return; }
      const result = await stripe.confirmSetup({
        elements: elements,
        clientSecret: intent.data.client_secret,
        confirmParams: { return_url: cfg.returnUrl },
        redirect: "if_required",
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
