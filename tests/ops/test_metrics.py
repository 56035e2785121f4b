"""/metrics in one process: it parses, it moves when things happen, its labels are rule
templates (never a link's path), and it answers only to the networks it is told."""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families
from smtp_sink import SmtpSink, drain, mail_config, queue_link_emails
from stripe_helpers import confirm_setup_intent

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer
from cardbridge.payments import card_setup
from cardbridge.stripe_gateway import StripeGateway


def scrape(client, **environ) -> dict[tuple[str, frozenset], float]:
    """Every sample of one scrape, keyed by (name, labels)."""
    response = client.get("/metrics", environ_base=environ)
    assert response.status_code == 200, response.status_code
    assert response.content_type.startswith("text/plain; version=0.0.4")
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(response.get_data(as_text=True))
            for s in family.samples}


def value(samples, name: str, **labels) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


@pytest.fixture
def metrics_app(make_app):
    return make_app(METRICS_ENABLED=True)


def test_metrics_are_off_unless_enabled(client):
    assert client.get("/metrics").status_code == 404


def test_metrics_text_parses_and_names_every_signal(metrics_app):
    samples = scrape(metrics_app.test_client())
    names = {name for name, _ in samples}
    for family in ("cardbridge_outbox_emails", "cardbridge_outbox_oldest_due_seconds"):
        assert family in names
    text = metrics_app.test_client().get("/metrics").get_data(as_text=True)
    for family in ("cardbridge_http_requests_total", "cardbridge_card_setups_started_total",
                   "cardbridge_card_setups_succeeded_total", "cardbridge_card_setups_failed_total",
                   "cardbridge_emails_queued_total", "cardbridge_emails_sent_total",
                   "cardbridge_emails_failed_total", "cardbridge_emails_deferred_total",
                   "cardbridge_stripe_calls_total",
                   "cardbridge_stripe_rate_limited_responses_total",
                   "cardbridge_import_rows_total", "cardbridge_http_request_duration_seconds"):
        assert f"# TYPE {family.removesuffix('_total')}" in text, family


def test_metrics_refused_from_an_address_not_allowed(make_app):
    app = make_app(METRICS_ENABLED=True, METRICS_ALLOW=["10.1.0.0/16"])
    client = app.test_client()
    assert client.get("/metrics").status_code == 404  # loopback is no longer in the list
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "203.0.113.9"}).status_code == 404
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200


def test_metrics_refused_through_a_proxy_nobody_declared(metrics_app):
    """A local reverse proxy makes every visitor look like 127.0.0.1: without
    TRUSTED_PROXY_HOPS its forwarding headers mean "not local"."""
    client = metrics_app.test_client()
    assert client.get("/metrics").status_code == 200
    assert client.get("/metrics", headers={"X-Forwarded-For": "198.51.100.7"}).status_code == 404


def test_the_allow_list_is_checked_when_the_app_starts(tmp_path):
    from cardbridge.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="METRICS_ALLOW"):
        load_config(tmp_path, {"CARDBRIDGE_ENV": "development", "METRICS_ALLOW": "10.0.0.0/33"})
    allowed = load_config(tmp_path, {"CARDBRIDGE_ENV": "development"})["METRICS_ALLOW"]
    assert allowed == ["127.0.0.0/8", "::1/128"]


def test_route_labels_are_rule_templates_never_a_path(metrics_app, make_customer):
    client = metrics_app.test_client()
    with metrics_app.app_context():
        customer = db.session.get(Customer, make_customer().id)
        token = issue_link(customer, created_by="test").token
        db.session.commit()
    before = scrape(client)
    assert client.get(f"/u/{token}").status_code == 200
    assert client.get("/u/not-a-real-token-at-all").status_code in (400, 404, 410)
    assert client.get("/nowhere/at/all").status_code == 404
    response = client.get("/metrics")
    text = response.get_data(as_text=True)
    assert token not in text and token.split(".")[0] not in text and "not-a-real" not in text
    after = scrape(client)
    page = dict(route="/u/<token>", method="GET", status="200")
    assert value(after, "cardbridge_http_requests_total", **page) == \
        value(before, "cardbridge_http_requests_total", **page) + 1
    unmatched = dict(route="<unmatched>", method="GET", status="404")
    assert value(after, "cardbridge_http_requests_total", **unmatched) >= 1
    assert value(after, "cardbridge_http_request_duration_seconds_count",
                 route="/u/<token>", method="GET") >= 1
    routes = {dict(labels).get("route") for name, labels in after
              if name == "cardbridge_http_requests_total"}
    assert all(r == "<unmatched>" or r.startswith("/") for r in routes)


@pytest.mark.localstripe
def test_setup_counters_move_only_when_the_card_is_recorded(make_app, localstripe_url,
                                                            make_customer):
    app = make_app(METRICS_ENABLED=True, STRIPE_API_BASE=localstripe_url,
                   STRIPE_SECRET_KEY="sk_test_cardbridge")
    client = app.test_client()
    before = scrape(client)
    with app.app_context():
        gateway = app.extensions["stripe_gateway"]
        customer = db.session.get(Customer, make_customer().id)
        link = issue_link(customer, created_by="test").link
        db.session.commit()
        card_setup.open_setup_intent(link, gateway)
        db.session.rollback()  # a request that failed later: nothing started
        rolled_back = scrape(client)
        seti = card_setup.open_setup_intent(link, gateway)
        db.session.commit()
        confirm_setup_intent(localstripe_url, seti["id"])
        card_setup.finish_setup_intent(seti["id"], gateway, via="browser", link=link)
        db.session.commit()
        card_setup.finish_setup_intent(seti["id"], gateway, via="webhook")  # already recorded
        db.session.commit()
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    started = "cardbridge_card_setups_started_total"
    assert value(rolled_back, started, form="setup_intent") == \
        value(before, started, form="setup_intent")
    assert moved(started, form="setup_intent") == 1
    assert moved("cardbridge_card_setups_succeeded_total", via="browser") == 1
    assert moved("cardbridge_card_setups_succeeded_total", via="webhook") == 0
    assert moved("cardbridge_stripe_calls_total", operation="setup_intent.create",
                 outcome="ok") == 2
    assert moved("cardbridge_emails_queued_total", kind="confirmation") == 1


def test_email_counters_and_the_outbox_depth(make_app, make_customer):
    with SmtpSink() as sink:
        app = make_app(METRICS_ENABLED=True, **mail_config(sink))
        client = app.test_client()
        before = scrape(client)
        queue_link_emails(app, [make_customer(), make_customer()])
        waiting = scrape(client)
        assert value(waiting, "cardbridge_outbox_emails", state="due") == 2
        assert drain(app) >= 1
        after = scrape(client)
    assert len(sink.received) == 2

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("cardbridge_emails_queued_total", kind="link") == 2
    assert moved("cardbridge_emails_sent_total") == 2
    assert value(after, "cardbridge_outbox_emails", state="due") == 0


def test_an_unreachable_relay_counts_deferred_emails(make_app, make_customer):
    from tests.testlib import free_port

    app = make_app(METRICS_ENABLED=True, **mail_config(port=free_port()))
    client = app.test_client()
    before = scrape(client)
    queue_link_emails(app, [make_customer()])
    drain(app)
    after = scrape(client)
    assert value(after, "cardbridge_emails_deferred_total") - \
        value(before, "cardbridge_emails_deferred_total") == 1
    assert value(after, "cardbridge_outbox_emails", state="waiting") == 1


def test_stripe_429s_are_counted_each_and_the_call_by_outcome(metrics_app, fault):
    busy = {"error": {"message": "Too many", "type": "invalid_request_error",
                      "code": "rate_limit"}}
    fault.then(429, busy).then(200, {"id": "seti_1", "object": "setup_intent",
                                     "status": "requires_payment_method"})
    for _ in range(3):
        fault.then(429, busy)
    gateway = StripeGateway("sk_test_faults", fault.url, max_network_retries=0,
                            rate_limit_retries=2, sleep=lambda _: None)
    client = metrics_app.test_client()
    before = scrape(client)
    gateway.create_setup_intent(customer_id="cus_1", link_id="lnk_1", replaces=None)
    with pytest.raises(Exception, match="busy"):
        gateway.create_setup_intent(customer_id="cus_2", link_id="lnk_2", replaces=None)
    after = scrape(client)

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    op = "setup_intent.create"
    assert moved("cardbridge_stripe_rate_limited_responses_total", operation=op) == 4
    assert moved("cardbridge_stripe_calls_total", operation=op, outcome="ok") == 1
    assert moved("cardbridge_stripe_calls_total", operation=op, outcome="rate_limited") == 1
