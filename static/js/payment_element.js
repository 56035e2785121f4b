// Payment Element + stripe.confirmSetup (redirect only if the card needs it). The Element is
// shown before any SetupIntent exists; the intent is made when the customer presses Save.
"use strict";
(function () {
  const form = document.getElementById("card-form");
  if (!form) return;
  if (typeof Stripe === "undefined") { window.cardbridge.unavailable(form); return; }
  const cfg = form.dataset;
  const view = window.cardbridge.ui(form);
  const stripe = Stripe(cfg.publishableKey, { locale: cfg.locale || "auto" });  // Stripe's own words in the page's language
  const elements = stripe.elements({
    mode: "setup",
    currency: cfg.currency,
    appearance: { theme: "stripe", variables: { fontSizeBase: "16px" } },
  });
  const payment = elements.create("payment", { defaultValues: { billingDetails: { name: cfg.name, email: cfg.email } } });
  payment.mount("#card-element");
  payment.on("ready", function () { view.ready(); });
  window.cardbridge.opened(cfg.openedUrl);

  window.cardbridge.onSave(form, cfg, view, function (clientSecret) {
    return stripe.confirmSetup({
      elements: elements,
      clientSecret: clientSecret,
      confirmParams: { return_url: cfg.returnUrl },
      redirect: "if_required",
    });
  }, function () { return elements.submit(); });
})();
