"""payments/stripe_gateway.py: one error family, retries, 429 backoff, timeouts, idempotency."""

from __future__ import annotations

import pytest

from cardbridge.stripe_gateway import (
    CardDeclined,
    NotFound,
    RateLimited,
    StripeGateway,
    StripeRejected,
    StripeUnavailable,
)

SETI = {"id": "seti_1", "object": "setup_intent", "status": "requires_payment_method",
        "client_secret": "seti_1_secret_abc", "metadata": {}}


def gateway(url, **kw):
    sleeps = []
    kw.setdefault("max_network_retries", 2)
    gw = StripeGateway("sk_test_faults", url, timeout=kw.pop("timeout", 2),
                       sleep=sleeps.append, **kw)
    return gw, sleeps


def create(gw):
    return gw.create_setup_intent(customer_id="cus_1", link_id="lnk_1", replaces=None)


def test_5xx_is_retried_then_succeeds(fault):
    fault.then(500, {"error": {"message": "boom", "type": "api_error"}}).then(200, SETI)
    gw, _ = gateway(fault.url)
    assert create(gw)["id"] == "seti_1"
    assert len(fault.requests) == 2


def test_persistent_5xx_becomes_stripe_unavailable(fault):
    for _ in range(3):
        fault.then(503, {"error": {"message": "down", "type": "api_error"}})
    gw, _ = gateway(fault.url)
    with pytest.raises(StripeUnavailable):
        create(gw)
    assert len(fault.requests) == 3  # one try + max_network_retries


def test_retries_reuse_the_same_idempotency_key_derived_from_our_ids(fault):
    fault.then(500, {"error": {"type": "api_error"}}).then(200, SETI)
    gw, _ = gateway(fault.url)
    create(gw)
    keys = {r["headers"].get("Idempotency-Key") for r in fault.requests}
    assert len(keys) == 1
    (key,) = keys
    assert key.startswith("cardbridge-seti-") and len(key) < 255


def test_idempotency_keys_differ_per_ids_and_stay_ascii_for_any_legacy_id():
    from cardbridge.stripe_gateway import StripeGateway

    keys = {StripeGateway._key("customer", legacy)["idempotency_key"]
            for legacy in ("客户-1", "客户-2", "x" * 5000, "a:b", "a\x1fb")}
    assert len(keys) == 5
    for key in keys:
        key.encode("latin-1")  # an HTTP header can carry it
        assert len(key) <= 255


def test_429_backs_off_and_succeeds(fault):
    fault.then(429, {"error": {"message": "Too many", "type": "invalid_request_error",
                               "code": "rate_limit"}})
    fault.then(200, SETI)
    gw, sleeps = gateway(fault.url, max_network_retries=0)
    assert create(gw)["id"] == "seti_1"
    assert len(sleeps) == 1 and 0.25 <= sleeps[0] <= 0.75  # 0.5 s, jittered ±50%


def test_429_forever_gives_up_with_bounded_backoff(fault):
    for _ in range(10):
        fault.then(429, {"error": {"message": "Too many", "type": "invalid_request_error",
                                   "code": "rate_limit"}})
    gw, sleeps = gateway(fault.url, max_network_retries=0, rate_limit_retries=3)
    with pytest.raises(RateLimited):
        create(gw)
    # 0.5, 1 and 2 s, each jittered ±50% so many threads told to wait do not return at once
    assert [round(s / base, 2) >= 0.5 and s / base <= 1.5 for s, base in
            zip(sleeps, (0.5, 1.0, 2.0), strict=True)] == [True, True, True]
    assert len(fault.requests) == 4


def test_timeout_becomes_stripe_unavailable(fault):
    fault.then(200, SETI, delay=1.5)
    gw, _ = gateway(fault.url, timeout=0.3, max_network_retries=0)
    with pytest.raises(StripeUnavailable):
        create(gw)


def test_connection_refused_becomes_stripe_unavailable():
    gw, _ = gateway("http://127.0.0.1:9", max_network_retries=0)
    with pytest.raises(StripeUnavailable):
        create(gw)


def test_card_error_carries_stripes_message(fault):
    fault.then(402, {"error": {"message": "Your card was declined.", "type": "card_error",
                               "code": "card_declined", "decline_code": "generic_decline"}})
    gw, _ = gateway(fault.url)
    with pytest.raises(CardDeclined) as err:
        create(gw)
    assert err.value.message == "Your card was declined."
    assert err.value.decline_code == "generic_decline"


def test_404_is_not_found(fault):
    fault.then(404, {"error": {"message": "No such setupintent", "type": "invalid_request_error"}})
    gw, _ = gateway(fault.url)
    with pytest.raises(NotFound):
        gw.retrieve_setup_intent("seti_missing")


def test_400_is_rejected_without_retry(fault):
    fault.then(400, {"error": {"message": "Received unknown parameter", "type":
                               "invalid_request_error"}})
    gw, _ = gateway(fault.url)
    with pytest.raises(StripeRejected):
        create(gw)
    assert len(fault.requests) == 1


def test_setup_intent_create_never_sends_payment_method_types(fault):
    fault.then(200, SETI)
    gw, _ = gateway(fault.url)
    create(gw)
    body = fault.requests[0]["body"]
    assert "payment_method_types" not in body
    assert "usage=off_session" in body
    assert "metadata[cardbridge_link]=lnk_1" in body.replace("%5B", "[").replace("%5D", "]")


def test_the_sdk_is_imported_on_first_use_not_with_the_app():
    """Building the app (a web worker, `flask import-mapping`) must not load stripe (~15 MB);
    the first call that needs it does, and works."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys\n"
        "from app import create_app\n"
        "app = create_app({'TESTING': True, 'SECRET_KEY': 'x',"
        " 'SQLALCHEMY_DATABASE_URI': 'sqlite://'})\n"
        "assert 'stripe' not in sys.modules, 'stripe imported with the app'\n"
        "gw = app.extensions['stripe_gateway']\n"
        "assert gw._client is gw._client\n"
        "assert 'stripe' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parents[2],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
