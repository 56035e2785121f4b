"""The only module that imports `stripe`: domain-named calls that return plain dicts.

The SDK (about 30 MB once imported) is loaded on the first call that needs it, not when the app
is built: a web worker or `flask import-mapping` that never talks to Stripe never pays for it.

Every POST carries an idempotency key derived from our own ids, so a retried job or a
double-click replays Stripe's first answer instead of making a second object. Network
errors, timeouts, 409 and 5xx are retried by the SDK (`max_network_retries`); a 429 is
retried here with bounded backoff because the SDK leaves a plain 429 to the caller.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cardbridge import metrics
from cardbridge.stripe_billing import BillingCalls

if TYPE_CHECKING:
    import stripe

log = logging.getLogger(__name__)

WEBHOOK_TOLERANCE_SECONDS = 300
BILLABLE_SUBSCRIPTION_STATUSES = ("active", "past_due", "trialing", "unpaid")


class GatewayError(Exception):
    """Base of the one error family callers catch."""


class CardDeclined(GatewayError):
    """Stripe refused the card; `message` is Stripe's own text, fit to show the customer."""

    def __init__(self, message: str, code: str | None = None, decline_code: str | None = None):
        super().__init__(message)
        self.message = message
        self.code = code
        self.decline_code = decline_code


class StripeUnavailable(GatewayError):
    """Stripe could not be reached or kept failing (5xx, 429, timeout): show a retry page."""


class RateLimited(StripeUnavailable):
    """Stripe kept answering 429 through every backoff: slow down and try again later."""


class StripeRejected(GatewayError):
    """Stripe refused the request itself (4xx other than a decline): a bug or a bad setting."""


class NotFound(StripeRejected):
    """The object does not exist (in this account)."""


class BadSignature(GatewayError):
    """A webhook whose signature, timestamp or body does not check out."""


def _sdk():
    """The stripe module, imported on first use (then a dictionary lookup)."""
    import stripe  # noqa: PLC0415 (about 30 MB: a process that never calls Stripe never loads it)

    return stripe


def _outcome_of(exc: GatewayError) -> str:
    """The metric's outcome label for a gateway error (most specific class first)."""
    for kind, label in ((RateLimited, "rate_limited"), (StripeUnavailable, "unavailable"),
                        (CardDeclined, "declined"), (NotFound, "not_found"),
                        (StripeRejected, "rejected")):
        if isinstance(exc, kind):
            return label
    return "error"


def _plain(obj: Any) -> dict:
    return obj.to_dict(recursive=True) if hasattr(obj, "to_dict") else dict(obj)


class StripeGateway(BillingCalls):
    def __init__(
        self,
        secret_key: str,
        api_base: str = "https://api.stripe.com",
        *,
        timeout: float = 20,
        max_network_retries: int = 2,
        rate_limit_retries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        http_client: Any = None,
    ):
        self._settings = (secret_key, api_base, timeout, max_network_retries, http_client)
        self._sdk_client: stripe.StripeClient | None = None
        self._rate_limit_retries = rate_limit_retries
        self._sleep = sleep

    @property
    def _client(self) -> stripe.StripeClient:
        """The SDK's client, built (and the SDK imported) on first use."""
        if self._sdk_client is None:
            stripe = _sdk()
            secret_key, api_base, timeout, max_network_retries, http_client = self._settings
            self._sdk_client = stripe.StripeClient(
                secret_key,
                base_addresses={"api": api_base},
                max_network_retries=max_network_retries,
                http_client=http_client or stripe.RequestsClient(timeout=timeout),
            )
        return self._sdk_client

    @classmethod
    def from_config(cls, config: dict, **overrides) -> StripeGateway:
        settings = {"timeout": config["STRIPE_TIMEOUT_SECONDS"],
                    "max_network_retries": config["STRIPE_MAX_RETRIES"]}
        return cls(config["STRIPE_SECRET_KEY"], config["STRIPE_API_BASE"],
                   **settings | overrides)

    # -- plumbing ---------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], Any]) -> dict:
        """One Stripe operation (`what` names it: a fixed string, never an id), counted by
        outcome and timed, retries and backoff included."""
        started, outcome = time.perf_counter(), "error"
        try:
            result = self._attempts(what, fn)
            outcome = "ok"
            return result
        except GatewayError as exc:
            outcome = _outcome_of(exc)
            raise
        finally:
            metrics.STRIPE_CALLS.labels(what, outcome).inc()
            metrics.STRIPE_LATENCY.labels(what).observe(time.perf_counter() - started)

    def _attempts(self, what: str, fn: Callable[[], Any]) -> dict:
        stripe = _sdk()
        attempt = 0
        while True:
            try:
                return _plain(fn())
            except stripe.RateLimitError as exc:
                metrics.STRIPE_RATE_LIMITED.labels(what).inc()
                attempt += 1
                if attempt > self._rate_limit_retries:
                    log.warning("stripe %s rate limited, giving up after %d tries", what, attempt)
                    raise RateLimited("Stripe is busy; try again shortly") from exc
                # Exponential, capped, with jitter: many threads told "slow down" at once
                # must not all come back in the same instant.
                delay = min(0.5 * 2 ** (attempt - 1), 4.0) * (0.5 + random.random())
                log.info("stripe %s rate limited, retry %d in %.1fs", what, attempt, delay)
                self._sleep(delay)
            except stripe.CardError as exc:
                err = exc.error
                raise CardDeclined(
                    exc.user_message or "Your card was declined.",
                    code=getattr(err, "code", None),
                    decline_code=getattr(err, "decline_code", None),
                ) from exc
            except (stripe.APIConnectionError, stripe.APIError) as exc:
                log.warning("stripe %s unavailable: %s", what, type(exc).__name__)
                raise StripeUnavailable("Stripe could not be reached") from exc
            except stripe.InvalidRequestError as exc:
                if exc.http_status == 404:
                    raise NotFound(f"{what}: not found") from exc
                log.error("stripe %s rejected: %s", what, exc.user_message)
                raise StripeRejected(f"{what}: {exc.user_message}") from exc
            except stripe.StripeError as exc:
                status = getattr(exc, "http_status", None)
                if status is not None and status >= 500:
                    raise StripeUnavailable("Stripe could not be reached") from exc
                log.error("stripe %s failed: %s (%s)", what, type(exc).__name__, status)
                raise StripeRejected(f"{what}: {type(exc).__name__}") from exc

    @staticmethod
    def _key(kind: str, *parts: str) -> dict:
        """`cardbridge-<kind>-<sha256 of our ids>`: ASCII whatever the ids hold (an HTTP header
        cannot carry `客户-1`), 80 characters, well under Stripe's 255."""
        digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()
        return {"idempotency_key": f"cardbridge-{kind}-{digest}"}

    # -- customers and payment methods --------------------------------------------------------
    def create_customer(self, *, legacy_id: str, email: str, name: str | None) -> str:
        params: dict[str, Any] = {"email": email, "metadata": {"legacy_customer_id": legacy_id}}
        if name:
            params["name"] = name
        obj = self._call(
            "customer.create",
            lambda: self._client.v1.customers.create(params, self._key("customer", legacy_id)),
        )
        return obj["id"]

    def retrieve_payment_method(self, pm_id: str) -> dict:
        return self._call(
            "payment_method.retrieve", lambda: self._client.v1.payment_methods.retrieve(pm_id)
        )

    def attach_payment_method(self, pm_id: str, customer_id: str) -> dict:
        return self._call(
            "payment_method.attach",
            lambda: self._client.v1.payment_methods.attach(
                pm_id, {"customer": customer_id}, self._key("attach", pm_id, customer_id)
            ),
        )

    def customer_default(self, customer_id: str) -> str | None:
        """The customer's `invoice_settings.default_payment_method` id, or None."""
        obj = self.retrieve_customer(customer_id)
        found = (obj.get("invoice_settings") or {}).get("default_payment_method")
        return found.get("id") if isinstance(found, dict) else found

    def retrieve_customer(self, customer_id: str) -> dict:
        """The customer; `deleted: true` (or NotFound) once it was deleted on Stripe."""
        return self._call("customer.retrieve",
                          lambda: self._client.v1.customers.retrieve(customer_id))

    def set_customer_default(self, customer_id: str, pm_id: str, *again: str) -> None:
        """`again` names a later deliberate repeat (a drift fix): a new idempotency key."""
        self._call(
            "customer.update",
            lambda: self._client.v1.customers.update(
                customer_id,
                {"invoice_settings": {"default_payment_method": pm_id}},
                self._key("default", customer_id, pm_id, *again),
            ),
        )

    def billable_subscriptions(self, customer_id: str) -> list[dict]:
        """Every subscription that will still invoice: its own default wins over the customer's."""
        found: list[dict] = []
        params: dict[str, Any] = {"customer": customer_id, "status": "all", "limit": 100}
        while True:
            page = self._call(
                "subscription.list", lambda p=dict(params): self._client.v1.subscriptions.list(p)
            )
            found.extend(
                s for s in page.get("data", []) if s.get("status") in BILLABLE_SUBSCRIPTION_STATUSES
            )
            if not page.get("has_more") or not page.get("data"):
                return found
            params["starting_after"] = page["data"][-1]["id"]

    def set_subscription_default(self, subscription_id: str, pm_id: str, *again: str) -> None:
        self._call(
            "subscription.update",
            lambda: self._client.v1.subscriptions.update(
                subscription_id,
                {"default_payment_method": pm_id},
                self._key("subdefault", subscription_id, pm_id, *again),
            ),
        )

    # -- SetupIntents and Checkout -------------------------------------------------------------
    def create_setup_intent(self, *, customer_id: str, link_id: str, replaces: str | None) -> dict:
        """A SetupIntent for off-session use, labelled with our link id.

        The key names the SetupIntent this one replaces, so a retried request gets the same
        object and a deliberate second one (after a cancel) gets a new one.
        """
        params = {
            "customer": customer_id,
            "usage": "off_session",
            "metadata": {"cardbridge_link": link_id},
        }
        return self._call(
            "setup_intent.create",
            lambda: self._client.v1.setup_intents.create(
                params, self._key("seti", link_id, replaces or "first")
            ),
        )

    def retrieve_setup_intent(self, seti_id: str) -> dict:
        return self._call(
            "setup_intent.retrieve",
            lambda: self._client.v1.setup_intents.retrieve(
                seti_id, {"expand": ["payment_method"]}
            ),
        )

    def create_checkout_session(
        self,
        *,
        customer_id: str,
        link_id: str,
        currency: str,
        success_url: str,
        cancel_url: str,
        replaces: str | None,
        locale: str | None = None,
    ) -> dict:
        params: dict[str, Any] = {
            "mode": "setup",
            "customer": customer_id,
            "currency": currency,
            "success_url": success_url,
            "cancel_url": cancel_url,
            "client_reference_id": link_id,
            "metadata": {"cardbridge_link": link_id},
            "setup_intent_data": {"metadata": {"cardbridge_link": link_id}},
        }
        if locale:
            params["locale"] = locale
        return self._call(
            "checkout.session.create",
            lambda: self._client.v1.checkout.sessions.create(
                params, self._key("checkout", link_id, replaces or "first")
            ),
        )

    def cancel_setup_intent(self, seti_id: str) -> None:
        """Cancel an open SetupIntent (its link was revoked): nothing can be confirmed on it."""
        self._call(
            "setup_intent.cancel",
            lambda: self._client.v1.setup_intents.cancel(
                seti_id, {}, self._key("seticancel", seti_id)
            ),
        )

    def expire_checkout_session(self, session_id: str) -> None:
        """Expire an open Checkout Session (its link was revoked)."""
        self._call(
            "checkout.session.expire",
            lambda: self._client.v1.checkout.sessions.expire(
                session_id, {}, self._key("csexpire", session_id)
            ),
        )

    def retrieve_checkout_session(self, session_id: str) -> dict:
        return self._call(
            "checkout.session.retrieve",
            lambda: self._client.v1.checkout.sessions.retrieve(session_id),
        )

    # -- events --------------------------------------------------------------------------------
    def list_events(self, *, created_gte: int | None = None, starting_after: str | None = None,
                    limit: int = 100) -> dict:
        """One page of Stripe's events (newest first, as Stripe lists them), delivered or not:
        Stripe keeps them for 30 days."""
        params: dict[str, Any] = {"limit": limit}
        if created_gte is not None:
            params["created"] = {"gte": created_gte}
        if starting_after:
            params["starting_after"] = starting_after
        return self._call("event.list", lambda: self._client.v1.events.list(params))

    # -- webhooks ------------------------------------------------------------------------------
    @staticmethod
    def parse_webhook(
        payload: bytes, header: str | None, secret: str, *, now: float | None = None
    ) -> dict:
        """Verify `Stripe-Signature` over the raw body and return the event as a dict.

        BadSignature for anything that cannot be verified or is not a Stripe event: a body
        that is not UTF-8, a header with no or several timestamps, a timestamp too old or in
        the future, a signed body that is not an event object.
        """
        if not header:
            raise BadSignature("missing Stripe-Signature header")
        try:
            text = payload.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BadSignature("body is not UTF-8") from exc
        stamps = [p.split("=", 1)[1] for p in header.split(",") if p.strip().startswith("t=")]
        if len(stamps) != 1 or not stamps[0].strip().isdigit():
            # stripe-python verifies the first t=; a second could hide another timestamp
            raise BadSignature("Stripe-Signature needs exactly one timestamp")
        stripe = _sdk()
        try:
            stripe.WebhookSignature.verify_header(text, header, secret,
                                                  WEBHOOK_TOLERANCE_SECONDS)
        except stripe.SignatureVerificationError as exc:
            raise BadSignature(str(exc).split(".")[0]) from exc
        now = time.time() if now is None else now
        if int(stamps[0]) > now + WEBHOOK_TOLERANCE_SECONDS:  # the timestamp Stripe verified
            raise BadSignature("timestamp is in the future")
        try:
            event = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise BadSignature("body is not JSON") from exc
        if not _is_event(event):
            raise BadSignature("body is not a Stripe event")
        return event


def _is_event(event: object) -> bool:
    if not isinstance(event, dict) or event.get("object") != "event":
        return False
    data = event.get("data")
    return (isinstance(event.get("id"), str) and 0 < len(event["id"]) <= 255
            and isinstance(event.get("type"), str) and 0 < len(event["type"]) <= 100
            and isinstance(data, dict) and isinstance(data.get("object"), dict))
