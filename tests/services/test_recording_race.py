"""The browser path and a webhook recording one SetupIntent at the same moment make one record."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import func, select
from stripe_helpers import confirm_setup_intent

from cardbridge.extensions import db
from cardbridge.links.service import issue_link
from cardbridge.models import Customer, CustomerEvent, SavedPaymentMethod
from cardbridge.payments import card_setup
from cardbridge.stripe_gateway import StripeGateway

pytestmark = [pytest.mark.localstripe]  # SQLite by default, PostgreSQL with TEST_DATABASE_URL


class InLockstep(StripeGateway):
    """The real gateway, except both racers reach Stripe's write calls before either goes on."""

    def __init__(self, *args, barrier: threading.Barrier, **kwargs):
        super().__init__(*args, **kwargs)
        self._barrier = barrier

    def set_customer_default(self, customer_id, pm_id):
        self._barrier.wait(timeout=10)
        return super().set_customer_default(customer_id, pm_id)


def test_browser_and_webhook_racing_make_exactly_one_record(stripe_app, make_customer,
                                                             localstripe_url):
    gateway = stripe_app.extensions["stripe_gateway"]
    with stripe_app.app_context():
        customer = db.session.get(Customer, make_customer().id)
        link = issue_link(customer, created_by="test").link
        seti = card_setup.open_setup_intent(link, gateway)["id"]
        link_id, customer_id = link.id, customer.id
        db.session.commit()
    confirm_setup_intent(localstripe_url, seti)

    barrier = threading.Barrier(2)
    racer_gateway = InLockstep("sk_test_cardbridge", localstripe_url, barrier=barrier,
                               max_network_retries=0)
    results, errors = {}, []

    def racer(via):
        try:
            with stripe_app.app_context():
                kwargs = {"link": db.session.get(type(link), link_id)} if via == "browser" else {}
                recorded = card_setup.finish_setup_intent(seti, racer_gateway, via=via, **kwargs)
                db.session.commit()
                results[via] = (recorded.created, recorded.payment_method.stripe_payment_method_id)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=racer, args=(via,)) for via in ("browser", "webhook")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert not errors, errors
    assert sorted(created for created, _ in results.values()) == [False, True]
    assert len({pm for _, pm in results.values()}) == 1
    with stripe_app.app_context():
        assert db.session.execute(select(func.count(SavedPaymentMethod.id))).scalar() == 1
        updated = db.session.execute(
            select(func.count(CustomerEvent.id)).where(CustomerEvent.kind == "updated")
        ).scalar()
        assert updated == 1
        assert db.session.get(Customer, customer_id).status == "updated"
