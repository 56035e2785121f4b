// Card Element + stripe.confirmCardSetup. The SetupIntent is asked for only when the customer
// presses Save, so opening the page creates nothing in Stripe.
"use strict";
(function () {
  const form = document.getElementById("card-form");
  if (!form) return;
  if (typeof Stripe === "undefined") { window.cardbridge.unavailable(form); return; }
  const cfg = form.dataset;
  const view = window.cardbridge.ui(form);
  const stripe = Stripe(cfg.publishableKey, { locale: cfg.locale || "auto" });  // Stripe's own words in the page's language
  const card = stripe.elements().create("card", {
    style: { base: { fontSize: "16px", color: "#1f2430" } },
  });
  card.mount("#card-element");
  view.ready();
  window.cardbridge.opened(cfg.openedUrl);

  window.cardbridge.onSave(form, cfg, view, function (clientSecret) {
    return stripe.confirmCardSetup(clientSecret, {
      payment_method: { card: card, billing_details: { name: cfg.name, email: cfg.email } },
    });
  });
})();
