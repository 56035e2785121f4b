"""The update page is rendered once per shape and filled in per customer: the result must be
exactly what a full render of the same values gives, whatever the values hold."""

from __future__ import annotations

import itertools

import pytest
from flask import g

from blueprints.customer.i18n import choose, render, render_filled

HOSTILE = {
    "name": 'Zoë <script>alert("x")</script> & \'Co\' @@cb:csrf_token@@',
    "email": 'o"brien@example.com',
    "reference": "<b>LEG-1</b>",
    "deadline": "8 December 2026",
    "card_brand": "Visa",
    "card_last4": "4242",
    "card_expiry": "01/2025",
    "page_url": "/u/abc.def-ghi_jkl",
}


def context(card_form, retry):
    return {"card_form": card_form, "stripe_js_url": "https://js.stripe.com/v3/",
            "publishable_key": "pk_test_x", "return_url": "http://127.0.0.1:5000/u/return",
            "retry": retry}


SHAPES = list(itertools.product(
    ["en", "fr"],
    [(), ("name",), ("card_expiry",), ("card_brand", "card_last4", "card_expiry")],
    ["card_element", "payment_element", "checkout"],
    [False, True],
))


@pytest.mark.parametrize("lang, missing, card_form, retry", SHAPES)
def test_filled_skeleton_equals_a_full_render(app, lang, missing, card_form, retry):
    values = {k: (None if k in missing else v) for k, v in HOSTILE.items()}
    with app.test_request_context("/u/x"):
        g.csp_nonce = "n0nce"
        choose(lang)
        lang_code = g.page_language.code
        filled = render_filled("customer/update.html", values, **context(card_form, retry))
        full = render("customer/update.html", lang=lang_code,
                      **{k: v for k, v in values.items() if v}, **context(card_form, retry))
    assert filled == full
    assert "<script>alert" not in filled and "@@cb:" not in filled.replace(
        "@@cb:csrf_token@@", "")  # only the customer's own text may hold a marker-like string


def test_skeletons_depend_on_the_shape_not_on_the_customer(app):
    with app.test_request_context("/u/x"):
        g.csp_nonce = "n"
        choose("en")
        for n in range(50):
            render_filled("customer/update.html", {**HOSTILE, "name": f"Customer {n}",
                                                   "reference": f"LEG-{n}"},
                          **context("card_element", False))
        assert len(app.extensions["page_skeletons"]) == 1


def test_each_response_gets_its_own_nonce_and_a_real_csrf_token(client, app, make_customer):
    from extensions import db
    from models import Customer
    from services.links import issue_link

    made = make_customer(name="Ada")
    with app.app_context():
        token = issue_link(db.session.get(Customer, made.id), created_by="test").token
        db.session.commit()
    first = client.get(f"/u/{token}")
    second = client.get(f"/u/{token}")
    nonce = first.headers["Content-Security-Policy"].split("'nonce-")[1].split("'")[0]
    assert f'nonce="{nonce}"' in first.get_data(as_text=True)
    assert nonce not in second.get_data(as_text=True)
    from tests.testlib import csrf_from

    csrf = csrf_from(second.get_data(as_text=True))
    assert csrf and "@@" not in csrf
    opened = client.post(f"/u/{token}/opened", json={}, headers={"X-CSRFToken": csrf})
    assert opened.status_code == 200  # the token filled in is the session's own
