// Stand-in for Stripe.js v3, served by tests/fakes/stripe_front.py to the browser tests. It
// implements exactly the surface static/js/payment_element.js uses — Stripe(pk),
// elements({mode, currency, appearance}), elements.create("payment", opts) with mount() and
// on("ready"), elements.submit(), stripe.confirmSetup({...}) — and refuses misuse the way
// Stripe.js does, so a page that works here calls Stripe.js correctly. Confirmation goes to the
// fake's /v1 (forwarded to localstripe) with the publishable key, as Stripe.js does. It adds no
// inline styles or scripts, so the page's CSP judges it like the real thing.
"use strict";
(function () {
  const API = new URL(document.currentScript.src).origin;
  const never = new Promise(function () {}); // what a call that navigates away resolves to

  function integrationError(message) {
    return { error: { type: "integration_error", message: message } };
  }

  function encode(params, prefix, out) {
    out = out || new URLSearchParams();
    Object.keys(params).forEach(function (key) {
      const value = params[key];
      const name = prefix ? prefix + "[" + key + "]" : key;
      if (value === undefined || value === null) return;
      if (typeof value === "object") encode(value, name, out);
      else out.append(name, String(value));
    });
    return out;
  }

  async function post(path, params) {
    // Form-encoded like Stripe.js: a "simple" cross-origin request, no preflight.
    const response = await fetch(API + path, {
      method: "POST",
      headers: { "Content-Type": "application/x-www-form-urlencoded" },
      body: encode(params).toString(),
    });
    let body = {};
    try { body = await response.json(); } catch (e) { body = {}; }
    if (!response.ok || body.error) {
      return { error: body.error || { type: "api_error", message: "An unexpected error occurred." } };
    }
    return { body: body };
  }

  function goToReturnUrl(returnUrl, setupIntentId, clientSecret, status) {
    const url = new URL(returnUrl);
    url.searchParams.set("setup_intent", setupIntentId);
    url.searchParams.set("setup_intent_client_secret", clientSecret);
    url.searchParams.set("redirect_status", status);
    window.location.assign(url.toString());
  }

  // The bank's 3-D Secure page, reduced to the two answers a test needs.
  function authenticate() {
    return new Promise(function (resolve) {
      const box = document.createElement("div");
      box.setAttribute("role", "dialog");
      box.setAttribute("aria-label", "3-D Secure (stand-in)");
      const text = document.createElement("p");
      text.textContent = "3-D Secure: approve this card?";
      box.appendChild(text);
      [["Complete authentication", true], ["Fail authentication", false]].forEach(function (b) {
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = b[0];
        button.addEventListener("click", function () { box.remove(); resolve(b[1]); });
        box.appendChild(button);
      });
      document.body.appendChild(box);
    });
  }

  function field(parent, id, labelText, attrs) {
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = labelText;
    const input = document.createElement("input");
    input.id = id;
    input.type = "text";
    Object.keys(attrs).forEach(function (k) { input.setAttribute(k, attrs[k]); });
    parent.appendChild(label);
    parent.appendChild(input);
    return input;
  }

  class PaymentElement {
    constructor(group, options) {
      this._group = group;
      this._options = options || {};
      this._handlers = {};
      this._inputs = null;
    }

    mount(target) {
      const node = typeof target === "string" ? document.querySelector(target) : target;
      if (!(node instanceof window.Element)) {
        throw new Error("Invalid DOM element. Make sure to call mount() with a valid DOM element or selector.");
      }
      if (this._inputs) throw new Error("This Element is already mounted.");
      const box = document.createElement("div");
      box.className = "standin-payment-element";
      this._inputs = {
        number: field(box, "standin-card-number", "Card number",
          { autocomplete: "cc-number", inputmode: "numeric", placeholder: "1234 1234 1234 1234" }),
        expiry: field(box, "standin-card-expiry", "Expiration date",
          { autocomplete: "cc-exp", inputmode: "numeric", placeholder: "MM / YY" }),
        cvc: field(box, "standin-card-cvc", "Security code",
          { autocomplete: "cc-csc", inputmode: "numeric", placeholder: "CVC" }),
      };
      node.appendChild(box);
      const self = this;
      setTimeout(function () { self._emit("ready", { elementType: "payment" }); }, 0);
    }

    on(event, handler) {
      (this._handlers[event] = this._handlers[event] || []).push(handler);
      return this;
    }

    _emit(event, payload) {
      (this._handlers[event] || []).forEach(function (h) { h(payload); });
    }

    _card() {
      const digits = function (s) { return s.replace(/\D/g, ""); };
      const expiry = digits(this._inputs.expiry.value);
      return {
        number: digits(this._inputs.number.value),
        exp_month: expiry.slice(0, 2),
        exp_year: expiry.slice(2, 4),
        cvc: digits(this._inputs.cvc.value),
      };
    }

    _problem() {
      const card = this._card();
      if (card.number.length !== 16) return { code: "incomplete_number", message: "Your card number is incomplete." };
      if (card.exp_year.length !== 2 || !(+card.exp_month >= 1 && +card.exp_month <= 12)) {
        return { code: "incomplete_expiry", message: "Your card's expiration date is incomplete." };
      }
      if (card.cvc.length !== 3) return { code: "incomplete_cvc", message: "Your card's security code is incomplete." };
      return null;
    }
  }

  class Elements {
    constructor(options) {
      options = options || {};
      if (options.mode && ["payment", "setup", "subscription"].indexOf(options.mode) < 0) {
        throw new Error("elements(): mode must be payment, setup or subscription.");
      }
      if (options.mode && !options.currency) throw new Error("elements(): currency is required with mode.");
      this._options = options;
      this._payment = null;
      this._submitted = false;
    }

    create(type, options) {
      if (type !== "payment") throw new Error("The stand-in Stripe.js implements only the Payment Element.");
      if (this._payment) throw new Error("Can only create one Element of type payment.");
      this._payment = new PaymentElement(this, options);
      return this._payment;
    }

    async submit() {
      this._submitted = false;
      if (!this._payment || !this._payment._inputs) return integrationError("Mount the Payment Element first.");
      const problem = this._payment._problem();
      if (problem) return { error: { type: "validation_error", code: problem.code, message: problem.message } };
      this._submitted = true;
      return {};
    }
  }

  async function confirmSetup(key, params) {
    const p = params || {};
    if (!(p.elements instanceof Elements)) return integrationError("confirmSetup(): pass `elements`.");
    if (!p.elements._submitted) {
      return integrationError("elements.submit() must be called before stripe.confirmSetup().");
    }
    const match = /^(seti_[A-Za-z0-9]+)_secret_[A-Za-z0-9]+$/.exec(p.clientSecret || "");
    if (!match) return integrationError("confirmSetup(): `clientSecret` is not a SetupIntent client secret.");
    const returnUrl = p.confirmParams && p.confirmParams.return_url;
    if (!returnUrl) return integrationError("confirmSetup(): `confirmParams.return_url` is required.");
    if (p.redirect !== undefined && p.redirect !== "always" && p.redirect !== "if_required") {
      return integrationError("confirmSetup(): `redirect` must be \"always\" or \"if_required\".");
    }
    const elements = p.elements;
    elements._submitted = false; // every confirmation needs a fresh submit(), as in Stripe.js
    const defaults = elements._payment._options.defaultValues || {};
    const path = "/v1/setup_intents/" + match[1];
    let answer = await post(path + "/confirm", {
      key: key,
      client_secret: p.clientSecret,
      payment_method_data: { type: "card", card: elements._payment._card(),
                             billing_details: defaults.billingDetails || {} },
    });
    if (answer.error) return { error: answer.error };
    const seti = answer.body;
    if (seti.status === "requires_action") {
      // Stripe.js sends the customer to the bank and from there to return_url.
      const passed = await authenticate();
      answer = await post(path + (passed ? "/confirm" : "/cancel"), { key: key, client_secret: p.clientSecret });
      const ok = passed && !answer.error && answer.body.status === "succeeded";
      goToReturnUrl(returnUrl, seti.id, p.clientSecret, ok ? "succeeded" : "failed");
      return never;
    }
    if (seti.status !== "succeeded") {
      return { error: { type: "invalid_request_error", message: "The SetupIntent is " + seti.status + "." } };
    }
    if (p.redirect !== "if_required") {
      goToReturnUrl(returnUrl, seti.id, p.clientSecret, "succeeded");
      return never;
    }
    return { setupIntent: seti };
  }

  window.Stripe = function Stripe(key) {
    if (typeof key !== "string" || key.indexOf("pk_") !== 0) {
      throw new Error("Invalid API Key provided: use a publishable key (pk_…).");
    }
    return {
      elements: function (options) { return new Elements(options); },
      confirmSetup: function (params) { return confirmSetup(key, params); },
    };
  };
})();
