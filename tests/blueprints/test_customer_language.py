"""The customer's pages speak the customer's language: theirs if the link says whose it is, else
the browser's; the messages the page's script shows, and Stripe's own form, follow."""

from __future__ import annotations

import re

import pytest

from tests.blueprints.test_customer_page import link_for
from tests.testlib import csrf_from


@pytest.fixture
def french(make_app, fault, make_customer):
    app = make_app(STRIPE_API_BASE=fault.url, CARD_FORM="card_element")
    customer = make_customer(locale="fr-CA", card_brand="visa", card_last4="4242",
                             card_exp_month=1, card_exp_year=2025, name="Ada Lovelace")
    token, _ = link_for(app, customer.id)
    return app, token


def test_a_french_customer_gets_the_page_in_french(french):
    app, token = french
    html = app.test_client().get(f"/u/{token}").get_data(as_text=True)
    assert '<html lang="fr">' in html
    assert "Mettez à jour votre carte" in html and "Bonjour Ada Lovelace" in html
    assert "Visa se terminant par 4242, expire en 01/2025" in html
    assert "Enregistrer la carte" in html and "Aller au contenu" in html
    assert 'data-locale="fr"' in html  # Stripe.js draws its own form in French too
    assert 'data-msg-saving="Enregistrement de votre carte…"' in html
    # The deadline as a French reader writes it, not "8 December 2026".
    deadline = re.search(r"À mettre à jour avant le</dt><dd>([^<]+)</dd>", html).group(1)
    assert re.fullmatch(r"\d{1,2} (janvier|février|mars|avril|mai|juin|juillet|août|septembre|"
                        r"octobre|novembre|décembre) \d{4}", deadline), deadline
    assert "Update your card" not in html


def test_the_customer_locale_wins_over_the_browser(french):
    app, token = french
    html = app.test_client().get(f"/u/{token}", headers={"Accept-Language": "en-US"}) \
        .get_data(as_text=True)
    assert '<html lang="fr">' in html


def test_a_customer_without_a_locale_gets_english(watched_en):
    app, token = watched_en
    html = app.test_client().get(f"/u/{token}", headers={"Accept-Language": "de"}) \
        .get_data(as_text=True)
    assert '<html lang="en">' in html and "Update your card" in html


@pytest.fixture
def watched_en(make_app, fault, make_customer):
    app = make_app(STRIPE_API_BASE=fault.url, CARD_FORM="card_element")
    token, _ = link_for(app, make_customer().id)
    return app, token


@pytest.mark.parametrize("header, lang, heading", [
    ("fr-CA,fr;q=0.9,en;q=0.5", "fr", "Nous ne pouvons pas ouvrir ce lien"),
    ("de-DE,en;q=0.5", "en", "We can't open this link"),
    (None, "en", "We can't open this link"),
])
def test_a_link_we_cannot_read_answers_in_the_browsers_language(client, header, lang, heading):
    headers = {"Accept-Language": header} if header else {}
    response = client.get("/u/not.a-real.token", headers=headers)
    html = response.get_data(as_text=True)
    assert response.status_code == 404
    assert f'<html lang="{lang}">' in html and heading in html


def test_messages_for_the_pages_script_are_in_the_customers_language(french, fault):
    app, token = french
    client = app.test_client()
    csrf = csrf_from(client.get(f"/u/{token}").get_data(as_text=True))
    response = client.post(f"/u/{token}/complete", json={}, headers={"X-CSRFToken": csrf})
    assert response.status_code == 400
    assert response.get_json()["message"] == "Référence d’enregistrement manquante."
    fault.default = (503, {}, {"error": {"type": "api_error", "message": "down"}}, 0.0)
    response = client.post(f"/u/{token}/intent", json={}, headers={"X-CSRFToken": csrf})
    assert response.status_code == 503
    assert response.get_json()["message"].startswith("Nous n’avons pas pu joindre")
