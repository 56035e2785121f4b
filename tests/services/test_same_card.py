"""The same card twice (issue 17 point 2) and Stripe's automatic card updates, on localstripe.

localstripe fingerprints a card by its number, as Stripe does, so saving `pm_card_visa` again
is "the same card"; `/_config/card_updater/{pm}` plays Stripe's card account updater.
"""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from stripe_helpers import active_subscription, confirm_setup_intent, ls, subscription
from stripe_helpers import customer as stripe_customer

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, CustomerEvent, Link, MigratedCard, SavedPaymentMethod
from cardbridge.models.emails import Email
from cardbridge.models.types import utcnow
from cardbridge.payments import card_setup
from tests.blueprints.test_webhooks import event, outcome, post
from tests.support.staff_helpers import FAST_HASH, create_staff, sign_in

pytestmark = pytest.mark.localstripe

OTHER_NUMBER = "5555555555554444"


@pytest.fixture
def stripe_app(make_app, localstripe_url):
    return make_app(STRIPE_API_BASE=localstripe_url,
                    STRIPE_JS_URL=f"{localstripe_url}/js.stripe.com/v3/",
                    STRIPE_SECRET_KEY="sk_test_cardbridge", STRIPE_MAX_RETRIES=0,
                    STAFF_REQUIRE_2FA=False, STAFF_PASSWORD_METHOD=FAST_HASH)


@pytest.fixture
def env(stripe_app, localstripe_url, monkeypatch):
    """A customer with a Stripe customer, and a count of the default changes the app makes."""
    gateway = stripe_app.extensions["stripe_gateway"]
    calls = {"customer": 0, "subscription": 0}
    for name, key in (("set_customer_default", "customer"),
                      ("set_subscription_default", "subscription")):
        original = getattr(gateway, name)

        def counted(*args, _original=original, _key=key, **kwargs):
            calls[_key] += 1
            return _original(*args, **kwargs)
        monkeypatch.setattr(gateway, name, counted)
    with stripe_app.app_context():
        customer = Customer(legacy_id="legacy-same-1", email="same@example.com",
                            name="Same Card", status="needs_update")
        db.session.add(customer)
        db.session.flush()
        card_setup.ensure_stripe_customer(customer, gateway)
        db.session.commit()
        yield {"app": stripe_app, "gateway": gateway, "customer": customer, "calls": calls,
               "url": localstripe_url}


def card_pm(url: str, number: str, exp_month: int = 12, exp_year: int = 2030) -> dict:
    return ls(url, "POST", "/v1/payment_methods",
              {"type": "card", "card[number]": number, "card[exp_month]": exp_month,
               "card[exp_year]": exp_year, "card[cvc]": "123"})


def migrate(env, pm_id: str = "pm_card_visa", *, exp=(12, 2030), default=True) -> MigratedCard:
    """What Stripe's migration left: the card attached (and the default), a mapping row."""
    customer = env["customer"]
    pm = ls(env["url"], "POST", f"/v1/payment_methods/{pm_id}/attach",
            {"customer": customer.stripe_customer_id})
    if default:
        ls(env["url"], "POST", f"/v1/customers/{customer.stripe_customer_id}",
           {"invoice_settings[default_payment_method]": pm["id"]})
    card = MigratedCard(customer_id=customer.id, old_card_id=f"card_old_{pm['id'][-6:]}",
                        stripe_id=pm["id"], fingerprint=pm["card"]["fingerprint"],
                        brand="visa", last4=pm["card"]["last4"], exp_month=exp[0],
                        exp_year=exp[1])
    db.session.add(card)
    customer.mapped_at = utcnow()
    db.session.commit()
    return card


def save(env, pm_id: str = "pm_card_visa"):
    """The customer's path: a link, a SetupIntent confirmed with `pm_id`, recorded."""
    customer = db.session.get(Customer, env["customer"].id)
    link = issue_link(customer, created_by="test").link
    seti = card_setup.open_setup_intent(link, env["gateway"])
    db.session.commit()
    confirm_setup_intent(env["url"], seti["id"], pm_id)
    recorded = card_setup.finish_setup_intent(seti["id"], env["gateway"], via="browser",
                                              link=link)
    db.session.commit()
    return recorded, link


def confirmations(customer_id: int) -> int:
    return db.session.execute(select(func.count(Email.id)).where(
        Email.customer_id == customer_id, Email.kind == "confirmation")).scalar()


def console_page(app, customer_id: int) -> str:
    staff = create_staff(app, "agent-same@example.com", "agent")
    client = app.test_client()
    assert sign_in(client, staff).status_code == 303
    response = client.get(f"/support/customers/{customer_id}")
    assert response.status_code == 200
    return response.get_data(as_text=True)


def default_on_stripe(env) -> str | None:
    return stripe_customer(env["url"], env["customer"].stripe_customer_id)[
        "invoice_settings"]["default_payment_method"]


# -- the same card twice ------------------------------------------------------------------------
def test_same_card_as_a_usable_migrated_one_changes_no_default_and_sends_no_email(env):
    migrated = migrate(env)
    env["customer"].status = "ready"
    db.session.commit()
    recorded, link = save(env)
    row = recorded.payment_method
    assert recorded.created
    assert (row.same_card_as, row.same_card_of) == ("migrated", migrated.stripe_id)
    assert env["calls"] == {"customer": 0, "subscription": 0}
    assert default_on_stripe(env) == migrated.stripe_id
    assert confirmations(env["customer"].id) == 0
    # The customer did what the link asked: updated, link used, one timeline entry saying so.
    assert db.session.get(Customer, env["customer"].id).status == "updated"
    assert db.session.get(Link, link.id).used_at is not None
    updated = db.session.execute(select(CustomerEvent).where(
        CustomerEvent.kind == "updated")).scalar_one()
    assert updated.details["same_card"] == "migrated"
    assert updated.details["default_changed"] is False
    assert "same card as the migrated one" in console_page(env["app"], env["customer"].id)


def test_same_card_as_one_saved_before_is_recorded_once_more_without_a_second_change(env):
    first, _ = save(env)
    assert first.payment_method.same_card_as is None
    assert env["calls"]["customer"] == 1
    assert confirmations(env["customer"].id) == 1
    second, link = save(env)
    row = second.payment_method
    assert (row.same_card_as, row.same_card_of) == (
        "saved", first.payment_method.stripe_payment_method_id)
    assert env["calls"]["customer"] == 1  # no second default change
    assert default_on_stripe(env) == first.payment_method.stripe_payment_method_id
    assert confirmations(env["customer"].id) == 1  # no second confirmation
    assert db.session.get(Link, link.id).used_at is not None
    day = first.payment_method.created_at.strftime("%Y-%m-%d")
    page = console_page(env["app"], env["customer"].id)
    assert f"same card as one saved on {day}" in page


def test_recording_the_same_setup_again_stays_one_record(env):
    migrate(env)
    recorded, link = save(env)
    again = card_setup.finish_setup_intent(link.setup_intent_id, env["gateway"], via="webhook")
    db.session.commit()
    assert not again.created
    assert again.payment_method.id == recorded.payment_method.id
    assert db.session.execute(select(func.count(SavedPaymentMethod.id))).scalar() == 1
    assert env["calls"]["customer"] == 0


def test_a_different_card_behaves_as_before(env):
    migrate(env)
    other = card_pm(env["url"], OTHER_NUMBER)
    recorded, _ = save(env, other["id"])
    assert recorded.payment_method.same_card_as is None
    assert env["calls"]["customer"] == 1
    assert default_on_stripe(env) == other["id"]
    assert confirmations(env["customer"].id) == 1
    assert "same card as" not in console_page(env["app"], env["customer"].id)


def test_the_same_number_as_an_expired_migrated_card_is_a_new_card(env):
    migrate(env, exp=(1, 2020))
    recorded, _ = save(env)
    assert recorded.payment_method.same_card_as is None
    assert env["calls"]["customer"] == 1
    assert confirmations(env["customer"].id) == 1


def test_same_card_that_stripe_does_not_bill_from_is_made_the_default(env):
    """The migration left no default: skipping the change would leave nothing to charge."""
    migrate(env, default=False)
    recorded, _ = save(env)
    assert recorded.payment_method.same_card_as == "migrated"
    assert env["calls"]["customer"] == 1
    assert default_on_stripe(env) == recorded.payment_method.stripe_payment_method_id
    assert confirmations(env["customer"].id) == 0


# -- payment_method.automatically_updated -------------------------------------------------------
def auto_update(env, pm_id: str, event_id: str, **card) -> str | None:
    """Stripe's updater changes the card, then its signed event reaches the real endpoint."""
    ls(env["url"], "POST", f"/_config/card_updater/{pm_id}", card)
    payload = event("payment_method.automatically_updated",
                    {"id": pm_id, "object": "payment_method"}, event_id)
    assert post(env["app"].test_client(), payload).status_code == 200
    db.session.expire_all()
    return outcome(env["app"], payload)


def test_an_expired_migrated_card_updated_by_stripe_moves_the_customer_to_ready(env):
    pm = card_pm(env["url"], "4000056655665556", exp_month=1, exp_year=2020)
    migrated = migrate(env, pm["id"], exp=(1, 2020))
    old_fingerprint = migrated.fingerprint
    assert auto_update(env, pm["id"], "evt_auto_1", exp_month=3, exp_year=2031,
                       number="4000056655665564") == "card_updated"
    card = db.session.get(MigratedCard, migrated.id)
    assert (card.last4, card.exp_month, card.exp_year) == ("5564", 3, 2031)
    assert card.fingerprint not in (None, old_fingerprint)  # a new number, a new fingerprint
    assert db.session.get(Customer, env["customer"].id).status == "ready"
    entry = db.session.execute(select(CustomerEvent).where(
        CustomerEvent.kind == "card_auto_updated")).scalar_one()
    assert entry.details["status"] == "needs_update → ready"
    assert entry.details["expiry"] == "03/2031"
    assert entry.details["was"] == "5556 01/2020"
    # The same news again (Stripe retries, or a second event) changes nothing more.
    assert auto_update(env, pm["id"], "evt_auto_2", exp_month=3, exp_year=2031) == "unchanged"
    assert db.session.execute(select(func.count(CustomerEvent.id)).where(
        CustomerEvent.kind == "card_auto_updated")).scalar() == 1


def test_a_card_still_expired_after_the_update_leaves_the_customer_needing_a_card(env):
    pm = card_pm(env["url"], "4000056655665556", exp_month=1, exp_year=2020)
    migrate(env, pm["id"], exp=(1, 2020))
    assert auto_update(env, pm["id"], "evt_auto_3", exp_month=2, exp_year=2020) == "card_updated"
    assert db.session.get(Customer, env["customer"].id).status == "needs_update"


def test_a_saved_card_updated_by_stripe_shows_its_new_expiry_and_stays_updated(env):
    recorded, _ = save(env)
    pm_id = recorded.payment_method.stripe_payment_method_id
    assert auto_update(env, pm_id, "evt_auto_4", exp_month=7, exp_year=2033) == "card_updated"
    row = db.session.get(SavedPaymentMethod, recorded.payment_method.id)
    assert (row.last4, row.exp_month, row.exp_year) == ("4242", 7, 2033)
    assert db.session.get(Customer, env["customer"].id).status == "updated"
    assert "exp. 07/2033" in console_page(env["app"], env["customer"].id)


def test_an_update_for_a_card_that_is_not_ours_changes_nothing(env):
    stranger = card_pm(env["url"], OTHER_NUMBER)
    assert auto_update(env, stranger["id"], "evt_auto_5", exp_month=1,
                       exp_year=2032) == "not_ours"
    assert db.session.execute(select(func.count(CustomerEvent.id)).where(
        CustomerEvent.kind == "card_auto_updated")).scalar() == 0


def test_same_card_while_a_subscription_pins_another_card_changes_the_defaults(env):
    """Stripe would still bill that subscription from the other card: the change is needed."""
    sub = active_subscription(env["url"], env["customer"].stripe_customer_id)  # pins a card
    migrated = migrate(env, card_pm(env["url"], OTHER_NUMBER)["id"])
    recorded, _ = save(env, card_pm(env["url"], OTHER_NUMBER)["id"])
    pm_id = recorded.payment_method.stripe_payment_method_id
    assert recorded.payment_method.same_card_of == migrated.stripe_id
    assert env["calls"] == {"customer": 1, "subscription": 1}
    assert subscription(env["url"], sub["id"])["default_payment_method"] == pm_id
    assert confirmations(env["customer"].id) == 0
