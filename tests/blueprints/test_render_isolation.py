"""Pages and emails are rendered whole for each customer: a template that reads the request or
filters a value shows each customer only their own (a render-once cache once leaked)."""

from __future__ import annotations

from pathlib import Path

from jinja2 import ChoiceLoader, DictLoader

from tests.blueprints.test_customer_page import link_for

TEMPLATES = Path(__file__).resolve().parent.parent.parent / "templates"


def _with_extra(app, name: str, extra: str) -> None:
    """`name` as shipped, plus `extra` at its end, for this app only."""
    source = (TEMPLATES / name).read_text(encoding="utf-8")
    app.jinja_loader = ChoiceLoader([DictLoader({name: source + extra}), app.jinja_loader])


def test_two_customers_pages_one_after_the_other_show_each_only_their_own(make_app,
                                                                         make_customer):
    app = make_app(CARD_FORM="card_element")
    _with_extra(app, "base.html",  # the page extends it: its end is rendered
                '<p id="path">{{ request.path }}</p><p id="ref">{{ reference|upper }}</p>')
    first, _ = link_for(app, make_customer(legacy_id="first-ref").id)
    second, _ = link_for(app, make_customer(legacy_id="second-ref").id)
    client = app.test_client()
    one = client.get(f"/u/{first}").get_data(as_text=True)
    two = client.get(f"/u/{second}").get_data(as_text=True)
    assert f'<p id="path">/u/{first}</p>' in one and "FIRST-REF" in one
    assert f'<p id="path">/u/{second}</p>' in two and "SECOND-REF" in two
    assert first not in two and "first-ref" not in two.lower()


def test_two_emails_with_a_filtered_value_each_carry_their_own(make_app):
    from cardbridge.email.mailer import render

    app = make_app()
    _with_extra(app, "email/confirmation.txt", "\nRef: {{ name|upper }}\n")
    with app.app_context():
        ada, _ = render("confirmation", "en", name="Ada", card="Visa 4242")
        bob, _ = render("confirmation", "en", name="Bob", card="Visa 4242")
    assert "Ref: ADA" in ada and "Ref: BOB" in bob
    assert "ADA" not in bob and "@@" not in ada + bob
