"""payments/recording.py + payments/card_setup.py against a real localstripe."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from stripe_helpers import active_subscription, confirm_setup_intent, ls
from stripe_helpers import customer as stripe_customer
from stripe_helpers import subscription as stripe_subscription

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, CustomerEvent, Link, SavedPaymentMethod
from cardbridge.payments import card_setup
from cardbridge.payments.recording import SetupNotFinished, SetupNotOurs, record_setup

pytestmark = pytest.mark.localstripe


@pytest.fixture
def env(stripe_app, make_customer):
    with stripe_app.app_context():
        made = make_customer()
        customer = db.session.get(Customer, made.id)
        issued = issue_link(customer, created_by="test")
        db.session.commit()
        yield stripe_app.extensions["stripe_gateway"], issued.link, customer


def test_stripe_customer_is_created_on_first_need_and_reused(env):
    gateway, link, customer = env
    first = card_setup.ensure_stripe_customer(customer, gateway)
    assert first.startswith("cus_")
    assert card_setup.ensure_stripe_customer(customer, gateway) == first


def test_open_setup_intent_is_reused_while_open(env):
    gateway, link, customer = env
    first = card_setup.open_setup_intent(link, gateway)
    db.session.commit()
    again = card_setup.open_setup_intent(link, gateway)
    assert again["id"] == first["id"]
    assert first["metadata"]["cardbridge_link"] == link.public_id
    assert first["customer"] == customer.stripe_customer_id
    assert first["usage"] == "off_session"


def test_canceled_setup_intent_is_replaced(env, localstripe_url):
    gateway, link, customer = env
    first = card_setup.open_setup_intent(link, gateway)
    ls(localstripe_url, "POST", f"/v1/setup_intents/{first['id']}/cancel")
    second = card_setup.open_setup_intent(link, gateway)
    assert second["id"] != first["id"]
    assert link.setup_intent_id == second["id"]


def test_record_sets_defaults_consumes_link_and_marks_updated(env, localstripe_url):
    gateway, link, customer = env
    seti = card_setup.open_setup_intent(link, gateway)
    sub = active_subscription(localstripe_url, customer.stripe_customer_id)
    confirm_setup_intent(localstripe_url, seti["id"])
    recorded = card_setup.finish_setup_intent(seti["id"], gateway, via="browser", link=link)
    db.session.commit()
    pm_id = recorded.payment_method.stripe_payment_method_id
    assert recorded.created
    assert customer.status == "updated"
    assert db.session.get(Link, link.id).used_at is not None
    assert stripe_customer(localstripe_url, customer.stripe_customer_id)[
        "invoice_settings"]["default_payment_method"] == pm_id
    assert stripe_subscription(localstripe_url, sub["id"])["default_payment_method"] == pm_id
    assert recorded.payment_method.subscriptions_updated == 1
    assert recorded.payment_method.last4 == "4242"
    kinds = db.session.execute(select(CustomerEvent.kind)).scalars().all()
    assert "updated" in kinds


def test_record_twice_makes_one_row(env, localstripe_url):
    gateway, link, customer = env
    seti = card_setup.open_setup_intent(link, gateway)
    confirm_setup_intent(localstripe_url, seti["id"])
    first = card_setup.finish_setup_intent(seti["id"], gateway, via="browser", link=link)
    db.session.commit()
    second = card_setup.finish_setup_intent(seti["id"], gateway, via="webhook")
    db.session.commit()
    assert first.created and not second.created
    assert db.session.execute(select(func.count(SavedPaymentMethod.id))).scalar() == 1


def test_unconfirmed_setup_intent_is_not_recorded(env):
    gateway, link, customer = env
    seti = card_setup.open_setup_intent(link, gateway)
    with pytest.raises(SetupNotFinished) as err:
        card_setup.finish_setup_intent(seti["id"], gateway, via="browser", link=link)
    assert err.value.status == "requires_payment_method"
    assert customer.status == "invited"


def test_setup_intent_of_another_link_is_refused(env, make_customer, localstripe_url):
    gateway, link, customer = env
    other = db.session.get(Customer, make_customer().id)
    other_link = issue_link(other, created_by="test").link
    db.session.commit()
    seti = card_setup.open_setup_intent(other_link, gateway)
    confirm_setup_intent(localstripe_url, seti["id"])
    with pytest.raises(SetupNotOurs):
        card_setup.finish_setup_intent(seti["id"], gateway, via="browser", link=link)
    assert customer.status == "invited"


def test_setup_intent_for_another_stripe_customer_is_refused(env, localstripe_url):
    gateway, link, customer = env
    card_setup.ensure_stripe_customer(customer, gateway)
    stranger = ls(localstripe_url, "POST", "/v1/customers", {"email": "x@example.com"})
    forged = ls(localstripe_url, "POST", "/v1/setup_intents",
                {"customer": stranger["id"], "metadata[cardbridge_link]": link.public_id})
    confirm_setup_intent(localstripe_url, forged["id"])
    with pytest.raises(SetupNotOurs):
        record_setup(link, gateway.retrieve_setup_intent(forged["id"]), via="webhook",
                     gateway=gateway)


def test_setup_intent_without_our_metadata_is_not_ours(env, localstripe_url):
    gateway, link, customer = env
    stranger = ls(localstripe_url, "POST", "/v1/customers", {"email": "y@example.com"})
    foreign = ls(localstripe_url, "POST", "/v1/setup_intents", {"customer": stranger["id"]})
    confirm_setup_intent(localstripe_url, foreign["id"])
    with pytest.raises(SetupNotOurs):
        card_setup.finish_setup_intent(foreign["id"], gateway, via="webhook")


def test_a_newly_recorded_card_queues_one_confirmation_email(env, localstripe_url):
    from cardbridge.models import Email

    gateway, link, customer = env
    seti = card_setup.open_setup_intent(link, gateway)
    confirm_setup_intent(localstripe_url, seti["id"])
    card_setup.finish_setup_intent(seti["id"], gateway, via="browser", link=link)
    db.session.commit()
    card_setup.finish_setup_intent(seti["id"], gateway, via="webhook")
    db.session.commit()
    emails = db.session.execute(
        select(Email).where(Email.kind == "confirmation")).scalars().all()
    assert len(emails) == 1
    assert emails[0].to_address == customer.email
