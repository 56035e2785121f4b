// Stripe Checkout (setup mode): a plain form POST; this only stops double submits.
"use strict";
(function () {
  const form = document.getElementById("checkout-form");
  if (!form) return;
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  fetch(form.dataset.openedUrl, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-CSRFToken": csrf }, body: "{}",
  }).catch(function () {});
  form.addEventListener("submit", function () {
    const button = form.querySelector("#submit");
    button.disabled = true;
    button.classList.add("busy");
    button.textContent = form.dataset.msgOpening || "Opening the secure page…";
  });
})();
